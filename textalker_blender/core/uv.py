"""Per-vertex values <-> UV maps (motion maps, wrinkle maps) through a map layout.

Conventions (docs/ARCHITECTURE.md): UVs are Blender's ((0, 0) bottom-left, v up). A `MapLayout`
places rectangles of the mesh's UV square ("islands") into the map square [0, 1]^2 ("map space",
also v up), each with its own scale and offset, so that a map spends its texels on the face
instead of on the whole hm08 UV square. A map is an array (..., H, W, C) whose row 0 is the top of
map space (image order); its W x H texels tile [0, 1]^2.

Both classes precompute a sparse matrix once (texel <- 3 triangle corners for the rasterizer,
sample point <- 4 texels for the sampler), so every call is one sparse product over all frames
and channels at once. numpy arrays go through scipy.sparse, torch tensors through torch.sparse
(on the tensor's device), so the same object serves dataset tools and the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sparse

# Candidate texels are enumerated per triangle bounding box in chunks of this many texels so
# that a 2048^2 rasterisation stays within a few hundred MB.
_CANDIDATE_CHUNK = 4_000_000


def _resolution_hw(resolution: int | Sequence[int]) -> tuple[int, int]:
    if np.isscalar(resolution):
        size = int(resolution)
        return size, size
    height, width = (int(x) for x in resolution)
    return height, width


@dataclass(frozen=True)
class MapIsland:
    """One rectangle of the mesh UV square placed in map space: map = offset + scale * (uv - corner).

    `source` is (u0, v0, u1, v1) in mesh UV; `scale` is map units per UV unit along u and v (equal
    for the motion atlas; the wrinkle rectangle may stretch one axis); `offset` is where the
    source corner (u0, v0) lands in map space.
    """

    name: str
    source: tuple[float, float, float, float]
    scale: tuple[float, float]
    offset: tuple[float, float]

    @property
    def destination(self) -> tuple[float, float, float, float]:
        u0, v0, u1, v1 = self.source
        return (
            self.offset[0],
            self.offset[1],
            self.offset[0] + self.scale[0] * (u1 - u0),
            self.offset[1] + self.scale[1] * (v1 - v0),
        )


class MapLayout:
    """An ordered set of islands: where each part of the mesh UV square goes in map space.

    A UV point inside the source rectangle of an island (the first one, in order, when several
    contain it) maps into that island's destination; a point inside no island is invalid: it gets
    no value from a map (zero offset, wrinkle ratio 1). Each island also owns a *cell*: its
    destination grown by `margin` map units (clipped to the map). Cells must not overlap: the
    rasterizer writes an island's triangles (and their dilation) only into its own cell and a
    sampler point only reads taps from its island's cell, so nothing bleeds between islands.
    """

    def __init__(self, islands: Sequence[MapIsland], margin: float = 0.0):
        if not islands:
            raise ValueError("a MapLayout needs at least one island")
        self.islands = tuple(islands)
        self.margin = float(margin)
        self._source = np.array([island.source for island in self.islands], dtype=np.float64)
        self._scale = np.array([island.scale for island in self.islands], dtype=np.float64)
        self._offset = np.array([island.offset for island in self.islands], dtype=np.float64)
        if np.any(self._source[:, 2:] <= self._source[:, :2]) or np.any(self._scale <= 0):
            raise ValueError("every island needs a non-empty source rectangle and a positive scale")
        destinations = np.array([island.destination for island in self.islands])
        self._cells = np.concatenate(
            [np.clip(destinations[:, :2] - self.margin, 0.0, 1.0), np.clip(destinations[:, 2:] + self.margin, 0.0, 1.0)],
            axis=1,
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def rectangle(cls, uv_rect: Sequence[float], name: str = "rectangle") -> MapLayout:
        """One island: the UV rectangle (u0, v0, u1, v1) stretched over the whole map."""
        u0, v0, u1, v1 = (float(x) for x in uv_rect)
        return cls([MapIsland(name, (u0, v0, u1, v1), (1.0 / (u1 - u0), 1.0 / (v1 - v0)), (0.0, 0.0))])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MapLayout:
        islands = [
            MapIsland(
                str(item["name"]),
                tuple(float(x) for x in item["source"]),
                tuple(float(x) for x in item["scale"]),
                tuple(float(x) for x in item["offset"]),
            )
            for item in data["islands"]
        ]
        return cls(islands, float(data.get("margin", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "islands": [
                {"name": i.name, "source": list(i.source), "scale": list(i.scale), "offset": list(i.offset)}
                for i in self.islands
            ],
            "margin": self.margin,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def fingerprint(self) -> str:
        """Short hash of the layout (what a model trained on these maps depends on)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def __eq__(self, other) -> bool:
        return isinstance(other, MapLayout) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"MapLayout({', '.join(i.name for i in self.islands)}; margin {self.margin:g})"

    def rectangle_source(self) -> tuple[float, float, float, float]:
        """The UV rectangle of a one-island layout that fills the whole map (what a shader maps
        with (uv - origin) / size); ValueError for any other layout."""
        destination = np.array(self.islands[0].destination)
        if self.n_islands != 1 or not np.allclose(destination, (0.0, 0.0, 1.0, 1.0), atol=1e-9):
            raise ValueError(f"{self!r} is not a single rectangle filling the map")
        return tuple(float(x) for x in self.islands[0].source)

    # ------------------------------------------------------------------ geometry
    @property
    def n_islands(self) -> int:
        return len(self.islands)

    @property
    def names(self) -> list[str]:
        return [island.name for island in self.islands]

    @property
    def sources(self) -> np.ndarray:
        """(K, 4) float64 source rectangles (u0, v0, u1, v1)."""
        return self._source.copy()

    @property
    def scales(self) -> np.ndarray:
        """(K, 2) float64 map units per UV unit."""
        return self._scale.copy()

    @property
    def destinations(self) -> np.ndarray:
        """(K, 4) float64 destination rectangles in map space."""
        return np.array([island.destination for island in self.islands])

    @property
    def cells(self) -> np.ndarray:
        """(K, 4) float64 destinations grown by the margin (clipped to the map)."""
        return self._cells.copy()

    def island_of(self, uvs: np.ndarray) -> np.ndarray:
        """(N, 2) UVs -> (N,) index of the first island whose source contains the point, -1 if none."""
        uvs = np.asarray(uvs, dtype=np.float64).reshape(-1, 2)
        inside = (
            (uvs[:, None, 0] >= self._source[None, :, 0])
            & (uvs[:, None, 0] <= self._source[None, :, 2])
            & (uvs[:, None, 1] >= self._source[None, :, 1])
            & (uvs[:, None, 1] <= self._source[None, :, 3])
        )
        return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)

    def island_transform(self, uvs: np.ndarray, island: int) -> np.ndarray:
        """UVs (..., 2) -> map UVs through one island's affine map (no validity check)."""
        uvs = np.asarray(uvs, dtype=np.float64)
        return self._offset[island] + self._scale[island] * (uvs - self._source[island, :2])

    def to_map(self, uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """UVs (N, 2) -> (map UVs (N, 2) float64, valid (N,) bool); invalid points map to (-1, -1)."""
        uvs = np.asarray(uvs, dtype=np.float64).reshape(-1, 2)
        island = self.island_of(uvs)
        valid = island >= 0
        safe = np.maximum(island, 0)
        mapped = self._offset[safe] + self._scale[safe] * (uvs - self._source[safe, :2])
        return np.where(valid[:, None], mapped, -1.0), valid

    def cell_of(self, map_uvs: np.ndarray) -> np.ndarray:
        """Map-space points (N, 2) -> (N,) index of the first island cell containing them, -1 if none."""
        points = np.asarray(map_uvs, dtype=np.float64).reshape(-1, 2)
        cells = self._cells
        inside = (
            (points[:, None, 0] >= cells[None, :, 0])
            & (points[:, None, 0] <= cells[None, :, 2])
            & (points[:, None, 1] >= cells[None, :, 1])
            & (points[:, None, 1] <= cells[None, :, 3])
        )
        return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)

    def from_map(self, map_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map-space points (N, 2) -> (UVs (N, 2), island (N,) int; -1 and NaN outside every cell).

        Points in an island's margin map back just outside its source rectangle (the inverse of
        the same affine map), which is where the rasterizer reads their values from.
        """
        points = np.asarray(map_uvs, dtype=np.float64).reshape(-1, 2)
        island = self.cell_of(points)
        safe = np.maximum(island, 0)
        uvs = self._source[safe, :2] + (points - self._offset[safe]) / self._scale[safe]
        return np.where((island >= 0)[:, None], uvs, np.nan), island

    def texel_islands(self, resolution: int | Sequence[int]) -> np.ndarray:
        """(H, W) int: the island whose cell holds each texel centre, -1 for texels of no island."""
        height, width = _resolution_hw(resolution)
        return self.cell_of(texel_centre_map_uvs((height, width)).reshape(-1, 2)).reshape(height, width)

    def source_texel_size(self, resolution: int | Sequence[int]) -> np.ndarray:
        """(K, 2) size of one texel in mesh UV units, per island, along u and v."""
        height, width = _resolution_hw(resolution)
        return 1.0 / (self._scale * np.array([width, height], dtype=np.float64))


def as_layout(layout) -> MapLayout:
    """A MapLayout from a MapLayout, its dict, or a UV rectangle (u0, v0, u1, v1)."""
    if isinstance(layout, MapLayout):
        return layout
    if isinstance(layout, Mapping):
        return MapLayout.from_dict(layout)
    return MapLayout.rectangle(layout)


def map_to_texel_coords(map_uvs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Map-space points (..., 2) -> continuous texel coordinates (..., 2) as (x=column, y=row).

    Texel (row r, column c) has its centre at (c, r), so integer coordinates are texel centres.
    """
    map_uvs = np.asarray(map_uvs, dtype=np.float64)
    return np.stack([map_uvs[..., 0] * width - 0.5, (1.0 - map_uvs[..., 1]) * height - 0.5], axis=-1)


