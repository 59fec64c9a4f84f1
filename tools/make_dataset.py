#!/usr/bin/env python3
"""Build the synthetic TexTalk4D dataset and write its statistics to docs/DATASET.md.

    .venv/bin/python tools/make_dataset.py                      # defaults: 24 subjects, 60 minutes
    .venv/bin/python tools/make_dataset.py --out /tmp/tiny --subjects 2 --minutes 0.5 --no-docs

Same seed, same bytes. See docs/DATASET.md for what is inside and how to read it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "data" / "synthetic_textalk4d")
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--minutes", type=float, default=60.0, help="total minutes of speech")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-b-subjects", type=int, default=None,
                        help="unseen subjects for test-B (default: one in six)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel synthesis processes")
    parser.add_argument("--no-acoustics", action="store_true",
                        help="train utterances stay clean (no telephone, noise, rooms, speed ...)")
    parser.add_argument("--no-phone-copy", action="store_true",
                        help="do not write test-A-phone (the telephone copy of test-A)")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "DATASET.md",
                        help="where to write the statistics report")
    parser.add_argument("--no-docs", action="store_true", help="do not write the report")
    parser.add_argument("--no-stats", action="store_true", help="skip statistics (faster)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--note", default="", help="extra paragraph for the report")
    parser.add_argument("--stats-only", action="store_true",
                        help="recompute stats.json and the report of an existing build")
    parser.add_argument("--synthesis-seconds", type=float, default=None,
                        help="with --stats-only: the synthesis time of that build, for the report")
    args = parser.parse_args(argv)
    args.load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    from tools.synthetic_textalk4d.builder import BuildConfig, build
    from tools.synthetic_textalk4d.speech import SpeechToolsMissing

    out = args.out.resolve()
    if args.stats_only:
        import json as _json
        meta = _json.loads((out / "meta.json").read_text())
        report = {"meta": meta, "n_utterances": sum(len(v) for v in meta["splits"].values())}
        synthesis = args.synthesis_seconds if args.synthesis_seconds is not None else float("nan")
        started = time.perf_counter() - (0.0 if synthesis != synthesis else synthesis)
        return _stats_and_docs(args, out, report, synthesis, started)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            print(f"{out} is not empty; pass --force to replace it", file=sys.stderr)
            return 2
        import shutil
        shutil.rmtree(out)
    config = BuildConfig(out=out, subjects=args.subjects, minutes=args.minutes, seed=args.seed,
                         test_b_subjects=args.test_b_subjects, jobs=args.jobs,
                         acoustics=not args.no_acoustics, phone_copy=not args.no_phone_copy)
    started = time.perf_counter()
    try:
        report = build(config)
    except SpeechToolsMissing as error:
        print(error, file=sys.stderr)
        return 3
    synthesis = time.perf_counter() - started
    print(f"synthesised {report['n_utterances']} utterances in {synthesis:.0f} s")
    if args.no_stats:
        return 0
    return _stats_and_docs(args, out, report, synthesis, started)


def _stats_and_docs(args, out, report, synthesis, started) -> int:
    from tools.synthetic_textalk4d.builder import dump_json
    from tools.synthetic_textalk4d.stats import compute_stats, measure_map_speed, write_report

    t = time.perf_counter()
    stats = compute_stats(out)
    dump_json(out / "stats.json", stats)
    stats_seconds = time.perf_counter() - t
    total = time.perf_counter() - started
    print(f"statistics in {stats_seconds:.0f} s; total {total:.0f} s")
    if args.no_docs:
        return 0
    speed = measure_map_speed(out)
    cpu = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    timings = {
        "utterances": report["n_utterances"],
        "build time (synthesis + weights)": f"{synthesis:.0f} s",
        "statistics time": f"{stats_seconds:.0f} s",
        "total build time": f"{total / 60:.1f} min",
        "machine": (f"{cpu} CPU cores shared with other jobs, load average {args.load_at_start:.1f} "
                    f"at the start and {load:.1f} at the end"
                    + (" of the statistics re-run (--stats-only)" if args.stats_only else f", --jobs {args.jobs}")),
        "map rendering, offsets + motion 64 px + wrinkle 128 px": f"{speed['all_maps_fps']:.0f} frames/s",
        "motion maps 64 px only": f"{speed['motion_maps_fps']:.0f} frames/s",
        "wrinkle maps 128 px only (incl. strain)": f"{speed['wrinkle_maps_fps']:.0f} frames/s",
        "per-subject setup (neutral, regions, rasterizer)": f"{speed['subject_setup_s']:.1f} s",
    }
    command = "python tools/make_dataset.py" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--subjects", args.subjects, 24), ("--minutes", args.minutes, 60.0), ("--seed", args.seed, 0),
            ("--jobs", args.jobs, 1)) if value != default) + "".join(
        f" {flag}" for flag, on in (("--no-acoustics", args.no_acoustics),
                              ("--no-phone-copy", args.no_phone_copy)) if on)
    write_report(args.docs, out, stats, report["meta"], timings, command, args.note)
    print(f"wrote {args.docs}")
    print(json.dumps(speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
