"""benchmarks/gpu.py cannot rot: its --smoke setting runs the whole script on CPU (fsas-tiny, one category)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_end_to_end(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    rates = re.search(r"\(a\) decode ([\d.]+) img/s, \(b\) encode ([\d.]+) img/s", text)
    assert rates and float(rates[1]) > 0 and float(rates[2]) > 0
    for method in ("patchknn", "winclip", "dictas", "inctrl", "promptad"):
        line = re.search(rf"\(c\) {method} +([\d.]+) img/s over +(\d+) images, \(c\)/min\(a,b\) ([\d.]+)", text)
        assert line and float(line[1]) > 0 and int(line[2]) == 5, method  # bottle at --limit 1: 1 + 1 + 3 images
        assert float(line[3]) > 0
    assert "auxiliary training" in text  # dictas and inctrl trained (timed apart)
    assert (tmp_path / "runs" / "fsas-tiny-patchknn" / "results.csv").is_file()
