"""The sweep grid: cells (method, dataset, category, shot, seed) in execution order, with job ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fsas_bench.data.index import DatasetIndex
from fsas_bench.errors import UserError
from fsas_bench.hashing import sha256_json


@dataclass(frozen=True)
class Cell:
    """One evaluation: a method on one category at one shot count and manifest seed."""

    method: str
    dataset: str
    category: str
    shot: int
    seed: int | str  # a manifest seed, or "official" for a fixed imported list


def expand_grid(
    methods: Sequence[str],
    indexes: Sequence[DatasetIndex],
    categories: Sequence[str] | None,
    shots: Sequence[int],
    seeds: Sequence[int | str],
) -> list[Cell]:
    """All cells, ordered dataset → category → method → shot → seed (so features of a category are reused).

    Raises:
        UserError: a requested category exists in none of the datasets.
    """
    if categories:
        known = {c for index in indexes for c in index.categories}
        missing = [c for c in categories if c not in known]
        if missing:
            names = ", ".join(index.name for index in indexes)
            raise UserError(
                f"category '{missing[0]}' is not in dataset(s) {names}: run 'fsas-bench list' or drop --categories"
            )
    return [
        Cell(method, index.name, category, shot, seed)
        for index in indexes
        for category in index.categories
        if not categories or category in categories
        for method in methods
        for shot in shots
        for seed in seeds
    ]


def numeric_seed(seed: int | str) -> int:
    """The RNG seed of a cell: its manifest seed, or 0 for an imported (``official``) list."""
    return seed if isinstance(seed, int) else 0


def job_id(cell: Cell, **identity: object) -> str:
    """Deterministic id of a cell's job: the cell plus everything that determines its numbers."""
    return sha256_json({"cell": cell.__dict__, **identity})[:16]
