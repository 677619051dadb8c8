"""Procedural rendering of SynthTri people: visible (RGB) images and infrared (heat) images.

A person is a stack of soft-edged parametric shapes (head, hair, torso, sleeves, legs, shoes, bag, hat)
drawn in person coordinates: ``v`` runs from 0 at the top of the head to 1 at the soles, ``u`` is the
horizontal offset in the same unit (person height), positive towards the person's side that carries a
handbag. Geometry depends only on the colour-free :class:`~tvifm.data.synth.Shape`, the identity's own
:class:`Physique` (body proportions and a print on the upper garment: what tells relatives apart without
colour) and the per-image :class:`Pose`. The visible renderer paints the shapes with the identity's
colours; the infrared renderer never receives colours at all, so an IR image depends on the garment types
(their thermal insulation), the physique, the pose and the noise only. Everything is vectorised numpy on
whole images.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from tvifm.data.synth import Colours, Shape

Array = NDArray[np.float32]
Size = tuple[int, int]
Layer = tuple[str, int, Array]  # (material, first image row, alpha mask in [0, 1] of the rows below)

INDOOR_CAMS = frozenset({1, 2, 3})

# RGB in [0, 1] of every colour name SynthTri uses (garment palette and hair colours).
RGB: dict[str, tuple[float, float, float]] = {
    "black": (0.07, 0.07, 0.08),
    "white": (0.93, 0.93, 0.91),
    "red": (0.80, 0.10, 0.10),
    "blue": (0.12, 0.26, 0.78),
    "green": (0.10, 0.56, 0.20),
    "yellow": (0.95, 0.84, 0.14),
    "grey": (0.50, 0.50, 0.50),
    "brown": (0.45, 0.27, 0.11),
    "pink": (0.96, 0.56, 0.72),
    "purple": (0.50, 0.18, 0.62),
    "blonde": (0.86, 0.70, 0.40),
}
SKIN_TONES: tuple[tuple[float, float, float], ...] = (
    (0.96, 0.80, 0.69),
    (0.87, 0.67, 0.52),
    (0.72, 0.51, 0.36),
    (0.47, 0.32, 0.22),
)

# Relative apparent temperature of each material in the IR image (skin is the warmest surface). Garments
# are warmer the thinner they are; accessories are at ambient temperature. Colours play no part here.
SKIN_HEAT = 0.93
HAIR_HEAT = {"short": 0.66, "shoulder-length": 0.56, "long": 0.50}
UPPER_HEAT = {"t-shirt": 0.80, "shirt": 0.75, "hoodie": 0.63, "jacket": 0.57, "coat": 0.47}
LOWER_HEAT = {"shorts": 0.76, "skirt": 0.73, "trousers": 0.65, "jeans": 0.59}
SHOES_HEAT = {"sneakers": 0.43, "casual": 0.41, "boots": 0.36, "sandals": 0.47}
BAG_HEAT = {"backpack": 0.30, "handbag": 0.33}
HAT_HEAT = 0.46

_BUILD = {  # shoulder half-width, waist half-width, arm radius, leg radius (person-height units)
    "slim": (0.085, 0.068, 0.026, 0.033),
    "average": (0.100, 0.083, 0.030, 0.038),
    "heavy": (0.120, 0.110, 0.036, 0.046),
}
_CAM_SCALE = {1: 0.86, 2: 0.90, 3: 0.88, 4: 0.80, 5: 0.84, 6: 0.82}


EMBLEMS = ("none", "patch", "disc", "band", "stripe")  # print on the front of the upper garment


@dataclass(frozen=True)
class Physique:
    """What an identity looks like beyond its captioned attributes, in both modalities.

    Body proportions (multipliers of the build's widths) and a print on the front of the upper garment:
    its kind (:data:`EMBLEMS`), centre, size, brightness in visible light and heat factor in IR (prints
    emit differently from the fabric). Relatives share every captioned attribute but not their physique,
    so an IR image can tell them apart, if less reliably than colour; captions never mention it, as
    BLIP captions rarely mention such details.
    """

    shoulder: float = 1.0
    waist: float = 1.0
    limbs: float = 1.0
    emblem: str = "none"
    emblem_u: float = 0.0
    emblem_v: float = 0.32
    emblem_size: float = 0.035
    emblem_tone: float = 0.5
    emblem_heat: float = 1.0


NEUTRAL = Physique()


def sample_physique(rng: np.random.Generator) -> Physique:
    """Draw an identity's physique (independent of its family)."""
    return Physique(
        shoulder=float(rng.uniform(0.86, 1.14)),
        waist=float(rng.uniform(0.86, 1.14)),
        limbs=float(rng.uniform(0.85, 1.15)),
        emblem=EMBLEMS[int(rng.choice(len(EMBLEMS), p=[0.2, 0.2, 0.2, 0.2, 0.2]))],
        emblem_u=float(rng.uniform(-0.04, 0.04)),
        emblem_v=float(rng.uniform(0.26, 0.42)),
        emblem_size=float(rng.uniform(0.025, 0.045)),
        emblem_tone=float(rng.choice([0.1, 0.3, 0.7, 0.95])),
        emblem_heat=float(rng.choice([0.82, 0.9, 1.1, 1.18])),
    )


@dataclass(frozen=True)
class Pose:
    """Per-image placement and articulation of a person (independent of identity and colour)."""

    scale: float  # person height / image height
    shift: float  # horizontal offset of the person's centre, fraction of image width
    drop: float  # gap between the soles and the bottom edge, fraction of image height
    lean: float  # horizontal offset of the head relative to the feet, person-height units
    flip: int  # +1 or -1: mirror image
    back: bool  # seen from behind
    swing: float  # arm swing
    stride: float  # leg spread


def sample_pose(rng: np.random.Generator, cam: int) -> Pose:
    """Draw a random pose; the camera sets the typical distance (scale) of the person."""
    return Pose(
        scale=_CAM_SCALE.get(cam, 0.85) * float(rng.uniform(0.92, 1.06)),
        shift=float(np.clip(rng.normal(0.0, 0.045), -0.1, 0.1)),
        drop=float(rng.uniform(0.01, 0.05)),
        lean=float(np.clip(rng.normal(0.0, 0.025), -0.06, 0.06)),
        flip=1 if rng.random() < 0.5 else -1,
        back=bool(rng.random() < 0.3),
        swing=float(rng.uniform(-0.025, 0.025)),
        stride=float(rng.uniform(0.0, 0.035)),
    )


# ----------------------------------------------------------------------------------------------------
# Geometry: signed distance functions on the person-coordinate grid of one image.


@dataclass(frozen=True)
class _Frame:
    """Person coordinates of a horizontal band of image rows, starting at image row ``row0``."""

    u: Array
    v: Array
    px: float  # pixels per person-height unit
    top: float  # image y (pixels) of v = 0
    row0: int = 0

    def band(self, v_top: float, v_bottom: float) -> _Frame:
        """The rows that can touch person heights ``v_top``..``v_bottom`` (plus an anti-aliasing margin)."""
        first = self.row0
        lo = max(int(np.floor(v_top * self.px + self.top - 1.5)) - first, 0)
        hi = max(min(int(np.ceil(v_bottom * self.px + self.top + 1.5)) - first, self.u.shape[0]), lo)
        return _Frame(self.u[lo:hi], self.v[lo:hi], self.px, self.top, first + lo)

    def layer(self, material: str, sdf: Array) -> Layer:
        """The anti-aliased coverage of the shape whose signed distance (person units) is ``sdf``."""
        alpha = sdf * -self.px
        alpha += 0.5
        return (material, self.row0, _unit(alpha))


def _frame(size: Size, pose: Pose) -> _Frame:
    h, w = size
    hp = pose.scale * h
    top = h * (1.0 - pose.drop) - hp
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    v = (ys - top) / hp + np.zeros((1, w), dtype=np.float32)
    u = ((xs - w * (0.5 + pose.shift)) / hp - pose.lean * (1.0 - v)) * pose.flip
    return _Frame(u=u, v=v, px=hp, top=top)


def _ellipse(f: _Frame, cx: float, cy: float, rx: float, ry: float) -> Array:
    x = f.u - cx
    x *= 1.0 / rx
    y = f.v - cy
    y *= 1.0 / ry
    d = _hypot(x, y)
    d -= 1.0
    d *= min(rx, ry)
    return d


def _box(f: _Frame, cx: float, cy: float, hw: float, hh: float, r: float = 0.0) -> Array:
    qx = np.abs(f.u - cx) - hw + r
    qy = np.abs(f.v - cy) - hh + r
    outside = _hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _capsule(f: _Frame, a: tuple[float, float], b: tuple[float, float], r: float) -> Array:
    pu, pv = f.u - a[0], f.v - a[1]
    du, dv = b[0] - a[0], b[1] - a[1]
    norm = du * du + dv * dv
    t = pu * (du / norm)
    t += pv * (dv / norm)
    _unit(t)
    pu -= t * du
    pv -= t * dv
    d = _hypot(pu, pv)
    d -= r
    return d


def _trapezoid(f: _Frame, top: float, bottom: float, hw_top: float, hw_bottom: float) -> Array:
    t = _unit((f.v - top) / (bottom - top))
    hw = hw_top + (hw_bottom - hw_top) * t
    return np.maximum(np.abs(f.u) - hw, np.abs(f.v - (top + bottom) / 2) - (bottom - top) / 2)


def _unit(x: Array) -> Array:
    """Clamp ``x`` to [0, 1] in place (plain ufuncs: far cheaper than ``np.clip`` on small arrays)."""
    np.minimum(x, 1.0, out=x)
    return np.maximum(x, 0.0, out=x)


def _hypot(x: Array, y: Array) -> Array:
    out = x * x
    out += y * y
    return np.sqrt(out, out=out)


def _f32(values: object) -> Array:
    return np.asarray(values, dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> Array:
    return rng.standard_normal(shape, dtype=np.float32) * sigma


def _lerp(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


# ----------------------------------------------------------------------------------------------------
# The person as ordered layers (back to front) of named materials.


@dataclass(frozen=True)
class _Body:
    shoulder: float
    waist: float
    arm_r: float
    leg_r: float


def _body(shape: Shape, physique: Physique) -> _Body:
    shoulder, waist, arm_r, leg_r = _BUILD[shape.build]
    if shape.gender == "woman":
        shoulder, arm_r = shoulder * 0.92, arm_r * 0.9
    return _Body(
        shoulder=shoulder * physique.shoulder,
        waist=waist * physique.waist,
        arm_r=arm_r * physique.limbs,
        leg_r=leg_r * physique.limbs,
    )


def person_layers(shape: Shape, pose: Pose, f: _Frame, physique: Physique = NEUTRAL) -> list[Layer]:
    """All shapes of a person, back to front, each with the material it is painted in."""
    body = _body(shape, physique)
    layers: list[Layer] = []
    if not pose.back:
        layers += _hair_behind(shape, f)
    layers += _legs(shape, body, pose, f)
    layers += _upper(shape, body, pose, f)
    layers += _emblem(physique, body, pose, f)
    layers += _arms(shape, body, pose, f)
    layers += _head(shape, pose, f)
    layers += _bag(shape, body, pose, f)
    return layers


def _hair_behind(shape: Shape, f: _Frame) -> list[Layer]:
    if shape.hair_length == "short":
        return []
    bottom = 0.30 if shape.hair_length == "long" else 0.22
    g = f.band(0.05, bottom)
    return [g.layer("hair", _box(g, 0.0, (0.05 + bottom) / 2, 0.062, (bottom - 0.05) / 2, 0.03))]


def _legs(shape: Shape, body: _Body, pose: Pose, f: _Frame) -> list[Layer]:
    layers: list[Layer] = []
    for side in (-1.0, 1.0):
        hip = (side * 0.045, 0.50)
        ankle = (side * (0.05 + pose.stride), 0.93)
        g = f.band(0.44, 0.99)
        layers.append(g.layer("skin", _capsule(g, hip, ankle, body.leg_r * 0.9)))
        layers += _leg_garment(shape, body, hip, ankle, g)
        layers += _shoe(shape, ankle, side, f.band(0.85, 1.0))
    if shape.lower_type == "skirt":
        g = f.band(0.46, 0.70)
        layers.append(g.layer("lower", _trapezoid(g, 0.46, 0.70, body.waist, body.waist + 0.05)))
    else:
        g = f.band(0.46, 0.56)
        layers.append(g.layer("lower", _box(g, 0.0, 0.51, body.waist * 0.95, 0.05, 0.02)))
    return layers


def _leg_garment(
    shape: Shape, body: _Body, hip: tuple[float, float], ankle: tuple[float, float], g: _Frame
) -> list[Layer]:
    if shape.lower_type == "skirt":
        return []
    if shape.lower_type == "shorts":
        end, radius = _lerp(hip, ankle, 0.42), body.leg_r * 1.25
    else:
        width = 1.1 if shape.lower_type == "jeans" else 1.25
        end, radius = _lerp(hip, ankle, 0.97), body.leg_r * width
    return [g.layer("lower", _capsule(g, hip, end, radius))]


def _shoe(shape: Shape, ankle: tuple[float, float], side: float, g: _Frame) -> list[Layer]:
    x = ankle[0] + side * 0.008
    if shape.shoes_type == "sandals":
        foot = g.layer("skin", _ellipse(g, x, 0.962, 0.040, 0.022))
        return [foot, g.layer("shoes", _ellipse(g, x, 0.980, 0.046, 0.011))]
    sdf = _ellipse(g, x, 0.962, 0.047, 0.025)
    if shape.shoes_type == "boots":
        sdf = np.minimum(sdf, _box(g, ankle[0], 0.91, 0.042, 0.045, 0.01))
    return [g.layer("shoes", sdf)]


def _upper(shape: Shape, body: _Body, pose: Pose, f: _Frame) -> list[Layer]:
    g = f.band(0.12, 0.19)
    layers = [g.layer("skin", _box(g, 0.0, 0.155, 0.026, 0.03, 0.01))]
    if shape.upper_type == "hoodie" and not pose.back:
        g = f.band(0.12, 0.2)
        layers.append(g.layer("upper", _ellipse(g, 0.0, 0.16, 0.075, 0.04)))
    bottom = {"coat": 0.74, "jacket": 0.53, "hoodie": 0.54}.get(shape.upper_type, 0.52)
    hem = body.waist + (0.05 if shape.upper_type == "coat" else 0.01)
    g = f.band(0.15, bottom)
    torso = np.minimum(
        _trapezoid(g, 0.175, bottom, body.shoulder, hem),
        _ellipse(g, 0.0, 0.205, body.shoulder + 0.005, 0.04),
    )
    layers.append(g.layer("upper", torso))
    return layers + _upper_details(shape, body, pose, bottom, g)


def _upper_details(shape: Shape, body: _Body, pose: Pose, bottom: float, g: _Frame) -> list[Layer]:
    kind = shape.upper_type
    if pose.back:
        return [g.layer("trim", _ellipse(g, 0.0, 0.215, 0.06, 0.045))] if kind == "hoodie" else []
    if kind == "t-shirt":
        return [g.layer("skin", _ellipse(g, 0.0, 0.172, 0.03, 0.018))]
    if kind == "shirt":
        collar = np.maximum(np.abs(g.u) - 0.03 + (g.v - 0.17) * 0.5, np.abs(g.v - 0.19) - 0.02)
        return [g.layer("skin", collar), g.layer("trim", _box(g, 0.0, 0.36, 0.003, 0.15))]
    if kind == "hoodie":
        return [g.layer("trim", _box(g, 0.0, 0.46, body.waist * 0.65, 0.035, 0.015))]
    zip_line = g.layer("trim", _box(g, 0.0, (0.19 + bottom) / 2, 0.004, (bottom - 0.19) / 2))
    return [g.layer("trim", _ellipse(g, 0.0, 0.175, 0.04, 0.022)), zip_line]


def _emblem(physique: Physique, body: _Body, pose: Pose, f: _Frame) -> list[Layer]:
    """The print on the front of the upper garment (not seen from behind)."""
    if physique.emblem == "none" or pose.back:
        return []
    r, u, v = physique.emblem_size, physique.emblem_u, physique.emblem_v
    g = f.band(v - 2 * r, v + 2 * r)
    sdf = {
        "patch": lambda: _box(g, u, v, r, r * 0.8, 0.004),
        "disc": lambda: _ellipse(g, u, v, r, r),
        "band": lambda: _box(g, 0.0, v, body.waist * 0.9, r * 0.45),
        "stripe": lambda: _box(g, u, v, r * 0.35, r * 1.6),
    }[physique.emblem]()
    return [g.layer("emblem", sdf)]


def _arms(shape: Shape, body: _Body, pose: Pose, f: _Frame) -> list[Layer]:
    layers: list[Layer] = []
    sleeve_end = 0.97 if shape.upper_sleeve == "long" else 0.38
    g = f.band(0.15, 0.53)
    for side in (-1.0, 1.0):
        shoulder = (side * (body.shoulder - 0.012), 0.195)
        wrist = (side * (body.shoulder + 0.022) + side * pose.swing, 0.47)
        layers.append(g.layer("skin", _capsule(g, shoulder, wrist, body.arm_r * 0.85)))
        cuff = _lerp(shoulder, wrist, sleeve_end)
        layers.append(g.layer("upper", _capsule(g, shoulder, cuff, body.arm_r * 1.05)))
        layers.append(g.layer("skin", _ellipse(g, wrist[0], wrist[1] + 0.022, 0.022, 0.026)))
    return layers


def _head(shape: Shape, pose: Pose, f: _Frame) -> list[Layer]:
    g = f.band(0.0, 0.15)
    layers = [g.layer("skin", _ellipse(g, 0.0, 0.078, 0.05, 0.066))]
    g = f.band(-0.01, 0.32)
    layers.append(g.layer("hair", _hair_sdf(shape, pose, g)))
    if shape.hat == "cap":
        g = f.band(0.0, 0.06)
        crown = np.maximum(_ellipse(g, 0.0, 0.05, 0.058, 0.045), g.v - 0.05)
        brim = _box(g, 0.0, 0.052, 0.062, 0.007, 0.003) if not pose.back else crown
        layers.append(g.layer("hat", np.minimum(crown, brim)))
    return layers


def _hair_sdf(shape: Shape, pose: Pose, g: _Frame) -> Array:
    volume = 0.008 if shape.hair_style == "curly" else 0.0
    cap = _ellipse(g, 0.0, 0.068, 0.056 + volume, 0.064 + volume)
    if pose.back:
        bottom = {"short": 0.12, "shoulder-length": 0.22, "long": 0.30}[shape.hair_length]
        sdf = np.minimum(cap, _box(g, 0.0, (0.07 + bottom) / 2, 0.055, (bottom - 0.07) / 2, 0.02))
    else:
        sdf = np.maximum(cap, g.v - (0.045 if shape.hair_length == "short" else 0.06))
        if shape.hair_length != "short":
            sides = _box(g, 0.0, 0.11, 0.058, 0.05, 0.01)
            sdf = np.minimum(sdf, np.maximum(sides, 0.042 - np.abs(g.u)))
    if shape.hair_style == "ponytail":
        tail = _ellipse(g, 0.0, 0.19, 0.022, 0.07) if pose.back else _ellipse(g, 0.062, 0.1, 0.018, 0.05)
        sdf = np.minimum(sdf, tail)
    if shape.hair_style == "curly":
        sdf = sdf + 0.004 * np.sin(g.u * 260.0) * np.sin(g.v * 260.0)
    return sdf


def _bag(shape: Shape, body: _Body, pose: Pose, f: _Frame) -> list[Layer]:
    if shape.bag == "backpack":
        g = f.band(0.16, 0.46)
        if pose.back:
            return [g.layer("bag", _box(g, 0.0, 0.33, body.shoulder * 0.8, 0.12, 0.03))]
        straps = np.minimum(
            _capsule(g, (-0.05, 0.18), (-0.058, 0.40), 0.011),
            _capsule(g, (0.05, 0.18), (0.058, 0.40), 0.011),
        )
        return [g.layer("bag", straps)]
    if shape.bag == "handbag":
        g = f.band(0.47, 0.59)
        x = body.shoulder + 0.03 + pose.swing
        handle = _capsule(g, (x - 0.02, 0.48), (x + 0.02, 0.48), 0.006)
        return [g.layer("bag", np.minimum(_box(g, x, 0.54, 0.045, 0.045, 0.012), handle))]
    return []


# ----------------------------------------------------------------------------------------------------
# Image-wide helpers: smooth random fields and separable blur as small matrix products.


@lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int) -> Array:
    pos = np.linspace(0.0, n_in - 1.0, n_out, dtype=np.float32)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _smooth_noise(size: Size, grid: Size, rng: np.random.Generator, channels: int = 0) -> Array:
    """A smooth random field (bilinear upsampling of a coarse normal grid), shape ``size`` (+ channels)."""
    shape = grid + ((channels,) if channels else ())
    coarse = rng.standard_normal(shape, dtype=np.float32)
    return _separable(coarse, _interp_matrix(size[0], grid[0]), _interp_matrix(size[1], grid[1]))


def _separable(img: Array, rows: Array, cols: Array) -> Array:
    """``rows @ img @ cols.T`` for every channel of a (H, W) or (H, W, C) image."""
    if img.ndim == 2:
        return rows @ img @ cols.T
    return np.moveaxis(rows @ np.moveaxis(img, 2, 0) @ cols.T, 0, 2)


@lru_cache(maxsize=256)
def _gauss_matrix(n: int, sigma: float) -> Array:
    d = (np.arange(n)[:, None] - np.arange(n)[None, :]).astype(np.float32)
    k = np.exp(-0.5 * (d / sigma) ** 2)
    return k / k.sum(axis=1, keepdims=True)


def _blur(img: Array, sigma: float) -> Array:
    """Gaussian blur; ``sigma`` (pixels) is rounded to 0.05 so the kernels can be cached."""
    sigma = max(round(sigma * 20.0) / 20.0, 0.05)
    return _separable(img, _gauss_matrix(img.shape[0], sigma), _gauss_matrix(img.shape[1], sigma))


def _composite(base: Array, layers: Sequence[Layer], paints: dict[str, Array], shade: Array) -> Array:
    """Paint the layers over ``base`` in order: ``out += alpha * (paint * shade - out)``.

    A paint is either constant (a colour or a heat value) or a full image (a textured material).
    """
    out = base.astype(np.float32, copy=True)
    for material, row0, alpha in layers:
        rows = slice(row0, row0 + alpha.shape[0])
        paint = paints[material]
        value = (paint[rows] if paint.ndim == out.ndim else paint) * shade[rows]
        a = alpha[..., None] if out.ndim == 3 else alpha
        out[rows] += a * (value - out[rows])
    return out


def _to_uint8_rgb(img: Array) -> NDArray[np.uint8]:
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)


def _stripes(f: _Frame) -> Array:
    return _unit(np.sin(f.v * 2.0 * np.pi * 40.0) * 2.0 + 0.5)


def _shade(f: _Frame) -> Array:
    """Soft cylindrical shading of the body: darker towards its silhouette."""
    return 1.0 - 0.22 * _unit(np.abs(f.u) / 0.16) ** 2


# ----------------------------------------------------------------------------------------------------
# Visible images.


def render_visible(
    shape: Shape,
    colours: Colours,
    pose: Pose,
    cam: int,
    size: Size,
    rng: np.random.Generator,
    physique: Physique = NEUTRAL,
) -> NDArray[np.uint8]:
    """An RGB image (H, W, 3) uint8 of the person in their colours, with background, lighting and noise."""
    f = _frame(size, pose)
    paints = _visible_paints(shape, colours, physique, f, rng)
    background = _visible_background(size, cam, rng)
    layers = person_layers(shape, pose, f, physique)
    img = _composite(background, layers, paints, _shade(f)[..., None])
    img = _lighting(img, cam, rng)
    img = _blur(img, float(rng.uniform(0.35, 0.7)))
    img = img + _noise(rng, img.shape, rng.uniform(0.008, 0.025))
    return _to_uint8_rgb(img)


def _visible_paints(
    shape: Shape, colours: Colours, physique: Physique, f: _Frame, rng: np.random.Generator
) -> dict[str, Array]:
    def rgb(name: str | None) -> Array:
        base = np.array(RGB[name] if name else RGB["grey"])
        return _f32(np.clip(base * rng.uniform(0.93, 1.07, size=3), 0.0, 1.0))

    upper = rgb(colours.upper)
    if shape.upper_pattern == "striped":
        upper = upper * (1.0 - 0.45 * _stripes(f))[..., None]
    lower = rgb(colours.lower)
    if shape.lower_type == "jeans":
        lower = lower * (1.0 + _noise(rng, f.u.shape, 0.045))[..., None]
    return {
        "skin": _f32(SKIN_TONES[colours.skin]),
        "hair": rgb(colours.hair),
        "upper": upper,
        "trim": upper * 0.62,
        "emblem": upper * 0.35 + _f32(physique.emblem_tone * 0.65),
        "lower": lower,
        "shoes": rgb(colours.shoes),
        "bag": rgb(colours.bag),
        "hat": rgb(colours.hat),
    }


def _visible_background(size: Size, cam: int, rng: np.random.Generator) -> Array:
    h, w = size
    indoor = cam in INDOOR_CAMS
    hue = _f32(rng.uniform(0.0, 1.0, size=3))
    grey = rng.uniform(0.55, 0.8) if indoor else rng.uniform(0.4, 0.75)
    wall = grey * (0.8 + 0.25 * hue)
    floor = wall * rng.uniform(0.45, 0.8) + (0.0 if indoor else _f32([0.0, 0.06, 0.0]))
    horizon = rng.uniform(0.55, 0.8) * h
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    ground = _unit(rows - horizon + 0.5)
    img = wall * (1.0 - ground) + floor * ground + np.zeros((1, w, 1), dtype=np.float32)
    img = _background_object(img, rng)
    texture = _smooth_noise(size, (int(rng.integers(4, 9)), int(rng.integers(3, 6))), rng, channels=3)
    return _unit(img + texture * rng.uniform(0.02, 0.07))


def _background_object(img: Array, rng: np.random.Generator) -> Array:
    """A door, window or pillar: one random axis-aligned panel of another muted tone."""
    h, w = img.shape[:2]
    top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w))
    height, width = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 8, w // 2))
    out = img.copy()
    tone = _f32(rng.uniform(0.3, 0.85) * (0.85 + 0.2 * rng.uniform(0.0, 1.0, size=3)))
    out[top : top + height, left : left + width] = tone
    return out


