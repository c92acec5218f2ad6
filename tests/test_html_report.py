"""The HTML report opened in a real headless Chromium (the Debian ``chromium`` + ``chromium-driver`` packages, which
``.ci/run`` installs): every image loads, the tables equal leaderboard.csv, and the page survives NaN metrics
and a dataset without masks."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from fsas_bench.data.registry import load_dataset
from fsas_bench.runner.html_report import write_html_report
from fsas_bench.runner.leaderboard import write_leaderboards
from fsas_bench.runner.sweep import Sweep, SweepSpec


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "headless Chromium is needed: apt-get install chromium chromium-driver (.ci/run does)"
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(driver))
    yield session
    session.quit()


def _report(spec: SweepSpec) -> Path:
    Sweep(spec).run()
    write_leaderboards(spec.out)
    return write_html_report(spec.out)


def _open(browser, page: Path) -> list[list]:
    """Load ``page``; (src, complete, naturalWidth) of every image once the load event fired."""
    browser.get(page.as_uri())
    return browser.execute_script(
        "return Array.from(document.images, i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
    )


def _main_table(browser, dataset: str) -> dict[tuple[str, str], str]:
    """(row label, metric) → cell text of the dataset's leaderboard table."""
    table = browser.find_element(By.XPATH, f"//h2[text()='{dataset}']/following-sibling::table[1]")
    header = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    cells = {}
    for row in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        texts = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        cells |= {(texts[0], column): text for column, text in zip(header[1:], texts[1:])}
    return cells


def _expected(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "NaN"
    return f"{100 * mean:.1f} ± {'—' if math.isnan(std) else f'{100 * std:.1f}'}"


@pytest.mark.slow
def test_report_of_a_small_sweep_in_chromium(tmp_path, browser):
    spec = SweepSpec(out=tmp_path / "run", methods=("patchknn", "winclip"), categories=("hex_nut",), shots=(1,),
                     seeds=(0,))  # fmt: skip
    page = _report(spec)
    images = _open(browser, page)
    linked = {p.relative_to(page.parent).as_posix() for p in (page.parent / "report_assets").iterdir()}
    assert {src for src, _, _ in images} == linked  # the folder holds exactly what the page shows
    assert all(complete and width > 0 for _, complete, width in images), [i for i in images if not i[2]]
    # plots, per-category curves, the colour bar and a 4 × (1 + 2 methods) grid of tiles
    assert len(images) == 3 + 4 * 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.grid tr")) == 1 + 4
    assert "one linear rule per method" in browser.find_element(By.TAG_NAME, "body").text

    board = pd.read_csv(spec.out / "leaderboard.csv")
    cells = _main_table(browser, "synthetic")
    assert len(cells) >= len(board)
    for r in board.itertuples():
        assert cells[(f"{r.method} ({r.shot}-shot)", r.metric)].rstrip("†") == _expected(r.mean, r.std)

    browser.set_window_size(1400, browser.execute_script("return document.body.scrollHeight"))
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as screenshot:
        assert screenshot.width >= 1000 and screenshot.height > 2000


def _mask_free_dataset(root: Path) -> Path:
    """``<root>/nomask``: a meta.json dataset of synthetic hex_nut images without masks; category ``nut`` has
    normal and anomalous test images, ``onlybad`` anomalous ones only (its image metrics are NaN)."""
    source = load_dataset("synthetic", None)
    train = source.normal_train("hex_nut")[:4]
    test = source.split("hex_nut", "test")
    good, bad = [s for s in test if s.label == 0][:3], [s for s in test if s.label == 1][:3]
    dataset = root / "nomask"

    def records(samples, category):
        out = []
        for s in samples:
            target = dataset / category / s.rel_path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.image_path, target)
            out.append({"img_path": f"{category}/{s.rel_path}", "mask_path": "", "cls_name": category,
                        "specie_name": s.defect_type, "anomaly": s.label})  # fmt: skip
        return out

    meta = {"train": {c: records(train, c) for c in ("nut", "onlybad")},
            "test": {"nut": records(good + bad, "nut"), "onlybad": records(bad, "onlybad")}}  # fmt: skip
    (dataset / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def test_report_renders_nan_metrics_and_a_dataset_without_masks(tmp_path, browser):
    data_root = _mask_free_dataset(tmp_path / "data")
    spec = SweepSpec(out=tmp_path / "run", methods=("patchknn",), datasets=("nomask",), data_root=data_root,
                     shots=(1,), seeds=(0,))  # fmt: skip
    page = _report(spec)
    results = pd.read_csv(spec.out / "results.csv")
    assert set(results["level"]) == {"image"} and results.loc[results["category"] == "onlybad", "value"].isna().all()
    images = _open(browser, page)
    assert images and all(complete and width > 0 for _, complete, width in images)
    assert browser.find_elements(By.CSS_SELECTOR, "table.grid") == []  # no masks: no grids
    curves = spec.out / "pictures" / "nomask"
    keys = {c: set(np.load(next((curves / c / "curves").glob("*.npz"))).files) for c in ("nut", "onlybad")}
    assert keys == {"nut": {"I-ROC/x", "I-ROC/y"}, "onlybad": set()}  # no PRO, no pixel ROC; NaN: no curve
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "NaN" in text  # the per-category table shows the undefined values
    assert len(images) == 2  # shot scaling and the curves of 'nut'
