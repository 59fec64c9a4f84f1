"""Per-vertex values <-> UV maps (motion maps, wrinkle maps) in the template's UV layout.

Conventions (docs/ARCHITECTURE.md): UVs are Blender's ((0, 0) bottom-left, v up); a map is an
array (..., H, W, C) whose row 0 is the top of `uv_region` (image order). `uv_region` is
(u0, v0, u1, v1): the map's W x H texels tile exactly that rectangle.

Both classes precompute a sparse matrix once (texel <- 3 triangle corners for the rasterizer,
sample point <- 4 texels for the sampler), so every call is one sparse product over all frames
and channels at once. numpy arrays go through scipy.sparse, torch tensors through torch.sparse
(on the tensor's device), so the same object serves dataset tools and the model.
"""

from __future__ import annotations

from typing import Sequence

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


def uv_to_texel_coords(uvs: np.ndarray, uv_region: Sequence[float], height: int, width: int) -> np.ndarray:
    """UVs (..., 2) -> continuous texel coordinates (..., 2) as (x=column, y=row).

    Texel (row r, column c) has its centre at (c, r), so integer coordinates are texel centres.
    """
    u0, v0, u1, v1 = (float(x) for x in uv_region)
    uvs = np.asarray(uvs, dtype=np.float64)
    x = (uvs[..., 0] - u0) / (u1 - u0) * width - 0.5
    y = (v1 - uvs[..., 1]) / (v1 - v0) * height - 0.5
    return np.stack([x, y], axis=-1)


def texel_centre_uvs(uv_region: Sequence[float], resolution: int | Sequence[int]) -> np.ndarray:
    """UV of every texel centre, (H, W, 2), image row order."""
    height, width = _resolution_hw(resolution)
    u0, v0, u1, v1 = (float(x) for x in uv_region)
    u = u0 + (np.arange(width) + 0.5) / width * (u1 - u0)
    v = v1 - (np.arange(height) + 0.5) / height * (v1 - v0)
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv], axis=-1)


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

    `dilation` (texels) also fills texels whose centre lies outside every triangle but within that
    distance of one, with the value at the nearest point of the nearest triangle. Bilinear
    sampling at a vertex on an island border then reads real values instead of zeros, without any
    knowledge of the mask at sampling time. `mask` marks every texel written (inside + dilated);
    `coverage` only those whose centre lies inside a triangle.
    """

    def __init__(
        self,
        triangles: np.ndarray,
        triangle_uvs: np.ndarray,
        uv_region: Sequence[float],
        resolution: int | Sequence[int],
        dilation: float = 2.0,
        n_vertices: int | None = None,
    ):
        self.triangles = np.asarray(triangles, dtype=np.int64)
        self.uv_region = tuple(float(x) for x in uv_region)
        self.height, self.width = _resolution_hw(resolution)
        self.dilation = float(dilation)
        used = int(self.triangles.max()) + 1 if len(self.triangles) else 0
        # Vertices no triangle uses (n_vertices > used) simply never reach a texel.
        self.n_vertices = used if n_vertices is None else int(n_vertices)
        if self.n_vertices < used:
            raise ValueError(f"triangles index vertex {used - 1} but n_vertices is {self.n_vertices}")

        corners = uv_to_texel_coords(np.asarray(triangle_uvs), self.uv_region, self.height, self.width)
        texel_ids, triangle_ids, bary, inside = self._assign_texels(corners)

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

        rows = np.repeat(texel_ids, 3)
        cols = self.triangles[triangle_ids].reshape(-1)
        self.matrix = sparse.csr_matrix(
            (bary.reshape(-1), (rows, cols)), shape=(self.height * self.width, self.n_vertices)
        )
        self._torch_cache: dict = {}

    def _assign_texels(self, corners: np.ndarray):
        height, width = self.height, self.width
        lo = np.floor(corners.min(axis=1) - self.dilation).astype(np.int64)
        hi = np.ceil(corners.max(axis=1) + self.dilation).astype(np.int64)
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [width - 1, height - 1])
        span = np.maximum(hi - lo + 1, 0)
        counts = span[:, 0] * span[:, 1]

        best_key = np.full(height * width, np.inf)
        best_tri = np.full(height * width, -1, dtype=np.int64)
        best_bary = np.zeros((height * width, 3))
        best_inside = np.zeros(height * width, dtype=bool)

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
            keep = dist <= self.dilation
            tri, col, row, bary, dist, inside = tri[keep], col[keep], row[keep], bary[keep], dist[keep], inside[keep]
            # Inside wins over dilated; among inside, the most interior triangle (largest minimum
            # barycentric) wins, so shared edges go deterministically to one side.
            key = np.where(inside, -bary.min(axis=1), dist + 1.0)
            flat = row * width + col
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

    Points outside `uv_region` get zero. With `mask` (H, W) the four bilinear weights are
    renormalised over the taps inside the mask, so points near an island border are not pulled
    towards the zeros outside it. With `allowed_taps` (a callable taking (point_index, texel_flat)
    arrays and returning a bool array) taps can further be restricted, e.g. to texels rasterised
    from triangles near the point on the mesh, which keeps lips apart across a narrow mouth slit.
    """

    def __init__(
        self,
        uvs: np.ndarray,
        uv_region: Sequence[float],
        resolution: int | Sequence[int],
        mask: np.ndarray | None = None,
        allowed_taps=None,
    ):
        self.uv_region = tuple(float(x) for x in uv_region)
        self.height, self.width = _resolution_hw(resolution)
        uvs = np.asarray(uvs, dtype=np.float64)
        self.n_points = len(uvs)
        u0, v0, u1, v1 = self.uv_region
        self.inside_region = (uvs[:, 0] >= u0) & (uvs[:, 0] <= u1) & (uvs[:, 1] >= v0) & (uvs[:, 1] <= v1)

        coords = uv_to_texel_coords(uvs, self.uv_region, self.height, self.width)
        base = np.floor(coords).astype(np.int64)
        frac = coords - base
        point_ids, texels, weights = [], [], []
        for dy in (0, 1):
            for dx in (0, 1):
                col = base[:, 0] + dx
                row = base[:, 1] + dy
                weight = (frac[:, 0] if dx else 1.0 - frac[:, 0]) * (frac[:, 1] if dy else 1.0 - frac[:, 1])
                valid = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height) & self.inside_region
                flat = np.clip(row, 0, self.height - 1) * self.width + np.clip(col, 0, self.width - 1)
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

    def sample(self, maps):
        """maps (..., H, W, C) -> values (..., N, C)."""
        if tuple(maps.shape[-3:-1]) != (self.height, self.width):
            raise ValueError(f"expected maps of {self.height}x{self.width}, got shape {tuple(maps.shape)}")
        flat = maps.reshape(*maps.shape[:-3], self.height * self.width, maps.shape[-1])
        return _apply_sparse(self.matrix, flat, self.height * self.width, self._torch_cache)
