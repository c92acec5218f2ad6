"""InCTRL as a registered LightningModule: trained once per (auxiliary dataset, seed, k), scored against the
k prompts of each target category, with the "InCTRL-Mx" pixel-map extension (specs/inctrl.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from fsas_bench.backbones import BackboneFeatures, FeatureCache, Preprocess
from fsas_bench.data.index import DatasetIndex
from fsas_bench.errors import UserError
from fsas_bench.methods.base import QUERY, SUPPORT, FewShotMethod, MethodOutput
from fsas_bench.methods.inctrl.config import InCTRLConfig
from fsas_bench.methods.inctrl.episodes import BalancedEpisodes
from fsas_bench.methods.inctrl.released import load_released
from fsas_bench.methods.inctrl.torch_model import HEAD_DTYPES, InCTRLInputs, InCTRLModel, inctrl_loss
from fsas_bench.methods.ops import uncrop_maps
from fsas_bench.methods.registry import register_method
from fsas_bench.methods.text import (
    ANOMALOUS_STATES, NORMAL_STATES, WINCLIP_TEMPLATES, class_name, sentences, text_prototypes,
)  # fmt: skip
from fsas_bench.trainer import quiet_trainer, quiet_warnings

CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", "animal")


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
        self.input = self.input_variants(config)[QUERY]
        backbone = cache.backbone
        self.blocks = config.taps(backbone.depth)
        embed_dim = backbone.model.visual.output_dim
        self.model = InCTRLModel(embed_dim, backbone.grid, backbone.image_size, config.map_sigma, config.pixel_map)
        self.model.to(HEAD_DTYPES[config.head_dtype])
        # the current category's prompts and text prototypes: buffers (they follow the device), not checkpointed
        self.register_buffer("prompt_tokens", torch.empty(0), persistent=False)
        self.register_buffer("prompt_embeddings", torch.empty(0), persistent=False)
        self.register_buffer("category_text", torch.empty(0), persistent=False)
        self._text: dict[str, Tensor] = {}

    @classmethod
    def feature_names(cls, config: InCTRLConfig, depth: int) -> list[str]:
        return [*(f"block{b}" for b in config.taps(depth)), "embedding"]

    @classmethod
    def input_variants(cls, config: InCTRLConfig) -> dict[str, Preprocess]:
        variant = Preprocess(resize=config.preprocess)  # queries and prompts alike
        return {QUERY: variant, SUPPORT: variant}

    # --- evaluation -------------------------------------------------------------------------------------

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        feats = self.support_features(batches, self.names, self.input)
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
        feats = self.features(batch, self.names, variant=self.input)
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
        seed = int(torch.randint(2**62, ()).item())

        def episodes() -> BalancedEpisodes:
            generator = torch.Generator().manual_seed(seed)
            return BalancedEpisodes(pool, shot, config.batch_size, config.steps_per_epoch, config.exclude_self_prompt,
                                    generator)  # fmt: skip

        self.encode_ahead(episodes().drawn_samples(config.epochs), self.names, self.input)
        trainer = quiet_trainer(self.cache.backbone.mean.device, max_epochs=config.epochs)
        self.train()
        with quiet_warnings():
            trainer.fit(self, train_dataloaders=DataLoader(episodes(), batch_size=None))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.episode_loss(batch)
        self.loss_history.append(float(loss.detach()))
        return loss

    def episode_loss(self, batch: dict[str, Any]) -> Tensor:
        """The loss of one training batch of :class:`BalancedEpisodes`."""
        queries = self.features(batch["query"], self.names, prefetch=False, variant=self.input)
        prompts = self.features(batch["prompts"], self.names, prefetch=False, variant=self.input)
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
            normal, anomalous = prompt_sentences(class_name(category, self.config.class_names))
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


def prompt_sentences(object_name: str) -> tuple[list[str], list[str]]:
    """InCTRL's text-prior sentences: WinCLIP's 7 + 4 states × 22 templates, or for CIFAR-10 class names and
    "animal" the single pair "a photo of {c} for anomaly detection." / "a photo without {c} for anomaly detection."."""
    if object_name in CIFAR_NAMES:
        normal, anomalous = f"a photo of {object_name}", f"a photo without {object_name}"
        return [f"{normal} for anomaly detection."], [f"{anomalous} for anomaly detection."]
    templates = WINCLIP_TEMPLATES["winclip22"]
    return sentences(object_name, NORMAL_STATES, templates), sentences(object_name, ANOMALOUS_STATES, templates)
