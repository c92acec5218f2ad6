"""Seven-segment lettering as strokes: pill imprints and circuit-board silkscreen."""

from __future__ import annotations

import numpy as np

from fsas_bench.data.synthetic.geometry import polyline
from fsas_bench.data.synthetic.scene import Shape

_SEGMENTS = {
    "a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 1)), "c": ((1, 1), (1, 2)), "d": ((0, 2), (1, 2)),
    "e": ((0, 1), (0, 2)), "f": ((0, 0), (0, 1)), "g": ((0, 1), (1, 1)),
}
_CHARACTERS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc", "5": "afgcd", "6": "afgedc", "7": "abc",
    "8": "abcdefg", "9": "abcdfg", "A": "abcefg", "C": "adef", "E": "adefg", "F": "aefg", "H": "bcefg",
    "L": "def", "P": "abefg", "S": "afgcd", "U": "bcdef",
}


def text_shape(text: str, height: float, stroke: float) -> Shape:
    """Signed distance (pixels) to ``text`` set in seven-segment characters ``height`` pixels tall with
    strokes ``stroke`` pixels wide, centred on the origin and reading along +x."""
    unit = height / 2.0
    advance = 1.6 * unit
    left = -0.5 * ((len(text) - 1) * advance + unit)
    strokes = [
        np.array(_SEGMENTS[segment], np.float64) * unit + (left + i * advance, -unit)
        for i, character in enumerate(text)
        for segment in _CHARACTERS[character]
    ]

    def shape(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.min([polyline(x, y, points) for points in strokes], axis=0) - 0.5 * stroke

    return shape
