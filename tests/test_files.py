"""The one atomic-write helper: content exact, a unique temp file beside the target, nothing left on failure."""

from __future__ import annotations

import os
import stat

import pytest

from fsas_bench import files
from fsas_bench.files import atomic_write, atomic_write_bytes, atomic_write_text


def test_text_and_bytes_are_written_exactly_with_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "a.csv"
    atomic_write_text(target, "é,b\r\nc\n")
    assert target.read_bytes() == "é,b\r\nc\n".encode()  # UTF-8, line endings untouched
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~files.umask()
    assert os.listdir(target.parent) == ["a.csv"]


def test_each_write_uses_its_own_temp_file_in_the_target_folder(tmp_path, monkeypatch):
    moved = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append(src), replace(src, dst)))
    target = tmp_path / "results.csv"
    atomic_write_text(target, "1\n")
    atomic_write_text(target, "2\n")
    assert len(set(moved)) == 2 and all(os.path.dirname(m) == str(tmp_path) for m in moved)
    assert target.read_text() == "2\n"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"old")

    def fail(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, fail, "weights")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == [target.name]
