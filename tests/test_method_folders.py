"""Every method folder has one shape, and the config carries what the runner and `fsas-bench list` read."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsas_bench.cli import main
from fsas_bench.data.synthetic import SYNTHETIC_DATASETS
from fsas_bench.methods import get_method, list_methods

METHODS_DIR = Path(__file__).resolve().parents[1] / "src" / "fsas_bench" / "methods"


@pytest.mark.parametrize("name", list_methods())
def test_folder_shape_and_readme(name):
    folder = METHODS_DIR / name
    files = {"config.py", "lightning_module.py", "README.md"} | ({"torch_model.py"} if name != "promptad" else set())
    assert files <= {p.name for p in folder.iterdir()}
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Figures on the embedded benchmark" in readme and f"| {name} (1-shot) |" in readme
    assert "Provenance" in readme and "github.com" in readme


@pytest.mark.parametrize("name", list_methods())
def test_config_presets_are_data(name):
    config_cls = get_method(name).config_cls
    for dataset in SYNTHETIC_DATASETS:
        assert config_cls.for_dataset(dataset) == config_cls(**config_cls.embedded_schedule)
    assert config_cls.for_dataset("btad") == config_cls()
    preset = config_cls.faithful_preset("btad")
    assert (preset is None) == (not config_cls.faithful_changes)
    if preset is not None:
        assert preset.mode == "faithful"
        assert all(getattr(preset, k) == v for k, v in config_cls.faithful_changes.items())
    config = config_cls()
    assert config.transductive is False and config.target_leakage is False  # benchmark defaults


def test_dictas_transductive_and_leakage_follow_its_config():
    dictas = get_method("dictas").config_cls
    faithful = dictas.faithful_preset("mvtec")
    assert faithful.transductive and faithful.target_leakage
    assert dictas(image_score="fixed_fusion:0.5").transductive is False


def test_list_prints_the_config_transductive_value(capsys):
    assert main(["list"]) == 0
    rows = {line.split("│")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.count("│") > 4}
    assert "faithful" in rows["dictas"].split("│")[4] and rows["winclip"].split("│")[4].strip() == "no"
