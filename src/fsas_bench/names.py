"""Names that become parts of output paths (dataset, category, method, file names) and paths kept in a folder.

Every file a run writes is named through :func:`child_path` / :func:`safe_relative`, so a dataset or category
name read from a user's file (a meta.json class such as ``../../x``) can never place a file outside its folder.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from fsas_bench.errors import UserError


def check_name(name: object, what: str = "name") -> str:
    """``name`` when it is one non-empty path component: not ``.``/``..``, no ``/`` or ``\\``, no control
    characters; UserError otherwise."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or any(c in "/\\" or unicodedata.category(c) == "Cc" for c in name)
    ):
        raise UserError(
            f"{what} {name!r} cannot be part of a file name (it must be one path component without '..', "
            "'/', '\\' or control characters): rename it"
        )
    return name


def safe_relative(*parts: str, what: str = "name") -> Path:
    """The relative path ``parts[0]/parts[1]/…``, each part checked by :func:`check_name`."""
    return Path(*(check_name(part, what) for part in parts))


def child_path(directory: Path, *parts: str, what: str = "name") -> Path:
    """``directory/parts[0]/…``: a path that cannot leave ``directory`` (each part checked by :func:`check_name`)."""
    return directory / safe_relative(*parts, what=what)


def contained(root: Path, path: Path, what: str, fix: str) -> Path:
    """``path`` when it resolves (symlinks followed) inside the resolved ``root``; UserError naming ``what``
    and ``fix`` otherwise."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{what} '{path}' leads outside '{root}' ('..' or a symlink): {fix}")
    return path
