"""GELU vs QuickGELU in the frozen CLIP towers (spec dictas.md §2.3).

The official code runs OpenAI's ViT-L/14-336 weights with exact-erf ``nn.GELU`` in every MLP of both towers,
and the released heads only reproduce on that variant. open_clip builds ``ViT-L-14-336`` with GELU and
``ViT-L-14-336-quickgelu`` with QuickGELU (OpenAI's original). When a DictAS config asks for an activation
other than the run's backbone has, DictAS gets its **own** copy of the backbone with the modules swapped and
its own feature cache (the copy's weights id carries the activation, so no cached feature is shared with
the unswapped backbone); the run's shared backbone, used by the other methods, is never modified.
"""

from __future__ import annotations

import copy
from weakref import WeakKeyDictionary

from open_clip.transformer import QuickGELU
from torch import nn

from fsas_bench.backbones import ClipBackbone, FeatureCache

ACTIVATIONS = {"gelu": nn.GELU, "quickgelu": QuickGELU}


def model_activation(model: nn.Module) -> str:
    """``gelu``, ``quickgelu`` or ``mixed``: the activations of ``model``'s MLPs."""
    found = {name for module in model.modules() for name, cls in ACTIVATIONS.items() if type(module) is cls}
    return found.pop() if len(found) == 1 else "mixed"


def needs_swap(backbone: ClipBackbone, activation: str) -> bool:
    """Whether ``activation`` (``native``, ``gelu``, ``quickgelu``) differs from what ``backbone`` computes."""
    return activation != "native" and model_activation(backbone.model) != activation


def swap_activation(model: nn.Module, activation: str) -> nn.Module:
    """A deep copy of ``model`` with every GELU/QuickGELU module replaced by ``activation`` (exact-erf GELU
    or QuickGELU), in the image and the text tower alike; ``model`` itself is unchanged."""
    swapped = copy.deepcopy(model)
    target = ACTIVATIONS[activation]
    for parent in list(swapped.modules()):
        for name, child in parent.named_children():
            if type(child) in ACTIVATIONS.values() and type(child) is not target:
                setattr(parent, name, target())
    return swapped


class CategoryScopedCache(FeatureCache):
    """A private feature cache that drops in-memory entries when the category changes (as the runner does
    for its shared cache)."""

    category: str | None = None

    def clear_memory(self) -> None:
        super().clear_memory()
        self.category = None

    def enter_category(self, category: str) -> None:
        """Forget the previous category's features when ``category`` is a new one."""
        if category != self.category:
            self.clear_memory()
            self.category = category


_SWAPPED: WeakKeyDictionary[FeatureCache, dict[str, FeatureCache]] = WeakKeyDictionary()
"""Shared cache → activation → its swapped cache; weak, so the swapped copies go with the shared cache."""


def cache_with_activation(cache: FeatureCache, activation: str) -> FeatureCache:
    """``cache`` itself when its backbone already uses ``activation`` (or ``activation`` is ``native``),
    else a cache over a swapped copy of the backbone, built once per shared cache and activation with the
    shared cache's precision, disk folder, memory budget, encode settings and spill root, emptied and freed with
    the shared cache."""
    backbone = cache.backbone
    if not needs_swap(backbone, activation):
        return cache
    swapped = _SWAPPED.setdefault(cache, {})
    if activation not in swapped:
        twin = ClipBackbone(
            swap_activation(backbone.model, activation), backbone.arch, backbone.pretrained,
            f"{backbone.weights_id}+act={activation}", backbone.precision,
        )  # fmt: skip
        swapped[activation] = CategoryScopedCache(
            twin.to(backbone.mean.device), cache.disk_dir, memory_budget=cache.memory_budget, settings=cache.settings,
            spill_root=cache.spill_root,
        )  # fmt: skip
        cache.companions.append(swapped[activation])  # emptied whenever the shared cache is
    return swapped[activation]
