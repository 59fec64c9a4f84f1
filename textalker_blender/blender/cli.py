"""Command line for batch use: the same code path as the Generate button (`api.generate`).

With Blender (the add-on installed as an extension; arguments after `--`)::

    blender -b scene.blend --python-expr \\
      "import sys, bl_ext.user_default.textalker.blender.cli as c; sys.exit(c.main())" \\
      -- --object Head --audio speech.wav --steps 6 --seed 1

With bpy as a Python module, from a checkout::

    python -m textalker_blender.blender.cli --blend scene.blend --object Head --audio speech.wav

`--output-mode arkit` writes 52 ARKit curves (on the template head or the mesh's own ARKit-named
shape keys, docs/ARKIT.md) instead of one shape key per frame; `--arkit-export FILE.csv|.json`
also writes the weights. `--blink-rate R` sets the blinks per minute of weights with blink input
(default: the speaking style's own rate; 0: no blinks), `--brow-rate R` the brow emphases per
minute of speech of weights with brow input, the same way, and `--lip-seal MM` how far apart the
lips may be and still be pressed shut where the weights' closure detector hears a /p b m/ or a
pause (default 12 mm, scaled by the detector's probability; 0: off; core/lip_seal.py). Without `--audio` the scene's sound strip
is used (`--strip NAME` when there are several). The .blend is saved in place (`--save
OTHER.blend` to save elsewhere, `--no-save` not to save), and a JSON summary is printed.

Batch rules (issue #17), for farms that run many of these at once:

- Every argument is checked before the model runs (the numbers by the rules of
  `core.arguments`, the audio, the object, the styles, the output, export and save folders:
  writable, with room), so a late failure does not throw away a generation.
- A run that will save a .blend holds an exclusive lock on it (`core.run_files.exclusive_lock`)
  from before it reads the file until the save is done. A second run on the same file refuses at
  once with one line, instead of both saving it (which once left only `x.blend1`). Under the lock
  the file is read again from disk (in Blender itself too: edits a script made before main() are
  not kept), so a run never saves over the output of one that finished while it was starting.
- If the save fails after all, the new output is removed from the scene and its EXR files are
  deleted: nothing is left that no .blend references.
- SIGINT and SIGTERM stop the run like a cancel: the EXR files written so far are deleted (they
  are written to a hidden `.partial` folder, renamed when complete; one left by a SIGKILL is
  swept by the next run on the object), and one line is printed.
- Exit status: 0 done, 1 a bad argument, user error or failure (one line `TexTalker: ...` on
  stderr), 130 interrupted (SIGINT), 143 terminated (SIGTERM). In Blender, pass it on:
  `--python-expr "import sys, ...cli as c; sys.exit(c.main())"`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import bpy

from ..core import resources, run_files
from ..core.arguments import ArgumentError, number_from_text
from ..core.errors import TexTalkerError
from ..core.options import GenerationOptions
from ..core.lip_seal import DEFAULT_SEAL_MM, MAX_SEAL_MM
from . import api

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run stops like a cancel (files cleaned up)."""


class UsageError(TexTalkerError):
    """A command-line argument argparse refused (reported as one line, like every other error)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def parse_args(argv=None):
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = _Parser(prog="textalker", description="TexTalker batch generation")
    parser.add_argument("--blend", help="open this .blend first (bpy module mode)")
    parser.add_argument("--object", help="mesh object name (default: the active object)")
    parser.add_argument("--audio", help="speech file (default: the scene's sound strip)")
    parser.add_argument("--strip", help="sound strip name, when the sequencer has several")
    parser.add_argument("--speaking-style", default="0", help="style id or key")
    parser.add_argument("--wrinkle-style", default=None,
                        help="style id or key (default: the weights' most lined style)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    # Read as numbers; checked once, by the rules of the API and the core CLI, when the options
    # are made right after parsing (core/options.py). The upper bound of --steps comes from the
    # weights and is checked with the other inputs before the model runs.
    parser.add_argument("--steps", type=number_from_text, default=None,
                        help="sampler steps (default: the model's)")
    parser.add_argument("--seed", type=number_from_text, default=0)
    parser.add_argument(
        "--blink-rate", type=number_from_text, default=None, metavar="R",
        help="blinks per minute, 0-120 (default: the speaking style's own rate; 0: no blinks)",
    )
    parser.add_argument(
        "--brow-rate", type=number_from_text, default=None, metavar="R",
        help="brow emphases per minute of speech, 0-120 (default: the speaking style's own rate; 0: none)",
    )
    parser.add_argument(
        "--lip-seal", type=number_from_text, default=DEFAULT_SEAL_MM, metavar="MM",
        help=f"lip seal: lips closer than MM millimetres times the closure probability are pressed shut, "
             f"0-{MAX_SEAL_MM:g} (default {DEFAULT_SEAL_MM:g}; 0: off)",
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
    saving = parser.add_mutually_exclusive_group()
    saving.add_argument("--save", help="save the result to this .blend (default: in place)")
    saving.add_argument("--no-save", action="store_true", help="do not save the .blend")
    args = parser.parse_args(argv)
    try:  # the scene's frame rate replaces the default fps once the .blend is open
        args.options = GenerationOptions(_style(args.speaking_style), _style(args.wrinkle_style),
                                         seed=args.seed, steps=args.steps, blink_rate=args.blink_rate,
                                         brow_rate=args.brow_rate, lip_seal_mm=args.lip_seal)
    except ArgumentError as error:
        parser.error(str(error))
    return args


def _style(value: str | None) -> int | str | None:
    if value is None:
        return None
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


def _save_target(args) -> Path | None:
    """The .blend this run will write, or None (--no-save, or an unsaved scene without --save)."""
    if args.no_save:
        return None
    if args.save:
        return Path(os.path.abspath(os.path.expanduser(args.save)))
    source = args.blend or bpy.data.filepath
    return Path(os.path.abspath(os.path.expanduser(source))) if source else None


def _check_files(args, target: Path | None) -> None:
    """The command line's paths, before anything is opened or generated."""
    if args.blend and not os.path.isfile(os.path.expanduser(args.blend)):
        raise TexTalkerError(f"No .blend file at {args.blend}")
    if args.audio and not os.path.isfile(os.path.expanduser(args.audio)):
        raise TexTalkerError(f"Audio file not found: {args.audio}")
    if target is not None:
        if target.suffix.lower() != ".blend":
            raise TexTalkerError(f"--save must name a .blend file, not {target}")
        if target.is_dir():
            raise TexTalkerError(f"--save names a folder, not a .blend file: {target}")
        resources.check_writable(target.parent, what=f"the saved file {target.name}",
                                 hint="--save OTHER.blend in a writable folder, or --no-save")


