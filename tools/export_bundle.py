#!/usr/bin/env python3
"""Write the add-on's weights file from a trained LDM run and record its SHA-256 in the manifest.

    .venv/bin/python tools/export_bundle.py --run runs/bundled/ldm \
        --out textalker_blender/assets/textalker_bundled.safetensors

Uses the run's EMA weights unless --no-ema. `--motion-decoder RUN` swaps in the motion decoder
refined by tools/refine_decoder.py (stage 1b) from the same motion VQ. The file is marked
trained=true and carries the dataset fingerprint, the model config and the training provenance in
its metadata.

    .venv/bin/python tools/export_bundle.py --restyle-creases data/synthetic_textalk4d \
        --out textalker_blender/assets/textalker_bundled.safetensors

rewrites only the wrinkle styles' crease curves (the detail map's depths) from the dataset's
crease generator, keeping every tensor: the fold maps the model generates do not depend on them.

    .venv/bin/python tools/export_bundle.py --fit-wrinkle-bias data/synthetic_textalk4d \
        --out textalker_blender/assets/textalker_bundled.safetensors

fits each wrinkle style's bias map (the wrinkle autoencoder's mean error on that style's training
frames, added back at decode) into the file; with --run it runs right after the export.
"""

from __future__ import annotations

import argparse
from pathlib import Path


from tools.training.export import export_bundle, fit_wrinkle_bias, restyle_creases  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="LDM run folder")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--no-ema", action="store_true", help="export the raw (non-EMA) weights")
    parser.add_argument("--motion-decoder", type=Path, default=None,
                        help="stage-1b run of tools/refine_decoder.py whose refined motion decoder the bundle gets")
    parser.add_argument("--sampling-steps", type=int, default=None,
                        help="default DDIM steps of the bundle (default: the run's config)")
    parser.add_argument("--no-manifest", action="store_true", help="do not update manifest.json")
    parser.add_argument("--restyle-creases", type=Path, default=None, metavar="DATA",
                        help="no --run: rewrite --out's wrinkle-style crease curves from DATA's training "
                             "subjects (after the crease generator's depths changed), tensors unchanged")
    parser.add_argument("--fit-wrinkle-bias", type=Path, default=None, metavar="DATA",
                        help="fit each wrinkle style's bias map on DATA's training frames into --out "
                             "(after the export when --run is given; else into the existing file)")
    args = parser.parse_args(argv)
    if args.fit_wrinkle_bias is not None and args.run is None and args.restyle_creases is None:
        return _fit_bias(args)
    if args.restyle_creases is not None:
        if args.run is not None:
            parser.error("--restyle-creases rewrites an existing file: give --out, not --run")
        result = restyle_creases(args.out, args.restyle_creases, update_manifest=not args.no_manifest)
        print(f"wrote {result['out']} (crease curves from {args.restyle_creases})")
        print(f"sha256 {result['sha256']}")
        print("deepest crease per style (mm): " + ", ".join(f"{d:.2f}" for d in result["deepest_mm"]))
        return 0
    if args.run is None:
        parser.error("--run is required (or --restyle-creases DATA)")
    result = export_bundle(args.run, args.out, use_ema=not args.no_ema, update_manifest=not args.no_manifest,
                           motion_decoder=args.motion_decoder, sampling_steps=args.sampling_steps)
    refined = result["motion_decoder_refine_step"]
    print(f"wrote {result['out']} from {result['source']} (LDM step {result['ldm_step']}"
          + (f", motion decoder refined {refined} steps)" if refined is not None else ")"))
    print(f"sha256 {result['sha256']}")
    print("styles: " + "; ".join(result["styles"]))
    return _fit_bias(args) if args.fit_wrinkle_bias is not None else 0


def _fit_bias(args) -> int:
    result = fit_wrinkle_bias(args.out, args.fit_wrinkle_bias, update_manifest=not args.no_manifest)
    print(f"wrote {result['out']} (wrinkle bias of {len(result['styles'])} styles from {result['frames']} "
          f"training frames of {args.fit_wrinkle_bias}; mean |bias| {result['mean_abs_bias']:.5f})")
    print(f"sha256 {result['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
