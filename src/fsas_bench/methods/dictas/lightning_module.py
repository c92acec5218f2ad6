"""DictAS (Qu et al., ICCV 2025) as a registered LightningModule: trained once on an auxiliary dataset,
then segments unseen categories by sparse lookup in a dictionary built from the k references."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from fsas_bench.backbones import ClipBackbone, FeatureCache
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.data.index import DatasetIndex
from fsas_bench.errors import UserError
from fsas_bench.methods.base import FewShotMethod, MethodOutput
from fsas_bench.methods.dictas.activation import CategoryScopedCache, cache_with_activation, needs_swap
from fsas_bench.methods.dictas.augment import rotate_reflect
from fsas_bench.methods.dictas.config import DictASConfig
from fsas_bench.methods.dictas.losses import lookup_losses, patch_masks, tac_losses
from fsas_bench.methods.dictas.overrides import SCREW_ROTATIONS, InferenceSettings, official_settings
from fsas_bench.methods.dictas.synthesis import texture_source
from fsas_bench.methods.dictas.torch_model import (
    DictASHead, ReferenceDictionary, anomaly_grids, render_maps, text_probability, text_prototypes,
)  # fmt: skip
from fsas_bench.methods.dictas.training_data import SyntheticAnomalyPairs
from fsas_bench.methods.dictas.validation import target_validation_ap
from fsas_bench.methods.ops import grid_side
from fsas_bench.methods.registry import register_method
from fsas_bench.trainer import quiet_trainer, quiet_warnings


@register_method
class DictAS(FewShotMethod):
    """DictAS: query/key/value generators on frozen CLIP tokens, sparsemax dictionary lookup, (1 − cos)/2 maps.

    The state dict holds the head only (``head.Query_Generator.*``, ...), in the official layout under
    ``head.``; :meth:`load_official` loads an official ``{"Mymodel": ...}`` checkpoint.
    """

    name = "dictas"
    fit_scope = "auxiliary"
    config_cls = DictASConfig
    auxiliary_datasets = {"synthetic": "synthetic-aux", "visa": "mvtec", "*": "visa"}

    def __init__(self, config: DictASConfig, cache: FeatureCache) -> None:
        super().__init__(config, cache_with_activation(cache, config.activation))
        backbone = self.cache.backbone
        self.blocks = config.taps(backbone.depth)
        self.head = DictASHead(backbone.width, backbone.model.visual.output_dim, len(self.blocks))
        self.output_size = config.output_size or backbone.image_size
        self.settings = InferenceSettings(self.blocks, config.scales, config.smoothing_sigma)
        self.dictionary: ReferenceDictionary | None = None
        self.prototypes: Tensor | None = None
        self.score_range: tuple[float, float, float, float] | None = None  # transductive min/max of p_map, p_text
        self.queries: Iterable[dict[str, Any]] | None = None  # the category's query set (transductive only)
        self.history: list[dict[str, float]] = []  # epoch-mean training metrics
        self.phase2 = False  # g_V frozen, queries pass through it
        self.train_text: Tensor | None = None
        self.validation_target: DatasetIndex | None = None
        self.best_ap = -1.0
        self.snapshot: dict[str, Tensor] = {}

    @classmethod
    def feature_names(cls, config: DictASConfig, depth: int) -> list[str]:
        return [f"block{b}" for b in config.taps(depth)] + (["embedding"] if config.uses_text else [])

    @classmethod
    def reads_backbone(cls, config: DictASConfig, backbone: ClipBackbone) -> bool:
        """False when ``activation`` swaps the backbone's: the features then come from a swapped copy."""
        return not needs_swap(backbone, config.activation)

    def load_official(self, state: Mapping[str, Any]) -> None:
        """Load an official checkpoint (``{"Mymodel": state_dict}`` or the state dict itself), strictly."""
        self.head.load_state_dict(state.get("Mymodel", state), strict=True)

    # ---------------------------------------------------------------- inference

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        if isinstance(self.cache, CategoryScopedCache):
            self.cache.enter_category(category)
        config = self.config
        if config.official_overrides:
            k = sum(len(batch["path"]) for batch in batches)
            self.settings = official_settings(self.blocks, config.official_dataset, category, k, config.official_mode)
        names = [f"block{b}" for b in self.settings.blocks]
        feats = self.support_features(batches, names)
        references = {b: torch.stack([f[f"block{b}"] for f in feats]) for b in self.settings.blocks}
        if self.settings.rotate_references:
            references = self._with_rotations(references, [p for batch in batches for p in batch["path"]], names)
        self.dictionary = ReferenceDictionary(self.head, references, cache=config.cache_reference_kv)
        self.prototypes = text_prototypes(self.cache.backbone, category).cpu() if self.config.uses_text else None
        self.score_range = self.queries = None

    def set_queries(self, batches: Iterable[dict[str, Any]]) -> None:
        """Keep the category's query set for the transductive first pass (read on the predict device)."""
        self.queries = batches if self.config.transductive else None

    def _with_rotations(self, references: dict[int, Tensor], paths: list[str], names: list[str]) -> dict[int, Tensor]:
        """Each reference followed by its :data:`SCREW_ROTATIONS` copies (reflect-101 borders, original size)."""
        backbone = self.cache.backbone
        per_image = []
        for i, path in enumerate(paths):
            rgb = torch.from_numpy(read_image_rgb(Path(path)).copy()).permute(2, 0, 1)
            views = [backbone.preprocess(rotate_reflect(rgb, a).permute(1, 2, 0).numpy()) for a in SCREW_ROTATIONS]
            encoded = backbone.encode(torch.stack(views), names)
            per_image.append({b: torch.cat([references[b][i : i + 1], encoded[f"block{b}"].cpu()]) for b in references})
        return {b: torch.cat([p[b] for p in per_image]) for b in references}

    @torch.no_grad()
    def score(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Maps ``B × S × S``, p_map ``B`` (map maxima) and p_text ``B`` (None without text) of a query batch."""
        if self.dictionary is None:
            raise RuntimeError("set_support must be called before scoring")
        feats = self.features(batch, self.names)
        tokens = {b: torch.stack([f[f"block{b}"] for f in feats]).to(self.device) for b in self.settings.blocks}
        grids = anomaly_grids(self.head, tokens, self.dictionary, self.settings.scales)
        maps = render_maps(grids, self.output_size, self.settings.sigma)
        p_text = None
        if self.config.uses_text:
            p_text = text_probability(torch.stack([f["embedding"] for f in feats]).to(self.device), self.prototypes)
        return maps, maps.flatten(1).amax(dim=1), p_text

    def on_predict_epoch_start(self) -> None:
        """``official_transductive``: a first pass over the query set given to :meth:`set_queries` for the
        per-category min/max of p_map and p_text (the live predict loader is never iterated here)."""
        if not self.config.transductive:
            return
        if self.queries is None:
            raise RuntimeError("official_transductive scores need the whole query set: call set_queries first")
        raw = [self.score(batch)[1:] for batch in self.queries]
        p_map, p_text = (torch.cat(values) for values in zip(*raw))
        self.score_range = (p_map.min().item(), p_map.max().item(), p_text.min().item(), p_text.max().item())

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        maps, p_map, p_text = self.score(batch)
        scores = self.image_scores(p_map, p_text)
        return MethodOutput(anomaly_maps=maps.float().cpu(), image_scores=scores.float().cpu())

    def image_scores(self, p_map: Tensor, p_text: Tensor | None) -> Tensor:
        """The configured image score of a batch (spec §6)."""
        if self.config.image_score == "map_max":
            return p_map
        if self.config.transductive:
            if self.score_range is None:
                raise RuntimeError("official_transductive scores need the query set (set_queries, then a Trainer)")
            map_lo, map_hi, text_lo, text_hi = self.score_range
            alpha = self.settings.alpha
            return alpha * (p_text - text_lo) / (text_hi - text_lo + 1e-6) + (1 - alpha) * (p_map - map_lo) / (
                map_hi - map_lo + 1e-6
            )
        alpha = self.config.fusion_alpha
        return alpha * p_text + (1 - alpha) * p_map

    # ---------------------------------------------------------------- training

    def fit_auxiliary(self, auxiliary: DatasetIndex, target: DatasetIndex, shot: int) -> None:
        """Self-supervised training of the head on ``auxiliary``'s normal training images (a Lightning
        ``Trainer``); ``target``'s test split is read only with ``vgen_freeze=val_trigger`` (leakage)."""
        config = self.config
        backbone = self.cache.backbone
        categories = list(auxiliary.categories)
        pairs = [(s, i) for i, c in enumerate(categories) for s in auxiliary.normal_train(c)]
        if not pairs:
            raise UserError(f"auxiliary dataset '{auxiliary.name}' has no normal training images for dictas")
        data = SyntheticAnomalyPairs(
            [s for s, _ in pairs], [i for _, i in pairs], backbone.preprocess, backbone.image_size,
            texture_source(config.anomaly_textures), config.synthesis,
        )  # fmt: skip
        self.train_text = torch.stack([text_prototypes(backbone, c) for c in categories])
        self.validation_target = target if config.target_leakage else None
        if self.validation_target is not None and self.map_scorer is None:
            raise RuntimeError("dictas vgen_freeze=val_trigger scores maps: set map_scorer first, as the runner does")
        self.phase2, self.history, self.best_ap, self.snapshot = False, [], -1.0, {}
        trainer = quiet_trainer(
            backbone.mean.device, max_epochs=config.epochs, limit_train_batches=config.steps_per_epoch or 1.0,
            precision=config.precision,
        )  # fmt: skip
        loader = DataLoader(data, config.batch_size, shuffle=True, num_workers=config.data_workers)
        with quiet_warnings():
            trainer.fit(self.train(), train_dataloaders=loader)
        self.train_text = self.validation_target = None
        self.snapshot = {}

    def configure_optimizers(self) -> dict[str, Any]:
        config = self.config
        optimizer = torch.optim.Adam(self.head.parameters(), lr=config.learning_rate, betas=config.betas)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
        )
        schedule = {"scheduler": plateau, "monitor": "loss_query", "interval": "epoch"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        config = self.config
        names = [f"block{b}" for b in self.blocks]
        size = batch["query"].shape[0]
        encoded = self.cache.backbone.encode(torch.cat([batch["query"], batch["reference"]]), names)
        queries = [encoded[n][:size].to(self.device) for n in names]
        references = [encoded[n][size:].to(self.device) for n in names]
        if self.phase2:
            queries = [self.head.Value_Generator(q) for q in queries]
        abnormal = patch_masks(batch["mask"] > 0.5, grid_side(queries[0].shape[1]))
        loss_query, loss_cqc, retrieved = lookup_losses(self.head, queries, references, abnormal, config.scales)
        text = self.train_text[batch["category"].to(self.train_text.device)].to(self.device)
        tac_query, tac_retrieved = tac_losses(self.head, queries, retrieved, text, batch["label"])
        loss = loss_query + config.lambda_cqc * loss_cqc + config.lambda_tac * (tac_query + tac_retrieved)
        values = {"loss_query": loss_query, "loss_cqc": loss_cqc, "loss_tac_query": tac_query,
                  "loss_tac_retrieved": tac_retrieved, "loss": loss}  # fmt: skip
        for key, value in values.items():  # batch_size=1: unweighted mean over steps, as the official log
            self.log(key, value.detach(), on_step=False, on_epoch=True, batch_size=1)
        self.loss_history.append(float(loss.detach()))
        return loss

    def on_train_epoch_end(self) -> None:
        """Record the epoch means and the phase they were trained in; in phase 1, apply the g_V freeze rule
        (fixed epoch or target trigger)."""
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        metrics["phase"] = 2.0 if self.phase2 else 1.0
        if not self.phase2:
            if self.validation_target is None:
                if self.current_epoch + 1 >= self.config.freeze_epoch:
                    self.freeze_value_generator()
            else:
                metrics["val_pixel_ap"] = ap = self._validation_ap()
                if ap > self.best_ap:
                    self.best_ap = ap
                    self.snapshot = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
                else:  # the official trigger: restore the best weights, then freeze
                    self.head.load_state_dict(self.snapshot)
                    self.freeze_value_generator()
        self.history.append(metrics)

    def freeze_value_generator(self) -> None:
        """Phase 2: g_V frozen (``requires_grad=False``), optimiser state reset (the scheduler's LR and plateau
        counter are kept), training queries routed through g_V."""
        self.head.Value_Generator.requires_grad_(False)
        for optimizer in self.trainer.optimizers:
            optimizer.state.clear()
        self.phase2 = True

    def _validation_ap(self) -> float:
        was_training = self.training
        self.eval()
        try:
            return target_validation_ap(self, self.validation_target, self.map_scorer)
        finally:
            self.train(was_training)
