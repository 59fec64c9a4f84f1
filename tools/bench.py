#!/usr/bin/env python3
"""Performance benchmark (issue #7): real-time factor per stage, memory, sampler steps, FLOPs.

    .venv/bin/python tools/bench.py                      # 10/30/60 s, writes docs/PERFORMANCE.md
    .venv/bin/python tools/bench.py --long               # also a 10-minute file (core only, ~6 min)
    .venv/bin/python tools/bench.py --durations 1 --repeats 1 --steps-list 1 2 --out /tmp/p.md

Every measurement runs the real code paths, each clip length in its own worker process (so the
peak resident memory, `ru_maxrss`, belongs to that length alone):

- end to end through the add-on (bpy as a module): a fresh scene, the template head added by the
  add-on's own `add_template_head`, then `api.prepare` -> `api.run` (the streamed path the Generate
  button, `api.generate` and the CLI run: chunks generated, EXRs written as they come, then
  `apply`), the audio a
  WAV of the bundled sample speech repeated to the length. The model stages come from the
  Pipeline's own `GenerationResult.timings`; the Blender stages from timing wrappers around
  `writers.write_shape_keys` and `writers.write_exr_sequence` (the EXR sequence) as `run` calls them.
- sampler steps: `Pipeline.generate` on a one-window clip at several step counts; the diffusion
  time is linear in the steps (one denoiser call per step and window), so the full 500-step loop
  (and FaceDiffuser's 1000-step DDPM) is extrapolated from a least-squares line unless
  `--full-loop` runs it.
- physical limit: multiply-adds of the denoiser, the audio encoder and both VQ decoders counted
  with `torch.utils.flop_counter.FlopCounterMode` per second of audio, against the measured
  throughput of a large float32 matmul on this machine.
- profile: cProfile of one core generation, the top functions by own time.

Each stage is the median of `--repeats` runs with min and max. Results go to `--out`
(docs/PERFORMANCE.md) and, with `--json`, the raw numbers to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

from tools.evaluation.cli import add_device_arguments, add_report_arguments  # noqa: E402
from tools.bench_support import current_rss_bytes, keep_blender_user_files_out_of_home, peak_rss_bytes, speech_file, speech_samples  # noqa: E402

SCENE_FPS = 30
# Stages in the order a generation runs them: (key, label).
MODEL_STAGES = [
    ("audio", "audio load"),
    ("features", "audio features"),
    ("diffusion", "diffusion sampling"),
    ("vq_decode", "VQ decoding (motion + wrinkle maps)"),
    ("uv_sampling", "UV sampling (maps -> vertex offsets)"),
    ("resample", "resampling to the scene fps"),
]
ADDON_STAGES = [
    ("part_motion", "template parts (teeth, tongue, eyes)"),
    ("exr_writing", "EXR sequence writing"),
    ("shape_keys_head", "shape-key writing (head)"),
    ("shape_keys_parts", "shape-key writing (parts)"),
    ("apply_other", "rest (material, cleanup, chunk hand-over)"),
]
FULL_LOOP_STEPS = 500  # the schedule's training steps: the "no shortcut" DDIM/ancestral loop
FACEDIFFUSER_STEPS = 1000


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _gpu_peak_bytes() -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


# --------------------------------------------------------------------------------------------
# Workers (each runs in its own process and prints one JSON line)


def _timed(record: dict, key: str, function):
    """`function` wrapped so each call adds its wall seconds to record[key]."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record[key] = record.get(key, 0.0) + time.perf_counter() - started

    return wrapper


def worker_end_to_end(seconds: float, repeats: int, threads: int, steps: int | None, device: str) -> dict:
    """prepare -> compute -> apply on the template head, `repeats` times."""
    keep_blender_user_files_out_of_home("textalker-bench-bres-")
    _set_threads(threads)
    import bpy

    from textalker_blender.blender import operators, writers
    from textalker_blender.core import part_motion
    from textalker_blender.core.pipeline import Pipeline

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = SCENE_FPS, 1.0
    head = operators.add_template_head(bpy.context)
    rss_scene = current_rss_bytes()

    started = time.perf_counter()
    Pipeline.load(device=device)
    load_cold = time.perf_counter() - started
    started = time.perf_counter()
    Pipeline.load(device=device)
    load_cached = time.perf_counter() - started

    # Timing wrappers around the functions apply/compute call (module attributes, so the real
    # code path runs them); the head is the first write_shape_keys call of each apply.
    record: dict = {}
    original_keys = writers.write_shape_keys
    head_name = head.name

    def write_shape_keys(obj, *args, **kwargs):
        key = "shape_keys_head" if obj.name == head_name else "shape_keys_parts"
        return _timed(record, key, original_keys)(obj, *args, **kwargs)

    originals = (writers.write_shape_keys, writers.write_exr_sequence, part_motion.part_offsets)
    writers.write_shape_keys = write_shape_keys
    writers.write_exr_sequence = _timed(record, "exr_writing", writers.write_exr_sequence)
    part_motion.part_offsets = _timed(record, "part_motion", part_motion.part_offsets)
    try:
        runs = _end_to_end_runs(head, scene, seconds, repeats, steps, device, record)
    finally:
        writers.write_shape_keys, writers.write_exr_sequence, part_motion.part_offsets = originals
    return {
        "kind": "end_to_end",
        "seconds": seconds,
        "threads": threads,
        "trained": bool(Pipeline.load(device=device).trained),
        "load_cold_s": load_cold,
        "load_cached_s": load_cached,
        "rss_scene_bytes": rss_scene,
        "rss_before_bytes": runs[0].pop("rss_before_bytes"),
        "peak_rss_bytes": peak_rss_bytes(),
        "gpu_peak_bytes": _gpu_peak_bytes(),
        "runs": runs,
    }


