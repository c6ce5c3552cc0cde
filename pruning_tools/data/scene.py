"""World model of the procedural scene generator: road layout, road users, roadside clutter, motion.

Coordinates: a road frame with ``X`` to the right, ``Z`` along the road (the ego drives towards
+Z) and the ground at height 0. The camera rides at ``(X_ego, 1.65 m, Z_ego)`` looking along +Z
with no yaw or pitch, so camera coordinates (KITTI rectified camera 0: x right, y down, z forward)
are ``x = X - X_ego``, ``y = 1.65 - height``, ``z = Z - Z_ego`` and an actor's ``heading`` is
directly KITTI's ``rotation_y`` (``-pi/2``: driving away from the camera, ``+pi/2``: oncoming).

Everything random is drawn from one :class:`numpy.random.Generator` in a fixed order, so a seed
fixes the whole world and its motion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Height of the camera (rectified camera 0) above the ground, metres (KITTI's recording car).
CAM_HEIGHT = 1.65
#: Target classes written as KITTI labels (``Misc``: parked non-target things, labelled but not a YOLO class).
LABELLED = ("Car", "Pedestrian", "Cyclist", "Misc")
#: How far ahead road users and clutter exist, metres.
VIEW_AHEAD = 170.0
#: How far behind the camera things are kept before they are dropped, metres.
VIEW_BEHIND = 25.0

# BGR car paint colours (white, black, silver, greys, red, dark red, blue, navy, green, beige, yellow, orange)
CAR_COLORS = np.array([
    (235, 235, 232), (30, 30, 32), (190, 190, 185), (120, 120, 118), (80, 80, 82), (40, 40, 190),
    (30, 30, 120), (170, 90, 40), (90, 45, 25), (50, 90, 40), (150, 185, 200), (40, 200, 230),
    (30, 120, 220), (200, 200, 200), (60, 60, 60),
], dtype=np.float64)
CLOTHES = np.array([
    (40, 40, 40), (90, 60, 30), (160, 110, 50), (30, 30, 150), (200, 200, 200), (70, 120, 60),
    (50, 50, 90), (140, 140, 140), (40, 90, 180), (120, 40, 110), (20, 20, 20), (180, 150, 110),
], dtype=np.float64)
SKIN = np.array([(150, 180, 225), (110, 140, 190), (70, 95, 140), (45, 60, 95)], dtype=np.float64)


@dataclass
class Road:
    """Cross-section of a straight road (all widths in metres).

    Right-hand traffic: lanes with ``X > 0`` go with the ego, lanes with ``X < 0`` come towards it.

    :param lane_w: lane width.
    :param n_right: lanes in the ego's direction.
    :param n_left: oncoming lanes.
    :param parking_right: a 2.2 m parking strip right of the right lanes.
    :param parking_left: a 2.2 m parking strip left of the oncoming lanes.
    :param sidewalk_w: sidewalk width beyond the kerb.
    :param ego_lane: index of the ego's lane among the right lanes (0 next to the centre line).
    :param urban: buildings along the road (else fields, trees, hedges).
    :param dashed_centre: dashed (else solid) centre line.
    :param asphalt: BGR road colour.
    :param verge: BGR colour of the ground beyond the sidewalks.
    :param pavement: BGR sidewalk colour.
    """

    lane_w: float
    n_right: int
    n_left: int
    parking_right: bool
    parking_left: bool
    sidewalk_w: float
    ego_lane: int
    urban: bool
    dashed_centre: bool
    asphalt: tuple[float, float, float]
    verge: tuple[float, float, float]
    pavement: tuple[float, float, float]

    @property
    def right_edge(self) -> float:
        """X of the right kerb."""
        return self.n_right * self.lane_w + (2.2 if self.parking_right else 0.0)

    @property
    def left_edge(self) -> float:
        """X of the left kerb (negative)."""
        return -(self.n_left * self.lane_w + (2.2 if self.parking_left else 0.0))

    def lane_x(self, k: int) -> float:
        """Centre X of lane ``k``: ``k >= 0`` right lanes, ``k < 0`` oncoming lanes (-1 next to the centre)."""
        return (k + 0.5) * self.lane_w if k >= 0 else (k + 0.5) * self.lane_w


@dataclass
class Actor:
    """A road user or a piece of clutter.

    :param tid: track id (unique within a generated dataset's sequence).
    :param kind: ``Car``, ``Pedestrian``, ``Cyclist``, ``Misc`` (labelled) or ``building``, ``tree``,
        ``pole``, ``sign``, ``hedge`` (clutter).
    :param X: lateral position of the box's bottom centre (road frame).
    :param Z: longitudinal position.
    :param heading: yaw (KITTI ``rotation_y`` convention; motion direction ``(cos, -sin)`` in (X, Z)).
    :param speed: speed along the heading, m/s.
    :param dims: ``(h, w, l)`` of the 3D box; ``l`` lies along the heading.
    :param look: appearance parameters (colours, styles), fixed at spawn.
    :param role: what it does: ``lane``, ``parked``, ``walk``, ``cross``, ``static``.
    :param lane: lane index for ``lane`` actors.
    :param phase: gait phase (pedestrians, cyclists), radians.
    :param target_x: for crossing pedestrians, the X where they stop crossing.
    """

    tid: int
    kind: str
    X: float
    Z: float
    heading: float
    speed: float
    dims: tuple[float, float, float]
    look: dict[str, Any] = field(default_factory=dict)
    role: str = "static"
    lane: int = 0
    phase: float = 0.0
    target_x: float = 0.0

    @property
    def labelled(self) -> bool:
        """Whether it gets a KITTI label line."""
        return self.kind in LABELLED


def random_road(rng: np.random.Generator) -> Road:
    """Draw a road layout (urban street or rural road)."""
    urban = bool(rng.random() < 0.7)
    n_right = int(rng.choice([1, 1, 2, 2, 3])) if urban else int(rng.choice([1, 1, 2]))
    n_left = int(rng.choice([1, 1, 2])) if urban else 1
    a = float(rng.uniform(70, 115))
    asphalt = (a + rng.uniform(-5, 5), a + rng.uniform(-5, 5), a + rng.uniform(-3, 8))
    if urban:
        g = float(rng.uniform(120, 170))
        verge = (g * 0.95, g, g * 1.02)
    else:
        verge = (float(rng.uniform(40, 80)), float(rng.uniform(110, 150)), float(rng.uniform(80, 130)))
    p = float(rng.uniform(140, 190))
    return Road(
        lane_w=float(rng.uniform(3.1, 3.7)), n_right=n_right, n_left=n_left,
        parking_right=bool(urban and rng.random() < 0.6), parking_left=bool(urban and rng.random() < 0.4),
        sidewalk_w=float(rng.uniform(2.0, 4.5)) if urban else float(rng.uniform(0.8, 1.6)),
        ego_lane=int(rng.integers(0, n_right)), urban=urban, dashed_centre=bool(rng.random() < 0.6),
        asphalt=asphalt, verge=verge, pavement=(p, p * 0.98, p * 0.96),
    )


def _color(rng: np.random.Generator, palette: np.ndarray, jitter: float = 12.0) -> tuple[float, float, float]:
    c = palette[int(rng.integers(0, len(palette)))] + rng.uniform(-jitter, jitter, 3)
    return tuple(float(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


class World:
    """A road with road users and clutter around an ego camera; :meth:`step` advances it.

    :param rng: source of all randomness (consumed in a fixed order).
    :param road: the road layout.
    :param ego_speed: ego speed, m/s (the ego stays in its lane).
    :param density: multiplies how many road users there are (about 0.4..1.6).
    :param lights: whether vehicles drive with their lights on (dusk, night, bad weather).
    :param z0: the ego's starting Z.
    """

    def __init__(self, rng: np.random.Generator, road: Road, ego_speed: float, density: float,
                 *, lights: bool = False, z0: float = 0.0, next_id: int = 0) -> None:
        self.rng = rng
        self.road = road
        self.ego_speed = float(ego_speed)
        self.density = float(density)
        self.lights = lights
        self.ego_z = float(z0)
        self.ego_x = road.lane_x(road.ego_lane) + float(rng.uniform(-0.25, 0.25))
        self.actors: list[Actor] = []
        self.clutter: list[Actor] = []
        self.decals: list[tuple[float, float, float, float, tuple[float, float, float]]] = []
        self.lamps: list[tuple[float, float, float]] = []  # (X, height, Z) of lamp heads
        self.next_id = next_id
        self.skyline_seed = int(rng.integers(0, 2**31 - 1))
        self._clutter_until = self.ego_z - VIEW_BEHIND
        self._lane_speed: dict[int, float] = {}
        for k in range(road.n_right):
            rel = rng.uniform(0.3, 1.5) if k == road.ego_lane else rng.uniform(-4.0, 3.0)
            self._lane_speed[k] = max(0.0, self.ego_speed + float(rel))
        for k in range(1, road.n_left + 1):
            self._lane_speed[-k] = -float(rng.uniform(7.0, 14.0))
        self._extend_clutter(self.ego_z + VIEW_AHEAD)
        self._populate()

    # ------------------------------------------------------------------ spawning
    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _car(self, X: float, Z: float, heading: float, speed: float, role: str, lane: int = 0) -> Actor:
        rng = self.rng
        style = int(rng.choice([0, 0, 0, 1, 1, 2]))  # sedan, hatchback, SUV
        h = float(rng.uniform(1.38, 1.52)) if style < 2 else float(rng.uniform(1.6, 1.8))
        w = float(rng.uniform(1.55, 1.75)) if style < 2 else float(rng.uniform(1.75, 1.95))
        length = float(rng.uniform(3.9, 4.7)) if style == 0 else (float(rng.uniform(3.5, 4.1)) if style == 1
                                                                  else float(rng.uniform(4.3, 4.9)))
        look = {"color": _color(rng, CAR_COLORS), "style": style, "cabin": float(rng.uniform(0.5, 0.62)),
                "lights": self.lights or (role == "lane" and rng.random() < 0.15)}
        return Actor(self._new_id(), "Car", X, Z, heading, speed, (h, w, length), look, role, lane)

    def _pedestrian(self, X: float, Z: float, heading: float, speed: float, role: str, target_x: float = 0.0) -> Actor:
        rng = self.rng
        h = float(np.clip(rng.normal(1.74, 0.09), 1.5, 1.98))
        look = {"shirt": _color(rng, CLOTHES, 20), "pants": _color(rng, CLOTHES, 15), "skin": _color(rng, SKIN, 8),
                "hair": _color(rng, CLOTHES[[0, 1, 10]], 10), "bag": bool(rng.random() < 0.3)}
        return Actor(self._new_id(), "Pedestrian", X, Z, heading, speed,
                     (h, float(rng.uniform(0.55, 0.72)), float(rng.uniform(0.65, 0.95))), look, role,
                     phase=float(rng.uniform(0, 2 * math.pi)), target_x=target_x)

    def _cyclist(self, X: float, Z: float, heading: float, speed: float) -> Actor:
        rng = self.rng
        look = {"frame": _color(rng, CAR_COLORS, 10), "shirt": _color(rng, CLOTHES, 20),
                "pants": _color(rng, CLOTHES, 15), "skin": _color(rng, SKIN, 8),
                "helmet": _color(rng, CAR_COLORS, 10), "lights": self.lights}
        return Actor(self._new_id(), "Cyclist", X, Z, heading, speed,
                     (float(np.clip(rng.normal(1.72, 0.06), 1.55, 1.9)), float(rng.uniform(0.55, 0.7)),
                      float(rng.uniform(1.7, 1.9))), look, "lane", phase=float(rng.uniform(0, 2 * math.pi)))

    def _populate(self) -> None:
        """Initial road users over the whole visible stretch."""
        rng, road, d = self.rng, self.road, self.density
        z_lo, z_hi = self.ego_z, self.ego_z + 150.0
        for k, v in self._lane_speed.items():
            heading = -math.pi / 2 if k >= 0 else math.pi / 2
            z = z_lo + (rng.uniform(7, 30) if k == road.ego_lane else rng.uniform(-8, 25))
            while z < z_hi:
                if k != road.ego_lane or z > z_lo + 6:
                    self.actors.append(self._car(road.lane_x(k) + rng.uniform(-0.3, 0.3), z, heading
                                                 + rng.normal(0, 0.01), abs(v), "lane", k))
                z += rng.uniform(14, 45) / d
        for side in (1, -1):
            if (road.parking_right if side > 0 else road.parking_left):
                x_park = (road.right_edge - 1.1) if side > 0 else (road.left_edge + 1.1)
                z = z_lo - 10 + rng.uniform(0, 8)
                while z < z_hi:
                    if rng.random() < 0.75:
                        self._spawn_parked(x_park, z, side)
                    z += rng.uniform(5.5, 9.0) + rng.exponential(6.0 / d)
        for _ in range(int(rng.poisson(5.0 * d))):
            self._spawn_walker(z_lo + rng.uniform(2, 80))
        if rng.random() < 0.45 * d:
            self._spawn_crosser(z_lo + rng.uniform(10, 45))
        for _ in range(int(rng.poisson(1.2 * d))):
            self._spawn_cyclist(z_lo + rng.uniform(5, 90))

    def _spawn_parked(self, x: float, z: float, side: int) -> None:
        rng = self.rng
        if rng.random() < 0.12:  # a parked non-target: skip, trailer-like container
            h, w, length = float(rng.uniform(1.2, 2.4)), float(rng.uniform(1.4, 2.0)), float(rng.uniform(2.0, 4.0))
            look = {"color": _color(rng, CAR_COLORS[[3, 4, 9, 10]], 20), "style": int(rng.integers(0, 2))}
            self.actors.append(Actor(self._new_id(), "Misc", x, z, -math.pi / 2 + rng.normal(0, 0.03), 0.0,
                                     (h, w, length), look, "parked"))
            return
        heading = (-math.pi / 2 if rng.random() < 0.8 else math.pi / 2) + rng.normal(0, 0.03)
        car = self._car(x + rng.uniform(-0.15, 0.15), z, heading, 0.0, "parked")
        car.look["lights"] = False
        self.actors.append(car)

    def _spawn_walker(self, z: float) -> None:
        rng, road = self.rng, self.road
        side = 1 if rng.random() < 0.55 else -1
        edge = road.right_edge if side > 0 else road.left_edge
        x = edge + side * rng.uniform(0.5, max(0.6, road.sidewalk_w - 0.4))
        heading = (-math.pi / 2 if rng.random() < 0.5 else math.pi / 2) + rng.normal(0, 0.05)
        self.actors.append(self._pedestrian(x, z, heading, float(rng.uniform(0.9, 1.6)), "walk"))

    def _spawn_crosser(self, z: float) -> None:
        rng, road = self.rng, self.road
        left_to_right = rng.random() < 0.5
        x0 = (road.left_edge - 0.5) if left_to_right else (road.right_edge + 0.5)
        x1 = (road.right_edge + 1.0) if left_to_right else (road.left_edge - 1.0)
        x0 += (x1 - x0) * rng.uniform(0.0, 0.6)  # some are already on the road
        heading = (0.0 if left_to_right else math.pi) + rng.normal(0, 0.06)
        self.actors.append(self._pedestrian(x0, z, heading, float(rng.uniform(1.1, 1.6)), "cross", x1))

    def _spawn_cyclist(self, z: float) -> None:
        rng, road = self.rng, self.road
        if rng.random() < 0.65:
            x = road.n_right * road.lane_w - 0.8 + rng.uniform(-0.2, 0.2)
            self.actors.append(self._cyclist(x, z, -math.pi / 2 + rng.normal(0, 0.02), float(rng.uniform(3.5, 7.0))))
        else:
            x = -road.n_left * road.lane_w + 0.8 + rng.uniform(-0.2, 0.2)
            self.actors.append(self._cyclist(x, z, math.pi / 2 + rng.normal(0, 0.02), float(rng.uniform(3.5, 7.0))))

    # ------------------------------------------------------------------ clutter
    def _extend_clutter(self, z_to: float) -> None:
        """Generate clutter, lamps and road decals for Z in (``_clutter_until``, ``z_to``]."""
        rng, road = self.rng, self.road
        z0 = self._clutter_until
        if z_to <= z0:
            return
        for side in (1, -1):
            edge = road.right_edge if side > 0 else road.left_edge
            outer = edge + side * road.sidewalk_w
            # buildings / hedges along the outer edge
            z = z0
            while z < z_to:
                if road.urban and rng.random() < 0.85:
                    length = float(rng.uniform(8, 28))
                    depth = float(rng.uniform(8, 16))
                    setback = float(rng.uniform(0.3, 6.0))
                    h = float(rng.uniform(5, 22))
                    c = float(rng.uniform(70, 215))
                    tint = rng.uniform(0.8, 1.15, 3)
                    look = {"color": tuple(float(v) for v in np.clip(c * tint, 0, 255)), "floors": max(1, int(h / 3.2)),
                            "win_w": float(rng.uniform(1.0, 1.6)), "win_pitch": float(rng.uniform(2.4, 4.0)),
                            "lit": int(rng.integers(0, 2**31 - 1)), "side": side}
                    self.clutter.append(Actor(self._new_id(), "building", outer + side * (setback + depth / 2),
                                              z + length / 2, -math.pi / 2, 0.0, (h, depth, length), look))
                    z += length + float(rng.uniform(0, 5))
                elif rng.random() < 0.5:
                    length = float(rng.uniform(6, 30))
                    h = float(rng.uniform(0.6, 1.8))
                    green = rng.random() < 0.6
                    col = ((40, float(rng.uniform(90, 130)), 50) if green
                           else tuple(float(v) for v in rng.uniform(90, 170, 3)))
                    self.clutter.append(Actor(self._new_id(), "hedge", outer + side * 0.6, z + length / 2, -math.pi / 2,
                                              0.0, (h, float(rng.uniform(0.4, 1.0)), length), {"color": col}))
                    z += length + float(rng.uniform(2, 15))
                else:
                    z += float(rng.uniform(5, 20))
            # trees
            z = z0 + float(rng.uniform(0, 10))
            while z < z_to:
                if rng.random() < (0.45 if road.urban else 0.8):
                    x = (edge + side * rng.uniform(0.6, 1.2)) if road.urban else (outer + side * rng.uniform(1, 8))
                    h = float(rng.uniform(4, 9))
                    look = {"trunk": (30, float(rng.uniform(50, 70)), float(rng.uniform(70, 100))),
                            "leaf": (float(rng.uniform(20, 60)), float(rng.uniform(80, 140)), float(rng.uniform(30, 80))),
                            "blobs": [(float(rng.uniform(-0.6, 0.6)), float(rng.uniform(0.55, 0.85)),
                                       float(rng.uniform(-0.6, 0.6)), float(rng.uniform(0.9, 1.7)))
                                      for _ in range(int(rng.integers(2, 5)))],
                            "shade": float(rng.uniform(0.75, 1.1))}
                    self.clutter.append(Actor(self._new_id(), "tree", float(x), z, 0.0, 0.0, (h, 0.35, 0.35), look))
                z += float(rng.uniform(8, 22))
            # street lamps / poles
            spacing = float(rng.uniform(22, 35))
            z = z0 + float(rng.uniform(0, spacing))
            while z < z_to:
                x = edge + side * 0.5
                h = float(rng.uniform(7, 9))
                self.clutter.append(Actor(self._new_id(), "pole", x, z, 0.0, 0.0, (h, 0.18, 0.18),
                                          {"side": side, "lamp": True, "color": (120, 125, 128)}))
                self.lamps.append((x - side * 1.6, h - 0.2, z))
                z += spacing
            # signs and small poles
            z = z0 + float(rng.uniform(0, 30))
            while z < z_to:
                x = edge + side * rng.uniform(0.3, 1.0)
                look = {"shape": int(rng.integers(0, 3)),
                        "color": [(40, 40, 200), (180, 90, 20), (30, 200, 230)][int(rng.integers(0, 3))]}
                self.clutter.append(Actor(self._new_id(), "sign", float(x), z, 0.0, 0.0, (float(rng.uniform(2.2, 3.0)), 0.1, 0.1), look))
                z += float(rng.uniform(15, 60))
            # Misc parked things on the sidewalk (dumpsters, crates)
            z = z0 + float(rng.uniform(0, 40))
            while z < z_to:
                if road.urban:
                    x = edge + side * rng.uniform(0.8, max(0.9, road.sidewalk_w - 0.8))
                    look = {"color": (float(rng.uniform(30, 80)), float(rng.uniform(60, 110)), float(rng.uniform(30, 70)))
                            if rng.random() < 0.5 else tuple(float(v) for v in rng.uniform(60, 140, 3)), "style": 0}
                    self.actors.append(Actor(self._new_id(), "Misc", float(x), z, -math.pi / 2 + rng.normal(0, 0.05), 0.0,
                                             (float(rng.uniform(1.0, 1.4)), float(rng.uniform(0.9, 1.3)),
                                              float(rng.uniform(1.2, 2.0))), look, "parked"))
                z += float(rng.uniform(25, 70))
        # road decals (patches) and manholes
        z = z0
        while z < z_to:
            width = float(rng.uniform(0.8, 4.0))
            length = float(rng.uniform(1.0, 8.0))
            shade = float(rng.uniform(0.75, 1.2))
            col = tuple(float(np.clip(c * shade, 0, 255)) for c in road.asphalt)
            x = float(rng.uniform(road.left_edge, road.right_edge - width))
            self.decals.append((x, x + width, z, z + length, col))  # type: ignore[arg-type]
            z += float(rng.uniform(4, 18))
        self._clutter_until = z_to

    # ------------------------------------------------------------------ motion
    def step(self, dt: float) -> None:
        """Advance by ``dt`` seconds: ego and road users move, far ones leave, new ones arrive."""
        rng, road = self.rng, self.road
        self.ego_z += self.ego_speed * dt
        for a in self.actors:
            if a.speed:
                a.X += a.speed * math.cos(a.heading) * dt
                a.Z += -a.speed * math.sin(a.heading) * dt
            if a.kind == "Pedestrian":
                a.phase += dt * a.speed * 3.4
                if a.role == "cross" and (a.target_x - a.X) * math.cos(a.heading) <= 0:
                    a.role = "walk"
                    a.heading = -math.pi / 2 if rng.random() < 0.5 else math.pi / 2
            elif a.kind == "Cyclist":
                a.phase += dt * a.speed * 1.6
        lo, hi = self.ego_z - VIEW_BEHIND, self.ego_z + VIEW_AHEAD + 10
        self.actors = [a for a in self.actors if lo <= a.Z <= hi]
        self.clutter = [a for a in self.clutter if a.Z + a.dims[2] / 2 >= lo]
        self.lamps = [p for p in self.lamps if p[2] >= lo]
        self.decals = [d for d in self.decals if d[3] >= lo]
        self._extend_clutter(self.ego_z + VIEW_AHEAD)
        # arrivals: lanes keep a gap-dependent flow; spawn ahead or behind depending on relative speed
        far = self.ego_z + 150.0
        for k, v in self._lane_speed.items():
            in_lane = [a.Z for a in self.actors if a.role == "lane" and a.kind == "Car" and a.lane == k]
            heading = -math.pi / 2 if k >= 0 else math.pi / 2
            rel = v - self.ego_speed
            p = dt * (abs(rel) + 2.0) / (28.0 / self.density)
            if (rel <= 0 or k == road.ego_lane) and rng.random() < p and (not in_lane or max(in_lane) < far - 12):
                self.actors.append(self._car(road.lane_x(k) + rng.uniform(-0.3, 0.3), far + rng.uniform(0, 8),
                                             heading, abs(v), "lane", k))
            elif rel > 0 and k != road.ego_lane and rng.random() < p and (not in_lane or min(in_lane) > self.ego_z - 8):
                self.actors.append(self._car(road.lane_x(k) + rng.uniform(-0.3, 0.3), self.ego_z - VIEW_BEHIND + 2,
                                             heading, abs(v), "lane", k))
        for side in (1, -1):
            if (road.parking_right if side > 0 else road.parking_left) and rng.random() < dt * self.ego_speed / 9.0:
                self._spawn_parked((road.right_edge - 1.1) if side > 0 else (road.left_edge + 1.1), far, side)
        if rng.random() < dt * (0.25 + self.ego_speed / 12.0) * self.density:
            self._spawn_walker(self.ego_z + rng.uniform(60, 120))
        if rng.random() < dt * 0.05 * self.density:
            self._spawn_crosser(self.ego_z + rng.uniform(30, 55))
        if rng.random() < dt * 0.06 * self.density:
            self._spawn_cyclist(far)
