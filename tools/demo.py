#!/usr/bin/env python3
"""Main-job demo: template head + sample speech -> shape keys + wrinkle EXRs -> .blend + render.

Runs in plain Python with bpy as a module, through the add-on's own operators:

    .venv/bin/python tools/demo.py --out out/demo [--audio FILE] [--frames-to-render N]

1. new empty scene, the add-on registered, the file saved as DIR/textalker_demo.blend first (so
   the wrinkle sequence lands beside it, under DIR/textalker/, with relative paths);
2. Add Template Head (operator `textalker.add_template_head`);
3. the speech as a sound strip on the Video Sequencer (frame 1), or as the panel's audio file
   where this Blender cannot load sounds (the bpy 4.2 module is built without Audaspace) or
   `--audio-source file` asks for it;
4. Generate Talking Avatar (operator `textalker.generate`, synchronous in background mode):
   the bundled Pipeline (untrained weights until training lands) -> one shape key per frame and a
   half-float EXR wrinkle sequence multiplied into the skin albedo;
5. camera and lights framing the face, Cycles CPU (fast settings), .blend saved again;
6. N frames around the middle of the speech rendered to DIR/render_####.png (#### = frame);
7. a summary printed and written to DIR/summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--audio", type=Path, default=None, help="speech file (default: bundled sample)")
    parser.add_argument("--frames-to-render", type=int, default=1, help="frames to render (0: none)")
    parser.add_argument("--fps", type=float, default=30.0, help="scene frame rate (e.g. 24, 29.97)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    parser.add_argument("--device", default="AUTO", choices=["AUTO", "CUDA", "CPU"])
    parser.add_argument("--steps", type=int, default=0, help="sampler steps (0: model default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speaking-style", default=None, help="style key (default: the panel's, the first)")
    parser.add_argument("--wrinkle-style", default=None,
                        help="style key (default: the panel's, the weights' most lined style)")
    parser.add_argument("--audio-source", default="auto", choices=["auto", "strip", "file"],
                        help="sound strip on the sequencer, or the panel's file field (auto: a strip "
                             "where this Blender can load sounds)")
    return parser.parse_args(argv)


def _set_fps(scene, fps: float) -> None:
    """Blender stores fps as an integer over a base: 29.97 = 30 / 1.001."""
    rounded = round(fps)
    scene.render.fps = int(rounded)
    scene.render.fps_base = rounded / fps


def face_centre_and_height(head):
    """World-space centre of the template face's bounding box and its height (metres)."""
    from mathutils import Vector

    from textalker_blender.core.template import load_template

    template = load_template()
    face = template.vertices[template.face_mask]
    low, high = face.min(axis=0), face.max(axis=0)
    return head.matrix_world @ Vector(((low + high) / 2).tolist()), float(high[2] - low[2])


def aim_camera(camera, target, distance: float, azimuth_deg: float, elevation_deg: float) -> None:
    """Puts `camera` `distance` metres from `target`, looking at it, from the given direction:
    azimuth 0 is straight in front of the face (it looks towards -Y), negative is the face's right."""
    from mathutils import Vector

    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = Vector((math.sin(azimuth) * math.cos(elevation), -math.cos(azimuth) * math.cos(elevation),
                        math.sin(elevation)))
    camera.location = target + distance * direction
    camera.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()


def add_area_light(bpy, scene, name, energy, size, location, target, colour=(1.0, 1.0, 1.0)):
    """An area light at `location` pointing at `target`, linked to the scene."""
    data = bpy.data.lights.new(name, "AREA")
    data.energy = energy
    data.size = size
    data.color = colour
    light = bpy.data.objects.new(name, data)
    light.location = location
    light.rotation_euler = (target - light.location).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(light)
    return light


