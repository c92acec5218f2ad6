"""Hardening against the environment: full disks, unwritable or corrupt caches, bad results files, offline
hubs, file permissions and provenance of uncommitted code."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fsas_bench.errors import UserError
from tests.test_bad_input import data_args, meta_dataset, run_bad


# --- 9. full disk, unwritable feature cache, corrupt cache entries ------------------------------------------


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_feature_cache_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch, kind):
    meta_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    if kind == "file":
        cache.write_text("x")
    else:  # a read-only folder (simulated: tests may run as root, who ignores permission bits)
        cache.mkdir()
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != cache and access(path, mode))
    line = run_bad(tmp_path, capsys, [*data_args(tmp_path), "--feature-cache", str(cache / "sub")], "--feature-cache")
    assert f"'{cache / 'sub'}' is not writable" in line


def test_full_disk_while_writing_a_result_is_one_line(tmp_path, monkeypatch):
    from fsas_bench.files import atomic_write_text

    monkeypatch.setattr(os, "replace", _no_space)
    target = tmp_path / "out" / "results.csv"
    with pytest.raises(UserError, match=rf"cannot write .* '{target}': no space left on device: free disk space"):
        atomic_write_text(target, "a,b\n")
    assert not target.exists() and os.listdir(target.parent) == [], "the temp file is removed"


def test_full_disk_while_writing_a_cache_entry_is_one_line(tmp_path, monkeypatch, tiny_backbone):
    import fsas_bench.backbones.cache as cache_module
    from fsas_bench.backbones import FeatureCache

    monkeypatch.setattr(cache_module, "save_file", _no_space)
    cache = FeatureCache(tiny_backbone, tmp_path / "cache")
    with pytest.raises(UserError, match="feature cache entry .*: no space left on device: free disk space"):
        cache.features(["a" * 64], ["embedding"], _loader(tiny_backbone.image_size))


def _loader(size: int):
    return lambda i: torch.linspace(0, 1, 3 * size * size).reshape(3, size, size)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other key", "no key"])
def test_corrupt_or_mismatched_cache_entry_is_a_miss(tmp_path, tiny_backbone, damage):
    from fsas_bench.backbones import FeatureCache

    sha, _image = "b" * 64, _loader(tiny_backbone.image_size)
    fresh = FeatureCache(tiny_backbone, tmp_path / "cache").features([sha], ["embedding"], _image)[0]["embedding"]
    (entry,) = (tmp_path / "cache").glob("*.safetensors")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:40])
    elif damage == "garbage":
        entry.write_bytes(b"\xff" * 100)
    else:  # a well-formed entry with wrong features, stored under another key or none
        key = {"key": "0" * 64} if damage == "other key" else None
        save_file({"embedding": torch.full_like(fresh, 7.0)}, entry, metadata=key)
    cache = FeatureCache(tiny_backbone, tmp_path / "cache")
    again = cache.features([sha], ["embedding"], _image)[0]["embedding"]
    assert cache.stats.misses == 1 and cache.stats.forwards == 1
    torch.testing.assert_close(again, fresh, rtol=0, atol=0)
    reread = FeatureCache(tiny_backbone, tmp_path / "cache")
    torch.testing.assert_close(reread.features([sha], ["embedding"], _image)[0]["embedding"], fresh, rtol=0, atol=0)
    assert reread.stats.hits == 1, "the recomputed entry was rewritten"


# --- 11. `fsas-bench report` on damaged results.csv / timings.csv -----------------------------------------


def _run_dir(tmp_path: Path) -> Path:
    """A --out folder with a two-row results.csv and its timings.csv, as the store writes them."""
    from fsas_bench.runner.results import RESULT_COLUMNS, ResultStore

    out = tmp_path / "run"
    store = ResultStore(out)
    for seed in (0, 1):
        row = dict.fromkeys(RESULT_COLUMNS, "x") | {"shot": 1, "seed": seed, "value": 0.5 + seed / 10, "status": "ok",
                                                     "metric": "I-AUROC", "job_id": f"job{seed}"}  # fmt: skip
        store.write_cell(f"job{seed}", [row], {"job_id": f"job{seed}", "ms_per_image": 2.0})
    assert store.merge() == 2
    return out


def _report_bad(out: Path, capsys: pytest.CaptureFixture[str], needle: str) -> None:
    from fsas_bench.cli import main

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fsas-bench: error:") and "Traceback" not in err, lines
    assert needle in lines[0], lines[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, "nothing may be written"


def test_report_on_intact_tables_still_works(tmp_path, capsys):
    from fsas_bench.cli import main

    out = _run_dir(tmp_path)
    assert main(["report", str(out)]) == 0
    assert "55.0 ± 7.1" in (out / "leaderboard.md").read_text()  # seeds 0.5 and 0.6, ×100


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda text: "", "is empty (no header line)"),
        (lambda text: text[: text.rindex("\n", 0, len(text) - 1) + 30], "fields where the header has"),
        (lambda text: "method,value\nm,0.5\n", "lacks the column(s) run_id"),
        (lambda text: text.replace("0.5", "zero.five"), "row 1 has value = 'zero.five', not a number"),
        (lambda text: text.replace(",x,", ',"x,', 1), "results.csv"),
        (lambda text: "\ufffe\x00\xff", "results.csv"),
    ],
    ids=["empty", "truncated", "wrong columns", "bad value", "open quote", "binary"],
)
def test_report_on_a_damaged_results_csv_is_one_line(tmp_path, capsys, damage, needle):
    out = _run_dir(tmp_path)
    results = out / "results.csv"
    results.write_text(damage(results.read_text(encoding="utf-8")), encoding="utf-8")
    _report_bad(out, capsys, needle)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda text: text[:-7], "fields where the header has"),
        (lambda text: "job,ms\njob0,2\n", "lacks the column(s) job_id, ms_per_image"),
        (lambda text: text.replace("2.0", "fast"), "has ms_per_image = 'fast', not a number"),
    ],
    ids=["truncated", "wrong columns", "bad number"],
)
def test_report_on_a_corrupt_timings_csv_is_one_line(tmp_path, capsys, damage, needle):
    out = _run_dir(tmp_path)
    timings = out / "timings.csv"
    timings.write_text(damage(timings.read_text(encoding="utf-8")), encoding="utf-8")
    _report_bad(out, capsys, needle)


# --- 14. open_clip weights without network: one line, fast --------------------------------------------------


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face / torch hub cache, so nothing is found locally."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _no_network(monkeypatch) -> list[object]:
    """Make every socket connection fail (never a real download); the addresses tried."""
    import socket

    tried: list[object] = []

    def refuse(*args, **kwargs):
        tried.append(args)
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tried


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "network blocked"])
def test_pretrained_tag_offline_fails_fast_in_one_line(tmp_path, capsys, monkeypatch, empty_hub_cache, how):
    import time

    import huggingface_hub.constants as hub

    tried = _no_network(monkeypatch)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", how == "HF_HUB_OFFLINE")  # the test session sets it
    meta_dataset(tmp_path / "data")
    start = time.perf_counter()
    line = run_bad(tmp_path, capsys, [*data_args(tmp_path), "--backbone", "ViT-B-16", "--pretrained", "openai"],
                   "could not obtain the 'openai' weights of ViT-B-16")  # fmt: skip
    assert time.perf_counter() - start < 20, "no minute of retries"
    assert "not in the local cache" in line and "--pretrained PATH" in line
    assert hub.HF_HUB_OFFLINE is (how == "HF_HUB_OFFLINE"), "the hub setting is restored"
    assert len(tried) == (0 if how == "HF_HUB_OFFLINE" else 1), "one probe at most, no retries"


# --- 16. output files get the permissions of the user's umask ------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_are_created_with_the_umask_permissions(tmp_path, umask, tiny_backbone):
    import stat

    from fsas_bench.backbones import FeatureCache
    from fsas_bench.runner.results import ResultStore
    from fsas_bench.runner.training import save_state

    old = os.umask(umask)
    try:
        store = ResultStore(tmp_path / "out")
        store.write_cell("job", [{"value": 0.5, "job_id": "job", "status": "ok", "metric": "I-AUROC"}], {"job_id": "job"})
        assert store.merge() == 1
        save_state({"w": torch.zeros(2)}, [1.0], tmp_path / "out" / "fit.safetensors")
        FeatureCache(tiny_backbone, tmp_path / "cache").features(
            ["c" * 64], ["embedding"], lambda i: torch.zeros(3, tiny_backbone.image_size, tiny_backbone.image_size))
        (tmp_path / "plain").write_text("reference")  # what open() gives under this umask
    finally:
        os.umask(old)
    assert os.umask(old) == old, "the umask is left as it was"
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "plain"]
    assert len(files) >= 6  # results, timings, cell csv + timing, checkpoint, cache entry
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# --- 17. provenance: uncommitted code is marked dirty ---------------------------------------------------------


def _package_in_a_repo(tmp_path: Path) -> Path:
    """A git repository with a committed ``pkg/__init__.py`` and a README outside the package; the package."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("x = 1\n")
    (tmp_path / "README").write_text("readme\n")
    git("add", ".")
    git("commit", "-qm", "init")
    return tmp_path / "pkg"


