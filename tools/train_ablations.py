#!/usr/bin/env python3
"""Train the paper's ablations (and a same-budget full-model reference) and export their bundles.

    OMP_NUM_THREADS=2 .venv/bin/python tools/train_ablations.py --data data/synthetic_textalk4d \
        --runs /work/textalker_runs/ablations \
        --motion-vq /work/textalker_runs/bundled/motion --wrinkle-vq /work/textalker_runs/bundled/wrinkle \
        --cache-from /work/textalker_runs/bundled/ldm --ldm-steps 1500 --joint-vq-steps 1500

For each name in --only (default: all, in this order) it trains RUNS/<name>/ldm (and, for the
joint codebook, RUNS/joint_codebook/joint_vq first) and writes RUNS/<name>.safetensors:
- reference       tools/configs/bundled.json: the full model with the SAME reduced step budget,
                  so the table compares like with like (not the shipped, longer-trained bundle);
- motion_only     tools/configs/ablation_motion_only.json   (no texture: wrinkle maps = 1);
- wrinkle_only    tools/configs/ablation_wrinkle_only.json  (no motion: offsets = 0);
- onehot          tools/configs/ablation_onehot.json        (one-hot styles instead of pivots);
- joint_codebook  tools/configs/ablation_joint_codebook.json (one VQ / codebook for both maps).
Every run resumes where it stopped (run the same command again); a finished one is only
re-exported. SIGTERM / SIGINT checkpoint the current run and end the sequence; `--max-minutes`
limits each stage and the sequence goes on with the next run. RUNS/summary.json collects the outcome, and the last line printed is the
`--ablation NAME=FILE` list for tools/evaluate.py. See docs/TRAINING.md ("Ablations").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from tools.training.ablations import ABLATION_NAMES, train_ablation  # noqa: E402
from tools.training.common import set_threads, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="built synthetic TexTalk4D folder")
    parser.add_argument("--runs", type=Path, required=True, help="folder for the runs and the exported bundles")
    parser.add_argument("--motion-vq", type=Path, required=True,
                        help="motion VQ run shared by the ablations (stage 1, or a stage-1b run that refined the encoder too)")
    parser.add_argument("--wrinkle-vq", type=Path, required=True, help="wrinkle VQ run shared by the ablations")
    parser.add_argument("--cache-from", type=Path, default=None,
                        help="an LDM run on the same VQs whose latent cache is hard-linked (skips encoding)")
    parser.add_argument("--ldm-steps", type=int, default=None, help="LDM steps of every run (default: each config's)")
    parser.add_argument("--joint-vq-steps", type=int, default=None, help="steps of the joint-codebook VQ (default: its config's)")
    parser.add_argument("--motion-decoder", type=Path, default=None,
                        help="decoder-only stage-1b run refining --motion-vq's decoder (tools/refine_decoder.py): exported "
                             "into every ablation that decodes motion with that VQ, as in the bundle")
    parser.add_argument("--only", default=",".join(ABLATION_NAMES), help=f"comma-separated subset of {','.join(ABLATION_NAMES)}")
    parser.add_argument("--max-minutes", type=float, default=None, help="time limit per training stage (resumable)")
    parser.add_argument("--ema", choices=("auto", "yes", "no"), default="auto",
                        help="export EMA weights: auto = only when the run is long enough for the EMA to forget the "
                             "initial weights (steps x (1 - ema_decay) >= 3), the same rule for every run")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ABLATION_NAMES))
    if unknown:
        parser.error(f"unknown ablation(s) {unknown}; choose from {', '.join(ABLATION_NAMES)}")
    set_threads(args.threads)
    args.runs.mkdir(parents=True, exist_ok=True)
    summary_path = args.runs / "summary.json"
    summaries = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name in names:
        started = time.monotonic()
        print(f"=== {name} ===", flush=True)
        result = train_ablation(name, args.data, args.runs, args.motion_vq, args.wrinkle_vq,
                                ldm_steps=args.ldm_steps, joint_vq_steps=args.joint_vq_steps,
                                cache_from=args.cache_from, max_minutes=args.max_minutes,
                                progress_bar=not args.no_progress,
                                use_ema={"auto": None, "yes": True, "no": False}[args.ema],
                                motion_decoder=args.motion_decoder)
        result["wall_s_this_session"] = round(time.monotonic() - started, 1)
        summaries[name] = result
        write_json(summary_path, summaries)
        print(f"{name}: {result['stopped']}" + (f", wrote {result['export']['out']}" if "export" in result else ""), flush=True)
        if "SIG" in str(result["stopped"]):  # SIGTERM / SIGINT: stop the whole sequence, not just this run
            print(f"stopped by {result['stopped']}; run the same command again to resume", flush=True)
            break
    exported = [f"--ablation {n}={s['export']['out']}" for n, s in summaries.items() if "export" in s]
    print(" ".join(exported))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
