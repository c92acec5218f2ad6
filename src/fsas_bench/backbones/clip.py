"""A frozen open_clip image/text encoder exposing what FSAS methods need.

Patch tokens are the raw residual stream after chosen blocks (before ``ln_post``, CLS token dropped),
read with upstream ``forward_intermediates``; the global embedding is the projected pooled token. Images
become inputs through a named :class:`Preprocess` variant (the default: a plain bicubic resize).
"""

from __future__ import annotations

import json
import logging
import socket
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
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
from fsas_bench.backbones.vv_attention import vv_patch_tokens
from fsas_bench.errors import UserError
from fsas_bench.hashing import sha256_file

RANDOM_WEIGHTS_LABEL = "none (random weights)"


BackboneFeatures = dict[str, Tensor]
"""Named features of one image (see :meth:`ClipBackbone.encode`)."""

RESIZE_RULES = ("resize", "resize_centercrop")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``--precision`` → the autocast dtype of the frozen backbone's forward passes (fp32: no autocast)."""
DEFAULT_PRECISION = "fp32"


@dataclass(frozen=True)
class Preprocess:
    """A named variant of the image → backbone-input preprocessing that a method may ask for; features of
    different variants never share cache entries (:meth:`ClipBackbone.variant_identity`).

    The steps, in order: optional square pre-resize, optional channel swap, resize to the input side S,
    ``ToTensor`` scaling and the backbone's normalisation.

    Attributes:
        resize: ``resize`` (straight bicubic S × S, fsas-bench's default) or ``resize_centercrop`` (bicubic
            resize of the shorter side to S, then the central S × S crop: torchvision ``Resize(S)`` +
            ``CenterCrop(S)`` on a PIL image, InCTRL's released transform).
        pre_resize: side of a square OpenCV bilinear (``INTER_LINEAR``) resize applied first, as the
            PromptAD/FineGrainedAD dataset loaders do (1024); 0 = none.
        bgr: reverse the channel order before the resize to S: the released PromptAD/FineGrainedAD test
            loop hands cv2's BGR array to PIL as if it were RGB.
    """

    resize: str = "resize"
    pre_resize: int = 0
    bgr: bool = False

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise UserError(f"preprocessing resize '{self.resize}' is unknown: use {' or '.join(RESIZE_RULES)}")
        if self.pre_resize < 0:
            raise UserError(f"pre_resize {self.pre_resize} is negative: use 0 (none) or a side in pixels such as 1024")

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The uint8 steps before the resize to S: RGB ``H × W × 3`` → pre-resized, channel-swapped array."""
        if self.pre_resize:
            image = cv2.resize(image, (self.pre_resize, self.pre_resize), interpolation=cv2.INTER_LINEAR)
        if self.bgr:
            image = np.ascontiguousarray(image[..., ::-1])
        return image

    @property
    def is_default(self) -> bool:
        """Whether this is fsas-bench's standard preprocessing (whose cache keys predate variants)."""
        return self == DEFAULT_PREPROCESS

    @property
    def id(self) -> str:
        """Stable identity of the variant (canonical JSON of its fields)."""
        return json.dumps(asdict(self), sort_keys=True)


DEFAULT_PREPROCESS = Preprocess()

PLAIN_FEATURES = ("embedding", "final_tokens", "vv_tokens")
"""The backbone's feature names without an index (defined in :meth:`ClipBackbone.encode`)."""
INDEXED_FEATURES = ("block", "released_tap", "window")
"""Feature kinds named ``<kind><i>``: a 0-based block index ``i`` (``block``, ``released_tap``) or a window side."""


def parse_feature(name: str) -> tuple[str, int | None]:
    """A feature name's kind and index: ``block3`` → ``("block", 3)``, ``embedding`` → ``("embedding", None)``.

    Raises:
        ValueError: for a name outside the vocabulary (indices are written canonically: ``block3``, never
            ``block03``), naming the vocabulary.
    """
    if name in PLAIN_FEATURES:
        return name, None
    for kind in INDEXED_FEATURES:
        index = name.removeprefix(kind)
        if index != name and index.isascii() and index.isdigit() and str(int(index)) == index:
            return kind, int(index)
    known = ", ".join([*PLAIN_FEATURES, *(f"{kind}<i>" for kind in INDEXED_FEATURES)])
    raise ValueError(f"unknown backbone feature '{name}': the backbone's features are {known}")


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