@pytest.mark.parametrize(
    ("change", "dirty"),
    [
        (lambda pkg: None, False),
        (lambda pkg: (pkg.parent / "README").write_text("edited\n"), False),  # outside the package
        (lambda pkg: (pkg / "__init__.py").write_text("x = 2\n"), True),
        (lambda pkg: (pkg / "new.py").write_text("y = 1\n"), True),
    ],
    ids=["clean", "outside the package", "modified", "untracked module"],
)
def test_git_sha_marks_uncommitted_package_code_dirty(tmp_path, monkeypatch, change, dirty):
    import subprocess

    import fsas_bench
    from fsas_bench.runner import provenance

    package = _package_in_a_repo(tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    change(package)
    monkeypatch.setattr(fsas_bench, "__file__", str(package / "__init__.py"))
    provenance.git_sha.cache_clear()
    try:
        assert provenance.git_sha() == (f"{head}-dirty" if dirty else head)
    finally:
        provenance.git_sha.cache_clear()


def test_leaderboard_footnote_keeps_the_dirty_mark(tmp_path):
    from fsas_bench.runner.leaderboard import write_leaderboards

    out = _run_dir(tmp_path)
    results = out / "results.csv"
    results.write_text(results.read_text().replace(",job0,x,x,", f",job0,{'a' * 40}-dirty,x,", 1))
    text = write_leaderboards(out)[0].read_text()
    assert f"(git {'a' * 12}-dirty, x)" in text


# --- 19. the README sizes the install and gives the CPU-only variant ----------------------------------------


def test_readme_install_gives_the_cpu_only_torch_alternative():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "pip install -e \".[dev]\"" in install.split("```")[1], "the one-command install comes first"
    assert "6 GB" in install
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in install and install.index(cpu) < install.rindex('pip install -e ".[dev]"')


def test_default_out_is_an_untracked_folder_never_the_committed_example(tmp_path, monkeypatch):
    """The README's main command run in a checkout must not overwrite the committed results/embedded/."""
    import subprocess

    from fsas_bench.cli import main

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--methods", "patchknn", "--categories", "hex_nut", "--shots", "1", "--seeds", "0"]) == 0
    assert (tmp_path / "fsas-results" / "embedded" / "results.csv").is_file()
    assert not (tmp_path / "results").exists()
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", "fsas-results/embedded/results.csv"])
    assert ignored.returncode == 0, "the default output folder must be ignored by git"
