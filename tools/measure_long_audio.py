"""Measures a long generation's peak memory against the pre-check's estimate (issue #8, item 3).

    .venv/bin/python tools/measure_long_audio.py --minutes 10 --fps 30 --steps 1

Runs `Pipeline.generate` (core only, CPU) on `--minutes` of speech-like audio (the bundled sample
repeated), then prints one JSON line: the duration, frames, wall time, the peak resident memory
of this process (ru_maxrss), what it was before the run, and `core.resources.estimate_run`'s
bound for the Pipeline's arrays. tests/test_robustness_long.py runs it (marked slow).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def peak_rss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import numpy as np
    import soundfile
    import torch

    torch.set_num_threads(args.threads)
    from textalker_blender.blender import catalog
    from textalker_blender.core import resources
    from textalker_blender.core.pipeline import Pipeline

    pipeline = Pipeline.load(device="cpu")
    speech, rate = soundfile.read(str(catalog.SAMPLE_SPEECH_PATH), dtype="float32")
    n_samples = int(args.minutes * 60 * rate)
    with tempfile.TemporaryDirectory(prefix="textalker-long-") as folder:
        path = Path(folder) / "long.wav"
        soundfile.write(str(path), np.resize(speech, n_samples), rate, subtype="PCM_16")
        del speech
        before = peak_rss_bytes()
        started = time.perf_counter()
        result = pipeline.generate(str(path), fps=args.fps, steps=args.steps)
        wall = time.perf_counter() - started
    estimate = resources.estimate_run(
        result.duration_s, args.fps, result.offsets.shape[1], pipeline.wrinkle_resolution
    )
    report = {
        "minutes": args.minutes,
        "fps": args.fps,
        "frames": int(result.n_frames),
        "wall_s": round(wall, 1),
        "rss_before_bytes": before,
        "peak_rss_bytes": peak_rss_bytes(),
        "result_bytes": int(result.offsets.nbytes + result.wrinkle_maps.nbytes),
        "estimate_pipeline_bytes": estimate.memory_bytes,
        "estimate_disk_bytes": estimate.disk_bytes,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