def _check_save_space(target: Path, summary: api.GenerationSummary, obj) -> None:
    """Room for the .blend with its new keys (a bound: every key's coordinates, plus what is
    there now), checked before the save so a full disk never leaves half a file."""
    key_bytes = summary.n_frames * len(obj.data.vertices) * 3 * 4 if summary.output_mode == api.SHAPE_KEYS else 0
    current = target.stat().st_size if target.exists() else 0
    resources.check_disk_space(target.parent, key_bytes + current, what=f"saving {target.name}")


def _open_scene(args, target: Path | None) -> None:
    """Opens --blend, or (in Blender itself) re-reads the file Blender opened when this run saves
    over it: a run that finished while this one was starting may have saved it since, and saving
    the copy read before would drop that run's output. (Edits a script made before calling main()
    are therefore not kept: make them after, or call `api.generate` from the script instead.
    `bpy.data.is_dirty` cannot tell: it is already set right after loading.)"""
    if args.blend:
        bpy.ops.wm.open_mainfile(filepath=os.path.abspath(os.path.expanduser(args.blend)))
    elif target is not None and bpy.data.filepath and Path(os.path.abspath(bpy.data.filepath)) == target:
        bpy.ops.wm.open_mainfile(filepath=bpy.data.filepath)


def _save(args, target: Path, summary: api.GenerationSummary, obj) -> None:
    """Saves the .blend; on failure removes the new output from the scene (and its files)."""
    try:
        _check_save_space(target, summary, obj)
        if args.save:
            bpy.ops.wm.save_as_mainfile(filepath=str(target))
        else:
            bpy.ops.wm.save_mainfile()
    except BaseException as error:
        api.remove_all_output(obj, delete_files=True)
        if isinstance(error, TexTalkerError):
            raise TexTalkerError(f"{error} The generated output was removed again.") from None
        if isinstance(error, (OSError, RuntimeError)):
            raise TexTalkerError(
                f"Could not save {target}: {_first_line(error)}. The generated output was removed "
                "again; nothing was changed"
            ) from None
        raise


PATH_ARGUMENTS = ("blend", "audio", "output_folder", "arkit_export", "save")


def _expand_paths(args) -> None:
    """`~` in path arguments means the home folder, also when the shell did not expand it (a
    quoted path, a farm job's argument list); it used to be taken literally (a folder named '~')."""
    for name in PATH_ARGUMENTS:
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.expanduser(value))


def run(args) -> api.GenerationSummary:
    _expand_paths(args)
    target = _save_target(args)
    _check_files(args, target)
    lock = run_files.exclusive_lock(target, f"saving {target.name}") if target else contextlib.nullcontext()
    with lock:
        _open_scene(args, target)
        scene = bpy.context.scene
        obj = bpy.data.objects.get(args.object) if args.object else bpy.context.view_layer.objects.active
        if obj is None:
            raise TexTalkerError(f"No object named '{args.object}'" if args.object else "No active object")
        request = api.prepare(
            obj,
            _audio(scene, args),
            options=args.options,
            device=args.device,
            scene=scene,
            output_folder=args.output_folder,
            output_mode=args.output_mode.replace("-", "_").upper(),
            arkit_export=args.arkit_export,
        )
        summary = api.run(request)
        if target is not None:
            _save(args, target, summary, bpy.data.objects[summary.object_name])
    return summary


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the block runs, SIGTERM raises `Terminated` in the main thread (a farm's scheduler
    stopping the job) and SIGINT raises KeyboardInterrupt (Ctrl+C), whatever handlers the host
    (Blender, a caller's script) had installed, so the run cleans up the same way for both; the
    previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminate),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_ERROR
    except UsageError as error:
        print(f"TexTalker: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        with _sigterm_as_interrupt():
            summary = run(args)
    except Terminated:
        print("TexTalker: terminated (SIGTERM); the partial output was removed and nothing was saved",
              file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("TexTalker: interrupted; the partial output was removed and nothing was saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TexTalkerError as error:
        print(f"TexTalker: {error}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, RuntimeError) as error:  # Blender's file operators, the file system
        print(f"TexTalker: {_first_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    for warning in summary.warnings:  # the run went ahead; the audio may not give what was meant
        print(f"TexTalker warning: {warning}", file=sys.stderr)
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
        "warnings": summary.warnings,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
