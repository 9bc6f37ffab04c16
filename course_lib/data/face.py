"""Procedural faces whose 12 action units we control: the renderer behind SynthAffWild.

Taught in ``01_data`` (the AU atlas). A face is drawn from an :class:`Identity` (face shape,
skin tone, feature spacing, hair, glasses) and 12 AU intensities in [0, 1]. Each AU moves the
parts FACS describes:

====  =======================  ============================================================
AU1   inner brow raiser        inner ends of the brows up, central forehead lines
AU2   outer brow raiser        outer ends of the brows up, lateral forehead lines
AU4   brow lowerer             brows down and drawn together, vertical lines between them
AU6   cheek raiser             cheeks up and redder, lower lids pushed up, crow's feet
AU7   lid tightener            lids narrowed, lower lid raised and straightened
AU10  upper lip raiser         upper lip up, deeper nasolabial folds
AU12  lip corner puller        lip corners up and out
AU15  lip corner depressor     lip corners down
AU23  lip tightener            lips thinner, mouth narrower
AU24  lip pressor              lips pressed thin, bulge under the lower lip
AU25  lips part                lips apart, teeth and mouth interior visible
AU26  jaw drop                 jaw and chin down, wider opening when the lips part
====  =======================  ============================================================

Geometry lives in *face coordinates* (the unit square, face centred); a pose (roll, scale,
shift, yaw parallax) maps it to pixels. Shapes are drawn with PIL at twice the output size and
reduced, which anti-aliases them. :func:`render_face` also returns each AU's image region
(up to two polygons per AU, in pixels) for checking attention maps and attributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..labels import AU_NAMES

#: An AU is "present" when its intensity reaches this value (labels are derived from it).
AU_THRESHOLD: float = 0.3
#: Vertices per region polygon; regions are ellipses drawn as polygons.
REGION_VERTICES: int = 12
#: Aligned face crops are tight: the unit face is magnified by this much about FACE_CENTRE.
ZOOM: float = 1.22
FACE_CENTRE: tuple[float, float] = (0.5, 0.55)
#: Shapes are drawn at this multiple of the output size, then reduced (anti-aliasing).
SUPERSAMPLE: int = 2

_AU = {name: i for i, name in enumerate(AU_NAMES)}

SKIN_TONES = np.array([(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96),
                       (160, 104, 70), (112, 72, 48)], dtype=np.float64)
HAIR_COLORS = np.array([(30, 24, 20), (70, 45, 28), (120, 80, 45), (200, 165, 105), (150, 60, 30),
                        (150, 150, 150)], dtype=np.float64)
IRIS_COLORS = np.array([(70, 45, 25), (40, 90, 140), (70, 110, 60), (110, 80, 40)], dtype=np.float64)


@dataclass(frozen=True)
class Identity:
    """What stays fixed for one person: shape, colours, feature spacing, hair, glasses."""

    head_rx: float = 0.30
    head_ry: float = 0.39
    eye_dx: float = 0.125
    eye_y: float = 0.46
    eye_w: float = 0.062
    eye_h: float = 0.026
    brow_gap: float = 0.075
    brow_thick: float = 0.016
    nose_y: float = 0.60
    mouth_y: float = 0.705
    mouth_w: float = 0.088
    lip_upper: float = 0.016
    lip_lower: float = 0.021
    skin: tuple[int, int, int] = (224, 172, 130)
    hair: tuple[int, int, int] = (70, 45, 28)
    hair_style: int = 0  # 0 short, 1 long, 2 very short
    iris: tuple[int, int, int] = (70, 45, 25)
    lips: tuple[int, int, int] = (180, 90, 90)
    background: tuple[int, int, int] = (190, 200, 210)
    glasses: bool = False
    glasses_color: tuple[int, int, int] = (40, 40, 40)


def _rgb(x: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(v)) for v in np.clip(x, 0, 255))  # type: ignore[return-value]


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random person: proportions, skin tone, hair, eye colour, sometimes glasses."""
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    i = int(t)
    skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] * (t - i)
    lips = skin * np.array([0.78, 0.55, 0.55]) + np.array([40, 10, 10])
    bg = rng.uniform(60, 230, 3)
    return Identity(
        head_rx=rng.uniform(0.27, 0.33), head_ry=rng.uniform(0.36, 0.41),
        eye_dx=rng.uniform(0.11, 0.14), eye_y=rng.uniform(0.44, 0.48), eye_w=rng.uniform(0.055, 0.068),
        eye_h=rng.uniform(0.022, 0.03), brow_gap=rng.uniform(0.065, 0.085),
        brow_thick=rng.uniform(0.012, 0.02), nose_y=rng.uniform(0.58, 0.62),
        mouth_y=rng.uniform(0.69, 0.72), mouth_w=rng.uniform(0.078, 0.1),
        lip_upper=rng.uniform(0.012, 0.019), lip_lower=rng.uniform(0.016, 0.025),
        skin=_rgb(skin), hair=_rgb(HAIR_COLORS[rng.integers(len(HAIR_COLORS))] * rng.uniform(0.85, 1.15)),
        hair_style=int(rng.integers(3)), iris=_rgb(IRIS_COLORS[rng.integers(len(IRIS_COLORS))]),
        lips=_rgb(lips), background=_rgb(bg), glasses=bool(rng.random() < 0.25),
        glasses_color=_rgb(rng.uniform(10, 120, 3)),
    )


