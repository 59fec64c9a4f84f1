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

from tools.training.common import add_session_arguments, run_stage, session_arguments, stage_parser
from tools.training.vq_stage import train_vq


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--which", choices=("motion", "wrinkle", "joint"), required=True,
                        help="joint: the joint-codebook ablation's one VQ over both maps (docs/TRAINING.md)")
    add_session_arguments(parser)
    args = parser.parse_args(argv)
    return run_stage(args, lambda config, dist: train_vq(
        config, args.data, args.run, args.which, dist, **session_arguments(args)))


if __name__ == "__main__":
    raise SystemExit(main())
