"""Pure checks of run options, shared by the CLI (which runs them before importing torch) and the Python API.

Nothing here imports torch, lightning or open_clip: a bad argument is refused in a fraction of a second.
"""

from __future__ import annotations

from fsas_bench.errors import UserError
from fsas_bench.numbers import strict_int

MASK_RESIZE_RULES = ("nearest", "bilinear>0.5", "area>0.5", "area>0")
"""How masks are resized to an N × N evaluation frame (see :class:`fsas_bench.metrics.frame.EvalFrame`)."""


def parse_eval_size(eval_size: str, mask_resize: str) -> tuple[int | None, str]:
    """``--eval-size`` / ``--mask-resize`` as ``(N or None for native, rule)``; the rule is ``none`` at native."""
    if eval_size == "native":
        return None, "none"
    size = strict_int(eval_size)
    if size is None or size <= 0:
        raise UserError(f"--eval-size '{eval_size}' is invalid: use 'native' or a positive integer such as 256")
    if mask_resize not in MASK_RESIZE_RULES:
        raise UserError(f"--mask-resize '{mask_resize}' is unknown: use one of {', '.join(MASK_RESIZE_RULES)}")
    return size, mask_resize


def check_device_name(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N``; whether that GPU exists is checked when the backbone is loaded."""
    if device == "cpu" or device == "cuda":
        return
    index = strict_int(device.removeprefix("cuda:")) if device.startswith("cuda:") else None
    if index is None or index < 0:
        raise UserError(f"--device '{device}' is unknown: use cpu or cuda (cuda:N)")


BYTE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str, option: str) -> int:
    """``--cache-memory``-style sizes: a positive integer of bytes, optionally with a binary unit K, M, G or T
    (``512M`` = 512 × 2²⁰)."""
    unit = text[-1:].upper() if text[-1:].upper() in BYTE_UNITS else ""
    number = strict_int(text[: len(text) - len(unit)])
    if number is None or number <= 0:
        raise UserError(f"{option} '{text}' is invalid: use a positive number of bytes, optionally with K, M or G "
                        "(e.g. 2G)")  # fmt: skip
    return number * BYTE_UNITS[unit]