@dataclass(frozen=True)
class Pose:
    """Head pose: in-plane roll (degrees), scale, shift (face units) and yaw parallax (-1..1)."""

    roll: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    yaw: float = 0.0


@dataclass(frozen=True)
class Occluder:
    """Something passing in front of the face: a hand-like blob or a dark bar."""

    kind: str = "hand"  # "hand" or "bar"
    x: float = 0.5  # centre, face units
    y: float = 0.46
    width: float = 0.22
    height: float = 0.12
    color: tuple[int, int, int] = (200, 150, 120)


@dataclass
class _Canvas:
    draw: ImageDraw.ImageDraw
    matrix: np.ndarray  # 2x3 affine, face units -> supersampled pixels
    yaw: float
    size: int
    regions: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def px(self, pts: np.ndarray, depth: float = 0.0) -> list[tuple[float, float]]:
        """Face-unit points -> pixel tuples; ``depth`` scales the yaw parallax (nose: most)."""
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2).copy()
        p[:, 0] += self.yaw * depth
        out = p @ self.matrix[:, :2].T + self.matrix[:, 2]
        return [tuple(v) for v in out]

    def poly(self, pts: np.ndarray, fill, depth: float = 0.02) -> None:
        self.draw.polygon(self.px(pts, depth), fill=fill)

    def line(self, pts: np.ndarray, fill, width: float, depth: float = 0.02) -> None:
        w = max(1, int(round(width * self.size)))
        self.draw.line(self.px(pts, depth), fill=fill, width=w, joint="curve")

    def region(self, au: str, cx: float, cy: float, rx: float, ry: float, depth: float = 0.02) -> None:
        """Record an elliptical image region for ``au`` (as a polygon in output pixels)."""
        pts = np.array(self.px(_ellipse(cx, cy, rx, ry, REGION_VERTICES), depth)) / SUPERSAMPLE
        self.regions.setdefault(_AU[au], []).append(pts)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28, start: float = 0.0,
             stop: float = 2 * np.pi) -> np.ndarray:
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * np.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _blend(a, b, alpha: float) -> tuple[int, int, int]:
    alpha = float(np.clip(alpha, 0.0, 1.0))
    return _rgb(np.asarray(a, np.float64) * (1 - alpha) + np.asarray(b, np.float64) * alpha)


