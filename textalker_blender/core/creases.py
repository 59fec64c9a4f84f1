"""Crease detail of a wrinkle style: explicit crease curves, rendered to a height map in UV space.

Production face rigs (MetaHuman, Character Creator) keep wrinkles as a static high-resolution
height/normal detail that animated, expression-driven masks fade in. TexTalker does the same with
its audio-driven maps: the model generates, per frame, a smooth 128 px *fold activation* map
(how folded the skin is there, 0..1), and each wrinkle style carries its crease curves, from
which a high-resolution height map is rendered once per run. The height the material shows in a
frame is `detail_mm * activation`.

A crease is a polyline in the face's frontal plane (x, z metres; the face looks towards -Y) with a
Gaussian groove profile (depth, width) that tapers at its ends, and belongs to a *group* (a family
of creases, and a side where it has one) whose fold activation moves it. The synthetic dataset
(tools/synthetic_textalk4d/creases.py) draws the curves per subject; a bundle stores them per
wrinkle style (`creases_from_json`), so the detail can be rendered at any resolution.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

FRONTAL_AXES = (0, 2)

# (family, sides): one activation group per family and side.
FAMILIES = (
    ("forehead", ("",)),
    ("glabella", ("",)),
    ("crows_feet", ("Left", "Right")),
    ("under_eye", ("Left", "Right")),
    ("nasolabial", ("Left", "Right")),
    ("marionette", ("Left", "Right")),
    ("lip_lines", ("",)),
)
GROUPS = tuple(f"{family}{side}" for family, sides in FAMILIES for side in sides)
FAMILY_NAMES = tuple(family for family, _ in FAMILIES)

# The detail map is rendered this fine by default: about 0.16 mm per texel on the face, so the
# thinnest grooves (0.25 mm sigma) span several texels.
DETAIL_RESOLUTION = 2048
# Texel positions are rasterised at this resolution and interpolated up: the surface is smooth
# at this scale, and rasterising 4 M texels directly would cost seconds and a large matrix.
POSITION_RESOLUTION = 512


def family_of(group: str) -> str:
    return group.removesuffix("Left").removesuffix("Right")


@dataclasses.dataclass(frozen=True, eq=False)  # holds an array: compare fields explicitly
class Crease:
    """One crease: a polyline in the frontal plane (x, z metres) with its groove shape."""

    group: str
    points: np.ndarray        # (P, 2) frontal-plane polyline, metres
    depth_mm: float           # groove depth at the crease's middle
    width_mm: float           # groove half-width (Gaussian sigma)

    @property
    def length_m(self) -> float:
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())

    def to_dict(self) -> dict:
        # 10 µm steps: far below a texel, and the JSON stays short.
        return {"group": self.group, "points": np.round(self.points, 5).tolist(),
                "depth_mm": float(self.depth_mm), "width_mm": float(self.width_mm)}

    @classmethod
    def from_dict(cls, data: dict) -> "Crease":
        points = np.asarray(data["points"], np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
            raise ValueError(f"a crease needs a polyline of (x, z) points, got shape {points.shape}")
        if data["group"] not in GROUPS:
            raise ValueError(f"unknown crease group {data['group']!r}; known: {', '.join(GROUPS)}")
        return cls(str(data["group"]), points, float(data["depth_mm"]), float(data["width_mm"]))


def creases_to_json(creases: list[Crease]) -> str:
    return json.dumps([c.to_dict() for c in creases], separators=(",", ":"))


def creases_from_json(text: str) -> list[Crease]:
    return [Crease.from_dict(item) for item in json.loads(text)]


def _sorted_by_x(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, sorted x): the points' indices by x, for cutting out boxes with searchsorted."""
    order = np.argsort(points[:, 0], kind="stable")
    return order, points[order, 0]


def _in_box(points: np.ndarray, order: np.ndarray, xs: np.ndarray, lo, hi) -> np.ndarray:
    """Indices of the points inside the box [lo, hi] (2D), from their x-sorted order."""
    start, stop = np.searchsorted(xs, [lo[0], hi[0]], side="left"), np.searchsorted(xs, hi[0], side="right")
    candidates = order[start[0]:stop]
    z = points[candidates, 1]
    return candidates[(z >= lo[1]) & (z <= hi[1])]


