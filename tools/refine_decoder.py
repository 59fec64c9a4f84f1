#!/usr/bin/env python3
"""Stage 1b of TexTalker training: refine the motion VQ for vertex accuracy, resumable.

    .venv/bin/python tools/refine_decoder.py --config tools/configs/bundled.json \
        --data data/synthetic_textalk4d --run runs/bundled/motion_refine --motion-vq runs/bundled/motion

By default only the decoder learns (encoder, codebook and normalisation stay bit-identical), so
stage 2's latents keep their meaning and `tools/export_bundle.py --motion-decoder RUN` puts the
refined decoder into a bundle trained on the stage-1 VQ. With `refine.train_encoder` (as in
bundled.json) the whole VQ learns, with `refine.oversample_units` frames (blinks) oversampled;
the codes change, so stage 2 then trains on this run (`train_ldm.py --motion-vq RUN`). The loss is the L1 error of the vertex offsets
read from the decoded map (mm; lips and upper face weighted up, config section "refine") plus
stage 1's map loss. Run it again with the same --run to resume. Under torchrun the ranks average
their gradients as in the other stages (that path is not covered by a test for this
stage). See docs/TRAINING.md.
"""

from __future__ import annotations

from pathlib import Path

from tools.training.common import add_session_arguments, run_stage, session_arguments, stage_parser
from tools.training.refine_stage import refine_motion_decoder


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--motion-vq", type=Path, required=True, help="the trained motion VQ run (stage 1)")
    add_session_arguments(parser)
    args = parser.parse_args(argv)
    return run_stage(args, lambda config, dist: refine_motion_decoder(
        config, args.data, args.run, args.motion_vq, dist, **session_arguments(args)))


if __name__ == "__main__":
    raise SystemExit(main())
