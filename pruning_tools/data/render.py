"""Rasteriser of the scene generator: a :class:`~pruning_tools.data.scene.World` -> BGR image + visibility.

Drawing is OpenCV polygons, lines and discs in painter's order (far to near), with a parallel
``uint16`` id buffer saying which item owns each pixel. The id buffer gives per-object visible
pixel counts (occlusion), a per-pixel depth for fog, and positions for a low-resolution light map
(ambient, ego and other cars' headlights, street lamps, soft shadows). Emissive parts (head/tail
lights, lamp heads, lit windows) keep their colour through the lighting pass and get blurred halos.

Models use local coordinates ``(a, u, b)``: ``a`` forward along the object's length, ``u`` up,
``b`` along its width; they are mapped into camera coordinates with KITTI's ``rotation_y``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pruning_tools.data.scene import CAM_HEIGHT, Actor, World

NEAR = 0.4  # near clipping plane, metres
POLY, LINE, RING, BALL = 0, 1, 2, 3
ID_ROAD, ID_SKYLINE, ID_FIRST = 1, 2, 3
_SHIFT = 2
_SC = 1 << _SHIFT


# ---------------------------------------------------------------------------- camera
@dataclass(frozen=True, eq=False)
class Camera:
    """Pinhole camera given by a KITTI 3x4 rectified projection matrix (``P_rect_02``).

    :param P: 3x4 projection from rectified camera-0 coordinates to image pixels.
    :param width: image width in pixels.
    :param height: image height in pixels.
    """

    P: np.ndarray
    width: int
    height: int

    @property
    def f(self) -> float:
        """Focal length in pixels."""
        return float(self.P[0, 0])

    @property
    def horizon(self) -> float:
        """Image row of the ground plane's vanishing line."""
        return float(self.P[1, 2] / self.P[2, 2])

    def project(self, pts: np.ndarray) -> np.ndarray:
        """Camera points (N, 3) -> pixels (N, 2); points must have z > 0."""
        h = pts @ self.P[:, :3].T + self.P[:, 3]
        return h[:, :2] / h[:, 2:3]

    def ground_depth(self, v: np.ndarray) -> np.ndarray:
        """Depth z of the ground (y = camera height) seen at image rows ``v`` (inf at/above the horizon)."""
        P = self.P
        num = P[1, 1] * CAM_HEIGHT + P[1, 3] - v * P[2, 3]
        den = v - P[1, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(den > 0.5, num / np.maximum(den, 1e-6), np.inf)
        return z


def box_corners(dims: tuple[float, float, float], loc: tuple[float, float, float], ry: float) -> np.ndarray:
    """The 8 corners (8, 3) of a KITTI 3D box: ``dims`` (h, w, l), bottom-centre ``loc``, yaw ``ry``."""
    h, w, length = dims
    xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2
    ys = np.array([0, 0, 0, 0, -1, -1, -1, -1]) * h
    zs = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    c, s = math.cos(ry), math.sin(ry)
    return np.stack([c * xs + s * zs + loc[0], ys + loc[1], -s * xs + c * zs + loc[2]], axis=1)


_BOX_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def project_box(cam: Camera, corners: np.ndarray, near: float = NEAR) -> tuple[np.ndarray, float] | None:
    """Project a 3D box, clipped at the near plane.

    :return: ``(bbox, truncation)``: the 2D box ``(x1, y1, x2, y2)`` clipped to the image and the
        fraction of the unclipped box's area outside the image; ``None`` when nothing is in view.
    """
    pts = corners
    if corners[:, 2].min() < near:
        keep = [p for p in corners if p[2] >= near]
        for i, j in _BOX_EDGES:
            a, b = corners[i], corners[j]
            if (a[2] - near) * (b[2] - near) < 0:
                t = (near - a[2]) / (b[2] - a[2])
                keep.append(a + t * (b - a))
        if len(keep) < 2:
            return None
        pts = np.array(keep)
    uv = cam.project(pts)
    x1, y1 = uv.min(axis=0)
    x2, y2 = uv.max(axis=0)
    cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
    cx2, cy2 = min(x2, cam.width - 1.0), min(y2, cam.height - 1.0)
    if cx2 - cx1 < 1.0 or cy2 - cy1 < 1.0:
        return None
    full = max((x2 - x1) * (y2 - y1), 1e-9)
    trunc = float(np.clip(1.0 - (cx2 - cx1) * (cy2 - cy1) / full, 0.0, 1.0))
    return np.array([cx1, cy1, cx2, cy2]), trunc


# ---------------------------------------------------------------------------- primitives
@dataclass
class Prim:
    """One drawing primitive in local model coordinates.

    :param kind: ``POLY`` (convex polygon), ``LINE`` (open polyline), ``RING`` (closed), ``BALL`` (disc of a sphere).
    :param pts: (N, 3) local ``(a, u, b)`` points (``BALL``: the centre).
    :param color: BGR albedo (or emitted colour when ``emissive``).
    :param normal: outward normal for back-face culling and shading (``POLY``), else ``None``.
    :param size: line thickness or sphere radius, metres.
    :param emissive: a light: keeps its colour through lighting and gets a halo of ``glow`` metres.
    """

    kind: int
    pts: np.ndarray
    color: tuple[float, float, float]
    normal: np.ndarray | None = None
    size: float = 0.0
    emissive: bool = False
    glow: float = 0.0


_HEX_FACES = [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
_HEX_IDX = np.array(_HEX_FACES)


class Model:
    """Primitives packed into arrays for vectorised transform, projection and back-face culling.

    :param prims: the primitives, in drawing order.
    """

    __slots__ = ("prims", "pts", "starts", "ends", "normals", "centers", "has_normal")

    def __init__(self, prims: list[Prim]) -> None:
        self.prims = prims
        lens = [len(p.pts) for p in prims]
        self.ends = np.cumsum(lens).tolist()
        self.starts = [e - n for e, n in zip(self.ends, lens)]
        self.pts = np.concatenate([p.pts for p in prims]) if prims else np.zeros((0, 3))
        self.normals = np.array([p.normal if p.normal is not None else (0.0, 0.0, 0.0) for p in prims]).reshape(-1, 3)
        self.centers = (np.add.reduceat(self.pts, self.starts, axis=0) / np.array(lens, np.float64)[:, None]
                        if prims else np.zeros((0, 3)))
        self.has_normal = np.array([p.normal is not None for p in prims], bool)


def hexa(c: np.ndarray, color: Any, *, top: Any = None, face_colors: dict[int, Any] | None = None,
         skip_bottom: bool = True) -> list[Prim]:
    """Convex hexahedron from 8 local corners (bottom ring 0-3, top ring 4-7, same order) -> face prims."""
    c = np.asarray(c, dtype=np.float64)
    F = c[_HEX_IDX]  # (6, 4, 3)
    n = np.cross(F[:, 1] - F[:, 0], F[:, 2] - F[:, 0])
    alt = np.cross(F[:, 2] - F[:, 0], F[:, 3] - F[:, 0])
    small = np.linalg.norm(n, axis=1) < 1e-9
    n[small] = alt[small]
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    flip = np.einsum("ij,ij->i", n, F.mean(axis=1) - c.mean(axis=0)) < 0
    n[flip] *= -1
    out = []
    fc = face_colors or {}
    for k in range(6):
        if k == 0 and skip_bottom:
            continue
        col = fc.get(k, top if (k == 1 and top is not None) else color)
        out.append(Prim(POLY, F[k], col, n[k]))
    return out


_BOX_NORMALS = np.array([(0, -1, 0), (0, 1, 0), (0, 0, -1), (1, 0, 0), (0, 0, 1), (-1, 0, 0)], dtype=np.float64)


def box(a0: float, a1: float, u0: float, u1: float, b0: float, b1: float, color: Any, *, top: Any = None,
        face_colors: dict[int, Any] | None = None, skip_bottom: bool = True) -> list[Prim]:
    """Axis-aligned local box (``a0 < a1``, ``u0 < u1``, ``b0 < b1``) -> face prims (faces as in :func:`hexa`)."""
    c = np.array([[a0, u0, b0], [a1, u0, b0], [a1, u0, b1], [a0, u0, b1],
                  [a0, u1, b0], [a1, u1, b0], [a1, u1, b1], [a0, u1, b1]], dtype=np.float64)
    F = c[_HEX_IDX]
    fc = face_colors or {}
    return [Prim(POLY, F[k], fc.get(k, top if (k == 1 and top is not None) else color), _BOX_NORMALS[k])
            for k in range(1 if skip_bottom else 0, 6)]


def quad(pts: list[tuple[float, float, float]], color: Any, normal: tuple[float, float, float], *,
         emissive: bool = False, glow: float = 0.0) -> Prim:
    """A flat convex polygon with a given outward normal."""
    return Prim(POLY, np.array(pts, dtype=np.float64), color, np.array(normal, dtype=np.float64),
                emissive=emissive, glow=glow)


def _scale(c: tuple[float, float, float], k: float) -> tuple[float, float, float]:
    return (min(255.0, c[0] * k), min(255.0, c[1] * k), min(255.0, c[2] * k))


# ---------------------------------------------------------------------------- models
def car_model(act: Actor) -> list[Prim]:
    """Lower body, tapered glass cabin, four wheels, bumpers, head and tail lights."""
    h, w, length = act.dims
    look = act.look
    col = look["color"]
    hb = h * look["cabin"]
    la, hw = length / 2, w / 2
    r = 0.31 * h / 1.5
    prims: list[Prim] = []
    for sa in (1, -1):
        for sb in (1, -1):
            ac = sa * (la - 0.78 * r - 0.35)
            b_in, b_out = (hw - 0.24, hw - 0.01) if sb > 0 else (-hw + 0.01, -hw + 0.24)
            prims += box(ac - r, ac + r, 0.0, 2 * r, b_in, b_out, (22, 22, 24))
    prims += box(-la, la, 0.28, hb, -hw, hw, col, top=_scale(col, 1.08))
    style = look["style"]
    front_hood = 0.30 * length if style != 1 else 0.24 * length
    rear = 0.22 * length if style == 0 else 0.08 * length
    a_bf, a_br = la - front_hood, -la + rear
    a_tf, a_tr = a_bf - 0.55 * (h - hb) / 0.6, a_br + (0.45 if style == 0 else 0.12) * (h - hb) / 0.6
    bi, bt = hw - 0.06, hw - 0.2
    cab = np.array([[a_br, hb, -bi], [a_bf, hb, -bi], [a_bf, hb, bi], [a_br, hb, bi],
                    [a_tr, h, -bt], [a_tf, h, -bt], [a_tf, h, bt], [a_tr, h, bt]])
    glass = (72 + 0.1 * col[0], 58 + 0.1 * col[1], 50 + 0.1 * col[2])
    prims += hexa(cab, glass, top=col)
    lights = bool(look.get("lights"))
    # bumpers and lights on the front (+a) and rear (-a) faces
    for sa in (1, -1):
        a = sa * (la + 0.012)
        prims.append(quad([(a, 0.30, -hw), (a, 0.30, hw), (a, 0.42, hw), (a, 0.42, -hw)], (35, 35, 38), (sa, 0, 0)))
        for sb in (1, -1):
            b0, b1 = sb * (hw - 0.08), sb * (hw - 0.38)
            u0, u1 = hb - 0.2, hb - 0.06
            if sa > 0:
                c = (235, 245, 250) if lights else (200, 200, 195)
            else:
                c = (60, 60, 255) if lights else (35, 35, 150)
            prims.append(quad([(a, u0, b0), (a, u0, b1), (a, u1, b1), (a, u1, b0)], c, (sa, 0, 0),
                              emissive=lights, glow=(0.35 if sa > 0 else 0.18) if lights else 0.0))
    return prims


def pedestrian_model(act: Actor) -> list[Prim]:
    """Two swinging legs, torso, arms and a head, scaled to the person's height."""
    h = act.dims[0]
    look = act.look
    s = h / 1.75
    swing = math.sin(act.phase) * (0.28 if act.speed > 0 else 0.0) * s
    hip, shoulder = 0.48 * h, 0.82 * h
    prims: list[Prim] = []
    lw = 0.075 * s
    for side, sw in ((-1, swing), (1, -swing)):  # far leg first is decided by the painter's sort below
        b = side * 0.1 * s
        c = np.array([[sw - 0.08 * s, 0, b - lw], [sw + 0.1 * s, 0, b - lw], [sw + 0.1 * s, 0, b + lw], [sw - 0.08 * s, 0, b + lw],
                      [-0.08 * s, hip, b - lw], [0.08 * s, hip, b - lw], [0.08 * s, hip, b + lw], [-0.08 * s, hip, b + lw]])
        prims += hexa(c, look["pants"])
    prims += box(-0.12 * s, 0.12 * s, hip - 0.05 * s, shoulder, -0.2 * s, 0.2 * s, look["shirt"])
    for side, sw in ((-1, -swing), (1, swing)):
        b = side * 0.25 * s
        aw = 0.05 * s
        c = np.array([[-aw, shoulder, b - aw], [aw, shoulder, b - aw], [aw, shoulder, b + aw], [-aw, shoulder, b + aw],
                      [sw * 0.8 - aw, hip, b - aw], [sw * 0.8 + aw, hip, b - aw], [sw * 0.8 + aw, hip, b + aw],
                      [sw * 0.8 - aw, hip, b + aw]])
        prims += hexa(c[[4, 5, 6, 7, 0, 1, 2, 3]], look["shirt"])
    if look.get("bag"):
        prims += box(-0.26 * s, -0.12 * s, 0.6 * h, 0.78 * h, -0.15 * s, 0.15 * s, _scale(look["pants"], 0.7))
    prims.append(Prim(BALL, np.array([[0.0, 0.915 * h, 0.0]]), look["skin"], size=0.105 * s))
    prims.append(Prim(BALL, np.array([[-0.015 * s, 0.935 * h, 0.0]]), look["hair"], size=0.09 * s))
    return prims


def cyclist_model(act: Actor) -> list[Prim]:
    """Bicycle (two wheels, frame) with a pedalling rider; l along the bike."""
    h, w, length = act.dims
    look = act.look
    s = h / 1.72
    r = 0.34
    wa = length / 2 - r - 0.02
    ang = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    prims: list[Prim] = []
    for ac in (-wa, wa):
        ring = np.stack([ac + r * np.cos(ang), r + r * np.sin(ang), np.zeros_like(ang)], axis=1)
        prims.append(Prim(RING, ring, (25, 25, 25), size=0.06))
    bb = (0.0, 0.32, 0.0)
    seat = (-0.2, 0.9 * s, 0.0)
    bar = (wa - 0.12, 1.0 * s, 0.0)
    frame = np.array([(-wa, r, 0), bb, seat, (-wa, r, 0), seat, bar, (wa, r, 0), bar, bb])
    prims.append(Prim(LINE, frame.astype(np.float64), look["frame"], size=0.045))
    crank = 0.17
    torso_bot = (-0.18, 0.95 * s, 0.0)
    torso_top = (0.18 * s, 1.42 * s, 0.0)
    for side, ph in ((-1, act.phase), (1, act.phase + math.pi)):
        ped = (crank * math.cos(ph), 0.32 + crank * math.sin(ph), side * 0.12)
        hipp = (torso_bot[0], torso_bot[1], side * 0.1)
        knee = ((hipp[0] + ped[0]) / 2 + 0.2, (hipp[1] + ped[1]) / 2 + 0.12, side * 0.12)
        prims.append(Prim(LINE, np.array([hipp, knee, ped], dtype=np.float64), look["pants"], size=0.12 * s))
    prims.append(Prim(LINE, np.array([torso_bot, torso_top], dtype=np.float64), look["shirt"], size=0.33 * s))
    for side in (-1, 1):
        prims.append(Prim(LINE, np.array([(torso_top[0], torso_top[1] - 0.05, side * 0.2),
                                          (bar[0], bar[1], side * 0.25)], dtype=np.float64), look["shirt"], size=0.08 * s))
    prims.append(Prim(BALL, np.array([[torso_top[0] + 0.08, 1.58 * s, 0.0]]), look["skin"], size=0.1 * s))
    prims.append(Prim(BALL, np.array([[torso_top[0] + 0.06, 1.62 * s, 0.0]]), look["helmet"], size=0.095 * s))
    if look.get("lights"):
        prims.append(quad([(-wa - 0.1, 0.75, -0.05), (-wa - 0.1, 0.75, 0.05), (-wa - 0.1, 0.82, 0.05),
                           (-wa - 0.1, 0.82, -0.05)], (50, 50, 255), (-1, 0, 0), emissive=True, glow=0.3))
        prims.append(quad([(wa + 0.05, 0.95, -0.05), (wa + 0.05, 0.95, 0.05), (wa + 0.05, 1.02, 0.05),
                           (wa + 0.05, 1.02, -0.05)], (230, 245, 250), (1, 0, 0), emissive=True, glow=0.5))
    return prims


def misc_model(act: Actor) -> list[Prim]:
    """Dumpster, crate or trailer-like container (labelled ``Misc``)."""
    h, w, length = act.dims
    col = act.look["color"]
    prims: list[Prim] = []
    for sa in (1, -1):
        ac = sa * (length / 2 - 0.25)
        prims += box(ac - 0.08, ac + 0.08, 0, 0.14, -w / 2 + 0.05, w / 2 - 0.05, (20, 20, 20))
    return prims + box(-length / 2, length / 2, 0.12, h, -w / 2, w / 2, col, top=_scale(col, 0.8))


def building_model(act: Actor, night: bool) -> list[Prim]:
    """Block with a window grid on the road-facing facade (some windows lit at night)."""
    h, depth, length = act.dims
    look = act.look
    col = look["color"]
    prims = box(-length / 2, length / 2, 0.0, h, -depth / 2, depth / 2, col,
                face_colors={2: _scale(col, 0.9), 4: _scale(col, 0.9)})
    side = look["side"]
    # road-facing facade: with heading -pi/2, camera x = -b + X, so facing the road (x towards 0) is b = +side*depth/2
    bf = side * (depth / 2 + 0.03)
    normal = (0.0, 0.0, float(side))
    pitch, ww = look["win_pitch"], look["win_w"]
    n_cols = max(1, int((length - 1.0) / pitch))
    lit = np.random.default_rng(look["lit"]).random((look["floors"], n_cols)) < 0.35
    a0 = -n_cols * pitch / 2 + pitch / 2
    glass = (70 + 0.15 * col[0], 55 + 0.15 * col[1], 45 + 0.15 * col[2])
    for f in range(look["floors"]):
        u0 = 1.2 + f * 3.2
        if u0 + 1.4 > h - 0.3:
            break
        for k in range(n_cols):
            a = a0 + k * pitch
            on = night and bool(lit[f, k])
            prims.append(quad([(a - ww / 2, u0, bf), (a + ww / 2, u0, bf), (a + ww / 2, u0 + 1.4, bf), (a - ww / 2, u0 + 1.4, bf)],
                              (90, 190, 235) if on else glass, normal, emissive=on, glow=0.0))
    return prims


def tree_model(act: Actor) -> list[Prim]:
    """Trunk and a few leaf spheres."""
    h = act.dims[0]
    look = act.look
    prims = box(-0.15, 0.15, 0.0, h * 0.55, -0.15, 0.15, look["trunk"])
    for i, (da, fu, db, rr) in enumerate(look["blobs"]):
        k = look["shade"] * (0.85 + 0.08 * i)
        prims.append(Prim(BALL, np.array([[da, fu * h, db]]), _scale(look["leaf"], k), size=rr))
    return prims


def pole_model(act: Actor, lamps_on: bool) -> list[Prim]:
    """Street lamp: mast, arm over the road and a lamp head (emissive when on)."""
    h = act.dims[0]
    side = act.look["side"]
    col = act.look["color"]
    prims = box(-0.09, 0.09, 0.0, h, -0.09, 0.09, col)
    # heading 0: a = x, so the arm goes towards the road along -side in a
    a_end = -side * 1.8
    prims += box(min(0.0, a_end), max(0.0, a_end), h - 0.12, h, -0.05, 0.05, col)
    ah = -side * 1.6
    prims += box(ah - 0.3, ah + 0.3, h - 0.3, h - 0.12, -0.15, 0.15, (90, 90, 95),
                 face_colors={0: (200, 235, 255) if lamps_on else (150, 160, 170)}, skip_bottom=False)
    if lamps_on:
        for p in prims[-6:]:
            if p.normal is not None and p.normal[1] < -0.5:
                p.emissive, p.glow, p.color = True, 0.6, (170, 225, 255)
    return prims


def sign_model(act: Actor) -> list[Prim]:
    """Post with a round, triangular or square plate facing oncoming traffic."""
    h = act.dims[0]
    look = act.look
    prims = box(-0.04, 0.04, 0.0, h, -0.04, 0.04, (150, 150, 150))
    ang = np.linspace(0, 2 * math.pi, {0: 14, 1: 3, 2: 4}[look["shape"]], endpoint=False) + (
        math.pi / 2 if look["shape"] == 1 else math.pi / 4)
    rr = 0.35
    plate = [(float(rr * math.cos(t)), float(h + 0.1 + rr * math.sin(t)), -0.06) for t in ang]
    prims.append(quad([(p[0], p[1], p[2]) for p in plate], look["color"], (0, 0, -1)))
    prims.append(quad([(p[0], p[1], -p[2]) for p in plate], (150, 150, 150), (0, 0, 1)))
    return prims


def hedge_model(act: Actor) -> list[Prim]:
    """Hedge, wall or fence: one long low box."""
    h, w, length = act.dims
    return box(-length / 2, length / 2, 0.0, h, -w / 2, w / 2, act.look["color"])


# ---------------------------------------------------------------------------- frame look
@dataclass
class Look:
    """Per-frame rendering parameters derived from the condition.

    :param illumination: ``day``, ``dusk`` or ``night``.
    :param weather: ``clear``, ``rain`` or ``fog``.
    :param ambient: ambient light level in [0, 1] (already includes the weather's dimming).
    :param tint: BGR multiplier of the ambient light.
    :param sky_top: BGR sky colour at the top of the image.
    :param sky_horizon: BGR sky colour at the horizon.
    :param sun: unit vector towards the sun in camera coordinates (shading, shadows).
    :param shadow: shadow strength in [0, 1].
    :param visibility_m: meteorological visibility (fog/haze uses ``3.912 / visibility``).
    :param airlight: BGR colour that fog fades to.
    :param noise: sensor noise standard deviation (grey levels).
    :param lights_on: lamps and vehicle lights are on.
    :param rain: rain streak density (0 for none).
    :param seed: seed for per-frame random details (streaks, noise offsets).
    """

    illumination: str
    weather: str
    ambient: float
    tint: tuple[float, float, float]
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    sun: np.ndarray
    shadow: float
    visibility_m: float
    airlight: tuple[float, float, float]
    noise: float
    lights_on: bool
    rain: float
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def make_look(illumination: str, weather: str, rng: np.random.Generator) -> Look:
    """Draw the rendering parameters of a condition (continuous values vary within each condition)."""
    if illumination == "day":
        amb, tint = float(rng.uniform(0.88, 1.0)), (1.0, 1.0, 1.0)
        top, hor = (float(rng.uniform(190, 225)), float(rng.uniform(140, 170)), float(rng.uniform(80, 110))), (235, 220, 200)
        el = math.radians(float(rng.uniform(25, 60)))
        noise, lights = float(rng.uniform(1.0, 2.5)), False
    elif illumination == "dusk":
        amb, tint = float(rng.uniform(0.38, 0.55)), (0.85, 0.92, 1.12)
        top, hor = (float(rng.uniform(100, 130)), float(rng.uniform(60, 80)), float(rng.uniform(60, 90))), (
            float(rng.uniform(80, 120)), float(rng.uniform(140, 170)), float(rng.uniform(220, 250)))
        el = math.radians(float(rng.uniform(4, 12)))
        noise, lights = float(rng.uniform(3.0, 5.0)), True
    else:
        amb, tint = float(rng.uniform(0.05, 0.12)), (1.2, 1.0, 0.85)
        top, hor = (22, 12, 8), (float(rng.uniform(45, 60)), float(rng.uniform(38, 48)), float(rng.uniform(32, 45)))
        el = math.radians(30)
        noise, lights = float(rng.uniform(6.0, 10.0)), True
    az = float(rng.uniform(-2.5, 2.5))
    sun = np.array([math.cos(el) * math.sin(az), -math.sin(el), math.cos(el) * math.cos(az)])
    shadow = {"day": 0.5, "dusk": 0.3, "night": 0.0}[illumination]
    rain = 0.0
    if weather == "clear":
        vis = float(rng.uniform(8000, 20000))
    elif weather == "rain":
        vis = float(rng.uniform(800, 3000))
        amb *= 0.72
        shadow *= 0.2
        rain = float(rng.uniform(0.5, 1.0))
        grey = (0.7 * top[0] + 0.3 * 170, 0.7 * top[1] + 0.3 * 165, 0.7 * top[2] + 0.3 * 160)
        top, hor = grey, (0.7 * hor[0] + 0.3 * 190, 0.7 * hor[1] + 0.3 * 188, 0.7 * hor[2] + 0.3 * 185)
        lights = True
    else:
        vis = float(math.exp(rng.uniform(math.log(35), math.log(220))))
        amb *= 0.85
        shadow = 0.0
        lights = lights or rng.random() < 0.7
    air_level = {"day": 200.0, "dusk": 140.0, "night": 30.0}[illumination] * (0.92 if weather == "rain" else 1.0)
    airlight = (air_level * 1.01, air_level, air_level * 0.98) if illumination != "dusk" else (
        air_level * 0.9, air_level, air_level * 1.12)
    if weather == "fog":
        top = hor = airlight
    return Look(illumination, weather, float(amb), tint, top, hor, sun, shadow, vis, airlight, noise,  # type: ignore[arg-type]
                bool(lights), rain, int(rng.integers(0, 2**31 - 1)))


# ---------------------------------------------------------------------------- renderer
class Renderer:
    """Renders worlds with one camera; holds per-dataset caches (sky rows, noise bank).

    :param cam: the camera.
    :param seed: seeds the sensor-noise bank (part of the dataset's determinism).
    """

    def __init__(self, cam: Camera, seed: int = 0) -> None:
        self.cam = cam
        H, W = cam.height, cam.width
        self.H, self.W = H, W
        self.hor = cam.horizon
        v = np.arange(H, dtype=np.float64) + 0.5
        self.row_depth = cam.ground_depth(v).astype(np.float32)
        v4 = np.arange(2, H, 4, dtype=np.float64)
        u4 = np.arange(2, W, 4, dtype=np.float64)
        self.z4_ground = cam.ground_depth(v4)
        self.u4 = u4
        self.v4 = v4
        bank_rng = np.random.default_rng([seed, 7919])
        self.noise_bank = bank_rng.standard_normal((H + 32, W + 32, 3)).astype(np.float32)

    # -------------------------------------------------------------- helpers
    def _to_cam(self, pts: np.ndarray, x: float, z: float, ry: float) -> np.ndarray:
        c, s = math.cos(ry), math.sin(ry)
        out = np.empty_like(pts)
        out[:, 0] = c * pts[:, 0] + s * pts[:, 2] + x
        out[:, 1] = CAM_HEIGHT - pts[:, 1]
        out[:, 2] = -s * pts[:, 0] + c * pts[:, 2] + z
        return out

    def _pix(self, pts: np.ndarray) -> np.ndarray:
        uv = self.cam.project(pts)
        return np.round(np.clip(uv, -2e4, 2e4) * _SC).astype(np.int32)

    @staticmethod
    def _clip_near(p: np.ndarray) -> np.ndarray:
        out = []
        n = len(p)
        for i in range(n):
            a, b = p[i], p[(i + 1) % n]
            ina, inb = a[2] >= NEAR, b[2] >= NEAR
            if ina:
                out.append(a)
            if ina != inb:
                t = (NEAR - a[2]) / (b[2] - a[2])
                out.append(a + t * (b - a))
        return np.array(out) if out else np.zeros((0, 3))

    def _ground_poly(self, img: np.ndarray, ids: np.ndarray | None, x0: float, x1: float, z0: float, z1: float,
                     color: Any, road: bool = False) -> None:
        z0, z1 = max(z0, NEAR), min(z1, 400.0)
        if z1 <= z0:
            return
        pts = np.array([[x0, CAM_HEIGHT, z0], [x1, CAM_HEIGHT, z0], [x1, CAM_HEIGHT, z1], [x0, CAM_HEIGHT, z1]])
        pix = self._pix(pts)
        cv2.fillConvexPoly(img, pix, color, cv2.LINE_AA, _SHIFT)
        if ids is not None:
            cv2.fillConvexPoly(ids, pix, ID_ROAD if road else 0, cv2.LINE_8, _SHIFT)

    # -------------------------------------------------------------- main
    def render(self, world: World, look: Look) -> tuple[np.ndarray, dict[int, tuple[int, int]], dict[int, float]]:
        """Render one frame.

        :return: ``(image, visibility, transmission)``: BGR ``uint8`` image; per labelled actor track id,
            ``(silhouette pixels in the image, visible pixels after occlusion)``; per labelled actor,
            the fog/haze transmission at its distance (contrast left, 0..1).
        """
        cam, H, W = self.cam, self.H, self.W
        img = np.empty((H, W, 3), np.uint8)
        ids = np.zeros((H, W), np.uint16)
        hor = int(math.floor(self.hor))
        t = np.linspace(0.0, 1.0, hor + 1)[:, None]
        sky = np.array(look.sky_top)[None, :] * (1 - t) + np.array(look.sky_horizon)[None, :] * t
        img[:hor + 1] = np.clip(sky, 0, 255).astype(np.uint8)[:, None, :]
        img[hor + 1:] = np.array(look.sky_horizon if look.weather == "fog" else world.road.verge, dtype=np.uint8)
        # luts (id -> depth, x, z, emissive colour); 0: ground/sky, 1: road, 2: skyline
        lut_d: list[float] = [0.0, 0.0, 600.0]
        lut_x: list[float] = [0.0, 0.0, 0.0]
        lut_z: list[float] = [0.0, 0.0, 600.0]
        lut_owner: list[int] = [0, 1, 2]
        lut_emis: list[tuple[float, float, float] | None] = [None, None, None]
        halos: list[tuple[int, np.ndarray, float, float, tuple[float, float, float]]] = []
        ex, ez = world.ego_x, world.ego_z
        road = world.road
        night = look.illumination == "night"
        lights_on = look.lights_on

        # ---- background skyline / hills at the horizon
        srng = np.random.default_rng(world.skyline_seed)
        u = -20.0
        base = np.array(look.sky_horizon) * 0.75 + np.array([15, 10, 5])
        while u < W:
            wd = float(srng.uniform(20, 90))
            hh = float(srng.uniform(4, 35 if road.urban else 12))
            col = tuple(float(c) for c in np.clip(base * srng.uniform(0.8, 1.0), 0, 255))
            p = np.array([[u, self.hor + 1], [u + wd, self.hor + 1], [u + wd, self.hor - hh], [u, self.hor - hh]])
            pi = np.round(p * _SC).astype(np.int32)
            cv2.fillConvexPoly(img, pi, col, cv2.LINE_AA, _SHIFT)
            cv2.fillConvexPoly(ids, pi, ID_SKYLINE, cv2.LINE_8, _SHIFT)
            u += wd * float(srng.uniform(0.6, 1.1))

        # ---- ground: sidewalks, road, decals, markings
        rl, rr = road.left_edge - ex, road.right_edge - ex
        self._ground_poly(img, None, rl - road.sidewalk_w, rl, NEAR, 400, road.pavement)
        self._ground_poly(img, None, rr, rr + road.sidewalk_w, NEAR, 400, road.pavement)
        self._ground_poly(img, ids, rl, rr, NEAR, 400, road.asphalt, road=True)
        for x0, x1, z0, z1, col in world.decals:
            if z1 - ez > NEAR and z0 - ez < 120:
                self._ground_poly(img, None, x0 - ex, x1 - ex, z0 - ez, z1 - ez, col)
        kerb = _scale(road.pavement, 1.15)
        self._ground_poly(img, None, rl - 0.2, rl, NEAR, 400, kerb)
        self._ground_poly(img, None, rr, rr + 0.2, NEAR, 400, kerb)
        white = (225, 228, 230) if look.weather != "rain" else (200, 200, 200)
        marks: list[tuple[float, bool]] = [(road.n_right * road.lane_w - 0.15 - ex, False),
                                           (-road.n_left * road.lane_w + 0.15 - ex, False),
                                           (-ex, road.dashed_centre)]
        marks += [(k * road.lane_w - ex, True) for k in range(1, road.n_right)]
        marks += [(-k * road.lane_w - ex, True) for k in range(1, road.n_left)]
        dash, gap = 3.0, 6.0
        for xm, dashed in marks:
            if not dashed:
                self._ground_poly(img, None, xm - 0.07, xm + 0.07, NEAR, 250, white)
                continue
            k0 = int(math.floor((ez + NEAR) / (dash + gap)))
            k1 = int(math.ceil((ez + 130) / (dash + gap)))
            for k in range(k0, k1):
                z0 = k * (dash + gap) - ez
                self._ground_poly(img, None, xm - 0.07, xm + 0.07, z0, z0 + dash, white)

        # ---- items: buildings first (they cannot occlude anything nearer the road), then the rest far to near
        items: list[tuple[int, float, Actor]] = []
        for a in world.clutter + world.actors:
            x, z = a.X - ex, a.Z - ez
            reach = max(a.dims[1], a.dims[2]) / 2 + 0.5
            if z + reach < NEAR or z > 260:
                continue
            if a.kind == "building":
                items.append((0, -math.hypot(x, z), a))
            else:
                items.append((1, -math.hypot(x, z), a))
        items.sort(key=lambda t: (t[0], t[1], t[2].tid))
        visibility: dict[int, tuple[int, int]] = {}
        item_of: dict[int, int] = {}
        shadows: list[np.ndarray] = []
        sun = look.sun
        for _, _, a in items:
            x, z = a.X - ex, a.Z - ez
            prims = self._model(a, night, lights_on)
            item_id = len(lut_d)
            dist = math.hypot(x, z)
            lut_d.append(dist)
            lut_x.append(x)
            lut_z.append(z)
            lut_owner.append(item_id)
            lut_emis.append(None)
            mask = None
            roi = None
            if a.labelled:
                pb = project_box(cam, box_corners(a.dims, (x, CAM_HEIGHT, z), a.heading))
                if pb is not None:
                    b = pb[0]
                    x0i, y0i = int(b[0]) - 2, int(b[1]) - 2
                    x0i, y0i = max(0, x0i), max(0, y0i)
                    x1i, y1i = min(W, int(b[2]) + 3), min(H, int(b[3]) + 3)
                    roi = (x0i, y0i, x1i, y1i)
                    mask = np.zeros((y1i - y0i, x1i - x0i), np.uint8)
                if look.shadow > 0 and a.kind in ("Car", "Misc", "Pedestrian", "Cyclist"):
                    shadows.append(self._shadow_pts(a, x, z, sun))
            elif a.kind == "tree" and look.shadow > 0:
                shadows.append(self._shadow_pts(a, x, z, sun, radius=1.6))
            self._draw_prims(img, ids, mask, roi, prims, x, z, a.heading, sun, item_id,
                             lut_d, lut_x, lut_z, lut_owner, lut_emis, halos, dist)
            if mask is not None:
                visibility[a.tid] = (int(cv2.countNonZero(mask)), 0)
                item_of[a.tid] = item_id

        # ---- visibility from the id buffer (emissive parts count for their owner)
        owner = np.asarray(lut_owner, np.int64)
        counts = np.bincount(owner[ids.ravel()], minlength=len(lut_d))
        vis_out = {tid: (total, min(total, int(counts[item_of[tid]]))) for tid, (total, _) in visibility.items()}
        # ---- lighting, fog, glow, rain, noise
        out = self._post(img, ids, look, world, np.asarray(lut_d, np.float32), np.asarray(lut_x, np.float32),
                         np.asarray(lut_z, np.float32), lut_emis, halos, counts, shadows)
        beta = 3.912 / look.visibility_m
        trans = {tid: float(math.exp(-beta * lut_d[item_of[tid]])) for tid in vis_out}
        return out, vis_out, trans

    # -------------------------------------------------------------- drawing
    @staticmethod
    def _model(a: Actor, night: bool, lights_on: bool) -> Model:
        """The actor's packed model (cached in ``a.look`` unless it animates)."""
        if a.kind == "Pedestrian":
            return Model(pedestrian_model(a))
        if a.kind == "Cyclist":
            return Model(cyclist_model(a))
        key = "_model"
        if a.kind == "building" and night:
            key = "_model_night"
        elif a.kind == "pole" and lights_on:
            key = "_model_on"
        m = a.look.get(key)
        if m is None:
            build = {"Car": car_model, "Misc": misc_model, "tree": tree_model, "sign": sign_model,
                     "hedge": hedge_model}.get(a.kind)
            if a.kind == "building":
                prims = building_model(a, night)
            elif a.kind == "pole":
                prims = pole_model(a, lights_on)
            else:
                prims = build(a) if build is not None else []
            m = a.look[key] = Model(prims)
        return m

    def _draw_prims(self, img: np.ndarray, ids: np.ndarray, mask: np.ndarray | None, roi: tuple[int, int, int, int] | None,
                    model: Model, x: float, z: float, ry: float, sun: np.ndarray, item_id: int,
                    lut_d: list[float], lut_x: list[float], lut_z: list[float], lut_owner: list[int],
                    lut_emis: list[Any], halos: list[Any], dist: float) -> None:
        prims = model.prims
        if not prims:
            return
        cam_pts = self._to_cam(model.pts, x, z, ry)
        c, s = math.cos(ry), math.sin(ry)
        nl = model.normals
        nc = np.stack([c * nl[:, 0] + s * nl[:, 2], -nl[:, 1], -s * nl[:, 0] + c * nl[:, 2]], axis=1)
        ctr = self._to_cam(model.centers, x, z, ry)
        facing = (~model.has_normal) | (np.einsum("ij,ij->i", nc, ctr) < 0)
        shade = (0.62 + 0.38 * np.maximum(nc @ sun, 0.0) + 0.08 * (nc[:, 1] < -0.5)).tolist()
        zmin = np.minimum.reduceat(cam_pts[:, 2], model.starts).tolist()
        P = self.cam.P
        hom = cam_pts @ P[:, :3].T + P[:, 3]
        den = np.where(hom[:, 2:3] > 1e-6, hom[:, 2:3], 1e-6)
        uv = hom[:, :2] / den
        pix_all = np.round(np.clip(uv, -2e4, 2e4) * _SC).astype(np.int32)
        f = self.cam.f
        off_xy = np.array([roi[0] * _SC, roi[1] * _SC], np.int32) if roi is not None else None
        facing_l = facing.tolist()
        for j, p in enumerate(prims):
            if not facing_l[j]:
                continue
            a0, a1 = model.starts[j], model.ends[j]
            color = p.color
            if p.kind == POLY:
                if p.normal is not None and not p.emissive:
                    k = shade[j]
                    color = (min(255.0, color[0] * k), min(255.0, color[1] * k), min(255.0, color[2] * k))
                if zmin[j] < NEAR:
                    P3 = self._clip_near(cam_pts[a0:a1])
                    if len(P3) < 3:
                        continue
                    pix = self._pix(P3)
                else:
                    pix = pix_all[a0:a1]
                pid = item_id
                if p.emissive:
                    pid = len(lut_d)
                    lut_d.append(dist)
                    lut_x.append(x)
                    lut_z.append(z)
                    lut_owner.append(item_id)
                    lut_emis.append(color)
                    halos.append((pid, pix.mean(axis=0) / _SC, dist, p.glow, color, float(ctr[j, 1])))
                cv2.fillConvexPoly(img, pix, color, cv2.LINE_AA, _SHIFT)
                cv2.fillConvexPoly(ids, pix, pid, cv2.LINE_8, _SHIFT)
                if mask is not None:
                    cv2.fillConvexPoly(mask, pix - off_xy, 255, cv2.LINE_8, _SHIFT)
            elif p.kind in (LINE, RING):
                if zmin[j] < NEAR:
                    continue
                pix = pix_all[a0:a1]
                th = max(1, int(round(f * p.size / float(ctr[j, 2]))))
                closed = p.kind == RING
                cv2.polylines(img, [pix], closed, color, th, cv2.LINE_AA, _SHIFT)
                cv2.polylines(ids, [pix], closed, item_id, th, cv2.LINE_8, _SHIFT)
                if mask is not None:
                    cv2.polylines(mask, [pix - off_xy], closed, 255, th, cv2.LINE_8, _SHIFT)
            else:
                cz = float(cam_pts[a0, 2])
                if cz < NEAR + p.size:
                    continue
                cpt = (int(pix_all[a0, 0]), int(pix_all[a0, 1]))
                r = max(1, int(round(f * p.size / cz * _SC)))
                cv2.circle(img, cpt, r, color, -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(ids, cpt, r, item_id, -1, cv2.LINE_8, _SHIFT)
                if mask is not None:
                    cv2.circle(mask, (cpt[0] - int(off_xy[0]), cpt[1] - int(off_xy[1])), r, 255, -1, cv2.LINE_8, _SHIFT)

    @staticmethod
    def _shadow_pts(a: Actor, x: float, z: float, sun: np.ndarray, radius: float | None = None) -> np.ndarray:
        h = a.dims[0]
        if radius is None:
            foot = box_corners(a.dims, (x, CAM_HEIGHT, z), a.heading)[:4]
        else:
            foot = np.array([[x - radius, CAM_HEIGHT, z - radius], [x + radius, CAM_HEIGHT, z - radius],
                             [x + radius, CAM_HEIGHT, z + radius], [x - radius, CAM_HEIGHT, z + radius]])
        el = math.asin(min(0.999, max(0.05, -sun[1])))
        hz = math.hypot(sun[0], sun[2]) + 1e-9
        length = min(h / math.tan(el), 9.0)
        d = np.array([-sun[0] / hz * length, 0.0, -sun[2] / hz * length])
        return np.concatenate([foot, foot + d])

    def _post(self, img: np.ndarray, ids: np.ndarray, look: Look, world: World, lut_d: np.ndarray, lut_x: np.ndarray,
              lut_z: np.ndarray, lut_emis: list[Any], halos: list[Any], counts: np.ndarray,
              shadows: list[np.ndarray]) -> np.ndarray:
        cam, H, W = self.cam, self.H, self.W
        f, cx = cam.f, float(cam.P[0, 2])
        rng = np.random.default_rng([look.seed, 17])
        ids4 = ids[2::4, 2::4]
        ground = (ids4 <= ID_ROAD) & (self.v4 > self.hor + 0.5)[:, None]
        sky = (ids4 <= ID_SKYLINE) & ~ground
        zg = np.broadcast_to(self.z4_ground[:, None], ids4.shape)
        z = np.where(ground, zg, lut_z[ids4])
        x = np.where(ground, (self.u4 - cx)[None, :] * np.where(ground, zg, 0.0) / f, lut_x[ids4])
        L = np.empty(ids4.shape + (3,), np.float32)
        L[:] = np.asarray(look.tint, np.float32) * look.ambient
        night = look.illumination == "night"
        dusk = look.illumination == "dusk"
        if look.lights_on:
            e = 0.75 if night else (0.4 if dusk else 0.12)
            zz = np.maximum(z, 0.1)
            beam = e * np.exp(-zz / 30.0) * np.exp(-((x / (0.3 * zz + 1.0)) ** 2)) * (z > 1.0)
            L += beam[..., None].astype(np.float32) * np.float32(1.0)
            if night or dusk:
                il = 0.45 if night else 0.2
                for lx, _lh, lz in world.lamps:
                    lxc, lzc = lx - world.ego_x, lz - world.ego_z
                    if -15 < lzc < 140:
                        g = il * np.exp(-((x - lxc) ** 2 + (z - lzc) ** 2) / (2 * 5.5 ** 2))
                        L += g[..., None].astype(np.float32) * np.array([0.6, 0.85, 1.0], np.float32)
                cars = [a for a in world.actors if a.kind == "Car" and a.look.get("lights")]
                cars.sort(key=lambda a: abs(a.Z - world.ego_z))
                ic = 0.35 if night else 0.15
                for a in cars[:12]:
                    dx, dz = math.cos(a.heading), -math.sin(a.heading)
                    fx = a.X - world.ego_x + dx * a.dims[2] / 2
                    fz = a.Z - world.ego_z + dz * a.dims[2] / 2
                    if not -20 < fz < 120:
                        continue
                    dd = (x - fx) * dx + (z - fz) * dz
                    lat = -(x - fx) * dz + (z - fz) * dx
                    g = ic * np.exp(-np.maximum(dd, 0) / 14.0) * np.exp(-((lat / (0.3 * np.maximum(dd, 0) + 0.8)) ** 2)) * (dd > 0)
                    L += g[..., None].astype(np.float32)
        if look.shadow > 0 and shadows:
            smask = np.zeros(ids4.shape, np.uint8)
            for pts in shadows:
                pts = pts[pts[:, 2] > NEAR]
                if len(pts) < 3:
                    continue
                uv = np.clip(cam.project(pts) / 4.0, -5000, 5000).astype(np.int32)
                cv2.fillConvexPoly(smask, cv2.convexHull(uv), 1, cv2.LINE_8)
            L[(smask > 0) & ground] *= np.float32(1.0 - look.shadow)
        np.minimum(L, 1.25, out=L)
        L[sky] = 1.0
        Lf = cv2.resize(L, (W, H), interpolation=cv2.INTER_LINEAR)
        out = img.astype(np.float32)
        out *= Lf
        emis_ids = [i for i, e in enumerate(lut_emis) if e is not None]
        if emis_ids:
            flag = np.zeros(len(lut_emis), bool)
            flag[emis_ids] = True
            cols = np.zeros((len(lut_emis), 3), np.float32)
            for i in emis_ids:
                cols[i] = lut_emis[i]
            m = flag[ids]
            out[m] = cols[ids[m]]
        beta = 3.912 / look.visibility_m
        if look.visibility_m < 6000:
            t = np.exp(-beta * lut_d).astype(np.float32)[ids]
            g = ids <= ID_ROAD
            t_row = np.exp(-beta * self.row_depth.astype(np.float64)).astype(np.float32)
            np.copyto(t, np.broadcast_to(t_row[:, None], t.shape), where=g)
            air = np.asarray(look.airlight, np.float32)
            out -= air
            out *= t[..., None]
            out += air
        # wet road: blurred mirror image about the horizon on the road surface
        if look.weather == "rain":
            hor = int(round(self.hor))
            rows = np.clip(2 * hor - np.arange(H), 0, H - 1)
            refl = cv2.blur(out[rows], (3, 9))
            w = 0.3 if look.illumination == "day" else 0.45
            blend = cv2.addWeighted(out, 1.0 - w, refl, w, 0.0)
            road = (ids == ID_ROAD).view(np.uint8)
            cv2.copyTo(blend, road, out)
        # halos around lights (and their reflections on a wet road)
        if halos and (look.lights_on or look.illumination != "day"):
            raw = np.bincount(ids.ravel(), minlength=len(lut_emis))
            glow = np.zeros(ids4.shape + (3,), np.float32)
            k = {"night": 0.8, "dusk": 0.5, "day": 0.3}[look.illumination] * (1.6 if look.weather == "fog" else 1.0)
            for pid, c, dist, g, col, ylight in halos:
                if raw[pid] == 0 or g <= 0:
                    continue
                r = f * g / max(dist, 1.0) * (2.2 if look.weather == "fog" else 1.0) / 4.0
                inten = k * math.exp(-beta * dist * 0.6) * min(1.0, raw[pid] / 4.0)
                colv = tuple(float(v) * inten for v in col)
                ctr = (int(round(c[0] / 4 * 4)), int(round(c[1] / 4 * 4)))
                cv2.circle(glow, ctr, max(1, int(round(r * 4))), colv, -1, cv2.LINE_AA, 2)
                if look.weather == "rain":
                    # reflection: a vertical streak mirrored about the ground below the light
                    hgt = max(0.0, CAM_HEIGHT - ylight)
                    vg = c[1] + f * hgt / max(dist, 1.0)
                    ln = (vg - c[1]) * 0.9 / 4.0
                    if ln > 0.5:
                        cv2.ellipse(glow, (int(round(c[0] / 4 * 4)), int(round((vg / 4 + ln) * 4))),
                                    (max(1, int(round(r * 2))), int(round(ln * 4))), 0, 0, 360,
                                    tuple(v * 0.5 for v in colv), -1, cv2.LINE_AA, 2)
            glow = cv2.GaussianBlur(glow, (0, 0), 1.6)
            out += cv2.resize(glow, (W, H), interpolation=cv2.INTER_LINEAR)
        if look.weather == "rain":
            layer = np.zeros((H, W), np.uint8)
            n = int(look.rain * 900)
            ang = float(rng.uniform(-0.35, 0.35))
            p0 = rng.uniform([0, 0], [W, H], (n, 2))
            ln = rng.uniform(8, 28, n)
            p1 = p0 + np.stack([np.sin(ang) * ln, np.cos(ang) * ln], 1)
            lev = int(70 if look.illumination == "day" else 45)
            segs = np.round(np.stack([p0, p1], axis=1) * _SC).astype(np.int32)
            cv2.polylines(layer, list(segs), False, lev, 1, cv2.LINE_AA, _SHIFT)
            out = out * np.float32(0.85) + np.float32(0.15 * look.airlight[1])
            out += layer[..., None].astype(np.float32)
        dy, dx = int(rng.integers(0, 32)), int(rng.integers(0, 32))
        out += self.noise_bank[dy:dy + H, dx:dx + W] * np.float32(look.noise)
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)