def uv_to_texel_coords(uvs: np.ndarray, layout, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mesh UVs (N, 2) -> (texel coordinates (N, 2) as (x=column, y=row), valid (N,) bool)."""
    mapped, valid = as_layout(layout).to_map(uvs)
    return map_to_texel_coords(mapped, height, width), valid


def texel_centre_map_uvs(resolution: int | Sequence[int]) -> np.ndarray:
    """Map-space point of every texel centre, (H, W, 2), image row order."""
    height, width = _resolution_hw(resolution)
    u = (np.arange(width) + 0.5) / width
    v = 1.0 - (np.arange(height) + 0.5) / height
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv], axis=-1)


def texel_centre_uvs(layout, resolution: int | Sequence[int]) -> np.ndarray:
    """Mesh UV of every texel centre, (H, W, 2), image row order; NaN for texels of no island."""
    height, width = _resolution_hw(resolution)
    uvs, _ = as_layout(layout).from_map(texel_centre_map_uvs((height, width)).reshape(-1, 2))
    return uvs.reshape(height, width, 2)


def _closest_point_barycentrics(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Barycentrics of the point of triangle abc closest to p, and the distance to it (2D, vectorised).

    Inside points get their exact barycentrics and distance 0; outside points are projected on
    the nearest edge, which is what dilating a map beyond the triangle border needs.
    """
    v0 = b - a
    v1 = c - a
    v2 = p - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    denom = d00 * d11 - d01 * d01
    safe = np.where(np.abs(denom) > 1e-18, denom, 1.0)
    bv = (d11 * d20 - d01 * d21) / safe
    bw = (d00 * d21 - d01 * d20) / safe
    bu = 1.0 - bv - bw
    bary = np.stack([bu, bv, bw], axis=-1)
    inside = (bary.min(axis=1) >= -1e-9) & (np.abs(denom) > 1e-18)

    # Closest point on each edge (segment projection); keep the nearest of the three.
    best_dist = np.full(len(p), np.inf)
    best_bary = np.zeros_like(bary)
    corners = (a, b, c)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        start, end = corners[i], corners[j]
        edge = end - start
        length2 = np.einsum("ij,ij->i", edge, edge)
        t = np.einsum("ij,ij->i", p - start, edge) / np.where(length2 > 0, length2, 1.0)
        t = np.clip(t, 0.0, 1.0)
        closest = start + t[:, None] * edge
        dist = np.linalg.norm(p - closest, axis=1)
        better = dist < best_dist
        best_dist = np.where(better, dist, best_dist)
        edge_bary = np.zeros_like(bary)
        edge_bary[:, i] = 1.0 - t
        edge_bary[:, j] = t
        best_bary = np.where(better[:, None], edge_bary, best_bary)
    bary = np.where(inside[:, None], bary, best_bary)
    dist = np.where(inside, 0.0, best_dist)
    return bary, dist, inside


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _apply_sparse(matrix: sparse.csr_matrix, values, n_points_in: int, cache: dict):
    """matrix (M, N) applied along axis -2 of values (..., N, C) -> (..., M, C); numpy or torch."""
    if _is_torch(values):
        import torch

        key = (str(values.device), values.dtype)
        if key not in cache:
            coo = matrix.tocoo()
            indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
            cache[key] = torch.sparse_coo_tensor(
                indices, torch.from_numpy(coo.data).to(values.dtype), size=matrix.shape,
                check_invariants=True,
            ).coalesce().to(values.device)
        torch_matrix = cache[key]
        lead = values.shape[:-2]
        channels = values.shape[-1]
        flat = values.reshape(-1, n_points_in, channels).permute(1, 0, 2).reshape(n_points_in, -1)
        out = torch.sparse.mm(torch_matrix, flat)
        out = out.reshape(matrix.shape[0], -1, channels).permute(1, 0, 2)
        return out.reshape(*lead, matrix.shape[0], channels)

    values = np.asarray(values)
    lead = values.shape[:-2]
    channels = values.shape[-1]
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float32
    batch = values.reshape(-1, n_points_in, channels)
    out = np.empty((len(batch), matrix.shape[0], channels), dtype=dtype)
    # One sparse product per frame: each frame is contiguous (N, C), so no transposed copy of
    # the whole (possibly GB-sized) batch is ever made.
    for index, frame in enumerate(batch):
        out[index] = matrix @ frame
    return out.reshape(*lead, matrix.shape[0], channels)


class UVRasterizer:
    """Rasterises per-vertex values into UV maps by barycentric interpolation per texel.

    `layout` (a MapLayout, its dict, or a UV rectangle) says where each part of the UV square
    goes in the map. Every island's triangles are rasterised into that island's cell only; a
    triangle that crosses an island's source border is cut at the cell border.

    `dilation` (texels) also fills texels whose centre lies outside every triangle but within that
    distance of one, with the value at the nearest point of the nearest triangle. Bilinear
    sampling at a vertex on an island border then reads real values instead of zeros, without any
    knowledge of the mask at sampling time. `mask` marks every texel written (inside + dilated);
    `coverage` only those whose centre lies inside a triangle; `island_map` the island of each
    written texel (-1 elsewhere).
    """

    def __init__(
        self,
        triangles: np.ndarray,
        triangle_uvs: np.ndarray,
        layout,
        resolution: int | Sequence[int],
        dilation: float = 2.0,
        n_vertices: int | None = None,
    ):
        self.triangles = np.asarray(triangles, dtype=np.int64)
        self.layout = as_layout(layout)
        self.height, self.width = _resolution_hw(resolution)
        self.dilation = float(dilation)
        used = int(self.triangles.max()) + 1 if len(self.triangles) else 0
        # Vertices no triangle uses (n_vertices > used) simply never reach a texel.
        self.n_vertices = used if n_vertices is None else int(n_vertices)
        if self.n_vertices < used:
            raise ValueError(f"triangles index vertex {used - 1} but n_vertices is {self.n_vertices}")

        triangle_uvs = np.asarray(triangle_uvs, dtype=np.float64)
        texel_island = self.layout.texel_islands((self.height, self.width)).reshape(-1)
        parts = []
        for island in range(self.layout.n_islands):
            allowed = texel_island == island
            if not allowed.any():
                continue
            rows, cols = np.divmod(np.flatnonzero(allowed), self.width)
            bounds = (np.array([cols.min(), rows.min()]), np.array([cols.max(), rows.max()]))
            corners = map_to_texel_coords(
                self.layout.island_transform(triangle_uvs, island), self.height, self.width
            )
            near = np.all(corners.max(axis=1) + self.dilation >= bounds[0], axis=1) & np.all(
                corners.min(axis=1) - self.dilation <= bounds[1], axis=1
            )
            candidates = np.flatnonzero(near)
            texel_ids, local_ids, bary, inside = self._assign_texels(corners[candidates], bounds, allowed)
            parts.append((texel_ids, candidates[local_ids], bary, inside))
        if parts:
            texel_ids, triangle_ids, bary, inside = (np.concatenate(x) for x in zip(*parts))
        else:
            texel_ids = triangle_ids = np.zeros(0, np.int64)
            bary, inside = np.zeros((0, 3)), np.zeros(0, bool)

        self.texel_indices = texel_ids  # flat row-major indices into (H, W)
        self.texel_triangles = triangle_ids
        self.texel_barycentrics = bary.astype(np.float32)
        self.mask = np.zeros(self.height * self.width, dtype=bool)
        self.mask[texel_ids] = True
        self.mask = self.mask.reshape(self.height, self.width)
        self.coverage = np.zeros(self.height * self.width, dtype=bool)
        self.coverage[texel_ids[inside]] = True
        self.coverage = self.coverage.reshape(self.height, self.width)
        self.triangle_map = np.full(self.height * self.width, -1, dtype=np.int64)
        self.triangle_map[texel_ids] = triangle_ids
        self.triangle_map = self.triangle_map.reshape(self.height, self.width)
        self.island_map = np.where(self.mask, texel_island.reshape(self.height, self.width), -1)

        rows = np.repeat(texel_ids, 3)
        cols = self.triangles[triangle_ids].reshape(-1)
        self.matrix = sparse.csr_matrix(
            (bary.reshape(-1), (rows, cols)), shape=(self.height * self.width, self.n_vertices)
        )
        self._torch_cache: dict = {}

    def _assign_texels(self, corners: np.ndarray, bounds, allowed: np.ndarray):
        """Texels (within `bounds` = (lo, hi) (x, y) texel indices and `allowed` flat texels) of the
        triangles with texel-space `corners` (F, 3, 2): flat ids, triangle, barycentrics, inside."""
        width = self.width
        lo = np.floor(corners.min(axis=1) - self.dilation).astype(np.int64)
        hi = np.ceil(corners.max(axis=1) + self.dilation).astype(np.int64)
        lo = np.maximum(lo, bounds[0])
        hi = np.minimum(hi, bounds[1])
        span = np.maximum(hi - lo + 1, 0)
        counts = span[:, 0] * span[:, 1]

        size = self.height * width
        best_key = np.full(size, np.inf)
        best_tri = np.full(size, -1, dtype=np.int64)
        best_bary = np.zeros((size, 3))
        best_inside = np.zeros(size, dtype=bool)

        # Process triangles in chunks bounded by the number of candidate texels.
        cumulative = np.cumsum(counts)
        start = 0
        n_tri = len(corners)
        while start < n_tri:
            base = cumulative[start - 1] if start else 0
            stop = int(np.searchsorted(cumulative, base + _CANDIDATE_CHUNK, side="right"))
            stop = max(stop, start + 1)
            chunk = np.arange(start, stop)
            chunk_counts = counts[chunk]
            tri = np.repeat(chunk, chunk_counts)
            offsets = np.arange(chunk_counts.sum()) - np.repeat(np.cumsum(chunk_counts) - chunk_counts, chunk_counts)
            span_w = np.maximum(span[tri, 0], 1)
            col = lo[tri, 0] + offsets % span_w
            row = lo[tri, 1] + offsets // span_w
            point = np.stack([col, row], axis=1).astype(np.float64)
            bary, dist, inside = _closest_point_barycentrics(point, corners[tri, 0], corners[tri, 1], corners[tri, 2])
            flat = row * width + col
            keep = (dist <= self.dilation) & allowed[flat]
            tri, flat, bary, dist, inside = tri[keep], flat[keep], bary[keep], dist[keep], inside[keep]
            # Inside wins over dilated; among inside, the most interior triangle (largest minimum
            # barycentric) wins, so shared edges go deterministically to one side.
            key = np.where(inside, -bary.min(axis=1), dist + 1.0)
            order = np.lexsort((tri, key, flat))
            flat_sorted = flat[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = flat_sorted[1:] != flat_sorted[:-1]
            winners = order[first]
            w_flat = flat[winners]
            better = key[winners] < best_key[w_flat]
            w_flat = w_flat[better]
            winners = winners[better]
            best_key[w_flat] = key[winners]
            best_tri[w_flat] = tri[winners]
            best_bary[w_flat] = bary[winners]
            best_inside[w_flat] = inside[winners]
            start = stop

        texel_ids = np.nonzero(best_tri >= 0)[0]
        return texel_ids, best_tri[texel_ids], best_bary[texel_ids], best_inside[texel_ids]

    @property
    def resolution(self) -> tuple[int, int]:
        return self.height, self.width

    def rasterize(self, values):
        """values (..., V, C) per vertex -> maps (..., H, W, C); zero outside `mask`."""
        if values.shape[-2] != self.n_vertices:
            raise ValueError(f"expected {self.n_vertices} vertices on axis -2, got shape {tuple(values.shape)}")
        flat = _apply_sparse(self.matrix, values, self.n_vertices, self._torch_cache)
        return flat.reshape(*flat.shape[:-2], self.height, self.width, flat.shape[-1])


class UVSampler:
    """Bilinear sampling of UV maps at fixed UV points (vertex UVs of any mesh with the layout).

    `layout` maps the points into the map (a MapLayout, its dict or a UV rectangle); with
    `layout=None` the points are already in map space. A point inside no island (`valid` False)
    gets zero, and a point only reads taps inside its own island's cell. With `mask` (H, W) the
    four bilinear weights are renormalised over the taps inside the mask, so points near an island
    border are not pulled towards the zeros outside it. With `allowed_taps` (a callable taking
    (point_index, texel_flat) arrays and returning a bool array) taps can further be restricted,
    e.g. to texels rasterised from triangles near the point on the mesh, which keeps lips apart
    across a narrow mouth slit.
    """

    def __init__(
        self,
        uvs: np.ndarray,
        layout,
        resolution: int | Sequence[int],
        mask: np.ndarray | None = None,
        allowed_taps=None,
    ):
        self.height, self.width = _resolution_hw(resolution)
        uvs = np.asarray(uvs, dtype=np.float64).reshape(-1, 2)
        self.n_points = len(uvs)
        if layout is None:
            self.layout = None
            map_uvs = uvs
            self.valid = np.all((uvs >= 0.0) & (uvs <= 1.0), axis=1)
            point_island = np.zeros(self.n_points, dtype=np.int64)
            texel_island = np.zeros(self.height * self.width, dtype=np.int64)
        else:
            self.layout = as_layout(layout)
            map_uvs, self.valid = self.layout.to_map(uvs)
            point_island = self.layout.island_of(uvs)
            texel_island = self.layout.texel_islands((self.height, self.width)).reshape(-1)

        coords = map_to_texel_coords(map_uvs, self.height, self.width)
        base = np.floor(coords).astype(np.int64)
        frac = coords - base
        point_ids, texels, weights = [], [], []
        for dy in (0, 1):
            for dx in (0, 1):
                col = base[:, 0] + dx
                row = base[:, 1] + dy
                weight = (frac[:, 0] if dx else 1.0 - frac[:, 0]) * (frac[:, 1] if dy else 1.0 - frac[:, 1])
                valid = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height) & self.valid
                flat = np.clip(row, 0, self.height - 1) * self.width + np.clip(col, 0, self.width - 1)
                valid &= texel_island[flat] == point_island
                if mask is not None:
                    valid &= np.asarray(mask, dtype=bool).reshape(-1)[flat]
                point_ids.append(np.arange(self.n_points))
                texels.append(flat)
                weights.append(np.where(valid, weight, 0.0))
        point_ids = np.concatenate(point_ids)
        texels = np.concatenate(texels)
        weights = np.concatenate(weights)
        if allowed_taps is not None:
            filtered = np.where(allowed_taps(point_ids, texels), weights, 0.0)
            # A point whose taps are all filtered out keeps its unfiltered (masked) taps.
            kept = np.bincount(point_ids, weights=filtered, minlength=self.n_points) > 0
            weights = np.where(kept[point_ids], filtered, weights)
        total = np.bincount(point_ids, weights=weights, minlength=self.n_points)
        # Renormalise over surviving taps; a point with no surviving tap reads zero.
        weights = weights / np.where(total > 0, total, 1.0)[point_ids]
        keep = weights > 0
        self.matrix = sparse.csr_matrix(
            (weights[keep], (point_ids[keep], texels[keep])), shape=(self.n_points, self.height * self.width)
        )
        self.has_support = total > 0
        self._torch_cache: dict = {}

    @property
    def inside_region(self) -> np.ndarray:
        """Alias of `valid` (the name from the single-rectangle layout)."""
        return self.valid

    def sample(self, maps):
        """maps (..., H, W, C) -> values (..., N, C)."""
        if tuple(maps.shape[-3:-1]) != (self.height, self.width):
            raise ValueError(f"expected maps of {self.height}x{self.width}, got shape {tuple(maps.shape)}")
        flat = maps.reshape(*maps.shape[:-3], self.height * self.width, maps.shape[-1])
        return _apply_sparse(self.matrix, flat, self.height * self.width, self._torch_cache)
