"""What a long step of a run is doing, for the progress display (no heavy imports; every layer may use it).

The runner hands a :data:`PhaseReporter` to the methods it trains; a method's Lightning training loop reports
every optimiser step through it (see :meth:`fsas_bench.methods.base.FewShotMethod.on_train_batch_end`), so the
display shows the phase, its own progress and an ETA instead of standing still.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PhaseUpdate:
    """One report of a phase.

    Attributes:
        phase: what runs, stable for the whole phase (e.g. ``training dictas on synthetic-aux, seed 0``).
        detail: where it is now (e.g. ``epoch 1/2, step 3/6``); empty at the start.
        completed: units done so far.
        total: units in the whole phase; ``None`` while unknown.
    """

    phase: str
    detail: str = ""
    completed: int = 0
    total: int | None = None

    @property
    def description(self) -> str:
        """``phase — detail`` (or the phase alone)."""
        return f"{self.phase} — {self.detail}" if self.detail else self.phase


PhaseReporter = Callable[[PhaseUpdate | None], None]
"""Receives each :class:`PhaseUpdate`, and ``None`` when the phase is over."""
