"""FineGrainedAD as a registered LightningModule (``fit_scope = per_category``): prompts are trained on the k
shots of each category inside :meth:`set_support`, then queries are scored (spec §14). PromptAD subclasses it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from fsas_bench.backbones import FeatureCache, Preprocess
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.files import atomic_write_text
from fsas_bench.methods.base import QUERY, SUPPORT, FewShotMethod, MethodOutput
from fsas_bench.methods.finegrainedad.captions import (
    SHIPPED_FILES, CaptionRecord, Vocabularies, load_caption_file, template_record, vocabularies,
)  # fmt: skip
from fsas_bench.methods.finegrainedad.config import FineGrainedADConfig
from fsas_bench.methods.finegrainedad.hires import hires_vv_tokens
from fsas_bench.methods.finegrainedad.losses import total_loss
from fsas_bench.methods.finegrainedad.prompt_learner import FamilyFeatures, PromptLearner
from fsas_bench.methods.finegrainedad.prompts import build_families, rendered_strings
from fsas_bench.methods.finegrainedad.regions import region_weights
from fsas_bench.methods.finegrainedad.torch_model import FineGrainedADScorer, QueryFormer
from fsas_bench.methods.registry import register_method
from fsas_bench.names import child_path
from fsas_bench.trainer import quiet_trainer, quiet_warnings

QFORMER_DTYPES = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "16-mixed": torch.float16}
"""The dtype the released Q-Former is built (and its initialisation drawn) in, per training precision."""


@register_method
class FineGrainedAD(FewShotMethod):
    """FineGrainedAD (Fan et al., Pattern Recognition 2026): multi-level soft prompts aligned with image
    regions, fused with a visual memory bank of the shots."""

    name = "finegrainedad"
    fit_scope = "per_category"
    config_cls = FineGrainedADConfig

    def __init__(self, config: FineGrainedADConfig, cache: FeatureCache) -> None:
        super().__init__(config, cache)
        self.blocks = config.taps(cache.backbone.depth)
        self.tap_names = self.names[: len(self.blocks)]
        variants = self.input_variants(config)
        self.shot_input, self.query_input = variants[SUPPORT], variants[QUERY]
        self.scorer = FineGrainedADScorer(config.output_size, config.map_sigma, config.harmonic_eps)
        self.learner: PromptLearner | None = None
        self.cls_learner: PromptLearner | None = None
        self.qformer: QueryFormer | None = None
        self.train_seed = config.seed
        self.cls_loss_history: list[float] = []
        self._shot_tokens = torch.empty(0)
        self._shot_embeddings = torch.empty(0)
        self._regions: Tensor | None = None
        self._fitting: tuple[PromptLearner, Callable[[], dict[str, Tensor]], list[float]] | None = None

    @classmethod
    def feature_names(cls, config: FineGrainedADConfig, depth: int) -> list[str]:
        """The memory taps (``block{i}`` or ``released_tap{i}``), then ``embedding`` and ``vv_tokens``."""
        kind = "block" if config.memory_tap == "block" else "released_tap"
        return [*(f"{kind}{b}" for b in config.taps(depth)), "embedding", "vv_tokens"]

    @classmethod
    def input_variants(cls, config: FineGrainedADConfig) -> dict[str, Preprocess]:
        """Both pre-resized as the released loaders do; queries channel-swapped with the test loop's quirk."""
        return {QUERY: Preprocess(pre_resize=config.pre_resize, bgr=config.query_bgr_quirk),
                SUPPORT: Preprocess(pre_resize=config.pre_resize)}  # fmt: skip

    @property
    def tau(self) -> Tensor:
        """The raw ``logit_scale`` parameter (about ln 100 for CLIP), used without ``exp`` as released."""
        return self.cache.backbone.model.logit_scale.detach()

    # --- per-category training -------------------------------------------------------------------------

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        feats = self.support_features(batches, self.names, self.shot_input)
        config = self.config
        self.train_seed = config.seed if config.seed >= 0 else torch.initial_seed()
        record, vocab = self.caption_record(category, batches)
        device = self.cache.backbone.mean.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.train_seed)
            families = build_families(record, vocab, config.mfsc_levels, self.train_seed, config.n_pro, config.n_pro_ab)
            self.learner = self.prompt_learner(families, config.n_pro).to(device)
            self.qformer = None
            if len(families) > 1 and config.qformer == "random_frozen":
                dtype = QFORMER_DTYPES.get(config.precision, torch.float32)
                qformer = QueryFormer(len(families), self.cache.backbone.model.visual.output_dim, dtype=dtype)
                self.qformer = qformer.float().to(device).requires_grad_(False)
            self._shot_tokens = F.normalize(torch.stack([f["vv_tokens"] for f in feats]), dim=-1).to(device)
            self._log_prompts(category, record, families, len(feats))
            self.cls_learner = None
            if self.reference_fit is not None:  # the prompts of an earlier fit: no training
                if config.image_score == "cls_prompts":
                    self.cls_learner = self.cls_prompt_learner(record, vocab).to(device)
                self.load_fitted_state(self.reference_fit)
            else:
                self._regions = None
                if config.mfsc_levels == "full":
                    self._regions = self.region_maps(batches, torch.Generator().manual_seed(self.train_seed))
                self.loss_history = []
                self._fit(self.learner, self.losses, self.loss_history)
                if config.image_score == "cls_prompts":
                    self._fit_cls_prompts(record, vocab, torch.stack([f["embedding"] for f in feats]).to(device))
        memory = [torch.cat([f[name] for f in feats]).to(device) for name in self.tap_names]
        image_candidates = self.candidates(self.cls_learner) if self.cls_learner is not None else None
        self.scorer.set_state(memory, *self.candidates(self.learner), self.tau, image_candidates)

    def prompt_learner(self, families: list, n_pro: int) -> PromptLearner:
        """A fresh prompt learner of ``families`` with ``n_pro`` normal contexts (draws its initialisation)."""
        config, backbone = self.config, self.cache.backbone
        return PromptLearner(
            backbone.model, backbone.arch, families, config.n_ctx, config.n_ctx_ab, n_pro, config.n_pro_ab,
            config.candidate_overflow,
        )  # fmt: skip

    def cls_prompt_learner(self, record: CaptionRecord, vocab: Vocabularies) -> PromptLearner:
        """A fresh learner of PromptAD's image-score prompts (class-name family, ``n_pro_cls`` normal contexts)."""
        config = self.config
        families = build_families(record, vocab, "none", self.train_seed, config.n_pro_cls, config.n_pro_ab)
        return self.prompt_learner(families, config.n_pro_cls)

    def _fit_cls_prompts(self, record: CaptionRecord, vocab: Vocabularies, embeddings: Tensor) -> None:
        """PromptAD's separate image-score prompts (``train_cls.py``): a fresh run from the train seed with
        ``n_pro_cls`` normal contexts, trained on the ``k × D`` global embeddings of the shots."""
        torch.manual_seed(self.train_seed)  # the released CLS training is its own seeded run
        self.cls_learner = self.cls_prompt_learner(record, vocab).to(embeddings.device)
        self._shot_embeddings = F.normalize(embeddings, dim=-1)
        self.cls_loss_history = []
        self._fit(self.cls_learner, self.cls_losses, self.cls_loss_history)

    def caption_record(self, category: str, batches: list[dict[str, Any]]) -> tuple[CaptionRecord, Vocabularies]:
        """The category's MFSC record and the file's vocabularies. A category the file lacks gets a template
        record, and then the vocabularies come from every shipped file plus that record."""
        records = load_caption_file(self.config.captions) if self.config.captions else {}
        if category not in records:
            records = {c: r for name in SHIPPED_FILES for c, r in load_caption_file(name).items()} | records
            shots = [read_image_rgb(Path(p)) for batch in batches for p in batch["path"]]
            records = {**records, category: template_record(category, shots)}
        return records[category], vocabularies(records)

    def region_maps(self, batches: list[dict[str, Any]], generator: torch.Generator) -> Tensor:
        """``(E + 1) × k × N`` MLSA maps from the initial (untrained) prompts (spec §6)."""
        assert self.learner is not None
        with torch.no_grad():
            families = self.learner()
        backbone = self.cache.backbone
        hires = torch.stack([
            hires_vv_tokens(backbone, Path(path), sha, self.config.hires_factor, self.shot_input)
            for batch in batches for path, sha in zip(batch["path"], batch["sha"], strict=True)
        ])  # fmt: skip
        entity_text = torch.stack([f.normal for f in families[1:-1]]).cpu()
        return region_weights(
            F.normalize(hires, dim=-1), entity_text, families[-1].normal.cpu(), self.config.hires_factor, generator,
            self.config.mlsa_regions,
        ).to(self._shot_tokens.device)

    def _fit(self, learner: PromptLearner, objective: Callable[[], dict[str, Tensor]], history: list[float]) -> None:
        """The released schedule on the k shots: one SGD step per epoch on ``learner``'s parameters minimising
        ``objective()["total"]`` (appended to ``history``), quiet Lightning Trainer."""
        config = self.config
        trainer = quiet_trainer(self._shot_tokens.device, max_epochs=config.epochs, precision=config.precision)
        self._fitting = (learner, objective, history)
        with quiet_warnings():
            trainer.fit(self, train_dataloaders=DataLoader([0], batch_size=None))
        self._fitting = None
        self.eval()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        assert self._fitting is not None
        _, objective, history = self._fitting
        losses = objective()
        history.append(float(losses["total"].detach()))
        return losses["total"]

    def losses(self) -> dict[str, Tensor]:
        """The spec §7 loss of the current prompts on the shots, with its parts."""
        assert self.learner is not None
        config = self.config
        return total_loss(
            self._shot_tokens, self.learner(), self._regions, self.tau.to(self._shot_tokens),
            config.lambda_match, use_reg=config.mfsc_levels == "full", use_normal_align=config.use_normal_align,
            margin=config.triplet_margin,
        )  # fmt: skip

    def cls_losses(self) -> dict[str, Tensor]:
        """``train_cls.py``'s loss of the image-score prompts on the shots' unit-norm global embeddings: L_v2t
        over the k embeddings, L_tri over the channel axis, λ₁ · L_match."""
        assert self.cls_learner is not None
        config = self.config
        return total_loss(
            self._shot_embeddings, self.cls_learner(), None, self.tau.to(self._shot_embeddings), config.lambda_match,
            use_reg=False, use_normal_align=False, margin=config.triplet_margin,
        )  # fmt: skip

    def configure_optimizers(self) -> Any:
        assert self._fitting is not None
        config = self.config
        optimizer = torch.optim.SGD(
            self._fitting[0].parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr_min)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def candidates(self, learner: PromptLearner) -> tuple[Tensor, Tensor]:
        """Test-time candidate pairs ``C × 2 × D`` of ``learner`` (entities, caption, background) and their
        matching keys."""
        with torch.no_grad():
            families = learner()
        ordered: list[FamilyFeatures] = [*families[1:-1], families[0], families[-1]] if len(families) > 1 else families
        pairs = torch.stack([torch.stack([f.normal, f.abnormal]) for f in ordered]).float()
        keys = self.qformer(pairs) if self.qformer is not None else pairs[:, 0]
        return pairs, keys

    def _log_prompts(self, category: str, record: CaptionRecord, families: list, shots: int) -> None:
        if self.artifact_dir is None:
            return
        payload = {
            "method": self.name, "category": category, "shot": shots, "train_seed": self.train_seed,
            "mfsc_levels": self.config.mfsc_levels, "caption_provenance": record.provenance,
            "method_cfg_hash": self.config.sha256(),
            "prompts": rendered_strings(families, self.config.n_ctx, self.config.n_ctx_ab),
        }  # fmt: skip
        name = f"{category}-k{shots}-seed{self.train_seed}-{self.config.sha256()[:8]}.json"
        path = child_path(self.artifact_dir, name, what="prompt log of category")
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n", "prompt log")

    # --- inference --------------------------------------------------------------------------------------

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        device = self._shot_tokens.device
        maps, scores = [], []
        with torch.no_grad():
            for f in self.features(batch, self.names, variant=self.query_input):
                taps = [f[name].to(device) for name in self.tap_names]
                pixel, score = self.scorer(taps, f["vv_tokens"].to(device), f["embedding"].to(device))
                maps.append(pixel)
                scores.append(score)
        return MethodOutput(
            anomaly_maps=torch.stack(maps).float().cpu(), image_scores=torch.stack(scores).float().cpu()
        )