def _end_to_end_runs(head, scene, seconds, repeats, steps, device, record) -> list[dict]:
    from textalker_blender.blender import api, writers
    from textalker_blender.core.pipeline import Pipeline

    runs = []
    with tempfile.TemporaryDirectory(prefix="textalker-bench-") as folder:
        audio = speech_file(seconds, Path(folder))
        rss_before = current_rss_bytes()
        for _ in range(repeats):
            api.remove_all_output(head, delete_files=True)  # every run starts from a clean head
            record.clear()
            started = time.perf_counter()
            request = api.prepare(
                head, str(audio), device=device, steps=steps, scene=scene,
                output_folder=str(Path(folder) / "out"),
            )
            prepared = time.perf_counter()
            summary = api.run(request)  # streamed: EXRs are written while the model runs
            finished = time.perf_counter()
            sequence = [p for p in Path(request.sequence_folder).iterdir() if p.is_file()]
            detail_bytes = sum(p.stat().st_size for p in sequence if p.name == writers.CREASE_DETAIL_NAME)
            stages = {key: float(summary.timings.get(key, 0.0)) for key, _ in MODEL_STAGES}
            stages.update({key: float(record.get(key, 0.0)) for key, _ in ADDON_STAGES[:4]})
            stages["apply_other"] = max(0.0, (finished - prepared) - sum(stages.values()))
            stages["prepare"] = prepared - started
            runs.append(
                {
                    "stages": stages,
                    "compute_s": float(summary.compute_s),  # model + parts + EXR writing
                    "apply_s": float(summary.apply_s),
                    "total_s": finished - started,
                    "frames": int(summary.n_frames),
                    "exr_files": int(summary.exr_files),
                    # what the run leaves on disk: the wrinkle frames, and the style's detail map once
                    "frame_bytes": sum(p.stat().st_size for p in sequence) - detail_bytes,
                    "detail_bytes": detail_bytes,
                    "duration_s": float(summary.n_frames) / float(summary.fps),
                    "steps": int(request.options.steps or Pipeline.load(device=device).config.sampling_steps),
                    "device": device,
                }
            )
        api.remove_all_output(head, delete_files=True)
    runs[0]["rss_before_bytes"] = rss_before
    return runs


def worker_core(seconds: float, repeats: int, threads: int, steps: int | None, device: str) -> dict:
    """`Pipeline.generate` only (no Blender): the 10-minute measurement."""
    _set_threads(threads)
    from textalker_blender.core.pipeline import Pipeline

    pipeline = Pipeline.load(device=device)
    runs = []
    with tempfile.TemporaryDirectory(prefix="textalker-bench-") as folder:
        audio = speech_file(seconds, Path(folder))
        rss_before = current_rss_bytes()
        for _ in range(repeats):
            started = time.perf_counter()
            result = pipeline.generate(str(audio), fps=SCENE_FPS, steps=steps)
            total = time.perf_counter() - started
            runs.append(
                {
                    "stages": dict(result.timings),
                    "total_s": total,
                    "frames": int(result.n_frames),
                    "duration_s": float(result.duration_s),
                    "steps": int(result.steps),
                    "result_bytes": int(result.offsets.nbytes + result.wrinkle_maps.nbytes),
                }
            )
            del result
    return {
        "kind": "core",
        "seconds": seconds,
        "threads": threads,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "gpu_peak_bytes": _gpu_peak_bytes(),
        "runs": runs,
    }