def _lighting(img: Array, cam: int, rng: np.random.Generator) -> Array:
    indoor = cam in INDOOR_CAMS
    brightness = rng.uniform(0.75, 1.05) if indoor else rng.uniform(0.85, 1.15)
    contrast = rng.uniform(0.8, 1.1)
    temperature = rng.normal(0.05 if indoor else -0.03, 0.035)
    out = ((img - 0.5) * contrast + 0.5) * brightness
    return out * _f32([1.0 + temperature, 1.0, 1.0 - temperature])


# ----------------------------------------------------------------------------------------------------
# Infrared images: the renderer sees the colour-free shape only.


def render_ir(
    shape: Shape,
    pose: Pose,
    cam: int,
    size: Size,
    rng: np.random.Generator,
    physique: Physique = NEUTRAL,
) -> NDArray[np.uint8]:
    """A thermal image (H, W, 3) uint8 of equal channels: heat from skin and garment types, never colours."""
    f = _frame(size, pose)
    heats = _heat_paints(shape, physique, f, rng)
    shade = 0.55 + 0.45 * _shade(f)
    layers = person_layers(shape, pose, f, physique)
    img = _composite(_ir_background(size, cam, rng), layers, heats, shade)
    centre = float(img.mean())
    img = (img - centre) * rng.uniform(0.85, 1.2) + centre + rng.normal(0.0, 0.03)
    img = _blur(img, float(rng.uniform(0.6, 1.3)))
    img = img + _noise(rng, (size[0], 1), 0.012)  # row (fixed-pattern) noise
    img = img + _noise(rng, img.shape, rng.uniform(0.012, 0.03))
    return _to_uint8_rgb(img)


