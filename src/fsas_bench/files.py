"""Atomic file writes and writability checks shared by every layer that writes output.

A write goes to a uniquely named temp file in the target's folder and is moved into place with ``os.replace``,
so a reader never sees half a file and concurrent writers never share a temp file; the temp file is removed
when the write fails. Any OSError (a full disk above all) becomes a one-line :class:`UserError`. Every output
file is written through this module (folders that are published whole are swapped in by their writers).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from fsas_bench.errors import UserError


def atomic_write(path: Path, write: Callable[[str], None], what: str) -> None:
    """Create ``path`` by calling ``write(temp_path)`` and moving the temp file into place, with the
    permissions a plain ``open`` would give it (``0o666`` less the umask).

    Args:
        path: the final file.
        write: writes the whole content to the temp path it is given.
        what: the kind of file, for the error message (e.g. ``results``).

    Raises:
        UserError: the folder or file cannot be written (no space left, no permission, ...).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; outputs get the user's usual permissions
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(write_error(path, exc, what)) from exc


def atomic_write_bytes(path: Path, data: bytes, what: str = "output file") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), what)


def atomic_write_text(path: Path, text: str, what: str = "output file") -> None:
    """Write ``text`` to ``path`` atomically as UTF-8, line endings untouched (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"), what)


def umask() -> int:
    """The process's current umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_error(path: Path, exc: OSError, what: str) -> str:
    """One line naming ``path``, the reason and the fix."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {what} '{path}': no space left on device: free disk space and run again"
    return f"cannot write {what} '{path}' ({exc.strerror or exc}): choose a writable location"


def check_writable_dir(path: Path, option: str) -> None:
    """Fail before writing anything when directory ``path`` (given as ``option``) cannot be created or written."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} '{path}' is not writable (no write permission in '{probe}'): choose another "
                        f"{option}")  # fmt: skip
