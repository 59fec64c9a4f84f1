#!/usr/bin/env python3
"""Look at a TexTalker result: contact sheet of frames, and how much the wrinkle maps change them.

    .venv/bin/python tools/render_check.py out/demo/textalker_demo.blend --frames 40 80 120 \\
        [--object "TexTalker Head"] [--resolution 256] [--samples 8] [--out out/demo/check]

For each frame it renders the scene twice with Cycles: as saved, and with the "TexTalker
Wrinkles" node groups muted (albedo passes through unchanged). It writes
`sheet.png` (top row: with wrinkles, bottom row: without, one column per frame) and
`wrinkle_difference_x10.png` (|with - without| x 10), and prints per frame the mean and maximum
absolute difference (0-1 display values): zero means the wrinkle maps do not reach the render.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("blend", type=Path)
    parser.add_argument("--frames", type=int, nargs="+", required=True)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="default: beside the .blend, check/")
    return parser.parse_args(argv)


def _render(bpy, scene, frame, path):
    import numpy as np

    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    width, height = image.size
    pixels = np.array(image.pixels[:], dtype=np.float32).reshape(height, width, 4)[::-1, :, :3]
    bpy.data.images.remove(image)
    return pixels  # top row first


def _wrinkle_group_nodes(bpy):
    from textalker_blender.blender import writers

    return [
        node
        for material in bpy.data.materials
        if material.node_tree is not None
        for node in material.node_tree.nodes
        if node.get(writers.TAG)
    ]


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="textalker-check-"))
    import bpy
    import numpy as np
    from PIL import Image

    out = (args.out or args.blend.parent / "check").resolve()
    out.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()))
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = args.samples
    scene.cycles.seed = 0  # the same noise in both renders: the difference is the wrinkles only
    scene.render.resolution_x = scene.render.resolution_y = args.resolution
    scene.render.image_settings.file_format = "PNG"
    groups = _wrinkle_group_nodes(bpy)
    if not groups:
        raise SystemExit(f"{args.blend} has no TexTalker wrinkle node group")

    with_rows, without_rows, report = [], [], []
    for frame in args.frames:
        for node in groups:
            node.mute = False
        with_wrinkles = _render(bpy, scene, frame, out / f"with_{frame:04d}.png")
        for node in groups:
            node.mute = True
        without = _render(bpy, scene, frame, out / f"without_{frame:04d}.png")
        difference = np.abs(with_wrinkles - without)
        report.append({
            "frame": frame,
            "mean_abs_difference": round(float(difference.mean()), 5),
            "max_abs_difference": round(float(difference.max()), 5),
        })
        with_rows.append(with_wrinkles)
        without_rows.append(without)

    def to_image(rows):
        return (np.clip(np.concatenate(rows, axis=1), 0, 1) * 255).round().astype(np.uint8)

    sheet = np.concatenate([to_image(with_rows), to_image(without_rows)], axis=0)
    Image.fromarray(sheet).save(out / "sheet.png")
    amplified = [np.clip(10 * np.abs(a - b), 0, 1) for a, b in zip(with_rows, without_rows)]
    Image.fromarray(to_image(amplified)).save(out / "wrinkle_difference_x10.png")
    summary = {"blend": str(args.blend), "out": str(out), "frames": report}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
