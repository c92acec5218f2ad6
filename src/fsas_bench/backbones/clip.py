"""A frozen open_clip image/text encoder exposing what FSAS methods need.

Patch tokens are the raw residual stream after chosen blocks (before ``ln_post``, CLS token dropped),
read with upstream ``forward_intermediates``; the global embedding is the projected pooled token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from torch import Tensor, nn

from fsas_bench.backbones.registry import list_backbones, register_shipped_configs, shipped_arches
from fsas_bench.errors import UserError
from fsas_bench.hashing import sha256_file

RANDOM_WEIGHTS_LABEL = "none (random weights)"


@dataclass(frozen=True)
class BackboneFeatures:
    """Features of one image.

    Attributes:
        tokens: block index → patch tokens, ``N × C`` (N = grid cells, row-major).
        embedding: the projected global image embedding, ``D``.
    """

    tokens: dict[int, Tensor]
    embedding: Tensor


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
    def encode_images(self, images: Tensor, blocks: Sequence[int]) -> tuple[dict[int, Tensor], Tensor]:
        """Patch tokens of ``blocks`` (each ``B × N × C``) and global embeddings (``B × D``) of ``images`` ``B × 3 × S × S``."""
        self._check_blocks(blocks)
        out = self.model.visual.forward_intermediates(
            images.to(self.mean.device), indices=list(blocks), output_fmt="NLC", normalize_intermediates=False
        )
        tokens = dict(zip(sorted(set(blocks)), out["image_intermediates"], strict=True))
        return tokens, out["image_features"]

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
        pretrained: open_clip pretrained tag, path of a local checkpoint, or ``None``/``"none"`` for
            seeded random weights (only shipped configs, unless ``allow_random``).
        device: torch device string.
        seed: seed of the random initialisation (used only without pretrained weights).
        allow_random: permit random weights for upstream architectures (speed benchmarks).

    Raises:
        UserError: unknown architecture, unknown tag, unreadable/mismatched checkpoint, weights that cannot
            be downloaded, or random weights requested for a real architecture.
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
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(arch, pretrained=None, device=device)
        return ClipBackbone(model, arch, RANDOM_WEIGHTS_LABEL, f"random-seed{seed}")
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


def _tags_hint(arch: str) -> str:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    return ", ".join(tags) if tags else "none known to open_clip"


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]

