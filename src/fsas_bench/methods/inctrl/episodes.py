"""InCTRL's training episodes: balanced batches of queries, each with K normal prompts of its category
(specs/inctrl.md §5).

The auxiliary pool is the whole auxiliary dataset (train + test splits, every category) with image labels
only. Each batch holds ``batch_size / 2`` normal and ``batch_size / 2`` anomalous queries, each class drawn from
its own endless random permutation (the released ``BalancedBatchSampler``); every query gets K prompts drawn
without replacement from the normals of its category in the pool, redrawn every time, so a normal query may
be its own prompt (as released) unless ``exclude_self`` (an ablation).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import IterableDataset

from fsas_bench.data.datamodule import image_sha
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError


class BalancedEpisodes(IterableDataset):
    """One epoch = ``steps`` batches; the permutations carry over between epochs (no notion of a data epoch).

    Args:
        pool: every auxiliary sample (labels 0/1).
        shot: K prompts per query.
        batch_size: queries per batch (even: half normal, half anomalous).
        steps: batches per epoch.
        exclude_self: never give a normal query itself as a prompt.
        generator: the seeded source of every draw.

    Batches are dicts: ``query`` and ``prompts`` (datamodule-style ``path``/``sha`` lists; ``prompts`` has
    the K prompts of each query in turn, B·K entries), ``label`` (``B`` float) and ``category`` (B names).
    """

    def __init__(
        self,
        pool: Sequence[Sample],
        shot: int,
        batch_size: int,
        steps: int,
        exclude_self: bool,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        if batch_size < 2 or batch_size % 2:
            raise UserError(
                f"inctrl batch_size {batch_size} is invalid: use an even number ≥ 2 (half normal, half anomalous)"
            )
        self.pool = list(pool)
        self.shot = shot
        self.half = batch_size // 2
        self.steps = steps
        self.exclude_self = exclude_self
        self.generator = generator
        by_label = {label: [i for i, s in enumerate(self.pool) if s.label == label] for label in (0, 1)}
        if not by_label[0] or not by_label[1]:
            raise UserError("the inctrl auxiliary dataset needs both normal and anomalous images (image labels)")
        categories = sorted({s.category for s in self.pool})
        self.normals_of = {c: [i for i in by_label[0] if self.pool[i].category == c] for c in categories}
        need = shot + int(exclude_self)
        short = sorted(c for c, normals in self.normals_of.items() if len(normals) < need)
        if short:
            raise UserError(
                f"inctrl needs {need} normal images per auxiliary category for {shot}-shot prompts; "
                f"{', '.join(short)} have fewer: use fewer shots or another auxiliary dataset"
            )
        self._streams = {label: self._endless(indices) for label, indices in by_label.items()}

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for queries, prompts in self._draws():
            yield {
                "query": self._refs(queries),
                "prompts": self._refs(prompts),
                "label": torch.tensor([float(self.pool[q].label) for q in queries]),
                "category": [self.pool[q].category for q in queries],
            }

    def drawn_samples(self, epochs: int) -> list[Sample]:
        """The distinct pool samples that ``epochs`` passes draw (queries and prompts), in order of first draw.
        It consumes the draws: call it on a twin built with an identically seeded generator."""
        drawn: dict[int, None] = {}
        for _ in range(epochs):
            for queries, prompts in self._draws():
                drawn.update(dict.fromkeys(queries + prompts))
        return [self.pool[i] for i in drawn]

    def _draws(self) -> Iterator[tuple[list[int], list[int]]]:
        """One epoch of (query indices, their prompt indices in turn) batches."""
        for _ in range(self.steps):
            queries = [next(self._streams[label]) for label in (0, 1) for _ in range(self.half)]
            yield queries, [p for q in queries for p in self._prompts(q)]

    def _endless(self, indices: list[int]) -> Iterator[int]:
        while True:
            for i in torch.randperm(len(indices), generator=self.generator).tolist():
                yield indices[i]

    def _prompts(self, query: int) -> list[int]:
        normals = self.normals_of[self.pool[query].category]
        if self.exclude_self:
            normals = [i for i in normals if i != query]
        return [normals[i] for i in torch.randperm(len(normals), generator=self.generator)[: self.shot].tolist()]

    def _refs(self, indices: list[int]) -> dict[str, list[str]]:
        paths = [self.pool[i].image_path for i in indices]
        return {"path": [str(p) for p in paths], "sha": [image_sha(p) for p in paths]}
