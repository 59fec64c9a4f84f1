"""Triangle-mesh geometry the head fit needs: closest points on a surface (with barycentric
coordinates), connected parts, edge checks, normals and a graph Laplacian.

numpy + scipy only (cKDTree, sparse graphs). Everything works on (V, 3) vertex arrays and
(F, 3) int triangle arrays, in whatever units the caller uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

# Queries are answered in chunks of this many points to bound memory ((chunk, candidates, 3)
# float64 arrays): about 30 MB per array at 24 candidates.
QUERY_CHUNK = 16384
# Nearest triangle centroids examined per query besides the one-ring of the nearest vertex; the
# one-ring finds the right triangle on regular meshes, the centroids cover long thin triangles.
CENTROID_CANDIDATES = 6
# A vertex's one-ring is cut to this many triangles (poles of a dense mesh can have more; the
# centroid candidates still see the rest).
MAX_RING = 12


@dataclass
class SurfacePoints:
    """Closest points on a surface: per query, the triangle (index into the surface's full
    triangle array), barycentric coordinates, the point and its distance."""

    triangle: np.ndarray  # (P,) int64
    barycentric: np.ndarray  # (P, 3) float64
    point: np.ndarray  # (P, 3) float64
    distance: np.ndarray  # (P,) float64


def triangle_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals (zero for degenerate triangles), right-handed winding."""
    v = np.asarray(vertices, dtype=np.float64)
    normal = np.cross(v[triangles[:, 1]] - v[triangles[:, 0]], v[triangles[:, 2]] - v[triangles[:, 0]])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    return np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)


def triangle_areas(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    return 0.5 * np.linalg.norm(np.cross(v[triangles[:, 1]] - v[triangles[:, 0]], v[triangles[:, 2]] - v[triangles[:, 0]]), axis=1)


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals (zero for unused vertices)."""
    v = np.asarray(vertices, dtype=np.float64)
    weighted = np.cross(v[triangles[:, 1]] - v[triangles[:, 0]], v[triangles[:, 2]] - v[triangles[:, 0]])
    normals = np.zeros_like(v)
    for corner in range(3):
        np.add.at(normals, triangles[:, corner], weighted)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def vertex_adjacency(n_vertices: int, triangles: np.ndarray) -> sparse.csr_matrix:
    """(V, V) symmetric 0/1 adjacency of the triangles' edges."""
    tri = np.asarray(triangles, dtype=np.int64)
    rows = np.concatenate([tri[:, 0], tri[:, 1], tri[:, 2], tri[:, 1], tri[:, 2], tri[:, 0]])
    cols = np.concatenate([tri[:, 1], tri[:, 2], tri[:, 0], tri[:, 0], tri[:, 1], tri[:, 2]])
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))
    adjacency.data[:] = 1.0
    return adjacency


def edge_lengths_graph(vertices: np.ndarray, triangles: np.ndarray) -> sparse.csr_matrix:
    """(V, V) symmetric graph whose weights are the 3D edge lengths (for geodesic distances)."""
    v = np.asarray(vertices, dtype=np.float64)
    adjacency = vertex_adjacency(len(v), triangles).tocoo()
    length = np.linalg.norm(v[adjacency.row] - v[adjacency.col], axis=1)
    return sparse.csr_matrix((np.maximum(length, 1e-12), (adjacency.row, adjacency.col)), shape=adjacency.shape)


def uniform_laplacian(n_vertices: int, triangles: np.ndarray) -> sparse.csr_matrix:
    """(V, V) graph Laplacian I - D^-1 A (rows of isolated vertices are zero)."""
    adjacency = vertex_adjacency(n_vertices, triangles)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    identity = sparse.diags((degree > 0).astype(np.float64))
    return (identity - sparse.diags(inverse) @ adjacency).tocsr()


def connected_parts(n_vertices: int, triangles: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of parts, (V,) part label of each vertex); vertices in no triangle are parts of
    their own."""
    return connected_components(vertex_adjacency(n_vertices, triangles), directed=False)


def edge_face_counts(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique undirected edges (E, 2), number of triangles using each)."""
    tri = np.asarray(triangles, dtype=np.int64)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique, counts


