#!/usr/bin/env python3
"""Pictures of the talking, creasing face: a labelled contact sheet and a short MP4 with sound.

    .venv/bin/python tools/render_showcase.py --audio textalker_blender/assets/sample_speech.wav \\
        --out docs/ [--speaking-style KEY] [--wrinkle-style KEY] [--resolution 320] [--samples 16]
        [--sheet-frames 10] [--clip-seconds 3.5] [--clip-resolution 224] [--fps 24] [--work DIR]

Everything goes through the add-on as an artist would use it (the scene of tools/demo.py: add-on
registered in bpy-module mode, Add Template Head, the speech as a sound strip, Generate Talking
Avatar with the bundled model), then:

1. a three-quarter view with a light raking down the forehead (tools/showcase_common.py), Cycles
   on the CPU with few samples and OpenImageDenoise when this bpy has it;
2. `showcase_contact_sheet.png`: `--sheet-frames` frames spread over the speech, each labelled
   with its frame, time, mouth opening (mm) and crease depth (%), read back from the shape keys
   and EXR wrinkle maps the add-on wrote; under them a close-up of the crease regions this
   result darkens most (forehead and eyes, or cheeks and mouth) at their calmest and most creased
   frame, what the wrinkle maps add to the latter (render with
   minus without them, x 10) and the wrinkle maps of those two frames;
3. `showcase.mp4`: the first `--clip-seconds` of the animation, H.264 in MP4 with the sound strip
   as AAC, encoded by Blender's own FFmpeg output (skipped with a message when this bpy was
   built without FFmpeg).
Scratch files (.blend, EXRs, single frames) go to --work (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

SHEET_NAME = "showcase_contact_sheet.png"
CLIP_NAME = "showcase.mp4"


def parse_args(argv=None):
    from tools.showcase_common import add_scene_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the contact sheet and MP4")
    add_scene_arguments(parser, samples=16)
    parser.add_argument("--resolution", type=int, default=320, help="contact-sheet frame size (square)")
    parser.add_argument("--sheet-frames", type=int, default=10)
    parser.add_argument("--sheet-columns", type=int, default=5)
    parser.add_argument("--closeup-width", type=int, default=0, help="close-up width (0: 1.3 x --resolution)")
    parser.add_argument("--clip-seconds", type=float, default=3.5, help="0: no clip; beyond the speech: all")
    parser.add_argument("--clip-resolution", type=int, default=224)
    parser.add_argument("--clip-samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=0, help="sampler steps (0: model default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-sheet-bytes", type=int, default=1_000_000,
                        help="above this the sheet is saved as a 256-colour PNG")
    parser.add_argument("--transcript", default=None,
                        help="text the audio was synthesised from with flite, for phoneme labels "
                             "(default for the bundled sample: read from tools/make_sample_audio.sh)")
    parser.add_argument("--flite-voice", default="slt", help="flite voice of --transcript")
    parser.add_argument("--audio-offset", type=float, default=0.0,
                        help="silence before the flite speech in the audio, seconds")
    return parser.parse_args(argv)


def sheet_frame_indices(n_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over 0..n_frames-1: the centres of equal segments."""
    count = max(1, min(count, n_frames))
    return sorted({int(i) for i in np.floor((np.arange(count) + 0.5) * n_frames / count)})


def sample_transcript(script: Path = REPO_ROOT / "tools" / "make_sample_audio.sh"):
    """(text, flite voice, leading silence s) of the bundled sample voice, read from the script that
    made it (tools/make_sample_audio.sh); None when the script does not say."""
    try:
        source = script.read_text()
    except OSError:
        return None
    text = re.search(r'^text="(.*?)"', source, re.S | re.M)
    voice = re.search(r"flite -voice (\S+)", source)
    pad = re.search(r"\bpad ([0-9.]+)", source)
    if not (text and voice and pad):
        return None
    return text.group(1).replace("\\\n", ""), voice.group(1), float(pad.group(1))


