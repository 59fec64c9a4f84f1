"""Measures the peak memory of long generations against the pre-check's estimate (issues #7, #8).

    .venv/bin/python tools/measure_long_audio.py --seconds 10 60 600          # end to end
    .venv/bin/python tools/measure_long_audio.py --seconds 600 --mode core    # Pipeline only
    .venv/bin/python tools/measure_long_audio.py --minutes 10                 # same as --seconds 600

Each length runs in its own worker process (so its peak resident memory, `ru_maxrss`, belongs to
that length alone) on the bundled speech sample repeated to the length, 1 sampling step:

- `end_to_end` (default): the add-on's own path in bpy-module mode: a fresh scene, the template
  head added by `Add Template Head`, then `api.prepare` -> `api.run` (the streamed generation:
  EXR files written chunk by chunk, then the shape keys), exactly what the Generate button and
  `api.generate` do. The process includes Blender, the scene and the model.
- `core`: `Pipeline.generate_chunks` with each chunk dropped as it comes (the streamed model
  alone), or with `--whole-clip` `Pipeline.generate` (every frame in memory).

Every worker prints one JSON line; the tool prints them all and a linear fit of wall time and
peak memory against the length (`--json` also writes them to a file). Per run: the wall time,
the peak RSS of the process and the RSS before the run (after loading bpy / the model), the peak
RSS sampled (every 50 ms from /proc/self/statm) in each phase (`generate`: the model and the EXR
writing; `apply`: the shape keys) and RSS after each, the bytes kept per frame until Blender takes
them, the shape keys' size, and `core.resources.estimate_run`'s bounds. tests/test_robustness_long.py
runs the 10-minute end-to-end case and checks its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

from tools.bench_support import cpu_seconds, current_rss_bytes, keep_blender_user_files_out_of_home, peak_rss_bytes, speech_file  # noqa: E402

GIB = 1024**3


class RssSampler:
    """Samples this process's RSS in a thread and keeps the peak of each named phase; also the
    RSS when entered (`rss_before`) and the wall and CPU seconds from entering to leaving
    (`wall_s`, `cpu_s`; `started` is the entry's `time.perf_counter()`)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = current_rss_bytes()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.rss_before = current_rss_bytes()
        self._cpu_before = cpu_seconds()
        self._thread.start()
        self.started = time.perf_counter()
        return self

    def enter(self, phase: str) -> None:
        self.after[self.phase] = current_rss_bytes()
        self.phase = phase

    def __exit__(self, *exc_info) -> None:
        self.wall_s = time.perf_counter() - self.started
        self.cpu_s = cpu_seconds() - self._cpu_before
        self.enter("done")
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------
# Workers


def worker_end_to_end(seconds: float, fps: float, steps: int) -> dict:
    keep_blender_user_files_out_of_home("textalker-measure-bres-")
    import bpy

    from textalker_blender import register
    from textalker_blender.blender import api, operators, writers
    from textalker_blender.core import resources
    from textalker_blender.core.pipeline import Pipeline

    bpy.ops.wm.read_factory_settings(use_empty=True)
    register()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = int(round(fps)), int(round(fps)) / fps
    head = operators.add_template_head(bpy.context)
    Pipeline.load(device="cpu")
    phases: dict[str, float] = {}
    original_apply = api.apply

    def timed_apply(*args, **kwargs):  # the streamed run's last phase: the shape keys
        sampler.enter("apply")
        phases["generate_s"] = time.perf_counter() - sampler.started
        return original_apply(*args, **kwargs)

    with tempfile.TemporaryDirectory(prefix="textalker-measure-") as folder:
        audio = speech_file(seconds, Path(folder))
        with RssSampler() as sampler:
            sampler.enter("generate")
            request = api.prepare(head, str(audio), device="cpu", steps=steps, scene=scene,
                                  output_folder=str(Path(folder) / "out"))
            api.apply = timed_apply
            try:
                summary = api.run(request)
            finally:
                api.apply = original_apply
        phases["apply_s"] = sampler.wall_s - phases.get("generate_s", sampler.wall_s)
        n_keys = len(writers.generated_key_names(head))
        exr_files = len(list(summary.sequence_folder.glob("wrinkle_*.exr")))
        disk_bytes = sum(p.stat().st_size for p in summary.sequence_folder.glob("wrinkle_*.exr"))
        api.remove_output(head, delete_files=True)
    n_vertices = len(head.data.vertices)
    estimate = resources.estimate_run(seconds, fps, n_vertices, Pipeline.load(device="cpu").wrinkle_resolution,
                                      shape_key_vertices=n_vertices)
    return {
        "mode": "end_to_end",
        "frames": int(summary.n_frames),
        "shape_keys": n_keys,
        "exr_files": exr_files,
        "exr_disk_bytes": disk_bytes,
        "wall_s": round(sampler.wall_s, 1),
        "cpu_s": round(sampler.cpu_s, 1),
        "phase_s": {k: round(v, 1) for k, v in phases.items()},
        "rss_before_bytes": sampler.rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "phase_peak_rss_bytes": sampler.peaks,
        "phase_end_rss_bytes": sampler.after,
        "shape_key_bytes": int(summary.n_frames) * n_vertices * 3 * 4,
        "estimate_bytes": estimate.memory_bytes,
        "estimate_disk_bytes": estimate.disk_bytes,
    }


def worker_core(seconds: float, fps: float, steps: int, whole_clip: bool) -> dict:
    import numpy as np

    from textalker_blender.core import resources
    from textalker_blender.core.pipeline import Pipeline

    pipeline = Pipeline.load(device="cpu")
    with tempfile.TemporaryDirectory(prefix="textalker-measure-") as folder:
        audio = speech_file(seconds, Path(folder))
        with RssSampler() as sampler:
            sampler.enter("generate")
            if whole_clip:
                result = pipeline.generate(str(audio), fps=fps, steps=steps)
                frames, kept = result.n_frames, result.offsets.nbytes + result.wrinkle_maps.nbytes
                timings = result.timings
            else:
                stream = pipeline.generate_chunks(str(audio), fps=fps, steps=steps)
                checksum = 0.0
                with stream:
                    for chunk in stream:  # what a writer does: look at it, let it go
                        checksum += float(np.abs(chunk.offsets[:, :8]).sum())
                frames, kept, timings = stream.n_frames, 0, stream.timings
    estimate = resources.estimate_run(seconds, fps, pipeline.template.n_vertices, pipeline.wrinkle_resolution,
                                      whole_clip=whole_clip)
    return {
        "mode": "core_whole_clip" if whole_clip else "core",
        "frames": int(frames),
        "wall_s": round(sampler.wall_s, 1),
        "cpu_s": round(sampler.cpu_s, 1),
        "stage_s": {k: round(v, 1) for k, v in timings.items()},
        "rss_before_bytes": sampler.rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "phase_peak_rss_bytes": sampler.peaks,
        "result_bytes": int(kept),
        "estimate_bytes": estimate.memory_bytes,
        "estimate_disk_bytes": estimate.disk_bytes,
    }


def run_worker(seconds: float, args) -> dict:
    # The worker runs as a module of this checkout (cwd first on its path), whatever the venv's .pth names.
    command = [sys.executable, "-m", "tools.measure_long_audio", "--worker", "--seconds", str(seconds),
               "--fps", str(args.fps), "--steps", str(args.steps), "--threads", str(args.threads),
               "--mode", args.mode] + (["--whole-clip"] if args.whole_clip else [])
    environment = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=str(REPO_ROOT))
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"worker for {seconds:g} s failed:\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1])


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    return slope, mean_y - slope * mean_x


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=None)
    parser.add_argument("--minutes", type=float, default=None, help="one length in minutes")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=["end_to_end", "core"], default="end_to_end")
    parser.add_argument("--whole-clip", action="store_true", help="core mode: Pipeline.generate, all in memory")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON lines here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = args.seconds or [60.0 * (args.minutes if args.minutes is not None else 10.0)]

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        if args.mode == "end_to_end":
            report = worker_end_to_end(lengths[0], args.fps, args.steps)
        else:
            report = worker_core(lengths[0], args.fps, args.steps, args.whole_clip)
        report.update({"seconds": lengths[0], "minutes": lengths[0] / 60, "fps": args.fps,
                       "steps": args.steps, "threads": args.threads})
        print(json.dumps(report))
        return [report]

    reports = []
    for seconds in lengths:
        print(f"measure: {args.mode}{' (whole clip)' if args.whole_clip else ''}, {seconds:g} s ...",
              file=sys.stderr, flush=True)
        report = run_worker(seconds, args)
        reports.append(report)
        print(json.dumps(report), flush=True)
        print(f"measure:   {report['frames']} frames in {report['wall_s']:.0f} s "
              f"({report['cpu_s']:.0f} s CPU), peak RSS "
              f"{report['peak_rss_bytes'] / GIB:.2f} GiB (before the run {report['rss_before_bytes'] / GIB:.2f} GiB, "
              f"estimate of the growth {report['estimate_bytes'] / GIB:.2f} GiB)", file=sys.stderr, flush=True)
    if len(reports) > 1:
        xs = [r["seconds"] for r in reports]
        wall = linear_fit(xs, [r["wall_s"] for r in reports])
        rss = linear_fit(xs, [r["peak_rss_bytes"] for r in reports])
        print(f"measure: wall = {wall[0]:.3f} s per audio s + {wall[1]:.1f} s; peak RSS = "
              f"{rss[0] / 1024**2:.2f} MiB per audio s + {rss[1] / GIB:.2f} GiB", file=sys.stderr)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in reports))
    return reports


if __name__ == "__main__":
    main()
