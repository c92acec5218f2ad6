"""The circuit-board category: a fixed board design drawn under a random pose, so that every board is the
same product. The printing (traces, pads, silkscreen) is rendered once and resampled onto each board;
the components are parts of the layout, so they can go missing or move."""

from __future__ import annotations

import functools

import numpy as np

from fsas_bench.data.synthetic.colours import rgb
from fsas_bench.data.synthetic.geometry import box, circle, coverage, direction, polyline, stadium
from fsas_bench.data.synthetic.glyphs import text_shape
from fsas_bench.data.synthetic.noise import value_noise
from fsas_bench.data.synthetic.objects import backdrop, pose, radius, shade
from fsas_bench.data.synthetic.scene import Layout, Paint, PaintContext, Part, Scene, Shape, object_scene

_MASK = rgb((0.09, 0.36, 0.2), 3)  # green solder mask
_TRACE = rgb((0.16, 0.5, 0.26), 3)  # copper seen through the mask
_TIN = rgb((0.78, 0.78, 0.75), 3)
_GOLD = rgb((0.85, 0.68, 0.3), 3)
_SILK = rgb((0.92, 0.92, 0.86), 3)
_EPOXY = rgb((0.08, 0.08, 0.09), 3)
_CERAMIC = rgb((0.66, 0.52, 0.34), 3)

# board frame: pixels from the board centre, x right, y down
_TRACES = (
    ((-19.25, -30), (-19.25, -48), (-6, -61.25), (-6, -77)),
    ((-23.75, -30), (-23.75, -50), (-14, -59.75), (-14, -77)),
    ((-28.25, -30), (-28.25, -56), (-22, -62.25), (-22, -77)),
    ((-32.75, -30), (-32.75, -66), (-30, -68.75), (-30, -77)),
    ((-46.25, -30), (-46.25, -50), (-60, -63.75), (-85, -63.75)),
    ((2, -77), (2, -71), (35, -71), (39.5, -66.5), (39.5, -58)),
    ((10, -77), (10, -75), (43, -75), (46.5, -71.5), (46.5, -58)),
    ((60.5, -58), (60.5, -66), (66, -71.5), (84, -71.5)),
    ((53.5, -58), (53.5, -80)),
    ((-10, -20.75), (28, -20.75), (39.5, -32.25)),
    ((-10, -16.25), (32, -16.25), (46.5, -30.75), (46.5, -32)),
    ((-10, -11.75), (37, -11.75), (53.5, -28.25), (53.5, -32)),
    ((60.5, -32), (60.5, -24), (72, -12.5), (78.5, -12.5)),
    ((-10, -2.75), (22, -2.75), (36, 11.25), (36, 24.5), (42, 24.5)),
    ((-10, 1.75), (18, 1.75), (31, 14.75), (31, 31.5), (42, 31.5)),
    ((-10, 6.25), (2, 6.25), (8.5, 12.75), (8.5, 20)),
    ((19.5, 20), (19.5, 38.5), (42, 38.5)),
    ((68, 24.5), (96, 24.5), (100, 28.5), (100, 60)),
    ((68, 45.5), (76, 45.5), (84, 53.5), (84, 70.5)),
    ((-19.25, 20), (-19.25, 50), (-9, 60.25), (-9, 62)),
    ((-23.75, 20), (-23.75, 64), (-14, 73.75), (13, 73.75), (13, 62)),
    ((-46.25, 20), (-46.25, 50), (-57, 60.75)),
    ((-37.25, 20), (-37.25, 30), (-40.5, 33.25), (-40.5, 42)),
    ((-29.5, 42), (-29.5, 84)),
    ((-60, -20.75), (-80, -20.75), (-92, -32.75)),
    ((-60, -2.75), (-86, -2.75), (-92, 3.25)),
    ((-60, 10.75), (-76, 10.75), (-76, 32)),
    ((-92, 13.5), (-92, 44), (-79, 57)),
)
_VIAS = ((-87, -63.75), (86, -71.5), (53.5, -82), (100, 62), (-76, 34), (-29.5, 86), (30, -40), (72, 5),
         (-60, 86), (95, -42), (-5, 40))
