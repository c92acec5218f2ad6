"""InCTRL as a registered LightningModule: trained once per (auxiliary dataset, seed, k), scored against the
k prompts of each target category, with the "InCTRL-Mx" pixel-map extension (specs/inctrl.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from fsas_bench.backbones import BackboneFeatures, FeatureCache, Preprocess
from fsas_bench.backbones.clip import RESIZE_RULES
from fsas_bench.data.index import DatasetIndex
from fsas_bench.errors import UserError
from fsas_bench.methods.base import (
    NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, FewShotMethod, Limit, MethodConfig, MethodOutput,
)  # fmt: skip
from fsas_bench.methods.inctrl.episodes import BalancedEpisodes
from fsas_bench.methods.inctrl.released import load_released
from fsas_bench.methods.inctrl.torch_model import (
    HEAD_DTYPES, LOSSES, PIXEL_MAPS, InCTRLInputs, InCTRLModel, inctrl_loss, text_prototypes,
)  # fmt: skip
from fsas_bench.methods.ops import uncrop_maps
from fsas_bench.methods.registry import register_method
from fsas_bench.trainer import quiet_trainer, quiet_warnings
from fsas_bench.methods.winclip.prompts import prompt_ensemble

PAPER_BLOCKS = (7, 9, 11)
"""The 1-indexed blocks of the 12-block ViT-B-16-plus-240 whose patch tokens InCTRL compares."""
CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", "animal")


@dataclass(frozen=True)
class InCTRLConfig(MethodConfig):
    """InCTRL settings (recorded in ``method_cfg_hash``; benchmark defaults = the released training recipe).

    Attributes:
        blocks: 0-based block taps; empty = :func:`default_blocks` ((6, 8, 10) for 12 blocks).
        epochs: training epochs (10 as released; 6 = the checkpoint the authors picked).
        steps_per_epoch: batches per epoch (100).
        batch_size: queries per batch, half normal and half anomalous (16).
        lr: AdamW learning rate (1e-3; betas (0.9, 0.999)).
        weight_decay: AdamW weight decay (PyTorch's default 0.01, as released).
        loss: ``official`` (focal-with-logits on probabilities, as trained) or ``bce_prob`` (ablation).
        exclude_self_prompt: never give a normal training query itself as a prompt (ablation; released: may).
        pixel_map: ``Mx`` (M upsampled, default extension) or ``holistic`` (M + s_i + s_a upsampled, extension).
        map_sigma: Gaussian smoothing of the map in pixels of the backbone's input frame (4 at 240 px).
        class_names: ``(category, object name)`` overrides of the text prior; default: underscores → spaces.
        preprocess: ``resize`` (straight S × S) or ``resize_centercrop`` (released: shorter side to S, centre
            S × S crop, for training, prompts and queries). With the crop the pixel map covers only the crop; it
            is mapped back onto the whole image and pixels outside the crop score the map's minimum
            (:func:`~fsas_bench.methods.ops.uncrop_maps`; the released code has no pixel evaluation).
        checkpoint: a released ``.pyth`` checkpoint whose ψ, η, φ replace the auxiliary training (``{k}`` in
            the path = the shot count, the released models being per k); empty = train (default).
        head_dtype: dtype of ψ, η, φ and their inputs in training and scoring: ``float64`` (benchmark default) or
            ``float32`` (as released; faithful). The Linear bias in front of ReLU → BatchNorm has a gradient that is
            exactly zero for a unit active on every query of the batch (BatchNorm removes any shift), but in
            float32 it is rounding noise (~1e-9), which Adam (eps 1e-8) normalises into ±lr steps of random
            sign: training then depends chaotically on the CPU kernels and thread count. In float64 the noise
            stays far below eps. Same computation in exact arithmetic; M (the pixel map) is unaffected.
    """

    blocks: tuple[int, ...] = ()
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    loss: str = "official"
    exclude_self_prompt: bool = False
    pixel_map: str = "Mx"
    map_sigma: float = 4.0
    class_names: tuple[tuple[str, str], ...] = ()
    preprocess: str = "resize"
    checkpoint: str = ""
    head_dtype: str = "float64"
    limits: ClassVar[dict[str, Limit]] = {
        "blocks": NON_NEGATIVE_INT.each(), "epochs": POSITIVE_INT, "steps_per_epoch": POSITIVE_INT,
        "batch_size": POSITIVE_INT, "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "map_sigma": NON_NEGATIVE,
    }  # fmt: skip

    @classmethod
    def faithful(cls, **changes: object) -> InCTRLConfig:
        """The released code's settings: its Resize + CenterCrop input and float32 heads (the recipe is the
        default)."""
        return cls(**{"mode": "faithful", "preprocess": "resize_centercrop", "head_dtype": "float32", **changes})

    @classmethod
    def faithful_preset(cls, dataset: str) -> InCTRLConfig:
        return cls.faithful()

    @classmethod
    def for_dataset(cls, dataset: str) -> MethodConfig:
        """The embedded synthetic sets train 2 epochs × 15 steps of 32 queries (CPU budget; the same 960 queries
        as 30 steps of 16, but 16 + 16 per batch: with 8 + 8 the BatchNorm statistics and Adam steps at lr 1e-3
        made training amplify float rounding ~1e4-fold, see benchmarks/embedded_stability.py); real datasets
        the full released recipe."""
        if dataset.startswith("synthetic"):
            return cls(epochs=2, steps_per_epoch=15, batch_size=32)
        return cls()


@register_method
class InCTRL(FewShotMethod):
    """InCTRL (Zhu & Pang, CVPR 2024): in-context residual learning with few-shot normal prompts."""

    name = "inctrl"
    fit_scope = "auxiliary"
    config_cls = InCTRLConfig
    auxiliary_datasets = {"synthetic": "synthetic-aux", "mvtec": "visa", "*": "mvtec"}
    trains_per_shot = True

    def __init__(self, config: InCTRLConfig, cache: FeatureCache) -> None:
        super().__init__(config, cache)
        self.require_choice("loss", LOSSES)
        self.require_choice("pixel_map", PIXEL_MAPS)
        self.require_choice("preprocess", RESIZE_RULES)
        self.input = Preprocess(resize=config.preprocess)
        self.require_choice("head_dtype", tuple(HEAD_DTYPES))
        backbone = cache.backbone
        self.blocks = config.blocks or default_blocks(backbone.depth)
        self.feature_names = [*(f"block{b}" for b in self.blocks), "embedding"]
        embed_dim = backbone.model.visual.output_dim
        self.model = InCTRLModel(embed_dim, backbone.grid, backbone.image_size, config.map_sigma, config.pixel_map)
        self.model.to(HEAD_DTYPES[config.head_dtype])
        # the current category's prompts and text prototypes: buffers (they follow the device), not checkpointed
        self.register_buffer("prompt_tokens", torch.empty(0), persistent=False)
        self.register_buffer("prompt_embeddings", torch.empty(0), persistent=False)
        self.register_buffer("category_text", torch.empty(0), persistent=False)
        self._text: dict[str, Tensor] = {}

    # --- evaluation -------------------------------------------------------------------------------------

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        feats = [f for batch in batches for f in self.features(batch, self.feature_names, variant=self.input)]
        if not feats:
            raise UserError("inctrl needs at least one prompt image: use --shots 1 or more")
        self.prompt_tokens = _pool_prompts(self._tokens(feats)).to(self.device)
        self.prompt_embeddings = self._embeddings(feats).to(self.device)
        self.category_text = self.class_prototypes(category)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        out = self.model(self.query_inputs(batch))
        maps = self.model.anomaly_maps(out)
        if self.input.resize == "resize_centercrop":
            maps = uncrop_maps(maps, [_image_size(Path(p)) for p in batch["path"]])
        return MethodOutput(anomaly_maps=maps.float().cpu(), image_scores=out.score.float().cpu())

    def query_inputs(self, batch: dict[str, Any]) -> InCTRLInputs:
        """Model inputs of a query batch against the current category's prompts (shared, not copied)."""
        feats = self.features(batch, self.feature_names, variant=self.input)
        return InCTRLInputs(
            query_tokens=self._tokens(feats).to(self.device),
            prompt_tokens=self.prompt_tokens[None],
            query_embedding=self._embeddings(feats).to(self.device),
            prompt_embeddings=self.prompt_embeddings[None],
            text_prototypes=self.category_text[None],
        )

    # --- auxiliary training -----------------------------------------------------------------------------

    def fit_auxiliary(self, auxiliary: DatasetIndex, target: DatasetIndex, shot: int) -> None:
        """Train ψ, η, φ on the whole auxiliary set (train + test, image labels) with ``shot`` prompts per query;
        ``target`` is never read. Draws come from a generator seeded from the (runner-seeded) torch RNG. With
        ``checkpoint`` set, ψ, η, φ are loaded from the released file instead (no training)."""
        if shot < 1:
            raise UserError("inctrl trains one model per shot count k ≥ 1: use --shots 1 or more")
        config = self.config
        if config.checkpoint:  # the released weights stand in for training
            load_released(self.model, Path(config.checkpoint.replace("{k}", str(shot))))
            return
        pool = [s for c in auxiliary.categories for split in ("train", "test") for s in auxiliary.split(c, split)]
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))
        episodes = BalancedEpisodes(
            pool, shot, config.batch_size, config.steps_per_epoch, config.exclude_self_prompt, generator
        )
        trainer = quiet_trainer(self.cache.backbone.mean.device, max_epochs=config.epochs)
        self.train()
        with quiet_warnings():
            trainer.fit(self, train_dataloaders=DataLoader(episodes, batch_size=None))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.episode_loss(batch)
        self.loss_history.append(float(loss.detach()))
        return loss

    def episode_loss(self, batch: dict[str, Any]) -> Tensor:
        """The loss of one training batch of :class:`BalancedEpisodes`."""
        queries = self.features(batch["query"], self.feature_names, prefetch=False, variant=self.input)
        prompts = self.features(batch["prompts"], self.feature_names, prefetch=False, variant=self.input)
        n, shot = len(queries), len(prompts) // len(queries)
        tokens = self._tokens(prompts)
        inputs = InCTRLInputs(
            query_tokens=self._tokens(queries).to(self.device),
            prompt_tokens=_pool_prompts(tokens.view(n, shot, *tokens.shape[1:])).to(self.device),
            query_embedding=self._embeddings(queries).to(self.device),
            prompt_embeddings=self._embeddings(prompts).view(n, shot, -1).to(self.device),
            text_prototypes=torch.stack([self.class_prototypes(c) for c in batch["category"]]),
        )
        return inctrl_loss(self.model(inputs), batch["label"].to(self.device), self.config.loss)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.model.parameters(), lr=self.config.lr, betas=(0.9, 0.999), weight_decay=self.config.weight_decay
        )

    # --- features ---------------------------------------------------------------------------------------

    def class_prototypes(self, category: str) -> Tensor:
        """``2 × D`` unit prototypes (t_n, t_a) of a category's object name, encoded once per category."""
        if category not in self._text:
            name = dict(self.config.class_names).get(category, category.replace("_", " "))
            normal, anomalous = prompt_sentences(name)
            encode = self.cache.backbone.encode_text
            self._text[category] = text_prototypes(encode(normal), encode(anomalous)).float()
        return self._text[category].to(self.device)

    def _tokens(self, feats: list[BackboneFeatures]) -> Tensor:
        """``n × L × N × C`` patch tokens of the tapped blocks."""
        tokens = torch.stack([f[f"block{b}"] for f in feats for b in self.blocks])
        return tokens.view(len(feats), len(self.blocks), *tokens.shape[1:])

    @staticmethod
    def _embeddings(feats: list[BackboneFeatures]) -> Tensor:
        return torch.stack([f["embedding"] for f in feats])


