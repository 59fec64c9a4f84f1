#!/usr/bin/env python3
"""Write the add-on's weights file from a trained LDM run and record its SHA-256 in the manifest.

    .venv/bin/python tools/export_bundle.py --run runs/bundled/ldm \
        --out textalker_blender/assets/textalker_bundled.safetensors

Uses the run's EMA weights unless --no-ema. The file is marked trained=true and carries the
dataset fingerprint, the model config and the training provenance in its metadata.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.export import export_bundle  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="LDM run folder")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--no-ema", action="store_true", help="export the raw (non-EMA) weights")
    parser.add_argument("--no-manifest", action="store_true", help="do not update manifest.json")
    args = parser.parse_args(argv)
    result = export_bundle(args.run, args.out, use_ema=not args.no_ema, update_manifest=not args.no_manifest)
    print(f"wrote {result['out']} from {result['source']} (LDM step {result['ldm_step']})")
    print(f"sha256 {result['sha256']}")
    print("styles: " + "; ".join(result["styles"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
