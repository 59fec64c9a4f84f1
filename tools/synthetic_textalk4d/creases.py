"""Crease geometry of a synthetic subject: the lines its skin folds along, and when they fold.

Production rigs (MetaHuman, Character Creator) keep wrinkles as a high-resolution height/normal
detail that animated, expression-driven region masks fade in. This module builds that for every
synthetic subject, on the template's surface and in millimetres:

- `CreaseStyle` (per subject, seeded): how aged the skin looks, which families crease, how deep,
  how sensitive to expression.
- `make_creases`: explicit crease curves for each family, placed from landmarks of the template
  (eyes, brows, mouth corners, nose wings) found through its face units: horizontal forehead
  lines, vertical glabella lines, crow's feet fanning from the outer eye corners, under-eye folds,
  nasolabial folds, marionette lines, vertical lip lines. Each crease has its own depth, width and
  length, tapers at its ends, and belongs to a *group* (a family, and a side where it has one).
- `group_activations`: how far each group is folded in a frame, from the face-unit weights of
  the muscles that fold that skin (brow raise -> forehead, brow down -> glabella, smile and squint
  -> crow's feet and nasolabial folds, pucker -> lip lines, ...), plus a resting depth.
- `CreaseField` (textalker_blender/core/creases.py, shared with the add-on): at any set of texels (3D positions on the subject's neutral surface), the static
  full-depth height `detail` (mm, <= 0 in a groove) and each group's smooth `support` (where its
  fold activation applies). A frame's crease height is `sum_k depth_k * profile_k * a_group(k)(t)`;
  `detail * activation_map(t)` reproduces it from one static high-resolution map and one smooth
  low-resolution map per frame, which is what the model learns and the add-on renders.

Distances are measured in the face's frontal plane (x, z; the face looks towards -Y), as the strain
wrinkles of wrinkles.py do.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from textalker_blender.core.creases import FAMILY_NAMES, GROUPS, Crease, family_of

# Face units that fold each family's skin (ARKit names; "{side}" takes Left or Right), with weights.
# The weighted sum goes through the style's threshold/saturation ramp.
DRIVERS = {
    "forehead": {"browInnerUp": 0.6, "browOuterUpLeft": 0.2, "browOuterUpRight": 0.2},
    "glabella": {"browDownLeft": 0.5, "browDownRight": 0.5},
    "crows_feet": {"cheekSquint{side}": 0.45, "eyeSquint{side}": 0.25, "mouthSmile{side}": 0.45},
    "under_eye": {"eyeSquint{side}": 0.4, "cheekSquint{side}": 0.4, "mouthSmile{side}": 0.25},
    "nasolabial": {"mouthSmile{side}": 0.7, "noseSneer{side}": 0.3, "mouthUpperUp{side}": 0.3},
    "marionette": {"mouthFrown{side}": 0.6, "mouthPress{side}": 0.3, "mouthStretch{side}": 0.2},
    "lip_lines": {"mouthPucker": 0.7, "mouthFunnel": 0.4},
}

# Depths (mm, at full fold, before the style's family multiplier and age) are those of dynamic
# expression folds on adult skin: forehead and glabella lines up to about a millimetre, crow's
# feet and marionette lines somewhat less, nasolabial folds up to a few millimetres, lip lines a
# few tenths. A crease shallower than MIN_DEPTH_MM is not drawn.
MIN_DEPTH_MM = 0.025


@dataclasses.dataclass(frozen=True)
class CreaseStyle:
    """How one subject's skin creases (drawn from a seeded Generator, stored in meta.json)."""

    age: float                # 0 smooth young skin .. 1 deeply lined: scales depth, count, rest depth
    family_depth: dict        # family -> depth multiplier (0: this subject never creases there)
    threshold: float          # driver value below which nothing folds
    saturation: float         # driver value at which the fold is complete
    rest: float               # fraction of the full depth visible on the neutral face (at age 1)
    seed: int                 # draws the crease curves
    shade: float = 0.3        # broad darkening of a fully folded crease region (albedo ratio 1 - shade)
    flush: float = 0.05       # redness of fully folded skin (blood pushed into the fold)

    @classmethod
    def random(cls, rng: np.random.Generator) -> "CreaseStyle":
        u = rng.uniform
        age = float(u(0.15, 1.0))
        family_depth = {}
        for family in FAMILY_NAMES:
            # Most subjects crease in most places, with their own strength; some never do.
            family_depth[family] = 0.0 if u() < 0.15 else round(float(u(0.4, 1.2)), 4)
        if not any(family_depth.values()):
            family_depth["forehead"] = 1.0
        return cls(age=round(age, 4), family_depth=family_depth, threshold=round(float(u(0.03, 0.15)), 4),
                   saturation=round(float(u(0.45, 0.85)), 4), rest=round(float(u(0.05, 0.35)), 4),
                   seed=int(rng.integers(0, 2**31 - 1)), shade=round(float(u(0.15, 0.45)), 4),
                   flush=round(float(u(0.0, 0.12)), 4))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CreaseStyle":
        return cls(**data)