_MOUNTING_HOLES = ((-100, -88), (100, -88), (-100, 88), (100, 88))
_LABELS = (("U1", -66, -38), ("U2", 76, -46), ("U3", 56, 60), ("C1", -68, 82), ("P1", 26, -86), ("2024", 50, 88))
_ART_HALF = (116, 104)  # x, y half-size of the printed artwork, pixels


def circuit_board(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Green circuit board with a microcontroller, two SOIC chips, passives, a crystal, an electrolytic
    capacitor and a pin header, on a black mat."""
    light = direction(rng.uniform(-2.6, -2.0))
    background = backdrop(rng, height, width, rgb((0.1, 0.1, 0.11), 3), grain=0.08)
    centre, angle = pose(rng, height, width, 5.0, (-0.04, 0.04))
    grain = value_noise(rng, height, width, (2.5, 2.5))
    artwork = _artwork()

    def board(context: PaintContext) -> np.ndarray:
        lit = 1.0 + 0.05 * grain[context.window] + context.edge_light(2.5, 0.3)
        printed = _bilinear(artwork, context.y + _ART_HALF[1], context.x + _ART_HALF[0])
        return shade(_MASK, lit) * (1.0 - printed[..., 3:]) + printed[..., :3] * lit[..., None]

    parts = [Part("board", lambda x, y: box(x, y, 112.0, 100.0, corner=8.0), board, 151.0, shadow=(0.55, 5.0))]
    parts += [Part("mounting hole", lambda x, y: circle(x, y, 6.5), _mounting_hole, 6.5, x=x, y=y, solid=False)
              for x, y in _MOUNTING_HOLES]
    parts += [component for component, _ in _components()]
    return object_scene(Layout(background, tuple(parts), centre, angle, light), rgb((0.82, 0.72, 0.45), 3))


@functools.lru_cache(maxsize=1)
def _artwork() -> np.ndarray:
    """What is printed on the board (traces, vias, silkscreen, solder pads), drawn once in the board frame
    under a fixed light: (2·104+1)×(2·116+1)×4, premultiplied RGB and coverage. No randomness."""
    printing = [_polyline_part("trace", points, 1.2, _flat(_TRACE, 0.15)) for points in _TRACES]
    printing += [Part("via", lambda x, y: circle(x, y, 3.0), _via, 3.0, x=x, y=y) for x, y in _VIAS]
    printing += [Part("silkscreen", text_shape(text, 7.0, 1.1), _flat(_SILK, 0.0), 4.0 * len(text) + 3, x=x, y=y)
                 for text, x, y in _LABELS]
    for component, pads in _components():
        printing += _footprint(component, pads)
    blank = np.zeros((2 * _ART_HALF[1] + 1, 2 * _ART_HALF[0] + 1, 3))
    layout = Layout(blank, tuple(printing), (float(_ART_HALF[0]), float(_ART_HALF[1])), 0.0, direction(-2.3))
    image, cover = layout.render()
    artwork = np.concatenate([image, cover[..., None]], axis=-1)
    artwork.setflags(write=False)
    return artwork


def _bilinear(image: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``image`` (H×W×C) sampled at fractional ``rows``/``columns`` (h×w) by bilinear interpolation,
    zero outside: h×w×C."""
    height, width, channels = image.shape
    stride = width + 3
    planes = np.pad(image, ((1, 2), (1, 2), (0, 0))).transpose(2, 0, 1).reshape(channels, -1)
    rows = np.clip(rows + 1.0, 0.0, height + 1.0)
    columns = np.clip(columns + 1.0, 0.0, width + 1.0)
    top, left = np.floor(rows), np.floor(columns)
    down, right = rows - top, columns - left
    corner = top.astype(int) * stride + left.astype(int)

    def pixels(offset: int) -> np.ndarray:
        return np.take(planes, corner + offset, axis=1)  # C×h×w

    upper = pixels(0) * (1.0 - right) + pixels(1) * right
    lower = pixels(stride) * (1.0 - right) + pixels(stride + 1) * right
    return np.moveaxis(upper * (1.0 - down) + lower * down, 0, -1)


def _components() -> list[tuple[Part, Shape]]:
    """The placed components with their solder-pad shapes; only components large enough to make a visible
    defect are detachable."""
    soic = dict(half=(14.0, 8.0), pins=4, pitch=7.0, four_sides=False)
    placements = (
        (_chip("microcontroller", half=(20.0, 20.0), pins=8, pitch=4.5, four_sides=True), -35, -5, 0.0),
        (_chip("memory chip", **soic), 50, -45, 0.0),
        (_chip("driver chip", **soic), 55, 35, np.pi / 2),
        (_two_terminal("resistor", _EPOXY), 14, 20, 0.0),
        (_two_terminal("resistor", _EPOXY), -35, 42, 0.0),
        (_two_terminal("resistor", _EPOXY), -92, -38, np.pi / 2),
        (_two_terminal("capacitor", _CERAMIC), -92, 8, np.pi / 2),
        (_two_terminal("capacitor", _CERAMIC), 84, -12.5, 0.0),
        (_two_terminal("capacitor", _CERAMIC), 84, 76, np.pi / 2),
        (_crystal(), 2, 62, 0.0),
        (_electrolytic(), -68, 62, 0.0),
        (_pin_header(), -10, -82, 0.0),
    )
    return [(part.moved(x, y, angle), pads) for (part, pads), x, y, angle in placements]


def _footprint(component: Part, pads: Shape) -> list[Part]:
    """Silkscreen outline and solder pads of ``component``."""
    outline = Part("silkscreen", lambda x, y: np.abs(component.shape(x, y) - 3.5) - 0.6, _flat(_SILK, 0.0),
                   component.extent + 5, x=component.x, y=component.y, angle=component.angle)
    pad = Part("solder pad", pads, _flat(_TIN, 0.1), component.extent + 2, x=component.x, y=component.y,
               angle=component.angle)
    return [outline, pad]


def _flat(colour: np.ndarray, bevel: float) -> Paint:
    def paint(context: PaintContext) -> np.ndarray:
        return shade(colour, 1.0 + context.edge_light(1.5, bevel))

    return paint


def _polyline_part(name: str, points: tuple[tuple[float, float], ...], half_width: float, paint: Paint) -> Part:
    path = np.array(points, np.float64)
    middle = 0.5 * (path.min(axis=0) + path.max(axis=0))
    local = path - middle
    extent = float(np.sqrt((local**2).sum(axis=1)).max()) + half_width
    return Part(name, lambda x, y: polyline(x, y, local) - half_width, paint, extent, x=middle[0], y=middle[1])


def _via(context: PaintContext) -> np.ndarray:
    drill = coverage(1.3 - radius(context))[..., None]
    return shade(_TIN, 1.0 + context.edge_light(1.0, 0.2)) * (1.0 - 0.8 * drill)


def _mounting_hole(context: PaintContext) -> np.ndarray:
    drill = coverage(3.8 - radius(context))[..., None]
    return shade(_TIN, 0.95 + context.radial_light(0.1)) * (1.0 - drill) + 0.5 * context.background * drill


def _pin_rows(pins: int, pitch: float, reach: float) -> Shape:
    """Gull-wing pins along the top and bottom edges of a package, ``reach`` pixels from its centre."""

    def shape(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        index = np.clip(np.floor(x / pitch + 0.5 * pins), 0, pins - 1)
        along = x - (index - 0.5 * (pins - 1)) * pitch
        return box(along, np.abs(y) - reach, 0.25 * pitch, 2.5)

    return shape


def _chip(name: str, half: tuple[float, float], pins: int, pitch: float, four_sides: bool) -> tuple[Part, Shape]:
    """A black plastic package with tinned pins on two or four sides and a pin-1 dimple."""
    rows = _pin_rows(pins, pitch, half[1] + 2.5)
    columns = _pin_rows(pins, pitch, half[0] + 2.5)

    def pins_shape(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.minimum(rows(x, y), columns(y, x)) if four_sides else rows(x, y)

    def shape(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.minimum(box(x, y, half[0], half[1], corner=1.0), pins_shape(x, y))

    def paint(context: PaintContext) -> np.ndarray:
        body = coverage(box(context.x, context.y, half[0], half[1], corner=1.0))[..., None]
        dimple = coverage(circle(context.x + half[0] - 5.0, context.y + half[1] - 5.0, 2.0))
        package = shade(_EPOXY, 1.0 - 0.4 * dimple + context.edge_light(1.5, 1.2))
        return package * body + shade(_TIN, 1.0 + context.edge_light(1.0, 0.2)) * (1.0 - body)

    extent = float(np.hypot(half[0] + 5.0, half[1] + 5.0))
    return Part(name, shape, paint, extent, shadow=(0.45, 2.0), detachable=True), lambda x, y: pins_shape(x, y) - 1.0


def _two_terminal(name: str, body_colour: np.ndarray) -> tuple[Part, Shape]:
    """A small surface-mount passive: a body between two tinned end caps."""

    def paint(context: PaintContext) -> np.ndarray:
        ends = np.clip(np.abs(context.x) - 4.0, 0.0, 1.0)[..., None]
        lit = 1.0 + context.edge_light(1.0, 0.3)
        return shade(body_colour, lit) * (1.0 - ends) + shade(_TIN, lit) * ends

    part = Part(name, lambda x, y: box(x, y, 7.0, 3.5, corner=0.8), paint, 8.0, shadow=(0.35, 1.5))
    return part, lambda x, y: box(np.abs(x) - 5.5, y, 2.5, 4.2)


def _crystal() -> tuple[Part, Shape]:
    """A low-profile crystal can: a tin stadium with a pressed rim."""

    def paint(context: PaintContext) -> np.ndarray:
        rim = coverage(-1.0 - np.abs(context.distance + 2.0))
        return shade(_TIN, 1.05 + context.edge_light(2.0, 0.35) - 0.25 * rim)

    part = Part("crystal", lambda x, y: stadium(x, y, 9.0, 6.0), paint, 15.0, shadow=(0.45, 2.5), detachable=True)
    return part, lambda x, y: box(np.abs(x) - 10.0, y, 3.5, 4.0)


def _electrolytic() -> tuple[Part, Shape]:
    """An electrolytic capacitor from above: aluminium top with a scored cross, dark sleeve with a
    polarity stripe."""

    def paint(context: PaintContext) -> np.ndarray:
        r = radius(context)
        scored = coverage(np.minimum(np.abs(context.x), np.abs(context.y)) - 0.7) * coverage(r - 7.0)
        top = shade(rgb((0.8, 0.8, 0.82), 3), 1.0 + context.radial_light(-0.12) - 0.45 * scored)
        sleeve = np.where((context.x < -4.0)[..., None], rgb((0.75, 0.78, 0.85), 3), rgb((0.1, 0.12, 0.3), 3))
        band = coverage(8.5 - r)[..., None]
        return top * band + shade(sleeve, 1.0 + context.edge_light(2.0, 0.3)) * (1.0 - band)

    part = Part("electrolytic capacitor", lambda x, y: circle(x, y, 11.0), paint, 11.0, shadow=(0.6, 4.0),
                detachable=True)
    return part, lambda x, y: box(np.abs(x) - 8.0, y, 4.5, 3.0)


def _pin_header() -> tuple[Part, Shape]:
    """A six-way pin header: black plastic strip with gold square pins."""

    def pin_offset(x: np.ndarray) -> np.ndarray:
        return x - (np.clip(np.round((x + 20.0) / 8.0), 0, 5) * 8.0 - 20.0)

    def paint(context: PaintContext) -> np.ndarray:
        pin = coverage(box(pin_offset(context.x), context.y, 1.6, 1.6))[..., None]
        strip = shade(_EPOXY, 1.0 + context.edge_light(1.5, 0.8))
        return strip * (1.0 - pin) + shade(_GOLD, 1.0 + 0.3 * pin[..., 0]) * pin

    part = Part("pin header", lambda x, y: box(x, y, 26.0, 5.0, corner=1.0), paint, 27.0, shadow=(0.5, 3.0),
                detachable=True)
    return part, lambda x, y: circle(pin_offset(x), y, 3.2)
