#!/usr/bin/env python3
"""Write randomly initialised *bundled* TexTalker weights, so the add-on and the demo run end to
end before any training exists.

Output (default: textalker_blender/assets/):
- textalker_bundled.safetensors: seeded random weights, metadata trained=false, placeholder style
  pivots named honestly ("Untrained style 1" ...), each a random choice of codebook vectors;
- manifest.json: the file's SHA-256 (checked by the add-on at load).
The same seed gives the same bytes. The motion output range is set to +-4 mm and the wrinkle
channels (fold, shade, flush; core/wrinkle_channels.py) to small ranges around zero, so that the
random model gives visible but harmless motion and texture.

    .venv/bin/python tools/make_untrained_weights.py [--out DIR] [--seed 0] [--styles 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from textalker_blender.core.config import ModelConfig  # noqa: E402
from textalker_blender.core.model import TexTalkerModel, random_pivots  # noqa: E402
from textalker_blender.core.style import StylePivots  # noqa: E402

WEIGHTS_NAME = "textalker_bundled.safetensors"
UNTRAINED_MOTION_RANGE_M = 0.004
# (minimum, maximum) of the wrinkle channels fold, shade, flush; decoding clips them to >= 0.
UNTRAINED_WRINKLE_RANGE = ((-0.5, -0.1, -0.05), (0.5, 0.1, 0.05))


def template_layouts(template_path: Path | None):
    """The template's motion and wrinkle map layouts (dicts), or None when it is not built yet."""
    from textalker_blender.core.pipeline import layouts_of
    from textalker_blender.core.template import load_template

    try:
        template = load_template(template_path)
    except FileNotFoundError:
        return None
    return layouts_of(template)


def build_untrained_model(
    seed: int = 0, n_styles: int = 4, config: ModelConfig | None = None
) -> TexTalkerModel:
    config = config or ModelConfig.bundled()
    names = [f"Untrained style {i + 1}" for i in range(n_styles)]
    torch.manual_seed(seed)
    placeholder = StylePivots(
        torch.zeros(n_styles, config.motion_latent_dim).numpy(),
        torch.zeros(n_styles, config.wrinkle_latent_dim).numpy(),
        names,
    )
    model = TexTalkerModel(config, placeholder)
    with torch.no_grad():
        # Random codebooks as the VQ code init gives them are tiny (+-1/K); spread them so the
        # decoder sees distinct inputs per code and the random model actually moves.
        for vq in (model.motion_vq, model.wrinkle_vq):
            vq.quantizer.codebook.weight.normal_(0.0, 1.0)
        model.motion_vq.set_normalization_from_minmax(
            [-UNTRAINED_MOTION_RANGE_M] * 3, [UNTRAINED_MOTION_RANGE_M] * 3
        )
        model.wrinkle_vq.set_normalization_from_minmax(*UNTRAINED_WRINKLE_RANGE)
    model.set_pivots(random_pivots(config, names, model, seed=seed))
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "textalker_blender" / "assets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--styles", type=int, default=4)
    parser.add_argument(
        "--template",
        type=Path,
        default=None,
        help="template_head.npz whose map layouts the weights record",
    )
    args = parser.parse_args(argv)

    config = ModelConfig.bundled()
    config.uv_layouts = template_layouts(args.template)
    model = build_untrained_model(args.seed, args.styles, config)
    path = args.out / WEIGHTS_NAME
    digest = model.save(path, trained=False, dataset="none (untrained, random weights)")
    n_params = sum(t.numel() for t in model.weight_tensors().values())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {n_params:,} numbers)")
    print(f"sha256 {digest} recorded in {path.parent / 'manifest.json'}")
    if config.uv_layouts is None:
        print("note: no template head found; the weights accept any map layout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
