"""Does a mesh share the template's UV layout, where is its head, and how is it placed?

The Pipeline's offsets are metres in the template head's frame. A user's mesh may store its
vertices in another frame: an MPFB character in metres (Blender axes), the hm08 OBJ imported with
its MakeHuman axes and decimetres (the importer puts the rotation and scale on the object), a
character modelled at another size. Matching vertices by UV gives point pairs between the
template head and the mesh; the least-squares linear map between them (rotation, scale per
axis, mirroring, shear: whatever Object > Apply or an importer baked into the vertices) carries
the offsets into the mesh's local frame, so the object's own transform then does the rest. The
template head itself gets the same treatment when its vertices are not the template's (issue #17:
with rotation and scale applied, its UVs still match, and the offsets used to be written in the
untransformed template's frame): `template_mesh_frame`.

`motion_coverage` decides which vertices of such a mesh the Pipeline may move at all: those whose
UV lies on a template triangle that the face units move. A MakeHuman body has islands right next
to the head's in UV, and some fall inside a motion-atlas island's rectangle; without this rule
they would read the face's motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .uv import MapLayout, UVRasterizer, uv_to_texel_coords

# A template face vertex is found on the mesh when a mesh vertex UV lies this close (UV units).
UV_MATCH_TOLERANCE = 2e-3
# Share of the template's face vertices that must be found for the layouts to count as the same.
UV_MATCH_FRACTION = 0.8
# A UV lies on a moving template triangle when it falls in a rasterisation of those triangles
# this fine, widened by this many texels so vertices on triangle borders count. Measured with all
# head triangles on the full hm08 body: exactly its 4,418 head vertices are inside, none of the rest.
COVERAGE_RESOLUTION = 1024
COVERAGE_DILATION = 1.0
# A mesh with the template topology whose rest vertices are all this close to the template's (in
# its own units) is the template, untransformed: its offsets are used as they are.
SAME_POSITION_TOLERANCE = 1e-5
# Smallest singular value of a fitted frame, relative to the largest: below it the mesh is flat.
FLAT_RATIO = 1e-3
_FULL_SQUARE = MapLayout.rectangle((0.0, 0.0, 1.0, 1.0), name="uv_square")


class LayoutMismatch(ValueError):
    def __init__(self, matched_fraction: float):
        super().__init__(f"only {matched_fraction:.0%} of the template's face UVs are on the mesh")
        self.matched_fraction = matched_fraction


@dataclass
class LayoutMatch:
    """Pairs (template vertex, mesh vertex) with the same UV, on the template's face."""

    template_indices: np.ndarray  # (K,) int
    mesh_indices: np.ndarray  # (K,) int
    matched_fraction: float


def is_template_mesh(vertex_uvs: np.ndarray, template) -> bool:
    """The mesh is the template head itself (same vertex count and per-vertex UVs)."""
    return len(vertex_uvs) == template.n_vertices and np.allclose(
        vertex_uvs, template.vertex_uvs, atol=1e-5
    )


def match_layout(vertex_uvs: np.ndarray, template) -> LayoutMatch:
    """Finds the template's face vertices on the mesh by UV; LayoutMismatch if too few are."""
    from scipy.spatial import cKDTree

    face_indices = np.flatnonzero(template.face_mask)
    distance, nearest = cKDTree(np.asarray(vertex_uvs, dtype=np.float64)).query(
        template.vertex_uvs[face_indices], distance_upper_bound=UV_MATCH_TOLERANCE
    )
    found = np.isfinite(distance)
    fraction = float(found.mean()) if len(found) else 0.0
    if fraction < UV_MATCH_FRACTION:
        raise LayoutMismatch(fraction)
    return LayoutMatch(face_indices[found], nearest[found], fraction)


def fit_mesh_frame(template, match: LayoutMatch, mesh_positions: np.ndarray) -> np.ndarray:
    """(3, 3) linear map from template-frame offsets to the mesh's local frame (`fit_linear_map`
    between the matched template and mesh vertices)."""
    source = np.asarray(template.vertices, dtype=np.float64)[match.template_indices]
    target = np.asarray(mesh_positions, dtype=np.float64)[match.mesh_indices]
    return fit_linear_map(source, target)


