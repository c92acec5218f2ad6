"""One-way layers: no module imports a module of a higher layer, and no method imports the metric layer or the
runner (methods never compute metrics: the runner scores their output, see ``methods/base.py``).

:data:`LAYERS` is the table, lowest first; a module may import its own layer and every layer below. A new
package or top-level module of ``fsas_bench`` gets a row entry here (a module missing from the table fails).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fsas_bench

LAYERS: tuple[tuple[str, ...], ...] = (
    # helpers every layer uses ("" is the package's own __init__, which holds the version)
    ("", "errors", "numbers", "hashing", "names", "files", "options", "progress"),
    ("metrics", "data", "backbones"),  # the base layer: metrics, datasets and manifests, frozen backbones
    ("trainer", "pretrain"),  # training tools on the base layer: the quiet Lightning Trainer, tiny-CLIP pretraining
    ("methods",),
    ("runner",),
    ("cli",),
)
FORBIDDEN: dict[str, tuple[str, ...]] = {"methods": ("metrics", "runner")}
"""Imports the layers would allow (or not) that are ruled out by name: a method never imports metrics."""
PACKAGE = "fsas_bench"
SOURCE = Path(fsas_bench.__file__).parent


def layer_of(module: str) -> str:
    """``fsas_bench.methods.dictas.config`` → ``methods``; the package itself → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def rank(layer: str) -> int:
    """Position of ``layer`` in :data:`LAYERS` (KeyError naming it when the table lacks it)."""
    for position, row in enumerate(LAYERS):
        if layer in row:
            return position
    raise KeyError(f"'{layer}' is in no row of LAYERS: add it to tests/test_layers.py")


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``fsas_bench`` import in ``source`` (also inside functions and
    ``TYPE_CHECKING`` blocks; relative imports resolved against ``module``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # `from fsas_bench import runner` imports the subpackage: record each name under its base
            found += [(node.lineno, f"{base}.{alias.name}" if base == PACKAGE else base) for alias in node.names]
    return [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def violations(imports: dict[str, list[tuple[int, str]]]) -> list[str]:
    """One line per import that goes up the table or is forbidden by name, for ``{module: imports_of(...)}``."""
    bad = []
    for module, found in sorted(imports.items()):
        layer = layer_of(module)
        for line, target in found:
            other = layer_of(target)
            if rank(other) > rank(layer):
                bad.append(f"{module}:{line} imports {target}: layer '{layer}' is below '{other}'")
            elif other in FORBIDDEN.get(layer, ()):
                bad.append(f"{module}:{line} imports {target}: '{layer}' must not import '{other}'")
    return bad


def project_imports() -> dict[str, list[tuple[int, str]]]:
    """Every module of the installed source tree and its ``fsas_bench`` imports."""
    result = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        result[module] = imports_of(path.read_text(encoding="utf-8"), module, is_package)
    return result


def test_every_module_is_in_the_layer_table():
    modules = project_imports()
    assert len(modules) > 50  # the walk found the source tree
    for module in modules:
        rank(layer_of(module))


def test_no_module_imports_a_higher_layer_and_no_method_imports_metrics_or_the_runner():
    assert violations(project_imports()) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("fsas_bench.backbones.clip", "from fsas_bench.methods.finegrainedad.vv_attention import vv_patch_tokens",
         "fsas_bench.backbones.clip:1 imports fsas_bench.methods.finegrainedad.vv_attention: layer 'backbones' is "
         "below 'methods'"),
        ("fsas_bench.methods.dictas.validation", "import torch\nfrom fsas_bench.metrics.functional import pixel_metrics",
         "fsas_bench.methods.dictas.validation:2 imports fsas_bench.metrics.functional: 'methods' must not import "
         "'metrics'"),
        ("fsas_bench.methods.base", "def f():\n    from fsas_bench import runner",
         "fsas_bench.methods.base:2 imports fsas_bench.runner: layer 'methods' is below 'runner'"),
        ("fsas_bench.metrics.frame", "from ..runner import tasks",
         "fsas_bench.metrics.frame:1 imports fsas_bench.runner: layer 'metrics' is below 'runner'"),
        ("fsas_bench.trainer", "import fsas_bench.methods.registry",
         "fsas_bench.trainer:1 imports fsas_bench.methods.registry: layer 'trainer' is below 'methods'"),
        ("fsas_bench.files", "from fsas_bench.data.index import DatasetIndex",
         "fsas_bench.files:1 imports fsas_bench.data.index: layer 'files' is below 'data'"),
    ],
)  # fmt: skip
def test_the_check_reports_a_backward_import(module, source, expected):
    assert violations({module: imports_of(source, module, is_package=False)}) == [expected]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("fsas_bench.methods.dictas.lightning_module", "from fsas_bench.trainer import quiet_trainer"),
        ("fsas_bench.runner.tasks", "from fsas_bench.trainer import quiet_trainer\nfrom fsas_bench.metrics import AUPRO_FPR_LIMIT"),
        ("fsas_bench.methods.finegrainedad.hires", "from fsas_bench.backbones.vv_attention import vv_patch_tokens"),
        ("fsas_bench.metrics.frame", "from fsas_bench.data.sample import Sample\nfrom . import inputs"),
        ("fsas_bench.cli", "from fsas_bench.runner.sweep import Sweep"),
    ],
)  # fmt: skip
def test_the_check_allows_imports_down_or_across(module, source):
    assert imports_of(source, module, is_package=False)
    assert violations({module: imports_of(source, module, is_package=False)}) == []


def test_a_module_outside_the_table_is_reported():
    with pytest.raises(KeyError, match="'plugins' is in no row of LAYERS"):
        violations({"fsas_bench.plugins.x": [(1, "fsas_bench.errors")]})
