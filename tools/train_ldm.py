#!/usr/bin/env python3
"""Stage 2 of TexTalker training: audio front end + latent denoiser on frozen VQ latents, resumable.

    .venv/bin/python tools/train_ldm.py --config tools/configs/bundled.json \
        --data data/synthetic_textalk4d --run runs/bundled/ldm \
        --motion-vq runs/bundled/motion --wrinkle-vq runs/bundled/wrinkle --max-minutes 150

First it encodes every train / test-A utterance with the frozen VQs (cached in RUN/cache, resumable),
computes the per-subject style pivots and the latent normalisation, then trains. Run it again with
the same --run to resume. `torchrun --nproc_per_node N tools/train_ldm.py ...` for several
processes. Then `tools/export_bundle.py --run RUN --out ...`. See docs/TRAINING.md.
"""

from __future__ import annotations

from pathlib import Path

from tools.training.common import add_session_arguments, run_stage, session_arguments, stage_parser
from tools.training.ldm_stage import train_ldm


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--motion-vq", type=Path, required=True, help="run folder of the motion VQ")
    parser.add_argument("--wrinkle-vq", type=Path, default=None,
                        help="run folder of the wrinkle VQ (required unless --motion-vq is a joint-codebook VQ run)")
    parser.add_argument("--hubert-dir", type=Path, default=None, help="local HuBERT checkpoint (paper config)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="warm start: weights file (export or RUN/checkpoint/ema.safetensors) whose denoiser and "
                             "audio front end this new run starts from (e.g. after the motion VQ was refined)")
    add_session_arguments(parser)
    args = parser.parse_args(argv)
    return run_stage(args, lambda config, dist: train_ldm(
        config, args.data, args.run, args.motion_vq, args.wrinkle_vq, dist,
        hubert_dir=args.hubert_dir, init_from=args.init_from, **session_arguments(args)))


if __name__ == "__main__":
    raise SystemExit(main())