def _heat_paints(shape: Shape, physique: Physique, f: _Frame, rng: np.random.Generator) -> dict[str, Array]:
    jitter = [float(j) for j in rng.normal(0.0, 0.015, size=8)]
    upper = _f32(UPPER_HEAT[shape.upper_type] + jitter[0])
    if shape.upper_pattern == "striped":
        upper = upper * (1.0 - 0.07 * _stripes(f))
    lower = _f32(LOWER_HEAT[shape.lower_type] + jitter[1])
    if shape.lower_type == "jeans":
        lower = lower * (1.0 + _noise(rng, f.u.shape, 0.03))
    return {
        "skin": _f32(SKIN_HEAT + jitter[2]),
        "hair": _f32(HAIR_HEAT[shape.hair_length] + jitter[3]),
        "upper": upper,
        "trim": upper * 0.93,
        "emblem": upper * physique.emblem_heat,
        "lower": lower,
        "shoes": _f32(SHOES_HEAT[shape.shoes_type] + jitter[4]),
        "bag": _f32(BAG_HEAT.get(shape.bag, 0.3) + jitter[5]),
        "hat": _f32(HAT_HEAT + jitter[6]),
    }


def _ir_background(size: Size, cam: int, rng: np.random.Generator) -> Array:
    h, w = size
    base = rng.uniform(0.26, 0.38) if cam in INDOOR_CAMS else rng.uniform(0.12, 0.26)
    gradient = rng.uniform(-0.08, 0.08) * np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    texture = _smooth_noise(size, (int(rng.integers(4, 9)), int(rng.integers(3, 6))), rng)
    img = base + gradient + texture * rng.uniform(0.015, 0.05) + np.zeros((1, w), dtype=np.float32)
    if rng.random() < 0.35:  # a warm object: radiator, lamp, engine
        top, left = int(rng.integers(0, h - h // 6)), int(rng.integers(0, w - w // 6))
        img[top : top + h // 6, left : left + w // 6] += rng.uniform(0.1, 0.3)
    return img


# ----------------------------------------------------------------------------------------------------
# Contact sheet.


@dataclass(frozen=True)
class SheetEntry:
    """One identity on the contact sheet: a visible and an IR image with their captions."""

    title: str
    visible: Path
    ir: Path
    visible_caption: str
    ir_caption: str


def contact_sheet(rows: Sequence[Sequence[SheetEntry]], out: Path, zoom: int = 2) -> None:
    """Draw rows of (visible, IR, captions) cells into one PNG so a person can inspect the data."""
    font = ImageFont.load_default(size=11)
    first = Image.open(rows[0][0].visible)
    img_w, img_h = first.width * zoom, first.height * zoom
    cell_w = max(2 * img_w + 12, 230)
    chars = max(16, int(cell_w / max(font.getlength("n"), 1.0)) - 2)
    wrapped = [[_cell_text(e, chars) for e in row] for row in rows]
    line_h = 13
    heights = [18 + img_h + 8 + line_h * max(len(t) for t in row) for row in wrapped]
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (columns * cell_w, sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for row, texts, height in zip(rows, wrapped, heights, strict=True):
        for i, (entry, lines) in enumerate(zip(row, texts, strict=True)):
            _draw_cell(sheet, draw, font, entry, lines, (i * cell_w, y), (img_w, img_h), line_h)
        draw.line([(0, y + height - 1), (sheet.width, y + height - 1)], fill=(180, 180, 180))
        y += height
    sheet.save(out, format="PNG")


def _cell_text(entry: SheetEntry, chars: int) -> list[str]:
    return [
        *textwrap.wrap("RGB: " + entry.visible_caption, chars),
        *textwrap.wrap("IR: " + entry.ir_caption, chars),
    ]


def _draw_cell(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    entry: SheetEntry,
    lines: list[str],
    origin: tuple[int, int],
    img_size: tuple[int, int],
    line_h: int,
) -> None:
    x, y = origin
    draw.text((x + 4, y + 3), entry.title, fill=(0, 0, 0), font=font)
    for k, path in enumerate((entry.visible, entry.ir)):
        with Image.open(path) as im:
            tile = im.convert("RGB").resize(img_size, Image.Resampling.NEAREST)
        sheet.paste(tile, (x + 4 + k * (img_size[0] + 4), y + 18))
    for j, line in enumerate(lines):
        draw.text((x + 4, y + 18 + img_size[1] + 6 + j * line_h), line, fill=(40, 40, 40), font=font)
