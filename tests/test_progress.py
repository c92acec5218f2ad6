"""Training inside a sweep reports its phase, epoch/step and a total, so the display never stands still."""

from __future__ import annotations

import re

import pytest

from fsas_bench.methods.finegrainedad.config import FineGrainedADConfig
from fsas_bench.methods.inctrl.lightning_module import InCTRLConfig
from fsas_bench.progress import PhaseUpdate
from fsas_bench.runner.sweep import Sweep, SweepSpec


def _record(spec: SweepSpec) -> list[object]:
    events: list[object] = []
    Sweep(spec).run(lambda outcome: events.append(outcome.cell), events.append)
    return events


def _phases(events: list[object]) -> list[list[PhaseUpdate]]:
    """The runs of consecutive phase updates, each ended by ``None``, except the unit's encode-ahead phase (which
    must be there, once per unit)."""
    runs, current = [], []
    for event in events:
        if isinstance(event, PhaseUpdate):
            current.append(event)
        elif event is None and current:
            runs.append(current)
            current = []
    assert not current, "a phase was never closed"
    encoding = [run for run in runs if run[0].phase.startswith("encoding ")]
    assert [run[0].phase for run in encoding] == ["encoding synthetic/tile"]
    counts = encoding[0][1:]  # the unit's images, counted up to their total
    assert counts and [u.completed for u in counts] == list(range(1, counts[-1].total + 1))
    return [run for run in runs if run not in encoding]


@pytest.mark.slow
def test_auxiliary_training_reports_epochs_and_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(InCTRLConfig, "for_dataset", classmethod(lambda cls, dataset: cls(epochs=2, steps_per_epoch=3)))
    events = _record(SweepSpec(out=tmp_path, methods=("inctrl",), categories=("tile",), shots=(1, 2), seeds=(0,)))
    runs = _phases(events)
    assert len(runs) == 2  # one model per shot
    for k, run in zip((1, 2), runs, strict=True):
        assert run[0] == PhaseUpdate(f"training inctrl on synthetic-aux, seed 0, k={k}")
        encoding = [u for u in run[1:] if u.phase.endswith(", encoding ahead")]  # the drawn images
        assert encoding and [u.completed for u in encoding] == list(range(1, encoding[-1].total + 1))
        steps = run[1 + len(encoding):]
        assert [u.description for u in steps] == [
            f"training inctrl on synthetic-aux, seed 0, k={k} — epoch {e}/2, step {s}/3" for e in (1, 2) for s in (1, 2, 3)
        ]
        assert [u.completed for u in steps] == list(range(1, 7)) and {u.total for u in steps} == {6}
    # the phase ends before the cell that needed it is reported
    assert all(isinstance(events[events.index(run[-1]) + 1], type(None)) for run in runs)


@pytest.mark.slow
def test_per_category_fit_reports_its_phase(tmp_path, monkeypatch):
    tiny = FineGrainedADConfig.for_dataset("synthetic")
    monkeypatch.setattr(type(tiny), "for_dataset", classmethod(lambda cls, dataset: tiny.__class__(
        **{**tiny.to_dict(), "epochs": 2})))  # fmt: skip
    events = _record(SweepSpec(out=tmp_path, methods=("promptad",), categories=("tile",), shots=(1,), seeds=(0,)))
    (run,) = _phases(events)
    assert run[0] == PhaseUpdate("fitting promptad on synthetic/tile, k=1, seed 0")
    pattern = re.compile(r"fitting promptad on synthetic/tile, k=1, seed 0 — epoch ([12])/2, step 1/1")
    assert [int(pattern.fullmatch(u.description).group(1)) for u in run[1:]] == [1, 2]
    assert run[-1].completed == run[-1].total