def _image_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` of the image file (header only)."""
    with Image.open(path) as image:
        return image.size


def _pool_prompts(tokens: Tensor) -> Tensor:
    """``... × K × L × N × C`` prompt tokens → ``... × L × (K·N) × C`` (all prompt patches per block)."""
    return tokens.transpose(-4, -3).flatten(-3, -2)


def default_blocks(depth: int) -> tuple[int, ...]:
    """InCTRL's taps scaled by depth: the 1-indexed blocks ⌈b·depth/12⌉ for b in (7, 9, 11), 0-based.

    12 blocks → (6, 8, 10) exactly as released; 6 blocks (``fsas-tiny``) → (3, 4, 5); 24 blocks → (13, 17, 21).
    """
    return tuple(math.ceil(b * depth / 12) - 1 for b in PAPER_BLOCKS)


def prompt_sentences(object_name: str) -> tuple[list[str], list[str]]:
    """InCTRL's text-prior sentences: WinCLIP's 7 + 4 states × 22 templates, or for CIFAR-10 class names and
    "animal" the single pair "a photo of {c} for anomaly detection." / "a photo without {c} for anomaly detection."."""
    if object_name in CIFAR_NAMES:
        normal, anomalous = f"a photo of {object_name}", f"a photo without {object_name}"
        return [f"{normal} for anomaly detection."], [f"{anomalous} for anomaly detection."]
    return prompt_ensemble(object_name, "winclip22")