def _band(curve: np.ndarray, thickness: np.ndarray | float) -> np.ndarray:
    """A closed polygon of ``thickness`` (face units) around a polyline, tapering allowed."""
    d = np.gradient(curve, axis=0)
    n = np.stack([-d[:, 1], d[:, 0]], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    half = np.broadcast_to(np.asarray(thickness, dtype=np.float64), (len(curve),))[:, None] / 2
    return np.concatenate([curve + n * half, (curve - n * half)[::-1]])


def pose_matrix(pose: Pose, size: int) -> np.ndarray:
    """The 2x3 affine that maps face units to (supersampled) pixels for ``pose``."""
    theta = np.deg2rad(pose.roll)
    c, s = np.cos(theta), np.sin(theta)
    scale = pose.scale * ZOOM * size
    rot = scale * np.array([[c, -s], [s, c]])
    centre = np.array(FACE_CENTRE)
    shift = np.array([0.5, 0.5]) * size + np.array([pose.dx, pose.dy]) * size - rot @ centre
    return np.concatenate([rot, shift[:, None]], axis=1)


def render_face(identity: Identity, au_intensity, pose: Pose | None = None, *, image_size: int = 112,
                occluder: Occluder | None = None) -> tuple[Image.Image, list[list[np.ndarray]]]:
    """Draw one face with the given AU intensities (12 values in [0, 1], ABAW order).

    Returns the RGB image (``image_size`` square) and, per AU, the list of polygons
    (``(REGION_VERTICES, 2)`` arrays in pixels) covering the part of the face that AU moves.
    Nuisances other than pose and occluders (light, blur, noise, JPEG) are applied by the
    dataset generator, not here.
    """
    a = np.clip(np.asarray(au_intensity, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if a.size != len(AU_NAMES):
        raise ValueError(f"au_intensity needs {len(AU_NAMES)} values (ABAW order), got {a.size}")
    au = {name: float(a[i]) for i, name in enumerate(AU_NAMES)}
    pose = pose or Pose()
    size = image_size * SUPERSAMPLE
    img = Image.new("RGB", (size, size), identity.background)
    cv = _Canvas(ImageDraw.Draw(img), pose_matrix(pose, size), pose.yaw, size)
    idn = identity
    skin = np.asarray(idn.skin, np.float64)
    dark = skin * 0.55
    shadow = _rgb(skin * 0.8)

    # head, hair, ears, neck ---------------------------------------------------------------
    jaw = 0.03 * au["AU26"] * (1 + 0.7 * au["AU25"])  # the jaw drops with AU26 (further with the lips apart)
    if idn.hair_style == 1:  # long hair behind the head
        cv.poly(np.concatenate([_ellipse(0.5, 0.47, idn.head_rx + 0.05, idn.head_ry + 0.02, 24, np.pi, 2 * np.pi),
                                [[0.5 + idn.head_rx + 0.06, 0.85], [0.5 - idn.head_rx - 0.06, 0.85]]]), idn.hair, 0.0)
    cv.poly(np.array([[0.42, 0.75], [0.58, 0.75], [0.6, 1.05], [0.4, 1.05]]), shadow, 0.0)
    for side in (-1, 1):
        cv.poly(_ellipse(0.5 + side * idn.head_rx * 0.98, idn.eye_y + 0.06, 0.035, 0.06, 14), shadow, 0.0)
    head = _ellipse(0.5, 0.52, idn.head_rx, idn.head_ry, 40)
    lower = head[:, 1] > 0.52
    head[lower, 1] += jaw * ((head[lower, 1] - 0.52) / idn.head_ry) ** 2  # the jaw drops
    cv.poly(head, idn.skin, 0.0)
    # hair on top (style 2: cropped short)
    top = 0.52 - idn.head_ry
    fringe = 0.07 if idn.hair_style != 2 else 0.035
    cap = np.concatenate([_ellipse(0.5, 0.52, idn.head_rx + 0.012, idn.head_ry + 0.015, 24, np.pi, 2 * np.pi),
                          [[0.5 + idn.head_rx * 0.8, top + fringe + 0.05], [0.5, top + fringe],
                           [0.5 - idn.head_rx * 0.8, top + fringe + 0.05]]])
    cv.poly(cap, idn.hair, 0.005)

    # cheeks (AU6 raises them and adds colour; AU12 lifts them a little) ----------------------
    cheek_up = 0.03 * au["AU6"] + 0.012 * au["AU12"]
    cheek = _blend(skin, (220, 90, 90), 0.10 + 0.22 * au["AU6"])
    for side in (-1, 1):
        cx, cy = 0.5 + side * (idn.eye_dx + 0.03), idn.eye_y + 0.115 - cheek_up
        cv.poly(_ellipse(cx, cy, 0.055 * (1 + 0.2 * au["AU6"]), 0.04 * (1 + 0.15 * au["AU6"]), 18), cheek)
        cv.region("AU6", 0.5 + side * (idn.eye_dx + 0.02), idn.eye_y + 0.06, 0.08, 0.075)

    # forehead lines (AU1 central, AU2 lateral) and glabella lines (AU4) ----------------------
    brow_y = idn.eye_y - idn.brow_gap
    for k in range(3):
        y = brow_y - 0.05 - 0.022 * k
        if au["AU1"] > 0.12:
            cv.line(np.array([[0.5 - 0.05, y + 0.004], [0.5, y], [0.5 + 0.05, y + 0.004]]),
                    _blend(skin, dark, 0.7 * au["AU1"]), 0.006)
        if au["AU2"] > 0.12:
            for side in (-1, 1):
                xs = 0.5 + side * np.array([0.07, 0.11, 0.15])
                cv.line(np.stack([xs, [y + 0.006, y + 0.002, y + 0.008]], axis=1),
                        _blend(skin, dark, 0.7 * au["AU2"]), 0.006)
    if au["AU4"] > 0.12:
        for side in (-1, 1):
            x = 0.5 + side * 0.018
            cv.line(np.array([[x, brow_y - 0.03], [x - side * 0.004, brow_y + 0.012]]),
                    _blend(skin, dark, 0.8 * au["AU4"]), 0.007)

    # brows ----------------------------------------------------------------------------------
    for side in (-1, 1):
        inner_x = 0.5 + side * (idn.eye_dx - idn.eye_w * 0.95 - 0.018 * au["AU4"])
        outer_x = 0.5 + side * (idn.eye_dx + idn.eye_w * 1.25)
        inner_y = brow_y + 0.022 * au["AU4"] - 0.04 * au["AU1"] + 0.004
        outer_y = brow_y + 0.012 * au["AU4"] - 0.04 * au["AU2"] - 0.012 * au["AU1"] + 0.01
        mid_y = brow_y - 0.014 + 0.018 * au["AU4"] - 0.022 * au["AU1"] - 0.03 * au["AU2"]
        t = np.linspace(0, 1, 9)[:, None]
        p0, p1, p2 = np.array([inner_x, inner_y]), np.array([(inner_x + outer_x) / 2, mid_y]), np.array([outer_x, outer_y])
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        thickness = idn.brow_thick * (1.15 - 0.5 * t[:, 0] ** 2)
        cv.poly(_band(curve, thickness), _blend(idn.hair, (20, 15, 10), 0.4))
        cv.region("AU2", 0.5 + side * (idn.eye_dx + idn.eye_w * 0.75), brow_y - 0.03, 0.06, 0.055)
    cv.region("AU1", 0.5, brow_y - 0.04, idn.eye_dx + 0.01, 0.07)
    cv.region("AU4", 0.5, brow_y + 0.01, idn.eye_dx * 0.9, 0.045)

    # eyes (AU6 and AU7 narrow them from below and above) --------------------------------------
    up = idn.eye_h * (1.15 - 0.35 * au["AU7"] - 0.12 * au["AU6"] + 0.25 * au["AU1"] * au["AU2"])
    low = idn.eye_h * (0.75 - 0.45 * au["AU7"] - 0.4 * au["AU6"])
    x = np.linspace(-1, 1, 11)
    for side in (-1, 1):
        ex, ey = 0.5 + side * idn.eye_dx, idn.eye_y
        xs = ex + x * idn.eye_w
        upper = ey - up * (1 - x**2) ** 0.8 - 0.004 * au["AU7"]
        lower_c = ey + max(low, 0.002) * (1 - x**2) ** 0.9
        cv.poly(np.concatenate([np.stack([xs, upper], 1), np.stack([xs, lower_c], 1)[::-1]]), (245, 245, 240))
        # iris: a circle clipped to the lids, column by column
        r = idn.eye_h * 0.95
        ix = np.linspace(-r, r, 9) * 0.999
        half = np.sqrt(np.maximum(r**2 - ix**2, 0))
        top = np.maximum(ey - half, np.interp(ex + ix, xs, upper))
        bot = np.minimum(ey + half, np.interp(ex + ix, xs, lower_c))
        if np.any(bot > top):
            bot = np.maximum(bot, top)
            cv.poly(np.concatenate([np.stack([ex + ix, top], 1), np.stack([ex + ix, bot], 1)[::-1]]), idn.iris)
            cv.poly(_ellipse(ex, np.clip(ey, top.min(), bot.max()), r * 0.4, min(r * 0.4, (bot.max() - top.min()) / 2 + 1e-4), 10),
                    (15, 15, 15))
        cv.line(np.stack([xs, upper], 1), (35, 25, 25), 0.009)
        cv.line(np.stack([xs, lower_c + 0.003], 1), _blend(skin, dark, 0.35 + 0.4 * au["AU7"]), 0.005)
        if au["AU6"] > 0.12 or au["AU7"] > 0.12:  # lower-lid bulge
            bulge = lower_c + 0.012 + 0.006 * (1 - x**2)
            cv.line(np.stack([xs[2:-2], bulge[2:-2]], 1),
                    _blend(skin, dark, 0.5 * max(au["AU6"], 0.7 * au["AU7"])), 0.005)
        if au["AU6"] > 0.12:  # crow's feet
            ox = ex + side * (idn.eye_w + 0.008)
            for dy in (-0.012, 0.0, 0.012):
                cv.line(np.array([[ox, ey + dy * 0.6], [ox + side * 0.025, ey + dy * 1.6]]),
                        _blend(skin, dark, 0.75 * au["AU6"]), 0.005)
        cv.region("AU7", ex, ey, idn.eye_w * 1.35, idn.eye_h * 2.2)

    # glasses --------------------------------------------------------------------------------
    if idn.glasses:
        for side in (-1, 1):
            ex = 0.5 + side * idn.eye_dx
            cv.line(np.concatenate([_ellipse(ex, idn.eye_y + 0.005, idn.eye_w * 1.45, idn.eye_h * 2.4, 20),
                                    _ellipse(ex, idn.eye_y + 0.005, idn.eye_w * 1.45, idn.eye_h * 2.4, 20)[:1]]),
                    idn.glasses_color, 0.008)
        cv.line(np.array([[0.5 - idn.eye_dx + idn.eye_w * 1.45, idn.eye_y],
                          [0.5, idn.eye_y - 0.01], [0.5 + idn.eye_dx - idn.eye_w * 1.45, idn.eye_y]]),
                idn.glasses_color, 0.008)

    # nose and nasolabial folds (AU10 and AU12 deepen them) ------------------------------------
    ny = idn.nose_y
    cv.line(np.array([[0.5 - 0.01, idn.eye_y + 0.01], [0.5 - 0.015, ny - 0.02], [0.5 - 0.005, ny]]),
            _blend(skin, dark, 0.35), 0.007, depth=0.05)
    nostril = _blend(skin, dark, 0.6 + 0.2 * au["AU10"])
    for side in (-1, 1):
        cv.poly(_ellipse(0.5 + side * 0.022, ny - 0.004 * au["AU10"], 0.011, 0.006, 10), nostril, depth=0.05)
        fold = _blend(skin, dark, 0.15 + 0.6 * max(au["AU10"], 0.8 * au["AU12"]))
        corner_x = 0.5 + side * idn.mouth_w * (1 + 0.2 * au["AU12"])
        cv.line(np.array([[0.5 + side * 0.04, ny - 0.01 - 0.01 * au["AU10"]],
                          [0.5 + side * (0.055 + 0.01 * au["AU12"]), ny + 0.04],
                          [corner_x + side * 0.012, idn.mouth_y - 0.008]]), fold, 0.005 + 0.004 * au["AU10"])

    # mouth ----------------------------------------------------------------------------------
    my = idn.mouth_y + 0.4 * jaw * 0.5
    mw = idn.mouth_w * (1 + 0.2 * au["AU12"] - 0.15 * au["AU23"] - 0.08 * au["AU24"] + 0.05 * au["AU25"])
    corner_dy = -0.032 * au["AU12"] + 0.03 * au["AU15"]
    opening = 0.026 * au["AU25"] * (1 + 1.3 * au["AU26"]) * (1 - 0.8 * au["AU24"])
    t_up = idn.lip_upper * (1 - 0.45 * au["AU23"] - 0.55 * au["AU24"] + 0.2 * au["AU10"])
    t_low = idn.lip_lower * (1 - 0.45 * au["AU23"] - 0.55 * au["AU24"])
    raise_up = 0.016 * au["AU10"]
    xs = np.linspace(-1, 1, 15)
    bell = 1 - xs**2
    line_y = my + corner_dy * xs**2 - 0.006 * au["AU24"]
    up_bottom = line_y - opening / 2 * bell**0.7 - raise_up * bell
    up_top = up_bottom - t_up * bell**0.6 - 0.004 * np.exp(-((np.abs(xs) - 0.22) ** 2) / 0.02) * (1 - au["AU24"])
    low_top = line_y + opening / 2 * bell**0.7 + jaw * 0.35 * bell
    low_bottom = low_top + t_low * bell**0.6
    X = 0.5 + xs * mw
    if opening > 0.002 or raise_up > 0.004:
        cv.poly(np.concatenate([np.stack([X, up_bottom], 1), np.stack([X, low_top], 1)[::-1]]), (90, 30, 35))
        teeth_bottom = np.minimum(up_bottom + 0.012, low_top)
        cv.poly(np.concatenate([np.stack([X[2:-2], up_bottom[2:-2]], 1), np.stack([X[2:-2], teeth_bottom[2:-2]], 1)[::-1]]),
                (235, 232, 220))
    lip_color = _blend(idn.lips, skin, 0.35 * au["AU24"] + 0.2 * au["AU23"])
    cv.poly(np.concatenate([np.stack([X, up_top], 1), np.stack([X, up_bottom], 1)[::-1]]), lip_color)
    cv.poly(np.concatenate([np.stack([X, low_top], 1), np.stack([X, low_bottom], 1)[::-1]]), lip_color)
    cv.line(np.stack([X, (up_bottom + low_top) / 2 if opening <= 0.002 else up_bottom], 1), _blend(lip_color, dark, 0.5), 0.004)
    if au["AU24"] > 0.12:  # bulge under the pressed lower lip
        cv.line(np.stack([X[3:-3], low_bottom[3:-3] + 0.012], 1), _blend(skin, dark, 0.55 * au["AU24"]), 0.005)
    if au["AU15"] > 0.12:  # lines running down from the corners
        for side in (-1, 1):
            cx = 0.5 + side * mw
            cv.line(np.array([[cx, my + corner_dy], [cx + side * 0.008, my + corner_dy + 0.03]]),
                    _blend(skin, dark, 0.6 * au["AU15"]), 0.005)
    chin = my + 0.09 + jaw
    cv.line(np.array([[0.5 - 0.03, chin], [0.5, chin + 0.006], [0.5 + 0.03, chin]]), _blend(skin, dark, 0.2), 0.004)
    for side in (-1, 1):
        cx, cy = 0.5 + side * mw, my + corner_dy
        cv.region("AU12", cx + side * 0.01, cy - 0.012, 0.045, 0.045)
        cv.region("AU15", cx, cy + 0.015, 0.04, 0.04)
    cv.region("AU10", 0.5, my - 0.035, mw * 1.3, 0.045)
    cv.region("AU23", 0.5, my + 0.005, mw * 1.15, 0.04)
    cv.region("AU24", 0.5, my + 0.012, mw * 1.15, 0.045)
    cv.region("AU25", 0.5, my + 0.008 + jaw * 0.2, mw * 0.95, 0.035 + opening)
    cv.region("AU26", 0.5, my + 0.09 + jaw * 0.6, mw * 1.6, 0.1 + jaw * 0.5)

    # occluder -------------------------------------------------------------------------------
    if occluder is not None:
        if occluder.kind == "hand":
            blob = _ellipse(occluder.x, occluder.y, occluder.width / 2, occluder.height / 2, 24)
            cv.poly(blob, occluder.color, 0.0)
            cv.line(np.concatenate([blob, blob[:1]]), _blend(occluder.color, (0, 0, 0), 0.45), 0.006, 0.0)
            for k in range(3):  # fingers
                fx = occluder.x - occluder.width * 0.3 + k * occluder.width * 0.3
                cv.line(np.array([[fx, occluder.y - occluder.height * 0.1], [fx, occluder.y + occluder.height * 0.45]]),
                        _blend(occluder.color, (0, 0, 0), 0.25), 0.004, 0.0)
        else:
            w, h = occluder.width / 2, occluder.height / 2
            cv.poly(np.array([[occluder.x - w, occluder.y - h], [occluder.x + w, occluder.y - h],
                              [occluder.x + w, occluder.y + h], [occluder.x - w, occluder.y + h]]), occluder.color, 0.0)

    out = img.reduce(SUPERSAMPLE)
    regions = [cv.regions.get(i, []) for i in range(len(AU_NAMES))]
    return out, regions


def region_mask(polygons: list[np.ndarray], image_size: int) -> np.ndarray:
    """Rasterise one AU's polygons (pixels) into a boolean mask of ``image_size`` square."""
    mask = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    for poly in polygons:
        poly = np.asarray(poly, dtype=np.float64)
        if poly.size and np.all(np.isfinite(poly)):
            draw.polygon([tuple(p) for p in poly], fill=255)
    return np.asarray(mask) > 0