def _segment_distances(points: np.ndarray, polyline: np.ndarray, reach: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points (N, 2) to a polyline (P, 2), and the arc-length fraction (0..1) of
    the nearest point along it. Only distances up to `reach` are computed (each segment looks at
    the points in its box grown by `reach`); farther points get infinity."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    lengths = np.linalg.norm(ab, axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    best = np.full(len(points), np.inf)
    along = np.zeros(len(points))
    order, xs = _sorted_by_x(points)
    for k in range(len(ab)):
        near = _in_box(points, order, xs, np.minimum(a[k], b[k]) - reach, np.maximum(a[k], b[k]) + reach)
        if near.size == 0:
            continue
        local = points[near]
        t = np.clip(((local - a[k]) @ ab[k]) / max(float(ab[k] @ ab[k]), 1e-18), 0.0, 1.0)
        distance = np.linalg.norm(local - (a[k] + t[:, None] * ab[k]), axis=1)
        closer = distance < best[near]
        best[near] = np.where(closer, distance, best[near])
        along[near] = np.where(closer, cumulative[k] + t * lengths[k], along[near])
    return best, along / max(float(cumulative[-1]), 1e-12)


class CreaseField:
    """Crease height and group supports at fixed points (texels) of one face.

    `positions` (N, 3) are the points on the neutral surface (metres); `valid` (N,) marks the ones
    that may crease (the face); everything else gets 0. `supports=False` skips the group supports
    (the detail map needs only the height).
    """

    # How far from its curve a crease's fold activation reaches (beyond its groove), metres.
    SUPPORT_REACH_M = 0.006

    def __init__(self, creases: list[Crease], positions: np.ndarray, valid: np.ndarray | None = None,
                 supports: bool = True):
        positions = np.asarray(positions, np.float64)
        n = len(positions)
        valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
        frontal = positions[:, FRONTAL_AXES]
        self.detail_mm = np.zeros(n, np.float32)            # <= 0: groove depth at full fold
        self.support = np.zeros((len(GROUPS), n), np.float32) if supports else None
        # Creases are small: find each one's points through the x-sorted valid points, not by
        # testing every point (a 2048 px map has 4 M).
        candidates = np.flatnonzero(valid)
        candidate_points = frontal[candidates]
        order, xs = _sorted_by_x(candidate_points)
        for crease in creases:
            width = crease.width_mm * 1e-3
            reach = 3.0 * width + (self.SUPPORT_REACH_M if supports else 0.0)
            lo, hi = crease.points.min(0) - reach, crease.points.max(0) + reach
            near = candidates[_in_box(candidate_points, order, xs, lo, hi)]
            if near.size == 0:
                continue
            distance, fraction = _segment_distances(frontal[near], crease.points, reach)
            inside = np.isfinite(distance)
            near, distance, fraction = near[inside], distance[inside], fraction[inside]
            taper = np.sin(np.pi * np.clip(fraction, 0.0, 1.0)) ** 0.6   # thin out towards the ends
            groove = crease.depth_mm * taper * np.exp(-0.5 * (distance / width) ** 2)
            # Overlapping creases: the deeper groove wins (skin folds once).
            self.detail_mm[near] = np.minimum(self.detail_mm[near], -groove).astype(np.float32)
            if supports:
                g = GROUPS.index(crease.group)
                reach_weight = np.exp(-0.5 * (distance / (width + self.SUPPORT_REACH_M / 2)) ** 2) * (0.3 + 0.7 * taper)
                self.support[g, near] = np.maximum(self.support[g, near], reach_weight).astype(np.float32)

    def activation(self, group_activations: np.ndarray) -> np.ndarray:
        """(T, G) activations -> (T, N) smooth fold activation at the points: each point takes its
        groups' activations weighted by their supports (a point between two groups blends them)."""
        total = self.support.sum(axis=0)
        weights = np.divide(self.support, total, out=np.zeros_like(self.support), where=total > 0)
        reach = np.clip(total, 0.0, 1.0)
        return (np.asarray(group_activations, np.float32) @ weights) * reach

    def height_mm(self, group_activations: np.ndarray) -> np.ndarray:
        """(T, G) -> (T, N) crease height in mm (<= 0) as the low-resolution activation times the
        full-depth detail: what the add-on's material renders."""
        return self.activation(group_activations) * self.detail_mm[None]


def texel_positions(template, neutral: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """3D positions (resolution, resolution, 3) of the wrinkle layout's texels on the surface
    `neutral` (V, 3), and which texels belong to the face (resolution, resolution) bool.

    Rasterised at most at POSITION_RESOLUTION and interpolated up (linear for positions, nearest
    for the mask): the surface is smooth at that scale."""
    from scipy.ndimage import zoom

    base = min(int(resolution), POSITION_RESOLUTION)
    rasterizer = template.uv_rasterizer(base, "wrinkle")
    face = rasterizer.rasterize(template.face_mask.astype(np.float32)[:, None])[..., 0]
    positions = rasterizer.rasterize(np.asarray(neutral, np.float32))
    valid = (face > 0.5) & rasterizer.mask
    if base != resolution:
        factor = resolution / base
        positions = np.stack([zoom(positions[..., c], factor, order=1, mode="nearest", grid_mode=True)
                              for c in range(3)], axis=-1)
        valid = zoom(valid.astype(np.uint8), factor, order=0, mode="nearest", grid_mode=True).astype(bool)
    return positions.astype(np.float32), valid


def groove_amount(creases: list[Crease]) -> float:
    """How lined a wrinkle style is: the sum over its creases of depth (mm) x length (m)."""
    return float(sum(c.depth_mm * c.length_m for c in creases))


def most_lined_style(style_creases: list[list[Crease]] | None) -> int:
    """The wrinkle style whose creases hold the most groove (0 without crease curves): the
    default wrinkle style, so that the wrinkle output shows at default settings."""
    if not style_creases:
        return 0
    return int(np.argmax([groove_amount(creases) for creases in style_creases]))


def detail_map_mm(creases: list[Crease], template, neutral: np.ndarray | None = None,
                  resolution: int = DETAIL_RESOLUTION) -> np.ndarray:
    """(resolution, resolution) float32 crease height at full fold, mm (<= 0 in a groove, 0 off the
    face), in the wrinkle layout, image row order (row 0 = top, like the wrinkle maps)."""
    neutral = template.vertices if neutral is None else neutral
    positions, valid = texel_positions(template, neutral, resolution)
    valid = valid.reshape(-1)
    field = CreaseField(creases, positions.reshape(-1, 3)[valid], supports=False)  # face texels only
    detail = np.zeros(resolution * resolution, np.float32)
    detail[valid] = field.detail_mm
    return detail.reshape(resolution, resolution)