def worker_model(
    seconds: float, repeats: int, threads: int, steps_list: list[int], device: str, full_loop: bool,
    step_clip_seconds: float | None = None,
) -> dict:
    """Sampler steps, FLOPs, matmul throughput and a cProfile of one generation."""
    _set_threads(threads)
    import cProfile
    import io
    import pstats

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from textalker_blender.core.config import MODEL_FPS
    from textalker_blender.core.sampling import plan_windows
    from textalker_blender.core.pipeline import Pipeline

    pipeline = Pipeline.load(device=device)
    config = pipeline.config
    window_s = config.window_frames / MODEL_FPS  # one sliding window: no prefix, no seams
    if step_clip_seconds:
        window_s = min(window_s, step_clip_seconds)
    clip = speech_samples(window_s)
    pipeline.generate(clip, fps=SCENE_FPS, steps=1)  # warm-up: oneDNN picks kernels per shape

    # Sampler steps on one window.
    steps_runs = {}
    measured_steps = sorted(set(steps_list) | ({FULL_LOOP_STEPS} if full_loop else set()))
    for steps in measured_steps:
        steps_runs[steps] = [
            pipeline.generate(clip, fps=SCENE_FPS, steps=steps).timings["diffusion"]
            for _ in range(repeats if steps < 100 else 1)
        ]
    xs = np.array(list(steps_runs), dtype=float)
    ys = np.array([statistics.median(v) for v in steps_runs.values()])
    if len(xs) >= 2:
        slope, intercept = np.polyfit(xs, ys, 1)
    else:
        slope, intercept = float(ys[0] / xs[0]), 0.0

    # FLOPs per second of audio (FlopCounterMode counts 2 per multiply-add).
    audio = speech_samples(seconds)
    with FlopCounterMode(display=False) as counter:
        result = pipeline.generate(audio, fps=SCENE_FPS)
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    n_model_frames = int(round(result.duration_s * MODEL_FPS))
    windows = plan_windows(n_model_frames, config.window_frames, config.prefix_frames)
    with torch.inference_mode():
        flops_frame = {}
        for name, vq in (("motion_decoder", pipeline.model.motion_vq), ("wrinkle_decoder", pipeline.model.wrinkle_vq)):
            with FlopCounterMode(display=False) as frame_counter:
                vq.decode(torch.zeros(1, vq.config.latent_dim, device=pipeline.device))
            flops_frame[name] = frame_counter.get_total_flops()
    per_audio_second = {
        "denoiser": by_module.get("LatentDenoiser", 0) / result.duration_s,
        "motion_decoder": flops_frame["motion_decoder"] * MODEL_FPS,
        "wrinkle_decoder": flops_frame["wrinkle_decoder"] * MODEL_FPS,
    }
    per_audio_second["audio_encoder_and_other"] = max(
        0.0, counter.get_total_flops() / result.duration_s - sum(per_audio_second.values())
    )

    # Matmul throughput: the best of several large float32 products.
    size = 2048
    a = torch.randn(size, size, device=pipeline.device)
    b = torch.randn(size, size, device=pipeline.device)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        torch.mm(a, b)
        if pipeline.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    matmul_flops = 2 * size**3 / best

    # Profile of one default generation (core only).
    profiler = cProfile.Profile()
    profiler.enable()
    pipeline.generate(audio, fps=SCENE_FPS)
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    top = []
    for (filename, line, function), (_, calls, own, cumulative, _) in sorted(
        stats.stats.items(), key=lambda item: item[1][2], reverse=True
    )[:12]:
        where = f"{Path(filename).name}:{line}" if line else filename
        top.append({"function": f"{function} ({where})", "calls": calls, "own_s": own, "cumulative_s": cumulative})
    return {
        "kind": "model",
        "threads": threads,
        "default_steps": int(config.sampling_steps),
        "window_frames": int(config.window_frames),
        "prefix_frames": int(config.prefix_frames),
        "window_s": window_s,
        "steps_diffusion_s": {str(k): v for k, v in steps_runs.items()},
        "steps_fit": {"slope_s_per_step": float(slope), "intercept_s": float(intercept)},
        "flops_clip_s": float(result.duration_s),
        "windows_in_clip": len(windows),
        "flops_per_audio_second": per_audio_second,
        "flops_per_decoded_frame": flops_frame,
        "matmul_size": size,
        "matmul_flops_per_s": matmul_flops,
        "profile_top": top,
        "profile_clip_s": float(result.duration_s),
    }