def short_side_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``(W, H)`` → ``(W', H')`` with the shorter side ``side`` and the longer scaled and truncated (torchvision
    ``Resize(side)``)."""
    width, height = size
    if width <= height:
        return side, int(side * height / width)
    return int(side * width / height), side


def crop_offsets(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``(left, top)`` of the central ``side × side`` crop of a ``(W, H)`` image, rounded as torchvision's
    ``CenterCrop``."""
    width, height = size
    return int(round((width - side) / 2.0)), int(round((height - side) / 2.0))


def center_crop(image: Image.Image, side: int) -> Image.Image:
    """The central ``side × side`` crop of ``image``."""
    left, top = crop_offsets(image.size, side)
    return image.crop((left, top, left + side, top + side))


@dataclass(frozen=True)
class InputTransform:
    """A backbone's image → input transform as plain data (picklable: DataLoader workers run it).

    Attributes:
        size: input side S.
        mean / std: per-channel normalisation of the backbone.
        variant: the preprocessing variant.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    variant: Preprocess = DEFAULT_PREPROCESS

    def __call__(self, image: np.ndarray) -> Tensor:
        """RGB uint8 ``H × W × 3`` → normalised ``3 × S × S`` float32 tensor."""
        size, variant = self.size, self.variant
        pil = Image.fromarray(variant.prepare(image))
        if variant.resize == "resize_centercrop":
            resized = center_crop(pil.resize(short_side_size(pil.size, size), Image.Resampling.BICUBIC), size)
        else:
            resized = pil.resize((size, size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)


class ClipBackbone(nn.Module):
    """A frozen open_clip model with fsas-bench's preprocessing and feature taps.

    Args:
        model: the open_clip CLIP model (put in eval mode, gradients off).
        arch: open_clip architecture name.
        pretrained: what the weights are, for result rows (tag, file name or the random-weights label).
        weights_id: identity of the weights for cache keys (tag, file SHA-256, or random seed).
        precision: a key of :data:`PRECISIONS`: the autocast dtype of every forward (fp32: none).
    """

    def __init__(self, model: nn.Module, arch: str, pretrained: str, weights_id: str,
                 precision: str = DEFAULT_PRECISION) -> None:  # fmt: skip
        super().__init__()
        check_precision(precision)
        self.precision = precision
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
        self._norm = (tuple(cfg["mean"]), tuple(cfg["std"]))
        self.preprocess_id = json.dumps(
            {"size": self.image_size, "resize": "bicubic-no-crop", "mean": cfg["mean"], "std": cfg["std"]},
            sort_keys=True,
        )
        self._text_cache: dict[tuple[str, ...], Tensor] = {}

    @property
    def identity(self) -> str:
        """Everything that determines an image's features apart from the image and the block (default
        preprocessing); the precision only when it is not fp32 (fp32 identities predate the option)."""
        base = [self.arch, self.weights_id, self.preprocess_id]
        return json.dumps(base if self.precision == DEFAULT_PRECISION else [*base, f"precision={self.precision}"])

    def variant_identity(self, variant: Preprocess = DEFAULT_PREPROCESS) -> str:
        """:attr:`identity` for images preprocessed with ``variant`` (the default variant: :attr:`identity`)."""
        if variant.is_default:
            return self.identity
        return json.dumps([*json.loads(self.identity), variant.id])

    def transform(self, variant: Preprocess = DEFAULT_PREPROCESS) -> InputTransform:
        """The picklable image → input transform of ``variant`` (see :class:`InputTransform`)."""
        return InputTransform(self.image_size, *self._norm, variant)

    def preprocess(self, image: np.ndarray, variant: Preprocess = DEFAULT_PREPROCESS) -> Tensor:
        """RGB uint8 ``H × W × 3`` → normalised ``3 × S × S`` float tensor, as ``variant`` says (default: plain
        bicubic resize, no crop)."""
        return self.transform(variant)(image)

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to the backbone's precision on its device (nothing for fp32)."""
        if self.precision == DEFAULT_PRECISION:
            yield
            return
        with torch.autocast(self.mean.device.type, dtype=PRECISIONS[self.precision]):
            yield

    @torch.no_grad()
    def encode(self, images: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Named float32 features of ``images`` ``B × 3 × S × S`` (each image's independent of the others in
        the batch on CPU, bitwise), computed under :meth:`autocast`; each name gives a ``B × ...`` tensor:

        - ``block{i}``: patch tokens after block i, raw residual stream, CLS dropped (``B × N × C``);
        - ``released_tap{i}``: what PromptAD's/FineGrainedAD's released forward hook on block i ends up holding
          (``B × N × C``): the hook keeps a view of the block output that block i + 1 then updates in place with
          its attention residual, so the tap is block i's output + block i + 1's (original-path) attention
          residual ``ls_1(attn(ln_1(x)))``, before its MLP; for the last block the plain output. Equal to the
          released tensor for models without layer scale (the released dual path skips ``ls_1``);
        - ``embedding``: the projected global image embedding (``B × D``), projected one row at a time (a
          batched matmul may round differently from a single-row one);
        - ``final_tokens``: patch tokens after the last block and ``ln_post``, before ``proj`` (``B × N × C``);
        - ``vv_tokens``: final patch tokens of the V-V ("CLIP Surgery") attention path after ``ln_post`` and
          ``proj`` (``B × N × D``; FineGrainedAD's text-matching tokens);
        - ``window{s}``: projected CLS embeddings of every s × s window (``B × n_windows × D``), each window
          encoded alone: CLS + its tokens (after positional embedding) through ``ln_pre``, the transformer,
          ``ln_post`` and ``proj`` (WinCLIP).
        """
        with self.autocast():
            result = self._encode(images.to(self.mean.device), names)
        return {name: t.float() for name, t in result.items()}

    def _encode(self, images: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """:meth:`encode` in the ambient precision."""
        features = [parse_feature(n) for n in names]
        blocks = sorted({i for kind, i in features if kind == "block"})
        released = sorted({i for kind, i in features if kind == "released_tap"})
        self._check_blocks(blocks + released)
        last = self.depth - 1
        taps = sorted(set(blocks) | set(released) | {last})  # the last block is always run; tapping it is free
        visual = self.model.visual
        out = visual.forward_intermediates(images, indices=taps, output_fmt="NLC", normalize_intermediates=False,
                                           intermediates_only=True, output_extra_tokens=True)  # fmt: skip
        tapped = dict(zip(taps, out["image_intermediates"], strict=True))
        cls = dict(zip(taps, out["image_intermediates_prefix"], strict=True))
        result = {f"block{b}": tapped[b] for b in blocks}
        result |= {f"released_tap{b}": self._released_tap(b, cls[b], tapped[b]) for b in released}
        if "embedding" in names:
            pooled, _ = visual._pool(torch.cat([cls[last], tapped[last]], dim=1))
            rows = pooled.split(1)
            result["embedding"] = torch.cat([r @ visual.proj for r in rows]) if visual.proj is not None else pooled
        if "final_tokens" in names:
            result["final_tokens"] = self.model.visual.ln_post(tapped[last])
        if "vv_tokens" in names:
            result["vv_tokens"] = vv_patch_tokens(self.model.visual, images)
        for name, (kind, scale) in zip(names, features):
            if kind == "window":
                result[name] = self._encode_windows(images, sliding_windows(self.grid, scale))
        return result

    def _released_tap(self, block: int, cls: Tensor, tokens: Tensor) -> Tensor:
        """Block ``block``'s ``B × N × C`` output ``tokens`` (its ``B × 1 × C`` CLS apart) plus the attention
        residual the next block adds to it (see ``released_tap`` in :meth:`encode`)."""
        if block == self.depth - 1:
            return tokens
        transformer = self.model.visual.transformer
        nxt = transformer.resblocks[block + 1]
        x = torch.cat([cls, tokens], dim=1)
        x = x if transformer.batch_first else x.transpose(0, 1)
        residual = nxt.ls_1(nxt.attention(q_x=nxt.ln_1(x)))
        residual = residual if transformer.batch_first else residual.transpose(0, 1)
        return tokens + residual[:, 1:]

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
            with self.autocast():
                self._text_cache[key] = self.model.encode_text(tokens).float()
        return self._text_cache[key]

    def check_features(self, names: Sequence[str]) -> None:
        """UserError (checked before a sweep) for a name outside the vocabulary (:func:`parse_feature`), a tap
        of a block the backbone does not have, or a window side that is 0 or larger than the patch grid."""
        try:
            features = [parse_feature(n) for n in names]
        except ValueError as err:
            raise UserError(str(err)) from None
        self._check_blocks([i for kind, i in features if kind in ("block", "released_tap")])
        side = min(self.grid)
        bad = sorted({i for kind, i in features if kind == "window" and not 1 <= i <= side})
        if bad:
            raise UserError(
                f"window sides {bad} do not fit the {self.grid[0]}×{self.grid[1]} patch grid of {self.arch}: "
                f"choose window scales between 1 and {side} (e.g. --set winclip.scales=2,3)"
            )

    def _check_blocks(self, blocks: Sequence[int]) -> None:
        bad = [b for b in blocks if not 0 <= b < self.depth]
        if bad:
            raise UserError(
                f"block indices {bad} do not exist in {self.arch} (blocks 0..{self.depth - 1}): "
                "choose 0-based block indices within the backbone's depth"
            )


def check_precision(precision: str) -> None:
    """UserError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision '{precision}' is unknown: use one of {', '.join(PRECISIONS)}")


def check_device_precision(device: str, precision: str) -> None:
    """UserError unless ``precision`` is known and ``device`` can run it: bf16 autocast on a CUDA device needs
    bf16 support (the check :func:`torch.autocast` makes at the first forward, made before a sweep writes)."""
    check_precision(precision)
    if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"--precision bf16 is not supported by the GPU of --device {device}: use --precision fp16 or fp32"
        )


def load_backbone(
    arch: str, pretrained: str | None, device: str = "cpu", seed: int = 0, allow_random: bool = False,
    precision: str = DEFAULT_PRECISION,
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
        precision: the autocast precision of the backbone's forwards (see :data:`PRECISIONS`).

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
        return ClipBackbone(model, arch, RANDOM_WEIGHTS_LABEL, f"random-seed{seed}", precision)
    if (shipped := shipped_weights(arch, pretrained)) is not None:
        return _load_shipped(arch, pretrained, *shipped, device, precision)
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
        return ClipBackbone(model, arch, path.name, f"file-sha256:{digest}", precision)
    if pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        looks_like_path = any(sep in pretrained for sep in ("/", "\\")) or path.suffix
        what = "checkpoint file does not exist" if looks_like_path else "is not a known pretrained tag"
        raise UserError(
            f"--pretrained '{pretrained}' {what} for {arch}: pass an existing checkpoint file or one of "
            f"the tags ({_tags_hint(arch)})"
        )
    try:
        with _download_quietly() as offline:
            model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    except Exception as err:  # download failures surface as RuntimeError from open_clip / huggingface_hub
        reason = f"{offline}, and they are not in the local cache" if offline else _first_line(err)
        raise UserError(
            f"could not obtain the '{pretrained}' weights of {arch} ({reason}): download the "
            "checkpoint on a machine with network access and pass the file with --pretrained PATH"
        ) from None
    return ClipBackbone(model, arch, pretrained, pretrained, precision)


def _load_shipped(arch: str, tag: str, path: Path, pinned_sha256: str, device: str, precision: str) -> ClipBackbone:
    """The packaged weights ``tag`` of ``arch``, after checking the file against its pinned SHA-256."""
    digest = sha256_file(path) if path.is_file() else "missing"
    if digest != pinned_sha256:
        raise UserError(
            f"the shipped '{tag}' weights of {arch} at '{path}' are corrupt or missing (SHA-256 {digest[:12]}, "
            f"expected {pinned_sha256[:12]}): reinstall fsas-bench"
        )
    model = open_clip.create_model(arch, pretrained=str(path), device=device)
    return ClipBackbone(model, arch, tag, f"file-sha256:{digest}", precision)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning: random weights are what was asked for (and recorded)."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextmanager
def _download_quietly() -> Iterator[str]:
    """Fetch open_clip weights without log output, from the local cache only when the hub is unreachable.

    huggingface_hub otherwise retries an unreachable hub for about a minute per file and logs every try. Yields
    why only the cache is used (``""`` when the hub is used).
    """
    import huggingface_hub.constants as hub

    offline = hub.HF_HUB_OFFLINE
    reason = "HF_HUB_OFFLINE is set" if offline else _unreachable(hub.ENDPOINT)
    hub.HF_HUB_OFFLINE = bool(reason)
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield reason
    finally:
        logging.disable(logging.NOTSET)
        hub.HF_HUB_OFFLINE = offline


def _unreachable(endpoint: str, timeout: float = 3.0) -> str:
    """Why ``endpoint`` cannot be reached (one TCP connection attempt), ``""`` when it can."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return f"{url.hostname} cannot be reached"
    return ""


def _tags_hint(arch: str) -> str:
    tags = shipped_tags(arch) + open_clip.list_pretrained_tags_by_model(arch)
    return ", ".join(tags) if tags else "none known to open_clip"


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]

