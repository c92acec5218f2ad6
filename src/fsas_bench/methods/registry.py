"""timm-style method registry: ``@register_method`` on a LightningModule class, then look it up by name."""

from __future__ import annotations

from fnmatch import fnmatch
from typing import TYPE_CHECKING

from fsas_bench.errors import UserError

if TYPE_CHECKING:
    from fsas_bench.methods.base import FewShotMethod

_REGISTRY: dict[str, type[FewShotMethod]] = {}


def register_method(cls: type[FewShotMethod]) -> type[FewShotMethod]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method '{cls.name}' is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell-style ``pattern``, sorted."""
    return sorted(name for name in _REGISTRY if fnmatch(name, pattern))


def get_method(name: str) -> type[FewShotMethod]:
    """The method class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown method '{name}': choose from {', '.join(list_methods())} (see 'fsas-bench list')"
        ) from None
