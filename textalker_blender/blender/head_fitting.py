"""Any head mesh (issue #20), Blender side: the fit stored on a mesh, its influence group, the
artist's landmarks, and what a generation on such a mesh needs (`FittedTarget`).

The maths is `core.head_fit`; this module reads the mesh, stores and reads the result:

- `mesh["textalker_head_fit"]`: the `HeadFit` as base64 text (compressed npz arrays: binding,
  similarity, fitted template, landmarks, measures). A fit belongs to the mesh data: shape keys
  live there too, and an edit of the mesh (or an applied transform) invalidates it (its
  signature no longer matches: press Fit again).
- the vertex group "TexTalker Influence": the fit's influence mask, which the artist may paint;
  a generation reads the group (vertices outside it do not move).
- `mesh["textalker_landmarks"]`: the landmarks the artist placed, JSON {name: [x, y, z]} in the
  mesh's coordinates; the fit uses them when at least 4 are placed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import bpy
import numpy as np

from ..core import head_fit
from ..core.errors import MeshError

FIT_PROPERTY = "textalker_head_fit"
LANDMARK_PROPERTY = "textalker_landmarks"
INFLUENCE_GROUP = "TexTalker Influence"
# The user-UV wrinkle images: the face covers only part of a user's UV square, so they are finer
# than the template's maps; capped so an image sequence stays a few MB per frame at most.
WRINKLE_IMAGE_SCALE = 4
MAX_WRINKLE_IMAGE = 1024


# --------------------------------------------------------------------------------------------
# Reading the mesh


def mesh_arrays(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """(rest vertices (N, 3) float64 (the reference shape key's when there are keys), triangles
    (F, 3) int64 from Blender's own triangulation)."""
    from .scene_inputs import rest_positions

    mesh.calc_loop_triangles()
    triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", triangles)
    return rest_positions(mesh).astype(np.float64), triangles.reshape(-1, 3).astype(np.int64)


def triangle_uvs(mesh: bpy.types.Mesh, uv_layer: str) -> np.ndarray:
    """(F, 3, 2) UVs of the loop triangles' corners (seams kept)."""
    mesh.calc_loop_triangles()
    loops = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("loops", loops)
    loop_uvs = np.empty(len(mesh.loops) * 2, dtype=np.float32)
    mesh.uv_layers[uv_layer].data.foreach_get("uv", loop_uvs)
    return loop_uvs.reshape(-1, 2)[loops].reshape(-1, 3, 2).astype(np.float64)


# --------------------------------------------------------------------------------------------
# Landmarks


def stored_landmarks(mesh: bpy.types.Mesh) -> dict[str, np.ndarray]:
    text = mesh.get(LANDMARK_PROPERTY)
    if not text:
        return {}
    try:
        data = json.loads(str(text))
        return {name: np.asarray(point, dtype=np.float64) for name, point in data.items()
                if name in head_fit.LANDMARK_NAMES and len(point) == 3}
    except (ValueError, TypeError):
        return {}


def store_landmarks(mesh: bpy.types.Mesh, landmarks: dict[str, np.ndarray]) -> None:
    unknown = set(landmarks) - set(head_fit.LANDMARK_NAMES)
    if unknown:
        raise ValueError(f"unknown landmark names: {', '.join(sorted(unknown))}")
    if landmarks:
        mesh[LANDMARK_PROPERTY] = json.dumps({k: [float(x) for x in v] for k, v in landmarks.items()})
    elif LANDMARK_PROPERTY in mesh:
        del mesh[LANDMARK_PROPERTY]


# --------------------------------------------------------------------------------------------
# The fit on an object


def stored_fit(mesh: bpy.types.Mesh) -> head_fit.HeadFit | None:
    """The fit stored on the mesh, None when there is none; MeshError when it is damaged."""
    text = mesh.get(FIT_PROPERTY)
    if not text:
        return None
    return head_fit.HeadFit.from_text(str(text))


def check_fit_matches(mesh: bpy.types.Mesh, fit: head_fit.HeadFit, template) -> None:
    """MeshError when the mesh changed since the fit (vertex count, positions, faces) or the
    fit was made with another template."""
    if fit.n_user_vertices != len(mesh.vertices):
        raise MeshError(
            f"'{mesh.name}' has {len(mesh.vertices)} vertices, its head fit was made on "
            f"{fit.n_user_vertices}: press Fit to This Head again"
        )
    if fit.template_vertices != template.n_vertices:
        raise MeshError("The head fit was made with another template head: press Fit to This Head again")
    vertices, triangles = mesh_arrays(mesh)
    if head_fit.mesh_signature(vertices, triangles) != fit.mesh_signature:
        raise MeshError(
            f"'{mesh.name}' was edited (or had a transform applied) since its head fit: press Fit to This Head again"
        )


def fit_object(obj: bpy.types.Object, use_landmarks: bool = True, template=None, progress=None) -> head_fit.HeadFit:
    """Fits the template to the object's mesh and stores the fit and the influence group.

    All the work happens before anything is written: on any error the object is as it was."""
    from ..core.template import load_template

    if obj is None or obj.type != "MESH":
        raise MeshError("Select a mesh object to fit")
    if obj.mode == "EDIT":
        raise MeshError(f"'{obj.name}' is in Edit Mode: switch to Object Mode first")
    if obj.library is not None or obj.data.library is not None:
        raise MeshError(f"'{obj.name}' is linked from a library: make it local first")
    template = template or load_template()
    vertices, triangles = mesh_arrays(obj.data)
    landmarks = stored_landmarks(obj.data) if use_landmarks else {}
    fit = head_fit.fit_head(vertices, triangles, template, landmarks=landmarks or None, progress=progress)
    store_fit(obj, fit)
    return fit


def store_fit(obj: bpy.types.Object, fit: head_fit.HeadFit) -> None:
    """Writes the fit and its influence group (replacing earlier ones); undone on failure."""
    mesh = obj.data
    previous = mesh.get(FIT_PROPERTY)
    previous_group = _group_weights(obj)
    try:
        mesh[FIT_PROPERTY] = fit.to_text()
        _write_group(obj, fit.influence)
    except BaseException:
        if previous is None:
            mesh.pop(FIT_PROPERTY, None)
        else:
            mesh[FIT_PROPERTY] = previous
        if previous_group is None:
            group = obj.vertex_groups.get(INFLUENCE_GROUP)
            if group is not None:
                obj.vertex_groups.remove(group)
        else:
            _write_group(obj, previous_group)
        raise


def remove_fit(obj: bpy.types.Object) -> None:
    """Forgets the fit, the influence group and the landmarks."""
    obj.data.pop(FIT_PROPERTY, None)
    obj.data.pop(LANDMARK_PROPERTY, None)
    group = obj.vertex_groups.get(INFLUENCE_GROUP)
    if group is not None:
        obj.vertex_groups.remove(group)


def _write_group(obj: bpy.types.Object, weights: np.ndarray) -> None:
    group = obj.vertex_groups.get(INFLUENCE_GROUP) or obj.vertex_groups.new(name=INFLUENCE_GROUP)
    weights = np.asarray(weights, dtype=np.float64)
    everyone = list(range(len(obj.data.vertices)))
    group.remove(everyone)
    # One add() per distinct weight (Blender's API takes one weight per call); weights are
    # rounded to 1/256 so a smooth mask costs a few hundred calls, not one per vertex.
    levels = np.round(weights * 256.0) / 256.0
    for level in np.unique(levels[levels > 0]):
        group.add(np.flatnonzero(levels == level).tolist(), float(level), "REPLACE")


def _group_weights(obj: bpy.types.Object) -> np.ndarray | None:
    group = obj.vertex_groups.get(INFLUENCE_GROUP)
    if group is None:
        return None
    weights = np.zeros(len(obj.data.vertices), dtype=np.float32)
    index = group.index
    for vertex in obj.data.vertices:
        for element in vertex.groups:
            if element.group == index:
                weights[vertex.index] = element.weight
                break
    return weights


def influence_weights(obj: bpy.types.Object, fit: head_fit.HeadFit) -> np.ndarray:
    """The artist's painted influence (the group), or the fit's own when the group was deleted."""
    weights = _group_weights(obj)
    return fit.influence if weights is None else weights


# --------------------------------------------------------------------------------------------
# Generation on a fitted head


@dataclass
class FittedTarget:
    """What a generation on a fitted head needs (plain data; safe to hand to a thread)."""

    fit: head_fit.HeadFit
    influence: np.ndarray  # (N,)
    triangles: np.ndarray  # (F, 3) user triangles
    triangle_uvs: np.ndarray | None  # (F, 3, 2) the UV map the wrinkles go through; None: no wrinkles
    _matrix: object = None
    _lookups: dict = None  # {((H, W), R): WrinkleTexelLookup}, built on first use (any thread)

    @property
    def movable(self) -> np.ndarray:
        return np.asarray(self.influence) > 0

    def offsets(self, template_offsets: np.ndarray, template=None) -> np.ndarray:
        """Template offsets (T, V, 3) -> the mesh's (T, N, 3), in its local frame."""
        if self._matrix is None:
            self._matrix = head_fit.transfer_matrix(self.fit, template, self.influence)
        return head_fit.transfer_offsets(self.fit, template_offsets, template, influence=self.influence,
                                         matrix=self._matrix)

    def wrinkle_maps(self, maps: np.ndarray, template=None, neutral=None, resolution: int | None = None) -> np.ndarray:
        """Template wrinkle maps (T, H, W, C) -> images in the mesh's UV layout (T, R, R, C).

        `neutral` per channel defaults to 1 for the three albedo-ratio channels and 0 for any
        further channel (fold activation). `resolution` R defaults to WRINKLE_IMAGE_SCALE times the
        maps' size, at most MAX_WRINKLE_IMAGE. Any map in the template's wrinkle layout goes through
        here, e.g. a style's crease detail (mm, neutral 0):
        `wrinkle_maps(detail[None, ..., None], template, neutral=0.0)[0, ..., 0]`."""
        maps = np.asarray(maps)
        shape = tuple(maps.shape[-3:-1])
        if resolution is None:
            resolution = int(min(MAX_WRINKLE_IMAGE, WRINKLE_IMAGE_SCALE * max(shape)))
        if self._lookups is None:
            self._lookups = {}
        lookup = self._lookups.get((shape, resolution))
        if lookup is None:
            lookup = head_fit.wrinkle_texel_lookup(self.fit, self.triangle_uvs, self.triangles, resolution, shape, template)
            self._lookups[(shape, resolution)] = lookup
        if neutral is None:
            channels = maps.shape[-1]
            neutral = np.array([1.0] * min(3, channels) + [0.0] * max(0, channels - 3), np.float32)
        return lookup.apply(maps, neutral).astype(maps.dtype, copy=False)

    def crease_detail(self, detail_mm: np.ndarray, template=None) -> np.ndarray:
        """A wrinkle style's crease detail map (mm, template wrinkle layout) -> the mesh's UV
        layout, MAX_WRINKLE_IMAGE px square, 0 (no groove) where no face is behind a texel."""
        detail = np.asarray(detail_mm, np.float32)[None, ..., None]
        return self.wrinkle_maps(detail, template, neutral=0.0, resolution=MAX_WRINKLE_IMAGE)[0, ..., 0]

    def map_writer(self, write_maps, template=None):
        """Wraps a `write_maps(first_frame, maps, n_frames, ...)` callback so it receives the
        mesh's own UV layout; further array arguments of the same frames (fold maps (n, H, W))
        are carried over the same way, with 0 as their neutral value."""

        def write(first_frame, maps, n_frames, *args, **kwargs):
            maps = self.wrinkle_maps(maps, template)
            args = tuple(self._extra(value, template) for value in args)
            kwargs = {key: self._extra(value, template) for key, value in kwargs.items()}
            return write_maps(first_frame, maps, n_frames, *args, **kwargs)

        return write

    def _extra(self, value, template):
        if isinstance(value, np.ndarray) and value.ndim == 3:
            return self.wrinkle_maps(value[..., None], template, neutral=0.0)[..., 0]
        return value


def fitted_target(obj: bpy.types.Object, template, uv_layer: str | None) -> FittedTarget | None:
    """The object's fit, checked against its mesh, ready for a generation; None without a fit."""
    fit = stored_fit(obj.data)
    if fit is None:
        return None
    check_fit_matches(obj.data, fit, template)
    _, triangles = mesh_arrays(obj.data)
    uvs = triangle_uvs(obj.data, uv_layer) if uv_layer else None
    return FittedTarget(fit, influence_weights(obj, fit), triangles, uvs)


def render_uv_layer(mesh: bpy.types.Mesh) -> str | None:
    """The UV map the renderer uses (the wrinkle images are made for it), None without UVs."""
    layers = sorted(mesh.uv_layers, key=lambda layer: not layer.active_render)
    return layers[0].name if layers else None