def flite_phonemes(text: str, voice: str, offset_s: float, audio_s: float | None = None,
                   tolerance_s: float = 0.1) -> list[tuple[str, float, float]]:
    """[(ARPAbet label, start s, end s)] of `text` spoken by flite's `voice` (its -psdur timings,
    aligned to the waveform it makes), shifted by `offset_s`. When `audio_s` is given, the
    synthesised length + 2 x offset must match it within `tolerance_s` (else []): the timings
    only describe audio that flite made from this text."""
    import shutil
    import subprocess

    import soundfile
    from tools.synthetic_textalk4d.speech import parse_psdur

    if shutil.which("flite") is None:
        return []
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        done = subprocess.run(["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(wav)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0 or not wav.is_file():
            return []
        length = soundfile.info(str(wav)).duration
    if audio_s is not None and abs(length + 2 * offset_s - audio_s) > tolerance_s:
        return []
    phonemes, start = [], 0.0
    for label, end in parse_psdur(done.stdout):
        phonemes.append((label, start + offset_s, end + offset_s))
        start = end
    return phonemes


def phoneme_at(phonemes: list[tuple[str, float, float]], seconds: float) -> str:
    """The label spoken at `seconds` ("pau" and gaps: "-")."""
    for label, start, end in phonemes:
        if start <= seconds < end:
            return "-" if label == "pau" else label
    return "-"


def _stamp_frame_and_time(render, enabled: bool) -> None:
    """Blender's burn-in: the frame number and the time code only (nothing about the machine)."""
    for name in ("date", "render_time", "camera", "lens", "scene", "filename", "memory", "hostname",
                 "marker", "frame_range", "sequencer_strip", "note"):
        setattr(render, f"use_stamp_{name}", False)
    render.use_stamp_frame = render.use_stamp_time = True
    render.use_stamp_labels = False
    render.stamp_font_size = 11
    render.use_stamp = enabled


def encode_clip(bpy, scene, first: int, last: int, resolution: int, samples: int, work: Path,
                destination: Path) -> dict:
    """Frames first..last as H.264 MP4 with the sequencer's sound as AAC (Blender's FFmpeg)."""
    settings = scene.render.image_settings
    settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    ffmpeg = scene.render.ffmpeg
    ffmpeg.format = "MPEG4"
    ffmpeg.codec = "H264"
    ffmpeg.constant_rate_factor = "MEDIUM"
    ffmpeg.ffmpeg_preset = "GOOD"
    ffmpeg.gopsize = 12
    ffmpeg.audio_codec = "AAC"
    ffmpeg.audio_channels = "MONO"
    ffmpeg.audio_mixrate = 48000
    ffmpeg.audio_bitrate = 96
    saved = (scene.frame_start, scene.frame_end, scene.render.resolution_x, scene.cycles.samples)
    scene.frame_start, scene.frame_end = first, last
    _stamp_frame_and_time(scene.render, True)
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.cycles.samples = samples
    scene.render.filepath = str(work / "clip_")
    movie = Path(scene.render.frame_path(frame=first))
    started = time.perf_counter()
    try:
        bpy.ops.render.render(animation=True)
    finally:
        scene.frame_start, scene.frame_end = saved[0], saved[1]
        scene.render.resolution_x = scene.render.resolution_y = saved[2]
        scene.cycles.samples = saved[3]
        settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        _stamp_frame_and_time(scene.render, False)
    if not movie.is_file():
        raise RuntimeError(f"Blender did not write the movie {movie}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(movie, destination)
    return {"mp4": str(destination), "frames": last - first + 1, "size": [resolution, resolution],
            "bytes": destination.stat().st_size, "render_s": round(time.perf_counter() - started, 1)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    from tools.showcase_common import (CLOSEUP_GROUPS, add_closeup_camera, closeup_group_of, compose_rows, generate_scene, labelled_tile, map_picture,
                                 read_generated_offsets, read_generated_wrinkle_maps, region_crop,
                                 render_array, render_wrinkle_contribution, save_png, showcase_look,
                                 strongest_region, wrinkle_region_maps)
    from tools.showcase_common import crease_depth
    from tools.style_swap import MouthLandmarks, lip_aperture_mm

    from textalker_blender.blender import catalog
    from textalker_blender.core.template import load_template

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="textalker-showcase-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    audio = (args.audio or catalog.SAMPLE_SPEECH_PATH).resolve()

    bpy, scene, head, demo_summary = generate_scene(
        work, audio, fps=args.fps, resolution=args.resolution, samples=args.samples, steps=args.steps,
        seed=args.seed, speaking_style=args.speaking_style, wrinkle_style=args.wrinkle_style,
        device=args.device)
    timings = {"generate_s": demo_summary["timings"]["generate_s"]}
    settings = scene.textalker
    speaking, wrinkle = settings.speaking_style, settings.wrinkle_style
    showcase_look(bpy, scene, head, resolution=args.resolution, samples=args.samples)
    first, last = (int(f) for f in demo_summary["frame_range"])
    fps = demo_summary["fps"]

    # What the add-on wrote, read back: the numbers in the labels describe the rendered scene.
    template = load_template()
    offsets = read_generated_offsets(head)
    ratio_maps = read_generated_wrinkle_maps(bpy, head)
    regions = wrinkle_region_maps(ratio_maps.shape[1], template)
    aperture = lip_aperture_mm(offsets, MouthLandmarks.from_template(template))
    depth = crease_depth(ratio_maps, regions["all"])
    # The close-ups frame the crease regions this result darkens most (forehead and eyes, or
    # cheeks and mouth): a style that never creases the forehead shows its creases elsewhere.
    group = closeup_group_of(strongest_region([ratio_maps], regions))
    place = CLOSEUP_GROUPS[group][1]
    group_depth = crease_depth(ratio_maps, regions[group])

    transcript = (args.transcript, args.flite_voice, args.audio_offset) if args.transcript else None
    if transcript is None and audio == catalog.SAMPLE_SPEECH_PATH.resolve():
        transcript = sample_transcript()
    phonemes = []
    if transcript is not None:
        import soundfile

        phonemes = flite_phonemes(*transcript, audio_s=soundfile.info(str(audio)).duration)
        if not phonemes:
            print("phoneme labels skipped: flite is missing or its timings do not match the audio")

    step = time.perf_counter()
    tiles = []
    indices = sheet_frame_indices(len(offsets), args.sheet_frames)
    for index in indices:
        frame = first + index
        picture = render_array(bpy, scene, frame, work / f"sheet_{frame:04d}.png")
        # Frame i covers [i, i + 1) / fps (the dataset's convention): the phoneme at its centre.
        spoken = f"  /{phoneme_at(phonemes, (index + 0.5) / fps)}/" if phonemes else ""
        tiles.append(labelled_tile(picture, [
            f"frame {frame}  {index / fps:.2f} s{spoken}",
            f"mouth {aperture[index]:+.1f} mm  crease {100 * depth[index]:.1f} %",
        ]))
    timings["sheet_render_s"] = time.perf_counter() - step

    # Close-ups of those regions: their calmest and most creased frame,
    # and what the wrinkle maps add to the latter (with minus without them, x 10).
    step = time.perf_counter()
    calm, creased = int(np.argmin(group_depth)), int(np.argmax(group_depth))
    closeup_width = args.closeup_width or int(round(1.3 * args.resolution))
    closeup_height = max(2, closeup_width // 2)
    main_camera = scene.camera
    scene.camera = add_closeup_camera(bpy, scene, head, aspect=closeup_width / closeup_height, group=group)
    scene.render.resolution_x, scene.render.resolution_y = closeup_width, closeup_height
    closeups = []
    for label, index in (("calmest", calm), ("most creased", creased)):
        frame = first + index
        picture = render_array(bpy, scene, frame, work / f"closeup_{frame:04d}.png")
        closeups.append(labelled_tile(picture, [
            f"{place}, {label}: frame {frame} ({index / fps:.2f} s)",
            f"crease there {100 * group_depth[index]:.1f} %",
        ]))
    contribution = render_wrinkle_contribution(bpy, scene, first + creased, work)
    closeups.append(labelled_tile(contribution, [
        f"what the wrinkle maps add at frame {first + creased}",
        "|with - without| x 10",
    ]))
    scene.camera = main_camera
    scene.render.resolution_x = scene.render.resolution_y = args.resolution
    # The wrinkle maps of the calm and creased frames, cropped to the same regions.
    crop = region_crop(regions[group])
    map_tiles = [labelled_tile(map_picture(ratio_maps[index], crop, closeup_height), [f"map, {label}", "1-(1-r)x4"])
                 for label, index in (("calm", calm), ("creased", creased))]
    timings["closeup_render_s"] = time.perf_counter() - step

    columns = max(1, args.sheet_columns)
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    rows.append(closeups + map_tiles)
    style_names = {s.key: s.name for s in catalog.read_style_names()}
    title = (f"TexTalker for Blender: template head, {audio.name}, {fps:g} fps - speaking: "
             f"{style_names.get(speaking, speaking)}; wrinkles: {style_names.get(wrinkle, wrinkle)}")
    sheet = compose_rows(rows, title=title, font_size=13)
    sheet_file = save_png(sheet, out / SHEET_NAME, max_bytes=args.max_sheet_bytes)

    clip = None
    if args.clip_seconds > 0:
        if not bpy.app.build_options.codec_ffmpeg:
            clip = {"skipped": "this bpy was built without FFmpeg (bpy.app.build_options.codec_ffmpeg)"}
            print(f"clip skipped: {clip['skipped']}")
        else:
            clip_last = min(last, first + int(round(args.clip_seconds * fps)) - 1)
            clip = encode_clip(bpy, scene, first, clip_last, args.clip_resolution, args.clip_samples, work,
                               out / CLIP_NAME)
    timings["total_s"] = time.perf_counter() - started

    summary = {
        "audio": str(audio),
        "speaking_style": speaking,
        "wrinkle_style": wrinkle,
        "fps": fps,
        "frames": len(offsets),
        "phoneme_labels": bool(phonemes),
        "frame_range": [first, last],
        "sheet": {"png": str(out / SHEET_NAME), "size": list(sheet.size), "frames": [first + i for i in indices],
                  "closeup_frames": {"calmest": first + calm, "most_creased": first + creased},
                  "closeup_regions": group, **sheet_file},
        "clip": clip,
        "lip_aperture_mm": {"min": round(float(aperture.min()), 2), "max": round(float(aperture.max()), 2),
                            "std": round(float(aperture.std()), 3)},
        "crease_depth_percent": {"mean": round(100 * float(depth.mean()), 3),
                                 "max": round(100 * float(depth.max()), 3)},
        "denoised": bool(scene.cycles.use_denoising),
        "work": str(work),
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }
    (work / "showcase_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
