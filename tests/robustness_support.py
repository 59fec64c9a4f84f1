"""Shared helpers of the tests/test_robustness_*.py files: real audio files, a registered add-on
scene with the template head, and a snapshot of everything an error must leave untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile

from textalker_blender.blender import catalog

needs_assets = pytest.mark.skipif(
    not (catalog.weights_path().is_file() and (catalog.ASSETS_DIR / "template_head.npz").is_file()),
    reason="bundled weights or template head not built",
)


def speech(seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> np.ndarray:
    """`seconds` of the bundled sample speech at `rate`, (samples,) or (samples, channels)."""
    import soxr

    samples, source_rate = soundfile.read(str(catalog.SAMPLE_SPEECH_PATH), dtype="float32")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    samples = samples[int(0.3 * source_rate):]
    if rate != source_rate:
        samples = soxr.resample(samples, source_rate, rate).astype(np.float32)
    needed = int(round(seconds * rate))
    samples = np.resize(samples, needed)  # repeats the speech when longer than the sample
    if channels == 1:
        return samples
    # Different gains per channel so a wrong channel axis would show.
    return np.stack([samples * (0.5 + 0.1 * c) for c in range(channels)], axis=1)


def write_audio(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1,
                subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), speech(seconds, rate, channels), rate, subtype=subtype)
    return path


def encode_mp3(wav: Path, mp3: Path) -> Path:
    """MP3 through libsndfile's own MPEG encoder (soundfile wheels bundle libsndfile >= 1.1, which
    has one), so the MP3 cases run on any machine; skips only with an older libsndfile."""
    if "MP3" not in soundfile.available_formats():
        pytest.skip(f"libsndfile {soundfile.__libsndfile_version__} cannot write MP3")
    samples, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    soundfile.write(str(mp3), samples, rate, format="MP3")
    return mp3


# --------------------------------------------------------------------------------------------
# Blender scenes (imported lazily: the core-only tests need no bpy)


def registered_scene(fps: int = 30):
    from blender_support import registered_scene as shared

    return shared(fps)


def unregister_addon() -> None:
    from blender_support import unregister_addon as shared

    shared()


def template_head():
    from blender_support import bpy

    assert bpy.ops.textalker.add_template_head() == {"FINISHED"}
    return bpy.context.active_object


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def snapshot() -> dict:
    """Names of every datablock kind the add-on touches, shape key contents, F-curves, node links,
    modifiers and custom properties: equal snapshots mean an untouched scene."""
    from blender_support import bpy

    def key_blocks(obj):
        blocks = []
        for block in obj.data.shape_keys.key_blocks:
            co = np.empty(len(block.data) * 3, np.float32)
            block.data.foreach_get("co", co)
            blocks.append((block.name, round(block.value, 6), _digest(co)))
        return tuple(blocks)

    def fcurves(action):
        curves = []
        for layer in action.layers:
            for strip in layer.strips:
                for bag in strip.channelbags:
                    for curve in bag.fcurves:
                        points = np.empty(len(curve.keyframe_points) * 2, np.float32)
                        curve.keyframe_points.foreach_get("co", points)
                        curves.append((curve.data_path, _digest(points)))
        return tuple(sorted(curves))

    def vertices(mesh):
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        return _digest(co)

    return {
        "objects": sorted(
            (o.name, o.type, tuple(sorted(o.keys())), tuple(m.name for m in o.modifiers))
            for o in bpy.data.objects
        ),
        "meshes": sorted((m.name, vertices(m), tuple(x.name if x else "" for x in m.materials))
                         for m in bpy.data.meshes),
        "materials": sorted(m.name for m in bpy.data.materials),
        "images": sorted(i.name for i in bpy.data.images),
        "actions": sorted((a.name, fcurves(a)) for a in bpy.data.actions),
        "node_groups": sorted(g.name for g in bpy.data.node_groups),
        "scenes": sorted(s.name for s in bpy.data.scenes),
        "shape_keys": sorted(
            (o.name, key_blocks(o)) for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys
        ),
        "links": sorted(
            (m.name, link.from_node.name, link.to_node.name)
            for m in bpy.data.materials if m.node_tree for link in m.node_tree.links
        ),
    }


def files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
