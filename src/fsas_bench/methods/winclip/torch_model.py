"""WinCLIP / WinCLIP+ scoring on precomputed CLIP features (baselines.md §1, anomalib's behaviour)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsas_bench.backbones.clip import sliding_windows
from fsas_bench.methods.ops import harmonic_mean, min_cosine_distance, upsample_and_blur
from fsas_bench.methods.text import anomaly_probability


class WindowAggregator(nn.Module):
    """Harmonic aggregation of per-window scores to patches: each patch gets n / Σ 1/s over the n windows
    containing it.

    Args:
        grid: ``(h, w)`` patch grid.
        scale: window side in patches.
        eps: added to scores before inversion (0 = exact, zeros give 0).
    """

    def __init__(self, grid: tuple[int, int], scale: int, eps: float = 0.0) -> None:
        super().__init__()
        windows = sliding_windows(grid, scale)
        n_windows, n_patches = windows.shape[0], grid[0] * grid[1]
        members = [[] for _ in range(n_patches)]
        for w, patches in enumerate(windows.tolist()):
            for p in patches:
                members[p].append(w)
        width = max(len(m) for m in members)
        padded = [m + [n_windows] * (width - len(m)) for m in members]  # n_windows: a sentinel adding 1/inf = 0
        self.register_buffer("cover", torch.tensor(padded, dtype=torch.long), persistent=False)
        self.register_buffer("counts", torch.tensor([len(m) for m in members], dtype=torch.float32), persistent=False)
        self.grid = grid
        self.eps = eps

    def forward(self, window_scores: Tensor) -> Tensor:
        """``n_windows`` scores → ``h × w`` patch scores."""
        recip = torch.cat([1.0 / (window_scores + self.eps), window_scores.new_zeros(1)])
        return (self.counts.to(recip.dtype) / recip[self.cover].sum(1)).view(self.grid)


class WinCLIPModel(nn.Module):
    """Zero-shot window scoring against text prototypes, plus WinCLIP+'s reference-memory branch.

    Args:
        grid: the backbone's patch grid.
        scales: window sides in patches.
        output_size: side of the output map.
        temperature: softmax temperature of the class score.
        sigma: Gaussian smoothing of the output map (0 = none, anomalib parity).
        eps: harmonic-mean guard (0 = exact).
    """

    def __init__(
        self, grid: tuple[int, int], scales: tuple[int, ...], output_size: int, temperature: float, sigma: float, eps: float
    ) -> None:
        super().__init__()
        self.scales = scales
        self.aggregators = nn.ModuleList([WindowAggregator(grid, s, eps) for s in scales])
        self.grid = grid
        self.output_size = output_size
        self.temperature = temperature
        self.sigma = sigma
        self.eps = eps
        self.prototypes: Tensor | None = None
        self.memory: dict[str, Tensor] = {}

    def set_memory(self, memory: dict[str, Tensor]) -> None:
        """Reference memory: ``final_tokens`` ``kN × C`` and ``window{s}`` ``kW × D``; empty for zero-shot."""
        self.memory = memory

    def class_score(self, embeddings: Tensor) -> Tensor:
        """Anomalous probability softmax(cos(f, [t_n, t_a]) / T)[1] of ``... × D`` embeddings (``prototypes``:
        the ``2 × D`` text prototypes)."""
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(self.prototypes.to(embeddings), dim=-1).T
        return anomaly_probability(cos / self.temperature)

    def score_one(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Patch-grid map ``h × w`` and image score of one query."""
        image_score = self.class_score(features["embedding"])
        zero_shot = [image_score.expand(self.grid)]
        zero_shot += [agg(self.class_score(features[f"window{s}"])) for s, agg in zip(self.scales, self.aggregators)]
        grid_map = harmonic_mean(torch.stack(zero_shot), self.eps)
        if not self.memory:
            return grid_map, image_score
        few_shot = [min_cosine_distance(features["final_tokens"], self.memory["final_tokens"]).view(self.grid)]
        few_shot += [
            agg(min_cosine_distance(features[f"window{s}"], self.memory[f"window{s}"]))
            for s, agg in zip(self.scales, self.aggregators)
        ]
        visual = torch.stack(few_shot).mean(0)
        return (grid_map + visual) / 2, (image_score + visual.max()) / 2

    def forward(self, features: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """Maps ``B × S × S`` and image scores ``B``; queries are scored one at a time (batch invariant)."""
        grids, scores = zip(*(self.score_one(f) for f in features))
        maps = upsample_and_blur(torch.stack(grids), self.output_size, self.sigma)
        return maps, torch.stack(scores)