def closest_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Closest point of each triangle (a, b, c) to each point (all (..., 3)): (point, barycentric).

    Inside the triangle's projection: the orthogonal projection; otherwise the closest point of
    the three edges. Degenerate triangles fall back to their edges."""
    ab, ac, ap = b - a, c - a, points - a
    d00 = np.einsum("...i,...i", ab, ab)
    d01 = np.einsum("...i,...i", ab, ac)
    d11 = np.einsum("...i,...i", ac, ac)
    d20 = np.einsum("...i,...i", ap, ab)
    d21 = np.einsum("...i,...i", ap, ac)
    denominator = d00 * d11 - d01 * d01
    safe = np.where(np.abs(denominator) > 1e-30, denominator, 1.0)
    v = (d11 * d20 - d01 * d21) / safe
    w = (d00 * d21 - d01 * d20) / safe
    u = 1.0 - v - w
    inside = (np.abs(denominator) > 1e-30) & (u >= 0) & (v >= 0) & (w >= 0)
    best_bary = np.stack([u, v, w], axis=-1)
    best_point = a + v[..., None] * ab + w[..., None] * ac
    best_distance = np.where(inside, np.linalg.norm(points - best_point, axis=-1), np.inf)
    corners = (a, b, c)
    for first, second in ((0, 1), (1, 2), (2, 0)):
        start, end = corners[first], corners[second]
        edge = end - start
        length2 = np.einsum("...i,...i", edge, edge)
        t = np.clip(np.einsum("...i,...i", points - start, edge) / np.maximum(length2, 1e-30), 0.0, 1.0)
        on_edge = start + t[..., None] * edge
        distance = np.linalg.norm(points - on_edge, axis=-1)
        better = ~inside & (distance < best_distance)
        bary = np.zeros(best_bary.shape)
        bary[..., first] = 1.0 - t
        bary[..., second] = t
        best_bary = np.where(better[..., None], bary, best_bary)
        best_point = np.where(better[..., None], on_edge, best_point)
        best_distance = np.where(better, distance, best_distance)
    return best_point, best_bary


class SurfaceQuery:
    """Closest points on (a subset of) a triangle mesh, answered with cKDTree candidates.

    `triangle_subset` (bool (F,) or indices) restricts the surface (e.g. upper-lip triangles
    only); results always index the full triangle array.
    """

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, triangle_subset=None):
        self.vertices = np.asarray(vertices, dtype=np.float64)
        all_triangles = np.asarray(triangles, dtype=np.int64)
        if triangle_subset is None:
            ids = np.arange(len(all_triangles))
        else:
            subset = np.asarray(triangle_subset)
            ids = np.flatnonzero(subset) if subset.dtype == bool else subset.astype(np.int64)
        if len(ids) == 0:
            raise ValueError("a SurfaceQuery needs at least one triangle")
        self.ids = ids
        self.triangles = all_triangles[ids]
        self._centroids = cKDTree(self.vertices[self.triangles].mean(axis=1))
        used = np.unique(self.triangles)
        self._used_vertices = used
        self._vertex_tree = cKDTree(self.vertices[used])
        # One-ring of every used vertex, padded with -1: local triangle indices.
        corner_vertex = self.triangles.reshape(-1)
        corner_triangle = np.repeat(np.arange(len(self.triangles)), 3)
        order = np.argsort(corner_vertex, kind="stable")
        corner_vertex, corner_triangle = corner_vertex[order], corner_triangle[order]
        starts = np.searchsorted(corner_vertex, used)
        counts = np.searchsorted(corner_vertex, used, side="right") - starts
        width = int(min(MAX_RING, counts.max()))
        ring = np.full((len(used), width), -1, dtype=np.int64)
        for slot in range(width):
            has = counts > slot
            ring[has, slot] = corner_triangle[starts[has] + slot]
        self._ring = ring

    def query(self, points: np.ndarray) -> SurfacePoints:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        n = len(points)
        out_triangle = np.zeros(n, dtype=np.int64)
        out_bary = np.zeros((n, 3))
        out_point = np.zeros((n, 3))
        out_distance = np.zeros(n)
        k = int(min(CENTROID_CANDIDATES, len(self.triangles)))
        for start in range(0, n, QUERY_CHUNK):
            chunk = points[start : start + QUERY_CHUNK]
            _, near_centroids = self._centroids.query(chunk, k=k)
            near_centroids = near_centroids.reshape(len(chunk), -1)
            _, near_vertex = self._vertex_tree.query(chunk)
            candidates = np.concatenate([near_centroids, self._ring[near_vertex]], axis=1)
            valid = candidates >= 0
            candidates = np.where(valid, candidates, near_centroids[:, :1])
            corners = self.vertices[self.triangles[candidates]]  # (P, C, 3, 3)
            closest, bary = closest_on_triangles(
                chunk[:, None, :], corners[:, :, 0], corners[:, :, 1], corners[:, :, 2]
            )
            distance = np.linalg.norm(closest - chunk[:, None, :], axis=-1)
            best = np.argmin(distance, axis=1)
            rows = np.arange(len(chunk))
            stop = start + len(chunk)
            out_triangle[start:stop] = self.ids[candidates[rows, best]]
            out_bary[start:stop] = bary[rows, best]
            out_point[start:stop] = closest[rows, best]
            out_distance[start:stop] = distance[rows, best]
        return SurfacePoints(out_triangle, out_bary, out_point, out_distance)


def interpolate(values: np.ndarray, triangles: np.ndarray, triangle: np.ndarray, barycentric: np.ndarray) -> np.ndarray:
    """Per-vertex `values` (V, ...) at surface points given by (triangle, barycentric)."""
    corner_values = np.asarray(values)[np.asarray(triangles)[triangle]]  # (P, 3, ...)
    weights = barycentric.reshape(barycentric.shape + (1,) * (corner_values.ndim - 2))
    return (corner_values * weights).sum(axis=1)


def barycentric_matrix(n_vertices: int, triangles: np.ndarray, triangle: np.ndarray,
                       barycentric: np.ndarray, row_weights: np.ndarray | None = None) -> sparse.csr_matrix:
    """(P, V) sparse matrix M with M @ values = the values at the surface points (times
    `row_weights` per point when given)."""
    corners = np.asarray(triangles, dtype=np.int64)[triangle]  # (P, 3)
    weights = np.asarray(barycentric, dtype=np.float64)
    if row_weights is not None:
        weights = weights * np.asarray(row_weights, dtype=np.float64)[:, None]
    rows = np.repeat(np.arange(len(corners)), 3)
    return sparse.csr_matrix((weights.reshape(-1), (rows, corners.reshape(-1))), shape=(len(corners), n_vertices))
