"""Wrinkle-ratio maps from the surface strain of the deformed mesh, in UV space.

Per triangle, the UV parameterisation gives the neutral surface Jacobian J0 = E0 Dm^-1 and the
deformed one J = E Dm^-1 (E: edge vectors in 3D, Dm: the same edges in UV). The principal
stretches of the deformation relative to the neutral are the square roots of the eigenvalues of
G v = s^2 G0 v (G = J^T J, G0 = J0^T J0). With G0 = L L^T (Cholesky) this is the symmetric 2x2
eigenproblem of M = (J L^-T)^T (J L^-T); everything that depends only on the neutral (L, Dm) is
precomputed once per subject, so a frame costs a few multiply-adds per triangle.

Compression c = max(0, 1 - s_min) along the surface direction e = J0 L^-T w (w: the eigenvector
of s_min). Wrinkles are lines perpendicular to e: a periodic profile along e with the subject's
wavelength, depth and sharpness, masked by the subject's crease regions. The direction is kept
as the tensor c e e^T in the face's frontal plane (x, z; the face looks towards -Y), averaged
onto vertices and rasterised into UV, where each texel reads its principal axis and strength.
The profile comes from a bank of straight gratings over the subject's neutral 3D positions
(interpolated between the two nearest orientations): lines keep their spacing on the surface
whatever the UV distortion, continue across UV seams, and do not wobble with small changes of
direction. Gratings finer than the map can hold (wavelength < ~5 texels) fade to their mean, so
low-resolution maps show the darkening of the crease instead of aliasing.

ratio = 1 - depth * region * g(c) * profile, with g(c) = 0 for c <= threshold: exactly 1 where
the skin is not compressed, and on the neutral frame.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sparse

from .styles import WrinkleStyle

N_ORIENTATIONS = 16
# Shadows in skin creases are slightly reddish (light scattered under the skin): blue and green
# darken a little more than red.
CHANNEL_DARKENING = np.array([0.9, 1.0, 1.05], np.float32)
FRONTAL_AXES = (0, 2)  # x and z: the plane the face looks out of


class StrainField:
    """Per-triangle strain of deformed surfaces relative to one neutral surface."""

    def __init__(self, triangles: np.ndarray, triangle_uvs: np.ndarray, neutral: np.ndarray):
        self.triangles = np.asarray(triangles, np.int64)
        uv = np.asarray(triangle_uvs, np.float64)
        dm = np.stack([uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]], axis=-1)      # (F, 2, 2) columns
        det = dm[:, 0, 0] * dm[:, 1, 1] - dm[:, 0, 1] * dm[:, 1, 0]
        neutral = np.asarray(neutral, np.float64)
        corners = neutral[self.triangles]                                         # (F, 3, 3)
        e0 = np.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], axis=-1)
        area3d = 0.5 * np.linalg.norm(np.cross(e0[:, :, 0], e0[:, :, 1]), axis=1)
        # Degenerate triangles (zero UV or 3D area) carry no strain.
        self.valid = (np.abs(det) > 1e-12) & (area3d > 1e-14)
        safe_dm = np.where(self.valid[:, None, None], dm, np.eye(2))
        dm_inv = np.linalg.inv(safe_dm)
        j0 = e0 @ dm_inv                                                          # (F, 3, 2)
        g0 = np.swapaxes(j0, 1, 2) @ j0
        g0 = np.where(self.valid[:, None, None], g0, np.eye(2))
        chol = np.linalg.cholesky(g0)                                             # (F, 2, 2) lower
        chol_inv_t = np.swapaxes(np.linalg.inv(chol), 1, 2)
        self.q = dm_inv @ chol_inv_t                                              # E @ q = J L^-T
        self.frame0 = j0 @ chol_inv_t   # (F, 3, 2): orthonormal tangent frame of the neutral
        self.area = area3d
        uv_area = 0.5 * np.abs(det)
        self.metres_per_uv = np.sqrt(area3d / np.where(uv_area > 0, uv_area, 1.0)) * self.valid
        self._corners = tuple(self.triangles[:, i] for i in range(3))
        self._q32 = self.q.astype(np.float32)
        self._frame32 = self.frame0.astype(np.float32)

    def compression(self, vertices: np.ndarray):
        """vertices (..., V, 3) -> (compression (..., F), direction (..., F, 3) unit vectors on the
        neutral surface, stretch_min (..., F), stretch_max (..., F)); float32."""
        vertices = np.asarray(vertices, np.float32)
        t0, t1, t2 = self._corners
        p0 = vertices[..., t0, :]
        e1 = vertices[..., t1, :] - p0                                            # (..., F, 3)
        e2 = vertices[..., t2, :] - p0
        q = self._q32
        f0 = e1 * q[:, 0, 0, None] + e2 * q[:, 1, 0, None]                        # columns of E q
        f1 = e1 * q[:, 0, 1, None] + e2 * q[:, 1, 1, None]
        m11 = np.einsum("...i,...i->...", f0, f0)
        m22 = np.einsum("...i,...i->...", f1, f1)
        m12 = np.einsum("...i,...i->...", f0, f1)
        half_trace = 0.5 * (m11 + m22)
        radius = np.sqrt((0.5 * (m11 - m22)) ** 2 + m12 ** 2)
        lam = half_trace - radius
        s_min = np.sqrt(np.clip(lam, 0.0, None))
        s_max = np.sqrt(np.clip(half_trace + radius, 0.0, None))
        # Eigenvector of the smaller eigenvalue: (m12, lam - m11) or (lam - m22, m12), whichever
        # is better conditioned; mapped to 3D on the neutral surface through its tangent frame.
        a1, b1 = m12, lam - m11
        a2, b2 = lam - m22, m12
        use2 = (a2 * a2 + b2 * b2) > (a1 * a1 + b1 * b1)
        wa = np.where(use2, a2, a1)[..., None]
        wb = np.where(use2, b2, b1)[..., None]
        frame = self._frame32
        direction = frame[:, :, 0] * wa + frame[:, :, 1] * wb
        norm = np.sqrt(np.einsum("...i,...i->...", direction, direction))[..., None]
        direction = direction / np.maximum(norm, np.float32(1e-30))
        valid = self.valid
        compression = np.where(valid, np.clip(1.0 - s_min, 0.0, None), np.float32(0.0))
        return compression, direction, np.where(valid, s_min, 1.0), np.where(valid, s_max, 1.0)


def vertex_average_matrix(triangles: np.ndarray, areas: np.ndarray, n_vertices: int) -> sparse.csr_matrix:
    """(V, F) area-weighted average of triangle values onto their corners."""
    rows = np.asarray(triangles, np.int64).reshape(-1)
    cols = np.repeat(np.arange(len(triangles)), 3)
    weights = np.repeat(np.asarray(areas, np.float64), 3)
    matrix = sparse.csr_matrix((weights, (rows, cols)), shape=(n_vertices, len(triangles)))
    totals = np.asarray(matrix.sum(axis=1)).reshape(-1)
    return (sparse.diags(1.0 / np.where(totals > 0, totals, 1.0)) @ matrix).tocsr()


class WrinkleRenderer:
    """Wrinkle-ratio maps (T, H, W, 3) for one subject (its neutral, regions and style).

    Only texels inside the subject's crease regions can differ from 1, so the strain, the vertex
    averaging and the rasterisation run on the triangles, vertices and texels that feed those
    texels (sub-matrices built once), and the result is scattered into maps of ones.
    """

    def __init__(self, rasterizer, triangles, triangle_uvs, neutral: np.ndarray,
                 region_strength: np.ndarray, style: WrinkleStyle):
        self.rasterizer = rasterizer
        self.style = style
        height, width = rasterizer.height, rasterizer.width
        self.shape = (height, width)
        triangles = np.asarray(triangles, np.int64)
        n_vertices = len(neutral)
        region_map = rasterizer.rasterize(np.asarray(region_strength, np.float32)[:, None])[..., 0]
        region_map = np.clip(region_map, 0.0, 1.0) * rasterizer.mask
        self.active_texels = np.flatnonzero(region_map.reshape(-1) > 1e-4)
        self.region_values = region_map.reshape(-1)[self.active_texels].astype(np.float32)

        texel_matrix = rasterizer.matrix.tocsr()[self.active_texels]
        self.active_vertices = np.unique(texel_matrix.indices)
        self.texel_matrix = texel_matrix[:, self.active_vertices].astype(np.float32).tocsr()
        full_strain_area = _triangle_areas(neutral, triangles)
        vertex_matrix = vertex_average_matrix(triangles, full_strain_area, n_vertices)[self.active_vertices]
        self.active_triangles = np.unique(vertex_matrix.indices)
        self.vertex_matrix = vertex_matrix[:, self.active_triangles].astype(np.float32).tocsr()
        self.strain = StrainField(triangles[self.active_triangles],
                                  np.asarray(triangle_uvs)[self.active_triangles], neutral)

        positions = rasterizer.rasterize(np.asarray(neutral, np.float32)).reshape(-1, 3)[self.active_texels]
        metres_per_uv = self.vertex_matrix @ self.strain.metres_per_uv.astype(np.float32)
        self.texel_m = (self.texel_matrix @ metres_per_uv) * texel_uv_sizes(rasterizer)[self.active_texels]
        self.gratings = self._gratings(positions)                                # (K, N)

    def _gratings(self, positions: np.ndarray) -> np.ndarray:
        """(N_ORIENTATIONS, N active texels) wrinkle profiles in [0, 1] (1 = bottom of a crease)."""
        style = self.style
        wavelength = style.wavelength_mm * 1e-3
        angles = np.arange(N_ORIENTATIONS) * np.pi / N_ORIENTATIONS
        a, b = FRONTAL_AXES
        phase = (np.cos(angles)[:, None] * positions[None, :, a]
                 + np.sin(angles)[:, None] * positions[None, :, b]) / wavelength
        profile = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** style.sharpness
        mean = float(np.mean((0.5 + 0.5 * np.cos(np.linspace(0, 2 * np.pi, 1024, endpoint=False)))
                             ** style.sharpness))
        # Band limit: full contrast from 5 texels per wavelength, none below 2.5.
        texels_per_wave = wavelength / np.maximum(self.texel_m, 1e-6)
        contrast = np.clip((texels_per_wave - 2.5) / 2.5, 0.0, 1.0)[None]
        return (mean + contrast * (profile - mean)).astype(np.float32)

    def texel_compression(self, vertices: np.ndarray):
        """vertices (T, V, 3) -> (strength (T, N), frontal angle (T, N)) at the active texels."""
        compression, direction, _, _ = self.strain.compression(vertices)
        a, b = FRONTAL_AXES
        da, db = direction[..., a], direction[..., b]
        planar = np.maximum(da * da + db * db, np.float32(1e-24))
        weight = compression / planar
        tensor = np.stack([weight * da * da, weight * da * db, weight * db * db], axis=-1)  # (T, F, 3)
        t, f = tensor.shape[0], tensor.shape[1]
        flat = np.ascontiguousarray(np.moveaxis(tensor, 1, 0).reshape(f, t * 3))
        per_vertex = self.vertex_matrix @ flat                                     # (Va, T*3)
        texels = (self.texel_matrix @ per_vertex).reshape(-1, t, 3)                # (N, T, 3)
        xx, xz, zz = texels[..., 0].T, texels[..., 1].T, texels[..., 2].T          # (T, N)
        half_trace = 0.5 * (xx + zz)
        radius = np.sqrt((0.5 * (xx - zz)) ** 2 + xz ** 2)
        return half_trace + radius, 0.5 * np.arctan2(2 * xz, xx - zz)

    def _scatter(self, values: np.ndarray, fill: float) -> np.ndarray:
        t = values.shape[0]
        out = np.full((t, self.shape[0] * self.shape[1]) + values.shape[2:], fill, np.float32)
        out[:, self.active_texels] = values
        return out.reshape((t,) + self.shape + values.shape[2:])

    def render(self, vertices: np.ndarray, return_compression: bool = False):
        """Deformed vertices (T, V, 3) or (V, 3) -> wrinkle-ratio maps (T, H, W, 3) float32
        (and, with return_compression, the compression strength map (T, H, W), 0 outside the
        crease regions)."""
        vertices = np.asarray(vertices, np.float32)
        single = vertices.ndim == 2
        if single:
            vertices = vertices[None]
        strength, angle = self.texel_compression(vertices)
        style = self.style
        ramp = np.clip((strength - style.threshold) / (style.saturation - style.threshold), 0.0, 1.0)
        ramp = ramp * ramp * (3.0 - 2.0 * ramp)                                    # smoothstep
        position = (np.mod(angle, np.pi) / np.pi) * N_ORIENTATIONS
        lower = np.floor(position).astype(np.int64) % N_ORIENTATIONS
        upper = (lower + 1) % N_ORIENTATIONS
        fraction = (position - np.floor(position)).astype(np.float32)
        columns = np.arange(len(self.active_texels))
        profile = (1 - fraction) * self.gratings[lower, columns] + fraction * self.gratings[upper, columns]
        # A crease also darkens its surroundings a little (skin bunching), not only the line.
        darkening = style.depth * self.region_values * ramp * (0.8 * profile + 0.2)
        ratio = 1.0 - darkening[..., None] * CHANNEL_DARKENING
        # Exactly 1 wherever the ramp is 0 (no compression beyond the threshold).
        ratio = np.where(ramp[..., None] > 0, ratio, np.float32(1.0)).astype(np.float32)
        ratio_maps = self._scatter(ratio, 1.0)
        if single:
            ratio_maps = ratio_maps[0]
        if not return_compression:
            return ratio_maps
        strength_maps = self._scatter(strength.astype(np.float32), 0.0)
        return ratio_maps, (strength_maps[0] if single else strength_maps)


def texel_uv_sizes(rasterizer) -> np.ndarray:
    """(H * W,) size of each texel in mesh UV units (the larger of its two sides), from the
    scale of the map-layout island the texel belongs to (islands may be scaled differently)."""
    height, width = rasterizer.height, rasterizer.width
    sizes = rasterizer.layout.source_texel_size((height, width)).max(axis=1)      # (K,)
    islands = np.asarray(rasterizer.island_map).reshape(-1)
    return np.where(islands >= 0, sizes[np.maximum(islands, 0)], sizes.max())


def _triangle_areas(vertices, triangles) -> np.ndarray:
    x = np.asarray(vertices, np.float64)
    return 0.5 * np.linalg.norm(np.cross(x[triangles[:, 1]] - x[triangles[:, 0]],
                                         x[triangles[:, 2]] - x[triangles[:, 0]]), axis=1)