# ---------------------------------------------------------------------------- landmarks
def _weighted_centroid(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (points * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-12)


@functools.lru_cache(maxsize=4)
def face_landmarks(template) -> dict[str, np.ndarray | float]:
    """Landmarks (metres, template neutral) found through the face units: eye centres and outer /
    inner corners (eyeBlink), brow height (brow raises), mouth centre and corners (lip mask),
    nose-wing height. `side` entries are keyed "Left"/"Right" (ARKit's: the character's own)."""
    x = template.vertices.astype(np.float64)

    def support(name):
        return np.linalg.norm(template.unit_offsets[template.unit_index(name)], axis=1)

    marks: dict = {}
    eyes = {}
    for side in ("Left", "Right"):
        blink = support(f"eyeBlink{side}")
        lid = x[blink > 0.3 * blink.max()]
        eyes[side] = (_weighted_centroid(x, blink), lid)
    mid_x = 0.5 * (eyes["Left"][0][0] + eyes["Right"][0][0])
    marks["mid_x"] = float(mid_x)
    for side, (centre, lid) in eyes.items():
        outward = np.sign(centre[0] - mid_x)
        marks[f"eye_{side}"] = centre
        marks[f"eye_outer_{side}"] = lid[np.argmax(outward * (lid[:, 0] - mid_x))]
        marks[f"eye_inner_{side}"] = lid[np.argmin(outward * (lid[:, 0] - mid_x))]
        marks[f"outward_{side}"] = float(outward)
    brow_support = support("browInnerUp") + support("browOuterUpLeft") + support("browOuterUpRight")
    marks["brow"] = _weighted_centroid(x, brow_support)
    marks["eye_z"] = float(0.5 * (eyes["Left"][0][2] + eyes["Right"][0][2]))
    lips = x[template.lip_mask]
    marks["mouth"] = lips.mean(0)
    marks["lip_top_z"] = float(lips[np.abs(lips[:, 0] - mid_x) < 0.004, 2].max())
    marks["lip_bottom_z"] = float(lips[np.abs(lips[:, 0] - mid_x) < 0.004, 2].min())
    for side in ("Left", "Right"):
        outward = marks[f"outward_{side}"]
        marks[f"mouth_corner_{side}"] = lips[np.argmax(outward * (lips[:, 0] - mid_x))]
    marks["nose_z"] = float(marks["eye_z"] - 0.55 * (marks["eye_z"] - marks["mouth"][2]))
    return marks


# ---------------------------------------------------------------------------- crease curves
def _polyline(start, end, bend: float = 0.0, wave: float = 0.0, wave_cycles: float = 1.0,
              phase: float = 0.0, n: int = 24, towards=None) -> np.ndarray:
    """(n, 2) points from start to end (frontal plane), bent sideways by `bend` metres at the
    middle (a parabola; towards the direction `towards` when given) and rippled by `wave` metres."""
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    t = np.linspace(0.0, 1.0, n)
    along = end - start
    normal = np.array([-along[1], along[0]]) / max(float(np.linalg.norm(along)), 1e-12)
    if towards is not None and float(normal @ np.asarray(towards, np.float64)) < 0:
        normal = -normal
    offset = bend * 4 * t * (1 - t) + wave * np.sin(2 * np.pi * wave_cycles * t + phase) * np.sin(np.pi * t)
    return start + t[:, None] * along + offset[:, None] * normal


def make_creases(template, style: CreaseStyle) -> list[Crease]:
    """The subject's crease curves, placed from the template's landmarks and drawn from
    `style.seed` (the same style gives the same creases)."""
    marks = face_landmarks(template)
    rng = np.random.default_rng(style.seed)
    u = rng.uniform
    age = style.age
    mid_x = marks["mid_x"]
    creases: list[Crease] = []

    def add(group: str, points: np.ndarray, depth_mm: float, width_mm: float) -> None:
        family = family_of(group)
        depth = depth_mm * style.family_depth.get(family, 0.0) * (0.35 + 0.65 * age)
        if depth > MIN_DEPTH_MM:
            creases.append(Crease(group, np.asarray(points, np.float64), round(float(depth), 4),
                                  round(float(width_mm), 4)))

    # Forehead: 2-6 horizontal lines above the brows, arcing down at the sides, some broken.
    brow_z = float(marks["brow"][2])
    eye_span = abs(marks["eye_outer_Left"][0] - marks["eye_outer_Right"][0])
    first = brow_z + u(0.010, 0.016)
    spacing = u(0.006, 0.010)
    # Lines stay in the lower forehead (within ~4.5 cm of the brows), where frontalis folds it.
    room = int((brow_z + 0.045 - first) / spacing) + 1
    n_lines = min(room, int(round(2 + 4 * age * u(0.6, 1.0))))
    for i in range(n_lines):
        z = first + i * spacing + u(-0.0012, 0.0012)
        half = 0.5 * eye_span * u(0.45, 0.95) * (1.0 - 0.12 * abs(i - (n_lines - 1) / 2))
        centre = mid_x + u(-0.006, 0.006)
        sag = u(0.002, 0.006)  # the line's ends droop: its middle bows upwards
        depth = u(0.375, 1.25) * (1.0 - 0.15 * abs(i - (n_lines - 1) / 2))
        width = u(0.5, 1.1)
        if u() < 0.35:  # broken line: two pieces with a gap near the middle
            gap = u(0.004, 0.012)
            split = centre + u(-0.01, 0.01)
            pieces = [((centre - half, z), (split - gap / 2, z)), ((split + gap / 2, z), (centre + half, z))]
        else:
            pieces = [((centre - half, z), (centre + half, z))]
        for (x0, z0), (x1, z1) in pieces:
            fraction = (x1 - x0) / max(2 * half, 1e-6)
            points = _polyline((x0, z0), (x1, z1), bend=sag * fraction, wave=u(0.0003, 0.0012),
                               wave_cycles=u(1.0, 2.5), phase=u(0, 2 * np.pi), towards=(0.0, 1.0))
            add("forehead", points, depth, width)

    # Glabella: 0-2 near-vertical lines between the brows ("the 11s"), converging upwards.
    eye_z = marks["eye_z"]
    for k in range(int(round(2 * age * u(0.5, 1.0) + 0.3))):
        side = -1.0 if k % 2 == 0 else 1.0
        x0 = mid_x + side * u(0.003, 0.007)
        bottom = (x0, eye_z + u(0.004, 0.008))
        top = (x0 - side * u(0.0, 0.002), bottom[1] + u(0.010, 0.018))
        add("glabella", _polyline(bottom, top, bend=side * u(-0.001, 0.001)), u(0.375, 1.125), u(0.5, 0.9))

    for side in ("Left", "Right"):
        outward = marks[f"outward_{side}"]
        corner = marks[f"eye_outer_{side}"]
        eye = marks[f"eye_{side}"]
        # Crow's feet: 2-4 lines fanning out from beside the outer eye corner.
        for angle in np.sort(u(-0.6, 0.5, size=int(round(2 + 2 * age * u(0.5, 1.0))))):
            start = np.array([corner[0] + outward * u(0.003, 0.006), corner[2] + u(-0.002, 0.002)])
            length = u(0.008, 0.02) * (0.6 + 0.4 * age)
            direction = np.array([outward * np.cos(angle), np.sin(angle)])
            add(f"crows_feet{side}", _polyline(start, start + length * direction, bend=u(-0.001, 0.001)),
                u(0.3, 1.0), u(0.35, 0.7))
        # Under-eye fold: an arc below the lower lid, inner to outer.
        for k in range(1 + int(age > 0.6 and u() < 0.5)):
            z = eye[2] - u(0.011, 0.016) - 0.004 * k
            inner = (eye[0] - outward * u(0.004, 0.008), z + u(0.0, 0.002))
            outer = (eye[0] + outward * u(0.010, 0.016), z + u(0.002, 0.005))
            add(f"under_eye{side}", _polyline(inner, outer, bend=u(0.001, 0.003), towards=(0.0, -1.0)),
                u(0.2, 0.75), u(0.7, 1.3))
        # Nasolabial fold: from beside the nose wing to outside the mouth corner, bulging outwards.
        mouth_corner = marks[f"mouth_corner_{side}"]
        top = (mid_x + outward * 0.75 * abs(mouth_corner[0] - mid_x) + outward * u(-0.002, 0.002),
               marks["nose_z"] + u(-0.003, 0.003))
        bottom = (mouth_corner[0] + outward * u(0.006, 0.012), mouth_corner[2] - u(0.002, 0.012))
        add(f"nasolabial{side}", _polyline(top, bottom, bend=u(0.001, 0.004), towards=(outward, 0.0)),
            u(0.875, 2.5), u(1.0, 2.2))
        # Marionette line: from below the mouth corner downwards, slightly outwards.
        start = (mouth_corner[0] + outward * u(0.0, 0.003), mouth_corner[2] - u(0.003, 0.006))
        end = (start[0] + outward * u(0.001, 0.005), start[1] - u(0.008, 0.018) * (0.5 + 0.5 * age))
        add(f"marionette{side}", _polyline(start, end), u(0.25, 1.125), u(0.7, 1.4))

    # Lip lines: short vertical lines above the upper lip and below the lower lip.
    lip_half_width = 0.6 * abs(marks["mouth_corner_Left"][0] - marks["mouth_corner_Right"][0]) / 2
    for z_edge, direction in ((marks["lip_top_z"], 1.0), (marks["lip_bottom_z"], -1.0)):
        count = int(round((6 if direction > 0 else 3) * age * u(0.4, 1.0)))
        for x in mid_x + u(-lip_half_width, lip_half_width, size=count):
            start = (x, z_edge + direction * u(0.0, 0.0015))
            end = (x + u(-0.001, 0.001), start[1] + direction * u(0.003, 0.008))
            add("lip_lines", _polyline(start, end, n=8), u(0.125, 0.55), u(0.25, 0.5))
    return creases


# ---------------------------------------------------------------------------- activations
def group_activations(weights: np.ndarray, unit_names, style: CreaseStyle) -> np.ndarray:
    """Face-unit weights (T, 52) in `unit_names` order -> (T, len(GROUPS)) fold activations in
    [0, 1]: the style's resting depth plus the smoothstep ramp of the weighted driver units."""
    weights = np.asarray(weights, np.float64)
    index = {name: i for i, name in enumerate(unit_names)}
    out = np.zeros((len(weights), len(GROUPS)), np.float64)
    rest = style.rest * style.age
    for g, group in enumerate(GROUPS):
        side = "Left" if group.endswith("Left") else "Right" if group.endswith("Right") else ""
        family = group.removesuffix(side) if side else group
        drive = np.zeros(len(weights))
        for unit, weight in DRIVERS[family].items():
            drive += weight * weights[:, index[unit.format(side=side)]]
        ramp = np.clip((drive - style.threshold) / (style.saturation - style.threshold), 0.0, 1.0)
        ramp = ramp * ramp * (3.0 - 2.0 * ramp)
        out[:, g] = rest + (1.0 - rest) * ramp
    return out.astype(np.float32)