def template_mesh_frame(template_positions: np.ndarray, mesh_positions: np.ndarray) -> np.ndarray | None:
    """For a mesh with the template's (or a template part's) own topology: None when its rest
    vertices are the template's (the offsets apply as they are), else the (3, 3) map that carries
    template-frame offsets into its local frame (rotation, scale or mirroring applied to it)."""
    source = np.asarray(template_positions, dtype=np.float64)
    target = np.asarray(mesh_positions, dtype=np.float64)
    if source.shape == target.shape and np.allclose(source, target, rtol=0.0, atol=SAME_POSITION_TOLERANCE):
        return None
    return fit_linear_map(source, target)


def fit_linear_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 3) A with target ~= source @ A.T + t in the least-squares sense (any linear map:
    rotation, non-uniform scale, mirroring, shear), refitted once without the pairs whose
    residual is far above the median (a wrong UV match, an edited nose).

    MeshError when the points are squashed flat (an axis scaled to ~0): offsets would vanish
    along it, and the head could not be animated in its own frame."""
    from .errors import MeshError

    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    keep = np.ones(len(source), dtype=bool)
    linear = np.eye(3)
    for _ in range(2):
        src, dst = source[keep], target[keep]
        homogeneous = np.hstack([src - src.mean(0), np.ones((len(src), 1))])
        solution, *_ = np.linalg.lstsq(homogeneous, dst - src.mean(0), rcond=None)
        linear = solution[:3].T  # (3, 3): rows map to the target's axes
        translation = solution[3] + src.mean(0) - src.mean(0) @ linear.T
        residual = np.linalg.norm(source @ linear.T + translation - target, axis=1)
        keep = residual <= 3.0 * np.median(residual) + 1e-9
    singular = np.linalg.svd(linear, compute_uv=False)
    if not np.all(np.isfinite(singular)) or singular[-1] < FLAT_RATIO * singular[0]:
        raise MeshError(
            "The mesh is squashed flat along one axis (a scale of 0 was applied?): TexTalker cannot "
            "place face motion in it. Undo the scale (Object > Apply > Scale with a non-zero scale)"
        )
    return linear


def offsets_to_mesh_frame(offsets: np.ndarray, linear_map: np.ndarray | None) -> np.ndarray:
    """Offsets (..., 3) in the template frame -> the mesh's local frame."""
    offsets = np.asarray(offsets, dtype=np.float32)
    if linear_map is None:
        return offsets
    return offsets @ np.asarray(linear_map, dtype=np.float32).T


def moving_triangle_rasterizer(template) -> UVRasterizer:
    """Cached rasterisation of the template's moving triangles over the whole UV square."""
    key = ("moving_triangles", COVERAGE_RESOLUTION, COVERAGE_DILATION)
    with template._lock:
        cached = template._rasterizers.get(key)
    if cached is None:
        moving = template.moving_triangles
        cached = UVRasterizer(
            template.triangles[moving], template.triangle_uvs[moving], _FULL_SQUARE, COVERAGE_RESOLUTION,
            dilation=COVERAGE_DILATION, n_vertices=template.n_vertices,
        )
        with template._lock:
            template._rasterizers[key] = cached
    return cached


def motion_coverage(template, vertex_uvs: np.ndarray) -> np.ndarray:
    """(N,) bool: the UV lies on (or within ~1/1000 UV of) a template triangle that moves.

    Only these vertices of a mesh driven through the motion maps may move; the Pipeline gives
    every other vertex exactly zero offset.
    """
    rasterizer = moving_triangle_rasterizer(template)
    height, width = rasterizer.resolution
    coords, valid = uv_to_texel_coords(np.asarray(vertex_uvs, dtype=np.float64), _FULL_SQUARE, height, width)
    texel = np.rint(coords).astype(np.int64)
    on_map = valid & (texel[:, 0] >= 0) & (texel[:, 0] < width) & (texel[:, 1] >= 0) & (texel[:, 1] < height)
    covered = np.zeros(len(texel), dtype=bool)
    covered[on_map] = rasterizer.mask[texel[on_map, 1], texel[on_map, 0]]
    return covered
