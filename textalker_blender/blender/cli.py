"""Command line for batch use: the same code path as the Generate button (`api.generate`).

With Blender (the add-on installed as an extension; arguments after `--`)::

    blender -b scene.blend --python-expr \\
      "import bl_ext.user_default.textalker.blender.cli as c; c.main()" \\
      -- --object Head --audio speech.wav --steps 6 --seed 1

With bpy as a Python module, from a checkout::

    python -m textalker_blender.blender.cli --blend scene.blend --object Head --audio speech.wav

`--output-mode arkit` writes 52 ARKit curves (on the template head or the mesh's own ARKit-named
shape keys, docs/ARKIT.md) instead of one shape key per frame; `--arkit-export FILE.csv|.json`
also writes the weights. `--blink-rate R` sets the blinks per minute of weights with blink input
(default: the speaking style's own rate; 0: no blinks). Without `--audio` the scene's sound strip
is used (`--strip NAME` when there are several). The .blend is saved in place (`--save
OTHER.blend` to save elsewhere, `--no-save` not to save), and a JSON summary is printed. Exit
status 1 with the message on a user error (bad audio, wrong mesh, a blink rate outside 0-120).
"""

from __future__ import annotations

import argparse
import json
import sys

import bpy

from ..core.errors import TexTalkerError
from . import api


def parse_args(argv=None):
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(prog="textalker", description="TexTalker batch generation")
    parser.add_argument("--blend", help="open this .blend first (bpy module mode)")
    parser.add_argument("--object", help="mesh object name (default: the active object)")
    parser.add_argument("--audio", help="speech file (default: the scene's sound strip)")
    parser.add_argument("--strip", help="sound strip name, when the sequencer has several")
    parser.add_argument("--speaking-style", default="0", help="style id or key")
    parser.add_argument("--wrinkle-style", default="0", help="style id or key")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blink-rate", type=float, default=None, metavar="R",
        help="blinks per minute, 0-120 (default: the speaking style's own rate; 0: no blinks)",
    )
    parser.add_argument(
        "--output-folder", help="base folder of the wrinkle maps (default: beside the .blend)"
    )
    parser.add_argument(
        "--output-mode", default="shape-keys", choices=["shape-keys", "arkit"],
        help="per-frame shape keys, or 52 ARKit curves (template head or the mesh's ARKit keys)",
    )
    parser.add_argument(
        "--arkit-export", help="with --output-mode arkit: write the weights to this .csv or .json"
    )
    parser.add_argument("--save", help="save the result to this .blend (default: in place)")
    parser.add_argument("--no-save", action="store_true", help="do not save the .blend")
    return parser.parse_args(argv)


def _style(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _audio(scene, args):
    if args.audio:
        return args.audio
    strips = api.sound_strips(scene)
    if args.strip:
        match = [s for s in strips if s.name == args.strip]
        if not match:
            raise TexTalkerError(f"No sound strip named '{args.strip}'")
        return match[0]
    if len(strips) != 1:
        raise TexTalkerError(
            "Give --audio FILE, or --strip NAME: the scene has "
            f"{len(strips)} sound strips"
        )
    return strips[0]


def run(args) -> api.GenerationSummary:
    if args.blend:
        bpy.ops.wm.open_mainfile(filepath=args.blend)
    scene = bpy.context.scene
    obj = bpy.data.objects.get(args.object) if args.object else bpy.context.view_layer.objects.active
    if obj is None:
        raise TexTalkerError(f"No object named '{args.object}'" if args.object else "No active object")
    summary = api.generate(
        obj,
        _audio(scene, args),
        speaking_style=_style(args.speaking_style),
        wrinkle_style=_style(args.wrinkle_style),
        device=args.device,
        steps=args.steps,
        seed=args.seed,
        blink_rate=args.blink_rate,
        scene=scene,
        output_folder=args.output_folder,
        output_mode=args.output_mode.replace("-", "_").upper(),
        arkit_export=args.arkit_export,
    )
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=args.save)
    elif not args.no_save and bpy.data.filepath:
        bpy.ops.wm.save_mainfile()
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except TexTalkerError as error:
        print(f"TexTalker: {error}", file=sys.stderr)
        return 1
    print(json.dumps({
        "object": summary.object_name,
        "frames": summary.n_frames,
        "fps": summary.fps,
        "frame_start": summary.frame_start,
        "sequence_folder": str(summary.sequence_folder),
        "compute_s": round(summary.compute_s, 2),
        "apply_s": round(summary.apply_s, 2),
        "note": summary.note,
        "output_mode": summary.output_mode,
        "arkit_keys": len(summary.arkit_keys),
        "arkit_export": str(summary.arkit_export) if summary.arkit_export else None,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
