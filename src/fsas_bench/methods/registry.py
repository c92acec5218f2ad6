"""timm-style method registry: ``@register_method`` on a LightningModule class, then look it up by name.

The built-in methods are known by name without importing them (like open_clip's config registry): the CLI can
refuse an unknown ``--methods`` name before torch is loaded, and :func:`get_method` imports a method's module
on first use.
"""

from __future__ import annotations

import importlib
from fnmatch import fnmatch
from typing import TYPE_CHECKING

from fsas_bench.errors import UserError

if TYPE_CHECKING:
    from fsas_bench.methods.base import FewShotMethod

BUILTIN_METHODS: dict[str, str] = {
    "dictas": "fsas_bench.methods.dictas.lightning_module",
    "finegrainedad": "fsas_bench.methods.finegrainedad.lightning_module",
    "inctrl": "fsas_bench.methods.inctrl.lightning_module",
    "patchknn": "fsas_bench.methods.patchknn.lightning_module",
    "promptad": "fsas_bench.methods.promptad.lightning_module",
    "winclip": "fsas_bench.methods.winclip.lightning_module",
}
"""Built-in method name → the module whose import registers it."""

_REGISTRY: dict[str, type[FewShotMethod]] = {}


def register_method(cls: type[FewShotMethod]) -> type[FewShotMethod]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method '{cls.name}' is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def list_methods(pattern: str = "*") -> list[str]:
    """Known method names (built-in and registered) matching a shell-style ``pattern``, sorted; imports nothing."""
    return sorted(name for name in {*BUILTIN_METHODS, *_REGISTRY} if fnmatch(name, pattern))


def check_method_name(name: str) -> None:
    """Raise a one-line :class:`UserError` unless ``name`` is a known method; imports nothing."""
    if name not in BUILTIN_METHODS and name not in _REGISTRY:
        raise UserError(
            f"unknown method '{name}': choose from {', '.join(list_methods())} (see 'fsas-bench list')"
        )


def get_method(name: str) -> type[FewShotMethod]:
    """The method class registered as ``name`` (importing its built-in module on first use)."""
    check_method_name(name)
    if name not in _REGISTRY:
        importlib.import_module(BUILTIN_METHODS[name])
    return _REGISTRY[name]
