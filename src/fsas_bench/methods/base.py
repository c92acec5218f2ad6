"""The contract every FSAS method implements as a LightningModule.

A method receives the support set (the k normal references of a category) once, then maps query batches
to anomaly maps and image scores. It never computes metrics; the shared layer maps its output maps back
to the evaluation frame and scores them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
from torch import Tensor

from fsas_bench.backbones import DEFAULT_PREPROCESS, BackboneFeatures, ClipBackbone, FeatureCache, Preprocess
from fsas_bench.data.datamodule import image_sha
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.data.synthetic import SYNTHETIC_DATASETS
from fsas_bench.errors import UserError
from fsas_bench.hashing import sha256_json
from fsas_bench.methods.ops import scaled_taps
from fsas_bench.numbers import MAX_SEED
from fsas_bench.progress import PhaseReporter, PhaseUpdate

QUERY, SUPPORT = "query", "support"
"""The two roles of an image in a cell: a test-split query, or a reference (support) of the shot manifest."""

FitScope = Literal["none", "per_category", "auxiliary"]
MODES = ("benchmark", "faithful")


@dataclass(frozen=True)
class Limit:
    """A declarative range rule of one config field: the check, and what it asks for (the error's fix)."""

    wants: str
    check: Callable[[Any], bool]

    def each(self) -> Limit:
        """The rule applied to every item of a tuple field."""
        return Limit(f"a comma-separated list, each {self.wants}",
                     lambda v: isinstance(v, tuple) and all(map(self.check, v)))  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


POSITIVE_INT = Limit("a positive integer", lambda v: _is_int(v) and v >= 1)
NON_NEGATIVE_INT = Limit("an integer >= 0", lambda v: _is_int(v) and v >= 0)
NON_NEGATIVE = Limit("a finite number >= 0", lambda v: _is_real(v) and v >= 0)
POSITIVE = Limit("a finite number > 0", lambda v: _is_real(v) and v > 0)
FRACTION = Limit("a number in [0, 1]", lambda v: _is_real(v) and 0 <= v <= 1)
BELOW_ONE = Limit("a number in [0, 1)", lambda v: _is_real(v) and 0 <= v < 1)
SEED = Limit(f"-1 or an integer in [0, {MAX_SEED}]", lambda v: _is_int(v) and -1 <= v <= MAX_SEED)


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method config; ``mode`` is ``benchmark`` (leaderboard default) or ``faithful``.

    Subclasses declare the range of their numeric fields in ``limits`` (field name → :class:`Limit`) and the
    allowed values of their text fields in ``choices``; every construction checks them (``--set`` and Python
    alike), a violation being a one-line UserError. Presets are data: ``embedded_schedule`` holds the field
    changes of the embedded synthetic sets (a short CPU schedule; empty: the defaults), ``faithful_changes``
    those of the released code (``mode=faithful``; empty: no faithful preset).
    """

    mode: str = "benchmark"
    limits: ClassVar[dict[str, Limit]] = {}
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    embedded_schedule: ClassVar[dict[str, Any]] = {}
    faithful_changes: ClassVar[dict[str, Any]] = {}
    paper_taps: ClassVar[tuple[int, ...]] = ()
    """The 1-indexed blocks whose tokens the method reads as published, on a ``paper_depth``-block ViT."""
    paper_depth: ClassVar[int] = 12

    def __post_init__(self) -> None:
        for name, limit in self.limits.items():
            value = getattr(self, name)
            if not limit.check(value):
                raise UserError(f"{type(self).__name__}.{name} = {value!r} is invalid: use {limit.wants}")
        for name, allowed in self.choices.items():
            value = getattr(self, name)
            if value not in allowed:
                options = " or ".join(allowed) if len(allowed) == 2 else "one of " + ", ".join(allowed)
                raise UserError(f"{type(self).__name__}.{name} '{value}' is unknown: use {options}")

    def taps(self, depth: int) -> tuple[int, ...]:
        """0-based block taps on a ``depth``-block backbone: the ``blocks`` field when set, else :attr:`paper_taps`
        scaled by :func:`~fsas_bench.methods.ops.scaled_taps` (the published taps at the published depth)."""
        return getattr(self, "blocks", ()) or scaled_taps(self.paper_taps, self.paper_depth, depth)

    @property
    def transductive(self) -> bool:
        """Whether image scores depend on other test images of the category (recorded in result rows)."""
        return False

    @property
    def target_leakage(self) -> bool:
        """Whether training reads the target dataset's test split (then trainings are keyed by the target)."""
        return False

    def to_dict(self) -> dict[str, Any]:
        """The full config as plain JSON-able values."""
        return asdict(self)

    def sha256(self) -> str:
        """``method_cfg_hash``: SHA-256 of the canonical JSON of the config."""
        return sha256_json(self.to_dict())

    def flags(self) -> str:
        """Every field that differs from the class defaults, as ``name=value`` joined by ``;`` (rows' ``flags``)."""
        defaults = type(self)().to_dict()
        return ";".join(f"{k}={v}" for k, v in self.to_dict().items() if v != defaults[k])

    @classmethod
    def for_dataset(cls, dataset: str) -> MethodConfig:
        """The benchmark config on ``dataset``: the defaults, with :attr:`embedded_schedule` on the embedded
        synthetic sets (the change shows in ``flags`` and ``method_cfg_hash``)."""
        return cls(**cls.embedded_schedule) if dataset in SYNTHETIC_DATASETS else cls()

    @classmethod
    def faithful(cls, **changes: Any) -> MethodConfig:
        """The released code's settings (:attr:`faithful_changes`, ``mode=faithful``) with ``changes`` on top."""
        return cls(**{"mode": "faithful", **cls.faithful_changes, **changes})

    @classmethod
    def faithful_preset(cls, dataset: str) -> MethodConfig | None:
        """The released code's settings on ``dataset``; None: the method has no faithful preset, and
        ``--mode faithful`` runs it in benchmark mode."""
        return cls.faithful() if cls.faithful_changes else None

    @classmethod
    def for_run(cls, dataset: str, mode: str = "benchmark") -> MethodConfig:
        """The config a sweep uses (``fsas-bench run --mode``): :meth:`for_dataset`, and in faithful mode with
        every field the :meth:`faithful_preset` changes from the defaults on top, so dataset adaptations the
        preset leaves alone (the embedded short schedule, caption files) are kept."""
        if mode not in MODES:
            raise UserError(f"--mode '{mode}' is unknown: use benchmark or faithful")
        config = cls.for_dataset(dataset)
        preset = cls.faithful_preset(dataset) if mode == "faithful" else None
        if preset is None:
            return config
        defaults = cls()
        changes = {f.name: getattr(preset, f.name) for f in fields(preset)
                   if f.init and getattr(preset, f.name) != getattr(defaults, f.name)}  # fmt: skip
        return replace(config, **changes)


def with_overrides(config: MethodConfig, overrides: dict[str, str]) -> MethodConfig:
    """``config`` with fields replaced from text values (``--set method.field=value``), parsed by each field's
    default type: bool (true/false), int, float, str, or comma-separated tuples."""
    if not overrides:
        return config
    current = config.to_dict()
    values: dict[str, Any] = {}
    for name, text in overrides.items():
        if name == "mode":
            raise UserError("'mode' cannot be set with --set: choose the preset with --mode benchmark|faithful")
        if name not in current or not any(f.name == name and f.init for f in fields(config)):
            raise UserError(
                f"'{name}' is not a setting of {type(config).__name__}: choose from {', '.join(sorted(current))}"
            )
        values[name] = _parse_like(current[name], text, name)
    return replace(config, **values)


def _parse_like(default: Any, text: str, name: str) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if isinstance(default, (list, tuple)):
            kind = type(default[0]) if default else int
            return tuple(kind(part) for part in text.split(",") if part)
        return type(default)(text)
    except ValueError:
        raise UserError(f"--set {name}={text}: cannot read '{text}' as {type(default).__name__}") from None


MapScorer = Callable[[Sequence[Sample], Tensor, str], Mapping[str, float]]
"""Pixel metrics of maps against ground truth: (query samples, (N, S, S) maps, mask-resize rule) → metric name →
value. Methods never import the metric layer: the runner hands this to the ones that validate during training."""


@dataclass
class MethodOutput:
    """What a method returns for a query batch.

    Attributes:
        anomaly_maps: ``B × H × W`` float32 maps at the method's output size (higher = more anomalous).
        image_scores: ``B`` float image scores.
    """

    anomaly_maps: Tensor
    image_scores: Tensor


class FewShotMethod(L.LightningModule, ABC):
    """Base LightningModule of a registered FSAS method.

    Subclasses set ``name``, ``fit_scope`` and ``config_cls``, and implement :meth:`feature_names`,
    :meth:`set_support` and :meth:`predict_step`. Features come from the shared encode-once cache.

    Args:
        config: the method's config dataclass.
        cache: the run's feature cache (wraps the frozen backbone).
    """

    name: ClassVar[str]
    fit_scope: ClassVar[FitScope] = "none"
    supports_zero_shot: ClassVar[bool] = False
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    auxiliary_datasets: ClassVar[dict[str, str]] = {}
    """``fit_scope = auxiliary`` only: evaluation dataset → the dataset the head is trained on (``*``: any other)."""
    trains_per_shot: ClassVar[bool] = False
    """``fit_scope = auxiliary`` only: one trained model per shot count k (InCTRL) instead of one for all k."""

    def __init__(self, config: MethodConfig, cache: FeatureCache) -> None:
        super().__init__()
        self.config = config
        self.cache = cache
        self.names = self.feature_names(config, cache.backbone.depth)
        """The backbone features this instance reads (:meth:`feature_names` of its config and backbone)."""
        self.artifact_dir: Path | None = None
        """Where a ``per_category`` fit may write its logs (rendered prompts, ...); set by the runner."""
        self.train_seed: int | None = None
        """``per_category`` only: the seed of the fit done in :meth:`set_support` (recorded in result rows)."""
        self.reference_fit: dict[str, Tensor] | None = None
        """``per_category`` only: a fitted state (:meth:`fitted_state` of an earlier fit) that
        :meth:`set_support` loads (:meth:`load_fitted_state`) instead of training; set by the runner for
        reference-fit regressions."""
        self.loss_history: list[float] = []
        """Training loss of every optimiser step of the last fit (auxiliary or per-category), in order: each
        method's ``training_step`` appends to it (the runner stores it with the checkpoint)."""
        self.report_phase: PhaseReporter | None = None
        """Receives a :class:`PhaseUpdate` after every training step (set by the runner with :attr:`phase`)."""
        self.phase = ""
        """What the training in progress is, e.g. ``training dictas on synthetic-aux, seed 0`` (set by the runner)."""
        self.map_scorer: MapScorer | None = None
        """Scores maps against ground truth for validation during training (set by the runner before a fit)."""

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Lightning hook: report the step just done (epoch e/E, step s/S) to :attr:`report_phase`."""
        if self.report_phase is None:
            return
        trainer = self.trainer
        steps, epochs = trainer.num_training_batches, trainer.max_epochs
        known = math.isfinite(steps) and epochs is not None and epochs > 0
        steps_text = f"{batch_idx + 1}/{int(steps)}" if math.isfinite(steps) else str(batch_idx + 1)
        epochs_text = f"{trainer.current_epoch + 1}/{epochs}" if known else str(trainer.current_epoch + 1)
        done = trainer.current_epoch * int(steps) + batch_idx + 1 if known else batch_idx + 1
        self.report_phase(PhaseUpdate(self.phase, f"epoch {epochs_text}, step {steps_text}", done,
                                      int(steps) * epochs if known else None))  # fmt: skip

    @classmethod
    @abstractmethod
    def feature_names(cls, config: MethodConfig, depth: int) -> list[str]:
        """Backbone features (``block{i}``, ``embedding``, ...) the method reads with ``config`` on a ``depth``-block
        backbone (the runner learns them without building the method)."""

    @classmethod
    def reads_backbone(cls, config: MethodConfig, backbone: ClipBackbone) -> bool:
        """Whether the method reads its features from ``backbone`` itself (the runner encodes those ahead);
        False for a method that reads a modified copy of it (encoded as read)."""
        return True

    @classmethod
    def input_variants(cls, config: MethodConfig) -> dict[str, Preprocess]:
        """The preprocessing of the images whose :meth:`feature_names` the method reads with ``config``, by role:
        ``query`` (the test split) and ``support`` (the references); the runner encodes each ahead."""
        return {QUERY: DEFAULT_PREPROCESS, SUPPORT: DEFAULT_PREPROCESS}

    def features(
        self,
        batch: dict[str, Any],
        names: Sequence[str],
        prefetch: bool = True,
        variant: Preprocess = DEFAULT_PREPROCESS,
    ) -> list[BackboneFeatures]:
        """Named backbone features (``block{i}``, ``embedding``, ...) of each image of a datamodule batch
        (``path`` and ``sha`` lists), preprocessed as ``variant`` says; images are decoded only when their
        features are not cached. ``prefetch=False`` for images no other method reads (auxiliary training data)."""
        preprocess = self.cache.backbone.preprocess

        def load(i: int) -> Tensor:
            return preprocess(read_image_rgb(Path(batch["path"][i])), variant)

        return self.cache.features(batch["sha"], names, load, prefetch, variant)

    def encode_ahead(
        self, samples: Sequence[Sample], names: Sequence[str], variant: Preprocess = DEFAULT_PREPROCESS
    ) -> None:
        """Encode ``names`` of ``samples`` not cached yet through the cache's pipeline (decode workers, fixed-size
        batches) before training reads them, reporting the count (``<phase>, encoding ahead``); under a memory budget
        the features spill to disk and training streams them back."""
        paths = [s.image_path for s in samples]

        def progress(done: int, total: int) -> None:
            if self.report_phase is not None:
                self.report_phase(PhaseUpdate(f"{self.phase}, encoding ahead", f"{done}/{total} images", done, total))

        self.cache.encode_ahead([image_sha(p) for p in paths], paths, read_image_rgb, names, variant, progress)

    def support_features(
        self, batches: list[dict[str, Any]], names: Sequence[str], variant: Preprocess = DEFAULT_PREPROCESS
    ) -> list[BackboneFeatures]:
        """:meth:`features` of every reference in ``batches``; a one-line UserError when there is none and the
        method is not zero-shot."""
        feats = [f for batch in batches for f in self.features(batch, names, variant=variant)]
        if not feats and not self.supports_zero_shot:
            raise UserError(f"{self.name} needs at least one reference (prompt) image: use --shots 1 or more")
        return feats

    def fitted_state(self) -> dict[str, Tensor]:
        """``per_category`` only: the parameters :meth:`set_support` trained (saved by the runner as the cell's
        checkpoint). Frozen modules drawn from the train seed are not part of it: they are drawn again."""
        return {name: p.detach().clone() for name, p in self.named_parameters() if p.requires_grad}

    def load_fitted_state(self, state: dict[str, Tensor]) -> None:
        """Load a :meth:`fitted_state` into the freshly built (untrained) per-category modules."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        if set(state) != trainable:
            raise UserError(
                f"{self.name} fit has parameters {sorted(set(state) ^ trainable)} that do not match the method's: "
                "regenerate the reference fits with the current code ('fsas-bench regress --update')"
            )
        self.load_state_dict(state, strict=False)

    @abstractmethod
    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        """Build the per-category state (memory, text prototypes, fitted prompts, ...) from the k references
        (``batches`` is empty for zero-shot)."""

    def set_queries(self, batches: Iterable[dict[str, Any]]) -> None:
        """Called after :meth:`set_support` with the category's whole query set (a re-iterable of the batches
        the predict loop will see, never the live loop's own loader). Inductive methods ignore it; transductive
        ones read it during prediction (e.g. a first pass in ``on_predict_epoch_start``)."""

    def fit_auxiliary(self, auxiliary: DatasetIndex, target: DatasetIndex, shot: int) -> None:
        """Train the method's learnable part on ``auxiliary`` (``fit_scope = auxiliary``).

        The runner seeds everything (train seed) before the call and saves ``state_dict()`` afterwards as the
        checkpoint every evaluation of the (method config, auxiliary dataset, seed[, shot]) reuses. ``target``
        is passed only for faithful modes that select on it (then the method must flag the leakage in its
        config); benchmark modes never read it.
        """
        raise TypeError(f"method '{self.name}' has fit_scope '{self.fit_scope}': it has no auxiliary training")

    @classmethod
    def auxiliary_dataset(cls, target: str) -> str:
        """The auxiliary training dataset for evaluating on ``target`` (never ``target`` itself)."""
        train = cls.auxiliary_datasets.get(target, cls.auxiliary_datasets.get("*", ""))
        if not train or train == target:
            raise UserError(
                f"method '{cls.name}' has no auxiliary training set for dataset '{target}' other than itself: "
                "evaluate it on a dataset it is not trained on"
            )
        return train

    @abstractmethod
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        """Anomaly maps and image scores of a query batch."""
