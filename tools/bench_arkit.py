"""Speed and accuracy of the ARKit weight solver on the template head (numbers for docs/ARKIT.md).

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench_arkit.py [--frames 300 18000] [--pipeline]

For each clip length: smooth random ARKit weights -> template offsets (+ 0.3 mm noise, about
what an imperfect model adds) -> `solve_arkit_weights`, timed (best of 2), and compared with the
truth and with a 2,000-iteration solve (how far the default stopping point is from converged).
`--pipeline` also times `Pipeline.generate` on 10 s of the bundled sample speech, the cost the
solver must be negligible against.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


from textalker_blender.core.arkit import (  # noqa: E402
    arkit_fit_errors,
    from_arkit_order,
    smoothness_at_fps,
    solve_arkit_weights,
    template_solver,
    to_arkit_order,
)
from textalker_blender.core.template import load_template  # noqa: E402


def smooth_random_weights(rng, n_frames: int, n_units: int = 52) -> np.ndarray:
    raw = rng.normal(size=(n_frames + 20, n_units)).cumsum(axis=0)
    kernel = np.hanning(15)
    kernel /= kernel.sum()
    smooth = np.stack([np.convolve(raw[:, u], kernel, mode="same") for u in range(n_units)], 1)[10:-10]
    return np.clip((smooth - smooth.mean(0)) / (smooth.std(0) + 1e-9) * 0.4, 0.0, 1.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[300, 18000])
    parser.add_argument("--noise-mm", type=float, default=0.3)
    parser.add_argument("--pipeline", action="store_true", help="also time Pipeline.generate on 10 s")
    args = parser.parse_args()
    template = load_template()
    rng = np.random.default_rng(0)
    for n_frames in args.frames:
        truth = smooth_random_weights(rng, n_frames)
        offsets = template.apply_units(from_arkit_order(truth, template.unit_names)).astype(np.float32)
        offsets += rng.normal(scale=args.noise_mm * 1e-3, size=offsets.shape).astype(np.float32)
        times = []
        for _ in range(2):
            started = time.perf_counter()
            weights, report = solve_arkit_weights(template, offsets, fps=30.0)
            times.append(time.perf_counter() - started)
        reference, _ = template_solver(template, smoothness_at_fps(30.0)).solve(offsets, iterations=2000, tolerance=0.0)
        reference = to_arkit_order(reference, template.unit_names)
        errors = arkit_fit_errors(template, weights, offsets, truth)
        print(
            f"{n_frames} frames: solve {min(times):.3f} s ({report.iterations} iterations), "
            f"fit rmse {errors.vertex_rmse_m * 1e3:.3f} mm, weight MAE vs truth {errors.weight_mae:.4f}, "
            f"max |w - w_2000it| {np.abs(weights - reference).max():.4f}, "
            f"mean {np.abs(weights - reference).mean():.5f}"
        )
    if args.pipeline:
        import soundfile
        import torch

        from textalker_blender.core.pipeline import Pipeline

        torch.set_num_threads(1)
        wav = Path(__file__).resolve().parents[1] / "textalker_blender" / "assets" / "sample_speech.wav"
        samples, rate = soundfile.read(str(wav), dtype="float32")
        samples = np.tile(samples, int(np.ceil(10 * rate / len(samples))))[: 10 * rate]
        pipeline = Pipeline.load(device="cpu")
        pipeline.generate((samples[: rate], rate), fps=30.0)  # warm-up
        started = time.perf_counter()
        result = pipeline.generate((samples, rate), fps=30.0)
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        solve_arkit_weights(template, result.offsets, fps=30.0)
        solve_s = time.perf_counter() - started
        print(f"Pipeline.generate 10 s ({result.n_frames} frames): {generate_s:.2f} s; "
              f"solve on its offsets {solve_s:.3f} s = {100 * solve_s / generate_s:.1f} %")


if __name__ == "__main__":
    main()
