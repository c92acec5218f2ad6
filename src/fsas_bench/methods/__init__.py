"""FSAS methods: one sub-package per method (pure torch model + LightningModule), one registry.

Importing this package is cheap: a method's module (and torch) is imported when the method is first looked up
with :func:`get_method`; the base classes live in :mod:`fsas_bench.methods.base`.
"""

from fsas_bench.methods.registry import check_method_name, get_method, list_methods, register_method

__all__ = ["check_method_name", "get_method", "list_methods", "register_method"]
