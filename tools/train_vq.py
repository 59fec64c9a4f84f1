#!/usr/bin/env python3
"""Stage 1 of TexTalker training: one VQ autoencoder (motion or wrinkle maps), resumable.

    .venv/bin/python tools/train_vq.py --config tools/configs/bundled.json \
        --data data/synthetic_textalk4d --run runs/bundled/motion --which motion --max-minutes 150

Run it again with the same --run to resume exactly where it stopped (a checkpoint is written every
`checkpoint_every` steps, at --steps, at --max-minutes and on SIGTERM/SIGINT). Several processes:
    torchrun --nproc_per_node 2 tools/train_vq.py ...   (gloo on CPU, NCCL on GPUs)
See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.common import load_training_config, set_threads, setup_distributed  # noqa: E402
from training.vq_stage import train_vq  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="tools/configs/*.json (ignored for the model when resuming)")
    parser.add_argument("--data", type=Path, required=True, help="built synthetic TexTalk4D folder")
    parser.add_argument("--run", "--run-dir", dest="run", type=Path, required=True, help="run folder (created or resumed); spell it --run-dir under torchrun, whose own --run-path makes --run ambiguous")
    parser.add_argument("--which", choices=("motion", "wrinkle", "joint"), required=True,
                        help="joint: the joint-codebook ablation's one VQ over both maps (docs/TRAINING.md)")
    parser.add_argument("--steps", type=int, default=None, help="total steps to reach (default: the config's)")
    parser.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs still printed)")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    dist = setup_distributed(args.device)
    try:
        config = load_training_config(args.config)
        summary = train_vq(config, args.data, args.run, args.which, dist, steps=args.steps,
                           max_minutes=args.max_minutes, progress_bar=not args.no_progress)
    finally:
        dist.close()
    if dist.is_main:
        print(f"stopped at step {summary['step']} ({summary['stopped']}); "
              f"{summary['steps_this_session']} steps in {summary['seconds_this_session']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
