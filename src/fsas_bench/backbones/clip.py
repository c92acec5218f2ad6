"""A frozen open_clip image/text encoder exposing what FSAS methods need.

Patch tokens are the raw residual stream after chosen blocks (before ``ln_post``, CLS token dropped),
read with upstream ``forward_intermediates``; the global embedding is the projected pooled token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from torch import Tensor, nn

from fsas_bench.backbones.registry import (
    list_backbones,
    register_shipped_configs,
    shipped_arches,
    shipped_tags,
    shipped_weights,
)
from fsas_bench.errors import UserError
from fsas_bench.hashing import sha256_file

RANDOM_WEIGHTS_LABEL = "none (random weights)"


BackboneFeatures = dict[str, Tensor]
"""Named features of one image (see :meth:`ClipBackbone.encode`)."""


def sliding_windows(grid: tuple[int, int], scale: int) -> Tensor:
    """Patch indices of every ``scale × scale`` window at stride 1 on a ``grid`` (row-major).

    Returns:
        ``n_windows × scale²`` long tensor; windows ordered by top-left corner, row-major.
    """
    height, width = grid
    if scale > min(height, width):
        raise ValueError(f"window scale {scale} exceeds the {height}×{width} patch grid")
    cells = torch.arange(height * width).view(1, 1, height, width).float()
    return torch.nn.functional.unfold(cells, kernel_size=scale).long()[0].T


class ClipBackbone(nn.Module):
    """A frozen open_clip model with fsas-bench's preprocessing and feature taps.

    Args:
        model: the open_clip CLIP model (put in eval mode, gradients off).
        arch: open_clip architecture name.
        pretrained: what the weights are, for result rows (tag, file name or the random-weights label).
        weights_id: identity of the weights for cache keys (tag, file SHA-256, or random seed).
    """

    def __init__(self, model: nn.Module, arch: str, pretrained: str, weights_id: str) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.arch = arch
        self.pretrained = pretrained
        self.weights_id = weights_id
        visual = model.visual
        size = visual.image_size
        self.image_size: int = size[0] if isinstance(size, tuple) else int(size)
        patch = visual.patch_size
        self.patch_size: int = patch[0] if isinstance(patch, tuple) else int(patch)
        self.grid: tuple[int, int] = (self.image_size // self.patch_size,) * 2
        self.depth: int = len(visual.transformer.resblocks)
        self.width: int = visual.transformer.width
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(3, 1, 1), persistent=False)
        self.preprocess_id = json.dumps(
            {"size": self.image_size, "resize": "bicubic-no-crop", "mean": cfg["mean"], "std": cfg["std"]},
            sort_keys=True,
        )
        self._text_cache: dict[tuple[str, ...], Tensor] = {}

    @property
    def identity(self) -> str:
        """Everything that determines an image's features apart from the image and the block."""
        return json.dumps([self.arch, self.weights_id, self.preprocess_id])

    def preprocess(self, image: np.ndarray) -> Tensor:
        """RGB uint8 ``H × W × 3`` → normalised ``3 × S × S`` float tensor (plain resize, no crop)."""
        resized = Image.fromarray(image).resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean.cpu()) / self.std.cpu()

    @torch.no_grad()
    def encode(self, images: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Named features of ``images`` ``B × 3 × S × S``; each name gives a ``B × ...`` tensor:

        - ``block{i}``: patch tokens after block i, raw residual stream, CLS dropped (``B × N × C``);
        - ``embedding``: the projected global image embedding (``B × D``);
        - ``final_tokens``: patch tokens after the last block and ``ln_post``, before ``proj`` (``B × N × C``);
        - ``vv_tokens``: final patch tokens of the V-V ("CLIP Surgery") attention path after ``ln_post`` and
          ``proj`` (``B × N × D``; FineGrainedAD's text-matching tokens);
        - ``window{s}``: projected CLS embeddings of every s × s window (``B × n_windows × D``), each window
          encoded alone: CLS + its tokens (after positional embedding) through ``ln_pre``, the transformer,
          ``ln_post`` and ``proj`` (WinCLIP).
        """
        images = images.to(self.mean.device)
        blocks = sorted({int(n.removeprefix("block")) for n in names if n.startswith("block")})
        self._check_blocks(blocks)
        last = self.depth - 1
        taps = sorted(set(blocks) | {last})  # the last block is always run; tapping it is free
        out = self.model.visual.forward_intermediates(
            images, indices=taps, output_fmt="NLC", normalize_intermediates=False
        )
        tapped = dict(zip(taps, out["image_intermediates"], strict=True))
        result = {f"block{b}": tapped[b] for b in blocks}
        if "embedding" in names:
            result["embedding"] = out["image_features"]
        if "final_tokens" in names:
            result["final_tokens"] = self.model.visual.ln_post(tapped[last])
        if "vv_tokens" in names:
            from fsas_bench.methods.finegrainedad.vv_attention import vv_patch_tokens  # lazy: methods import us

            result["vv_tokens"] = vv_patch_tokens(self.model.visual, images)
        for name in names:
            if name.startswith("window"):
                result[name] = self._encode_windows(images, sliding_windows(self.grid, int(name.removeprefix("window"))))
        return result

    def _encode_windows(self, images: Tensor, windows: Tensor) -> Tensor:
        """``B × n_windows × D`` embeddings of the windows (``n_windows × w`` patch indices)."""
        visual = self.model.visual
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        batch, n_windows = x.shape[0], windows.shape[0]
        select = torch.cat([torch.zeros(n_windows, 1, dtype=torch.long), windows + 1], dim=1).to(x.device)
        seq = x[:, select].flatten(0, 1)  # (B · n_windows) × (1 + w) × C
        seq = visual.transformer(visual.ln_pre(seq))
        pooled, _ = visual._pool(seq)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return pooled.view(batch, n_windows, -1)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """Raw (unnormalised) text embeddings ``T × D`` of ``prompts``; cached per prompt tuple."""
        key = tuple(prompts)
        if key not in self._text_cache:
            tokens = open_clip.get_tokenizer(self.arch)(list(key)).to(self.mean.device)
            self._text_cache[key] = self.model.encode_text(tokens)
        return self._text_cache[key]

    def _check_blocks(self, blocks: Sequence[int]) -> None:
        bad = [b for b in blocks if not 0 <= b < self.depth]
        if bad:
            raise UserError(
                f"block indices {bad} do not exist in {self.arch} (blocks 0..{self.depth - 1}): "
                "choose 0-based block indices within the backbone's depth"
            )


def load_backbone(
    arch: str, pretrained: str | None, device: str = "cpu", seed: int = 0, allow_random: bool = False
) -> ClipBackbone:
    """Build a frozen backbone from an open_clip tag or a local checkpoint file.

    Args:
        arch: open_clip architecture name (``fsas-tiny`` ships with fsas-bench).
        pretrained: a tag of weights shipped with fsas-bench (``fsas-synthetic`` for ``fsas-tiny``), an
            open_clip pretrained tag, path of a local checkpoint, or ``None``/``"none"`` for seeded random
            weights (only shipped configs, unless ``allow_random``).
        device: torch device string.
        seed: seed of the random initialisation (used only without pretrained weights).
        allow_random: permit random weights for upstream architectures (speed benchmarks).

    Raises:
        UserError: unknown architecture, unknown tag, unreadable/mismatched checkpoint, shipped weights whose
            SHA-256 is not the pinned one, weights that cannot be downloaded, or random weights requested for
            a real architecture.
    """
    if arch not in list_backbones():
        raise UserError(f"unknown backbone '{arch}': run 'fsas-bench list' to see the available architectures")
    register_shipped_configs()
    if pretrained in (None, "", "none"):
        if arch not in shipped_arches() and not allow_random:
            raise UserError(
                f"backbone '{arch}' has no weights: pass --pretrained with an open_clip tag "
                f"({_tags_hint(arch)}) or a local checkpoint file"
            )
        with torch.random.fork_rng(devices=[]), _quiet_root_logger():
            torch.manual_seed(seed)
            model = open_clip.create_model(arch, pretrained=None, device=device)
        return ClipBackbone(model, arch, RANDOM_WEIGHTS_LABEL, f"random-seed{seed}")
    if (shipped := shipped_weights(arch, pretrained)) is not None:
        return _load_shipped(arch, pretrained, *shipped, device)
    path = Path(pretrained).expanduser()
    if path.is_file():
        digest = sha256_file(path)
        try:
            model = open_clip.create_model(arch, pretrained=str(path), device=device)
        except Exception as err:  # open_clip raises RuntimeError/KeyError/pickle errors for bad files
            raise UserError(
                f"checkpoint '{path}' cannot be loaded as {arch} ({_first_line(err)}): "
                "pass a checkpoint of that architecture, or the matching --backbone"
            ) from None
        return ClipBackbone(model, arch, path.name, f"file-sha256:{digest}")
    if pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        looks_like_path = any(sep in pretrained for sep in ("/", "\\")) or path.suffix
        what = "checkpoint file does not exist" if looks_like_path else "is not a known pretrained tag"
        raise UserError(
            f"--pretrained '{pretrained}' {what} for {arch}: pass an existing checkpoint file or one of "
            f"the tags ({_tags_hint(arch)})"
        )
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    except Exception as err:  # download failures surface as RuntimeError from open_clip / huggingface_hub
        raise UserError(
            f"could not obtain the '{pretrained}' weights of {arch} ({_first_line(err)}): download the "
            "checkpoint on a machine with network access and pass the file with --pretrained PATH"
        ) from None
    return ClipBackbone(model, arch, pretrained, pretrained)


def _load_shipped(arch: str, tag: str, path: Path, pinned_sha256: str, device: str) -> ClipBackbone:
    """The packaged weights ``tag`` of ``arch``, after checking the file against its pinned SHA-256."""
    digest = sha256_file(path) if path.is_file() else "missing"
    if digest != pinned_sha256:
        raise UserError(
            f"the shipped '{tag}' weights of {arch} at '{path}' are corrupt or missing (SHA-256 {digest[:12]}, "
            f"expected {pinned_sha256[:12]}): reinstall fsas-bench"
        )
    model = open_clip.create_model(arch, pretrained=str(path), device=device)
    return ClipBackbone(model, arch, tag, f"file-sha256:{digest}")


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning: random weights are what was asked for (and recorded)."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _tags_hint(arch: str) -> str:
    tags = shipped_tags(arch) + open_clip.list_pretrained_tags_by_model(arch)
    return ", ".join(tags) if tags else "none known to open_clip"


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]

