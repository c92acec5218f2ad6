"""Strict integer parsing of users' text: ASCII digits only (Python's ``int`` and ``str.isdigit`` also accept
``²``, ``١``, ``1_0`` or surrounding blanks), and the seed range every seeded RNG accepts."""

from __future__ import annotations

import re

MAX_SEED = 2**32 - 1
"""Largest seed: NumPy's legacy RNG and Lightning's ``seed_everything`` take seeds in [0, 2³² − 1]."""

_INTEGER = re.compile(r"-?[0-9]+")


def strict_int(text: str) -> int | None:
    """``text`` as an int when it is an optional ``-`` and ASCII digits, else None."""
    return int(text) if _INTEGER.fullmatch(text) else None