def worker_baselines(seconds: float, repeats: int, threads: int, baselines_dir: Path) -> dict:
    """Inference cost of the evaluation's learned baselines (tools/evaluation/baselines.py) on the
    same clip: `Baseline.predict` (audio features + generator; motion only, no texture)."""
    _set_threads(threads)
    from tools.evaluation.baselines import LEARNED_BASELINES, load_baseline
    from textalker_blender.core.audio import load_audio

    samples, rate = speech_samples(seconds)
    audio = load_audio((samples, rate))
    n_frames = int(round(seconds * SCENE_FPS))
    rows = []
    for name, cls in LEARNED_BASELINES.items():
        try:
            baseline = load_baseline(name, baselines_dir / cls.slug)
        except FileNotFoundError as exc:
            rows.append({"name": name, "missing": str(exc)})
            continue
        subject = baseline.subjects[0]  # a training subject: the conditioning costs the same for any
        baseline.predict(audio[: rate // 2], SCENE_FPS // 2, subject)  # warm-up (kernel choice)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            baseline.predict(audio, n_frames, subject)
            times.append(time.perf_counter() - started)
        rows.append({"name": name, "note": baseline.inference_note, "predict_s": times})
    return {"kind": "baselines", "seconds": seconds, "threads": threads, "rows": rows}


# --------------------------------------------------------------------------------------------
# Orchestration


def run_worker(arguments: list[str], threads: int) -> dict:
    # The worker runs as a module of this checkout (cwd first on its path), whatever the venv's .pth names.
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    completed = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--worker", *arguments, "--threads", str(threads)],
        capture_output=True, text=True, env=environment, cwd=str(REPO_ROOT),
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"bench worker {arguments} failed:\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1])


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise_end_to_end(worker: dict) -> dict:
    runs = worker["runs"]
    stages = {key: spread([run["stages"][key] for run in runs]) for key in runs[0]["stages"]}
    total = spread([run["total_s"] for run in runs])
    seconds = runs[0]["duration_s"]
    return {
        "seconds": seconds,
        "frames": runs[0]["frames"],
        "steps": runs[0]["steps"],
        "device": runs[0]["device"],
        "repeats": len(runs),
        "stages": stages,
        "compute": spread([run["compute_s"] for run in runs]),
        "apply": spread([run["apply_s"] for run in runs]),
        "total": total,
        "rtf": spread([seconds / run["total_s"] for run in runs]),
        "frame_mb_per_audio_min": runs[0]["frame_bytes"] / 1e6 * 60.0 / seconds,
        "detail_mb": runs[0]["detail_bytes"] / 1e6,
        "load_cold_s": worker["load_cold_s"],
        "load_cached_s": worker["load_cached_s"],
        "rss_before_bytes": worker["rss_before_bytes"],
        "peak_rss_bytes": worker["peak_rss_bytes"],
        "gpu_peak_bytes": worker["gpu_peak_bytes"],
    }


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line (a single point: through the origin)."""
    import numpy as np

    if len(xs) < 2:
        return ys[0] / xs[0], 0.0
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(slope), float(intercept)


def hardware() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
    }


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1024**3:.2f} GiB"


def fmt(cell: dict, digits: int = 3) -> str:
    return f"{cell['median']:.{digits}f} ({cell['min']:.{digits}f}-{cell['max']:.{digits}f})"


def render_markdown(report: dict) -> str:
    hw = report["hardware"]
    e2e = report["end_to_end"]
    model = report["model"]
    lines = [
        "# Performance",
        "",
        "Written by `tools/bench.py` (issue #7); do not edit by hand, re-run the tool:",
        "",
        f"    {report['command']}",
        "",
        f"Measured {report['date']} on {hw['cpu']}, {hw['cores']} cores, "
        f"{hw['memory_bytes'] / 1024**3:.0f} GiB RAM, {hw['platform']}; Python {hw['python']}, "
        f"torch {hw['torch']}, {report['threads']} torch threads; load average at the start "
        f"{', '.join(f'{x:.2f}' for x in hw['load_average'])}. "
        + (f"GPU: {hw['cuda']}." if hw["cuda"] else "No GPU: CPU only (see *GPU* below)."),
        "",
        "Every cell is the median of the runs, (min-max) in brackets. Audio: the bundled 7.5 s sample "
        f"speech repeated to the length; scene at {SCENE_FPS} fps; bundled model "
        f"(`{report['weights']}`, trained: {report['trained']}) with its default "
        f"{model['default_steps']} sampler steps; seed 0.",
        "",
        "## End to end (button to finished shape keys and EXR sequence)",
        "",
        "Through the add-on's own code path with bpy as a module: template head from "
        "`add_template_head`, then `api.prepare` -> `api.run` (the streamed path the Generate "
        "button runs, minus the modal timer: chunks generated, EXRs written as they come, then "
        "`apply`). Model stages from the Pipeline's timings; Blender stages timed around "
        "`writers.write_shape_keys` and `writers.write_exr_sequence` as `run` calls them; "
        "*compute* includes the EXR writing (it happens while the chunks come). Seconds per stage:",
        "",
    ]
    header = "| stage | " + " | ".join(f"{row['seconds']:.0f} s audio ({row['frames']} frames, {row['repeats']} runs)" for row in e2e) + " |"
    lines += [header, "|---|" + "---|" * len(e2e)]
    for key, label in [("prepare", "prepare (checks, UV match)")] + MODEL_STAGES + ADDON_STAGES:
        lines.append(f"| {label} | " + " | ".join(fmt(row["stages"][key]) for row in e2e) + " |")
    lines.append("| **compute** (model, parts, EXR writing as chunks come) | " + " | ".join(fmt(row["compute"]) for row in e2e) + " |")
    lines.append("| **apply** (shape keys, material) | " + " | ".join(fmt(row["apply"]) for row in e2e) + " |")
    lines.append("| **total** | " + " | ".join(fmt(row["total"]) for row in e2e) + " |")
    lines.append("| **real-time factor** (audio s / wall s) | " + " | ".join(fmt(row["rtf"], 2) for row in e2e) + " |")
    lines.append("| peak RSS of the process | " + " | ".join(gib(row["peak_rss_bytes"]) for row in e2e) + " |")
    lines.append("| RSS before the runs (bpy, scene, model) | " + " | ".join(gib(row["rss_before_bytes"]) for row in e2e) + " |")
    lines.append("| GPU peak allocated | " + " | ".join(gib(row["gpu_peak_bytes"]) for row in e2e) + " |")
    lines.append("| wrinkle frames on disk, MB per minute of audio | "
                 + " | ".join(f"{row['frame_mb_per_audio_min']:.1f}" for row in e2e) + " |")
    first = e2e[0]
    lines += [
        "",
        f"Model load: {first['load_cold_s']:.2f} s the first time in a process (weights, template, "
        f"librosa warm-up), {first['load_cached_s'] * 1000:.2f} ms afterwards (`Pipeline.load` is "
        "cached per weights file and device), not included above.",
        "",
        "Disk: the wrinkle frames are half-float RGBA OpenEXR with ZIP compression (the albedo "
        "ratio needs more than 8 bits near 1, and the fold activation rides in alpha); the "
        f"row above is their size per minute of audio at {SCENE_FPS} fps. Each run also writes the "
        f"wrinkle style's 2048 px crease detail map once: {first['detail_mb']:.1f} MB.",
        "",
    ]

    # Scaling.
    scaling = report["scaling"]
    lines += [
        "## Scaling with audio length",
        "",
        f"Least-squares lines over the lengths above (wall s and peak RSS against audio s): total "
        f"wall = {scaling['wall_slope']:.3f} s per audio s + {scaling['wall_intercept']:.2f} s; "
        f"compute = {scaling['compute_slope']:.3f} s/s + {scaling['compute_intercept']:.2f} s; peak RSS = "
        f"{scaling['rss_slope'] / 1024**2:.1f} MiB per audio s + {gib(scaling['rss_intercept'])}.",
        "",
        "| audio | wall (end to end) | peak RSS | how |",
        "|---|---|---|---|",
    ]
    for row in e2e:
        lines.append(f"| {row['seconds']:.0f} s | {row['total']['median']:.1f} s | {gib(row['peak_rss_bytes'])} | measured |")
    lines.append(
        f"| 600 s | {scaling['wall_600']:.0f} s | {gib(scaling['rss_600'])} | **extrapolated** (linear fit) |"
    )
    long_run = report.get("long")
    if long_run:
        run = long_run["runs"][0]
        lines.append(
            f"| {long_run['seconds']:.0f} s | {run['total_s']:.0f} s (core `Pipeline.generate` only) | "
            f"{gib(long_run['peak_rss_bytes'])} | measured, core only (no Blender writes), "
            f"{long_run['threads']} thread(s)"
            + (", from an earlier run of the same worker (`--long-from`)" if long_run.get("reused_from") else "")
            + " |"
        )
    else:
        lines.append("| 600 s | - | - | not measured in this run (`--long` measures it, ~6 min) |")
    lines += [
        "",
        "Time is linear in the length (a fixed number of denoiser calls per sliding window, decoding "
        f"in batches of {report['decode_batch']} frames on the CPU). Memory: the rows above measure the "
        "streamed path (`api.run`: `Pipeline.generate_chunks`, EXRs written as chunks come, "
        "half-float offsets released as the shape keys are written), whose peak is bounded apart "
        "from the shape keys Blender itself holds (18,000 keys x 4,418 vertices = 0.95 GB at 10 "
        "minutes); the 600 s core row is the whole-clip `Pipeline.generate`, which keeps every "
        "frame's offsets and wrinkle map (about 141 KB per frame) until it returns. The streamed "
        "10-minute run is measured end to end by "
        "`tools/measure_long_audio.py --seconds 10 60 600` and by the 10-minute test in "
        "`tests/test_robustness_long.py` (peak RSS < 4 GiB asserted).",
        "",
    ]

    # Sampler steps.
    fit = model["steps_fit"]
    lines += [
        "## Sampler steps (diffusion stage, one window)",
        "",
        f"`Pipeline.generate` on a {model['window_s']:.1f} s clip (at most one sliding window of "
        f"{model['window_frames']} frames: one denoiser call per step). Diffusion seconds:",
        "",
        "| steps | diffusion s | how |",
        "|---|---|---|",
    ]
    for steps, values in sorted(model["steps_diffusion_s"].items(), key=lambda item: int(item[0])):
        lines.append(f"| {steps} | {fmt(spread(values))} | measured |")
    extrapolated_full = str(FULL_LOOP_STEPS) not in model["steps_diffusion_s"]
    for steps in ([FULL_LOOP_STEPS] if extrapolated_full else []) + [FACEDIFFUSER_STEPS]:
        lines.append(
            f"| {steps} | {fit['intercept_s'] + fit['slope_s_per_step'] * steps:.2f} | **extrapolated** "
            f"({fit['slope_s_per_step'] * 1000:.1f} ms per step + {fit['intercept_s'] * 1000:.1f} ms) |"
        )
    per_second_default = (fit["intercept_s"] + fit["slope_s_per_step"] * model["default_steps"]) / model["window_s"]
    per_second_full = (fit["intercept_s"] + fit["slope_s_per_step"] * FULL_LOOP_STEPS) / model["window_s"]
    lines += [
        "",
        f"Per second of audio (window stride {model['window_frames'] - model['prefix_frames']} frames, "
        f"so long clips cost slightly more per second than one window): the default "
        f"{model['default_steps']} steps cost about {per_second_default:.3f} s of diffusion per audio "
        f"second; the full {FULL_LOOP_STEPS}-step loop about {per_second_full:.1f} s "
        f"({per_second_full / max(per_second_default, 1e-9):.0f}x); FaceDiffuser's "
        f"{FACEDIFFUSER_STEPS}-step DDPM about twice that again.",
        "",
    ]
    lines += baseline_cost_lines(report)

    # FLOPs.
    flops = model["flops_per_audio_second"]
    total_flops = sum(flops.values())
    throughput = model["matmul_flops_per_s"]
    lines += [
        "## Physical limit (FLOPs against matmul throughput)",
        "",
        f"FLOPs counted with `torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add; "
        f"matmuls and convolutions only) over a {model['flops_clip_s']:.0f} s generation "
        f"({model['windows_in_clip']} windows x {model['default_steps']} steps) and per decoded frame "
        f"({MODEL_FPS_NOTE}). Measured throughput: float32 {model['matmul_size']}x{model['matmul_size']} "
        f"matmul, best of 5, {report['threads']} threads: **{throughput / 1e9:.1f} GFLOP/s**.",
        "",
        "| part | GFLOP per audio second | seconds per audio second at matmul speed |",
        "|---|---|---|",
    ]
    for name, value in flops.items():
        lines.append(f"| {name.replace('_', ' ')} | {value / 1e9:.2f} | {value / throughput:.3f} |")
    lines.append(f"| **total** | {total_flops / 1e9:.2f} | {total_flops / throughput:.3f} |")
    measured_model = e2e[0]["compute"]["median"] / e2e[0]["seconds"]
    lines += [
        "",
        f"So the model path could at best run {throughput / total_flops:.1f}x real time on this CPU "
        f"if every FLOP ran at matmul speed; measured it runs {1 / measured_model:.2f}x "
        f"({measured_model:.3f} s per audio second), i.e. at "
        f"{total_flops / throughput / measured_model * 100:.0f} % of that limit. The decoders' thin "
        "full-resolution layers (8-16 channels at 128x128) are memory-bound: GroupNorm and SiLU over "
        "large activations cost about as much as their convolutions (see the profile).",
        "",
    ]

    # Profile.
    lines += [
        f"## Profile (cProfile, one core generation of {model['profile_clip_s']:.0f} s audio)",
        "",
        "| function | calls | own s | cumulative s |",
        "|---|---|---|---|",
    ]
    for row in model["profile_top"]:
        lines.append(f"| `{row['function']}` | {row['calls']} | {row['own_s']:.3f} | {row['cumulative_s']:.3f} |")

    # Targets.
    ten = next((row for row in e2e if abs(row["seconds"] - 10) < 0.5), e2e[0])
    keys_300 = ten["stages"]["shape_keys_head"]["median"] * 300 / max(ten["frames"], 1)
    rss_600 = long_run["peak_rss_bytes"] if long_run else scaling["rss_600"]
    lines += [
        "",
        "## Targets",
        "",
        "| target | result | met |",
        "|---|---|---|",
        f"| 10 s of speech at 30 fps, button to finished keys + EXRs, in < 10 s (RTF >= 1) | "
        f"{ten['total']['median']:.1f} s for {ten['seconds']:.0f} s (RTF {ten['rtf']['median']:.2f}) | "
        f"{'yes' if ten['rtf']['median'] >= 1 else 'no'} |",
        f"| shape keys for 300 frames in < 1 s | {keys_300:.2f} s (head, scaled to 300 frames) | "
        f"{'yes' if keys_300 < 1 else 'no'} |",
        f"| 10-minute file with peak memory < 4 GB | {gib(rss_600)} "
        f"({'measured, core only' if long_run else 'extrapolated, end to end'}) | "
        f"{'yes' if rss_600 < 4e9 else 'no'} |",
        "| H100: model path >= 100x real time | not measured: no GPU was lent to this task | - |",
        "",
        "## What the profile changed (issue #7)",
        "",
        "- VQ decoding in batches of 8 frames instead of 32 on the CPU (`pipeline.DECODE_BATCH`): "
        "the thin 128x128 layers' activations stay in cache; 5.7 instead of 7.7-12.7 ms per frame "
        "and decoder (1 thread). 64 on a GPU (`GPU_DECODE_BATCH`, not measured: no GPU).",
        "- Nearest-code snapping of the sampled latents in chunks of 16384 cells "
        "(`VectorQuantizer.nearest_indices`): the unchunked (cells x 512) distance matrix was the "
        "largest allocation of a long clip (several GB for 10 minutes); now a constant ~100 MB.",
        "- No copy of the decoded arrays when the scene runs at the model's 30 fps (the resampling "
        "copied 2.7 GB for 10 minutes), and the template parts' face-unit fit in chunks of 512 "
        "frames through one pseudo-inverse (`part_motion.fit_unit_weights`; was a float64 copy of "
        "all head offsets, ~1.9 GB for 10 minutes; same weights, about twice as fast).",
        "- Already in place before: `torch.inference_mode`, channels-last decoders, the cached "
        "`Pipeline.load`, vectorised UV sampling (no Python loop over vertices or texels), "
        "`foreach_set` shape keys and keyframes.",
        "- Not possible: batching the diffusion windows (each window's prefix is the previous "
        "window's output).",
        "",
        "## GPU",
        "",
        "No CUDA device was available to this benchmark run"
        + (" (the project's device tool was not lent to this task)." if not hw["cuda"] else ".")
        + " On a CUDA machine run `tools/bench.py --device cuda`; the GPU peak allocated memory row "
        "is then filled from `torch.cuda.max_memory_allocated`.",
        "",
        "## Gaps",
        "",
    ]
    lines += report["gaps"]
    return "\n".join(lines) + "\n"


MODEL_FPS_NOTE = "decoders run at the model's 30 frames per audio second"


def baseline_cost_lines(report: dict) -> list[str]:
    """The learned baselines' inference cost beside TexTalker's model path on the same clip."""
    baselines = report.get("baselines")
    if not baselines:
        return ["Baselines' inference cost: not measured in this run (`--baselines-dir` not given).", ""]
    seconds = baselines["seconds"]
    textalker = next((row for row in report["end_to_end"] if abs(row["seconds"] - seconds) < 1e-6), None)
    lines = [
        f"### Baselines' inference cost ({seconds:g} s of speech, {baselines['threads']} thread(s), motion only)",
        "",
        "The evaluation's learned baselines (tools/evaluation/baselines.py, trained by "
        "tools/train_baselines.py), `Baseline.predict` from decoded audio to per-frame vertex offsets "
        "(they make no texture). Median (min-max) of the runs.",
        "",
        "| method | seconds | real-time factor | inference |",
        "|---|---|---|---|",
    ]
    if textalker is not None:
        model_keys = {key for key, _ in MODEL_STAGES}
        model_s = sum(cell["median"] for key, cell in textalker["stages"].items() if key in model_keys)
        lines.append(f"| TexTalker (sum of the model stages' medians; motion + wrinkle maps) | {model_s:.2f} | "
                     f"{seconds / max(model_s, 1e-9):.1f} | DDIM {report['model']['default_steps']} steps |")
    for row in baselines["rows"]:
        if "missing" in row:
            lines.append(f"| {row['name']} | — | — | not trained: {row['missing']} |")
            continue
        cell = spread(row["predict_s"])
        lines.append(f"| {row['name']} | {fmt(cell, 2)} | {seconds / max(cell['median'], 1e-9):.1f} | {row['note']} |")
    return lines + [""]


def gaps(report: dict) -> list[str]:
    """What the numbers say is missing, in words."""
    e2e = report["end_to_end"]
    ten = next((row for row in e2e if abs(row["seconds"] - 10) < 0.5), e2e[0])
    stages = {key: ten["stages"][key]["median"] for key in ten["stages"]}
    ranked = sorted(stages.items(), key=lambda item: item[1], reverse=True)[:3]
    labels = dict(MODEL_STAGES + ADDON_STAGES + [("prepare", "prepare")])
    out = [
        f"- Largest stages at {ten['seconds']:.0f} s: "
        + ", ".join(f"{labels.get(key, key)} {value:.2f} s" for key, value in ranked)
        + ".",
    ]
    if ten["rtf"]["median"] < 1:
        out.append(
            f"- Real time is not reached on this CPU ({ten['rtf']['median']:.2f}x): the gap is the "
            "model's compute (VQ decoding of 128x128 maps for every frame and the denoiser calls), not "
            "the Blender writes; the sliding windows depend on each other (each window's prefix is the "
            "previous window's output), so they cannot be batched."
        )
    out.append(
        "- The 10-minute row here is core only (whole-clip `Pipeline.generate`); the streamed "
        "add-on path at 10 minutes is measured by `tools/measure_long_audio.py`."
    )
    if not report.get("baselines"):
        out.append("- Baselines' inference cost: not measured in this run (`--baselines-dir`).")
    out.append(
        "- GPU / H100 numbers: no GPU was available to this task; half precision on the GPU is not "
        "implemented (the decoders would be the place: they are most of the FLOPs)."
    )
    return out


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per length (median, min, max)")
    parser.add_argument("--steps-list", type=int, nargs="+", default=[1, 6, 25, 50])
    parser.add_argument("--full-loop", action="store_true", help=f"run {FULL_LOOP_STEPS} steps instead of extrapolating")
    parser.add_argument("--long", action="store_true", help="also measure a 10-minute file (core only)")
    parser.add_argument("--long-seconds", type=float, default=600.0)
    parser.add_argument("--long-from", type=Path, default=None,
                        help="reuse a saved `--worker core` JSON line for the long file instead of re-running it")
    add_device_arguments(parser, threads_default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps for the end-to-end runs (default: the model's)")
    parser.add_argument("--flops-seconds", type=float, default=10.0, help="clip length for FLOPs and the profile")
    parser.add_argument("--step-clip-seconds", type=float, default=None,
                        help="clip for the sampler-step comparison (default: one sliding window)")
    add_report_arguments(parser, REPO_ROOT / "docs" / "PERFORMANCE.md")
    parser.add_argument("--baselines-dir", type=Path, default=None,
                        help="trained baselines (tools/train_baselines.py --out): time their inference too")
    parser.add_argument("--worker", choices=["end_to_end", "core", "model", "baselines"], help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "baselines":
            result = worker_baselines(args.seconds, args.repeats, args.threads, args.baselines_dir)
        elif args.worker == "end_to_end":
            result = worker_end_to_end(args.seconds, args.repeats, args.threads, args.steps, args.device)
        elif args.worker == "core":
            result = worker_core(args.seconds, args.repeats, args.threads, args.steps, args.device)
        else:
            result = worker_model(
                args.seconds, args.repeats, args.threads, args.steps_list, args.device, args.full_loop,
                args.step_clip_seconds,
            )
        print(json.dumps(result))
        return result

    command = "    .venv/bin/python tools/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report: dict = {"command": command.strip(), "threads": args.threads, "hardware": hardware()}
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.perf_counter()
    common = ["--repeats", str(args.repeats), "--device", args.device]
    if args.steps:
        common += ["--steps", str(args.steps)]
    e2e = []
    for seconds in sorted(args.durations):
        print(f"bench: end to end, {seconds:g} s x {args.repeats} ...", file=sys.stderr, flush=True)
        worker = run_worker(["end_to_end", "--seconds", str(seconds), *common], args.threads)
        e2e.append(summarise_end_to_end(worker))
        print(f"bench:   total {e2e[-1]['total']['median']:.2f} s, RTF {e2e[-1]['rtf']['median']:.2f}",
              file=sys.stderr, flush=True)
    report["end_to_end"] = e2e
    print("bench: sampler steps, FLOPs, profile ...", file=sys.stderr, flush=True)
    report["model"] = run_worker(
        ["model", "--seconds", str(args.flops_seconds), "--repeats", str(args.repeats), "--device", args.device,
         "--steps-list", *map(str, args.steps_list), *(["--full-loop"] if args.full_loop else []),
         *(["--step-clip-seconds", str(args.step_clip_seconds)] if args.step_clip_seconds else [])],
        args.threads,
    )
    if args.baselines_dir:
        clip = min(args.durations, key=lambda seconds: abs(seconds - 10.0))
        print(f"bench: baselines' inference, {clip:g} s ...", file=sys.stderr, flush=True)
        report["baselines"] = run_worker(["baselines", "--seconds", str(clip), "--repeats", str(args.repeats),
                                          "--baselines-dir", str(args.baselines_dir)], args.threads)
    if args.long_from:
        report["long"] = json.loads(args.long_from.read_text().strip().splitlines()[-1])
        report["long"]["reused_from"] = str(args.long_from)
    elif args.long:
        print(f"bench: long file, {args.long_seconds:g} s (core only) ...", file=sys.stderr, flush=True)
        report["long"] = run_worker(
            ["core", "--seconds", str(args.long_seconds), "--repeats", "1", "--device", args.device], args.threads
        )
    xs = [row["seconds"] for row in e2e]
    wall_slope, wall_intercept = linear_fit(xs, [row["total"]["median"] for row in e2e])
    compute_slope, compute_intercept = linear_fit(xs, [row["compute"]["median"] for row in e2e])
    rss_slope, rss_intercept = linear_fit(xs, [row["peak_rss_bytes"] for row in e2e])
    report["scaling"] = {
        "wall_slope": wall_slope, "wall_intercept": wall_intercept,
        "compute_slope": compute_slope, "compute_intercept": compute_intercept,
        "rss_slope": rss_slope, "rss_intercept": rss_intercept,
        "wall_600": wall_intercept + wall_slope * 600, "rss_600": rss_intercept + rss_slope * 600,
    }
    from textalker_blender.core.pipeline import DECODE_BATCH, DEFAULT_WEIGHTS

    report["decode_batch"] = DECODE_BATCH

    report["weights"] = DEFAULT_WEIGHTS.relative_to(REPO_ROOT).as_posix()
    report["trained"] = "yes" if worker["trained"] else "no (untrained placeholder weights)"
    report["gaps"] = gaps(report)
    report["bench_wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(f"bench: wrote {args.out} in {report['bench_wall_s']:.0f} s", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