def _frame_the_face(bpy, scene, head, resolution: int) -> None:
    """Camera in front of the face (it looks towards -Y), a key, a fill and a rim light."""
    from mathutils import Vector

    centre, height = face_centre_and_height(head)
    camera_data = bpy.data.cameras.new("Camera")
    camera_data.lens = 85.0
    camera_data.sensor_width = 36.0
    distance = 1.1 * height * camera_data.lens / camera_data.sensor_width
    camera = bpy.data.objects.new("Camera", camera_data)
    # A little from the face's right and above: lips and creases read better than head-on.
    aim_camera(camera, centre, distance, azimuth_deg=-15.0, elevation_deg=5.0)
    scene.collection.objects.link(camera)
    scene.camera = camera

    def area_light(name, energy, size, offset, colour=(1.0, 1.0, 1.0)):
        add_area_light(bpy, scene, name, energy, size, centre + Vector(offset), centre, colour)

    area_light("Key", 60.0, 0.6, (-0.6, -0.9, 0.5))
    area_light("Fill", 20.0, 1.0, (0.8, -0.7, 0.1), (0.9, 0.95, 1.0))
    area_light("Rim", 30.0, 0.5, (0.3, 0.8, 0.6))
    from textalker_blender.blender import compat

    world = compat.new_world("World")
    background = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    background.inputs["Color"].default_value = (0.05, 0.05, 0.06, 1.0)
    scene.world = world

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.cycles.max_bounces = 4
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "AgX"


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="textalker-demo-"))
    timings = {}
    started = time.perf_counter()

    import bpy

    import textalker_blender
    from textalker_blender.blender import api, catalog, compat, writers

    timings["import_s"] = time.perf_counter() - started
    audio = (args.audio or catalog.SAMPLE_SPEECH_PATH).resolve()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if not hasattr(bpy.types.Scene, "textalker"):  # already registered when run from the tests
        textalker_blender.register()
    scene = bpy.context.scene
    _set_fps(scene, args.fps)
    blend_path = out / "textalker_demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend_path))  # EXRs go to DIR/textalker/ (relative)

    step = time.perf_counter()
    assert bpy.ops.textalker.add_template_head() == {"FINISHED"}
    head = bpy.context.active_object
    timings["add_head_s"] = time.perf_counter() - step

    audio_source = args.audio_source
    if audio_source == "auto":
        audio_source = "strip" if compat.has_sound_support() else "file"
    settings = scene.textalker
    if audio_source == "strip":
        strip = compat.new_sound_strip(scene, "Speech", str(audio), 1, 1)
        settings.audio_source = "STRIP"
        settings.sound_strip = strip.name
        first = int(round(compat.strip_content_start(strip)))
    else:
        settings.audio_source = "FILE"
        settings.audio_file = str(audio)
        first = scene.frame_start  # a file's keys start on the scene's first frame
    settings.target = head
    # Unless asked for, the panel's defaults: what an artist gets without choosing.
    if args.speaking_style:
        settings.speaking_style = args.speaking_style
    if args.wrinkle_style:
        settings.wrinkle_style = args.wrinkle_style
    settings.device = args.device
    settings.steps = args.steps
    settings.seed = args.seed

    step = time.perf_counter()
    if bpy.ops.textalker.generate() != {"FINISHED"}:
        raise SystemExit(f"generation failed: {bpy.context.window_manager.textalker_job.last_message}")
    timings["generate_s"] = time.perf_counter() - step
    keys = writers.generated_key_names(head)
    folder = writers.output_folder_of(head)
    exr_files = sorted(folder.glob("wrinkle_*.exr"))
    scene.frame_start = first
    scene.frame_end = first + len(keys) - 1

    _frame_the_face(bpy, scene, head, args.resolution)
    scene.cycles.samples = args.samples
    step = time.perf_counter()
    bpy.ops.wm.save_mainfile()
    timings["save_s"] = time.perf_counter() - step

    renders = []
    n_render = max(0, min(args.frames_to_render, len(keys)))
    if n_render:
        middle = first + len(keys) // 2
        spread = max(1, len(keys) // (2 * n_render))
        frames = [middle + (i - (n_render - 1) / 2) * spread for i in range(n_render)]
        step = time.perf_counter()
        for frame in sorted({int(round(f)) for f in frames}):
            scene.frame_set(frame)
            path = out / f"render_{frame:04d}.png"
            scene.render.filepath = str(path)
            bpy.ops.render.render(write_still=True)
            renders.append(str(path))
        timings["render_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - started

    summary = {
        "blend": str(blend_path),
        "audio": str(audio),
        "audio_source": audio_source,
        "blender": bpy.app.version_string,
        "object": head.name,
        "vertices": len(head.data.vertices),
        "fps": api.scene_fps(scene),
        "frames": len(keys),
        "frame_range": [scene.frame_start, scene.frame_end],
        "shape_keys": len(keys),
        "exr_files": len(exr_files),
        "exr_folder": str(folder),
        "exr_image_path": next(
            i.filepath for i in bpy.data.images if i.get(writers.TAG)
        ),
        "renders": renders,
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
