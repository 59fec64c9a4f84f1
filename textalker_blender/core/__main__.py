"""Command line for the model core: run the Pipeline on an audio file and write .npz results.

    python -m textalker_blender.core speech.wav --out result.npz [--weights FILE]
        [--speaking-style ID|KEY] [--wrinkle-style ID|KEY] [--fps 30] [--seed 0] [--steps N]
        [--blink-rate R] [--brow-rate R] [--lip-seal MM] [--device auto|cpu|cuda] [--hubert-dir DIR]
    python -m textalker_blender.core --list-styles [--weights FILE]
    python -m textalker_blender.core --describe bundled|paper|WEIGHTS_FILE [--seconds 10]

The .npz holds `offsets` float32 (T, V, 3) metres, `wrinkle_maps` float16 (T, H, W, 3) albedo
ratio (image row order), `fps`, and the run's metadata as 0-d arrays (strings are unicode arrays,
so `np.load` needs no pickle): speaking/wrinkle style key and name, seed, steps, blink rate
(NaN: the speaking style's own rate), whether the weights take blinks (`blink_input`), weights
path and SHA-256, trained flag, model config name, device, duration.

`--blink-rate R`: blinks per minute (0-120) for weights with blink input; by default the rate
measured for the speaking style, 0 for no blinks. Weights without blink input ignore it.
`--brow-rate R`: brow emphases (raised or knitted brows on a held syllable) per minute of speech
(0-120) for weights with brow input, the same way.
`--lip-seal MM`: how far apart the lips may be and still be pressed shut where the weights' closure
detector hears a /p b m/ or a pause, scaled by its probability (0-20; default 12; 0: off; weights
without a detector get no seal; core/lip_seal.py). The file records it as `lip_seal_mm`.

`--describe` prints, as a Markdown table, the shape of every tensor from audio samples to the
per-vertex offsets for a config, measured by running the real modules (on PyTorch's "meta" device
for the VQ and the denoiser, so even the paper config costs no compute); docs/MODEL.md pastes it.

No bpy here: this runs in plain Python. User errors (`TexTalkerError`) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .arguments import ArgumentError, check_fps, number_from_text
from .errors import TexTalkerError
from .options import GenerationOptions
from .lip_seal import DEFAULT_SEAL_MM, MAX_SEAL_MM

EXIT_USER_ERROR = 1


# ---------------------------------------------------------------------------- arguments
def _style(value: str) -> int | str:
    """Style ids are integers, anything else is a key or display name."""
    return int(value) if value.strip().lstrip("-").isdigit() else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m textalker_blender.core",
        description="Generate talking-face motion and wrinkle maps from speech audio (no Blender).",
    )
    parser.add_argument("audio", nargs="?", help="speech audio file (wav, flac, mp3, ...)")
    parser.add_argument("--out", type=Path, help="result file (.npz) to write")
    parser.add_argument(
        "--weights", type=Path, default=None, help="safetensors weights (default: bundled)"
    )
    parser.add_argument("--speaking-style", type=_style, default=0, help="style id or key (motion)")
    parser.add_argument(
        "--wrinkle-style", type=_style, default=None,
        help="style id or key (wrinkles; default: the weights' most lined style)",
    )
    # Read as numbers here; checked once, by the same rules as the Pipeline and the add-on, when
    # main() makes the GenerationOptions (core/options.py), before any work.
    parser.add_argument("--fps", type=number_from_text, default=30.0, help="output frame rate")
    parser.add_argument("--seed", type=number_from_text, default=0)
    parser.add_argument(
        "--steps", type=number_from_text, default=None, help="DDIM steps (default: the config's)"
    )
    parser.add_argument(
        "--blink-rate",
        type=number_from_text,
        default=None,
        metavar="R",
        help="blinks per minute, 0-120 (default: the speaking style's own rate; 0: no blinks)",
    )
    parser.add_argument(
        "--brow-rate",
        type=number_from_text,
        default=None,
        metavar="R",
        help="brow emphases per minute of speech, 0-120 (default: the speaking style's own rate; 0: none)",
    )
    parser.add_argument(
        "--lip-seal",
        type=number_from_text,
        default=DEFAULT_SEAL_MM,
        metavar="MM",
        help=f"lip seal: lips closer than MM millimetres times the closure probability are pressed shut, "
             f"0-{MAX_SEAL_MM:g} (default {DEFAULT_SEAL_MM:g}; 0: off)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--hubert-dir", type=Path, default=None, help="local HuBERT checkpoint (hubert weights)"
    )
    parser.add_argument(
        "--list-styles", action="store_true", help="print the weights' styles and exit"
    )
    parser.add_argument(
        "--describe",
        metavar="CONFIG",
        help="print the tensor shapes per stage for 'bundled', 'paper' or a weights file, and exit",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length for --describe")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


# ---------------------------------------------------------------------------- generation
class _StderrProgress:
    """One line per stage change or 10 % step; stderr so stdout stays clean for scripts."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.last = (None, -1)

    def __call__(self, fraction: float, stage: str) -> None:
        if not self.enabled:
            return
        percent = int(fraction * 100)
        bucket = percent // 10
        if (stage, bucket) != self.last:
            self.last = (stage, bucket)
            print(f"{percent:3d}% {stage}", file=sys.stderr, flush=True)


def _load_pipeline(args):
    from .pipeline import Pipeline

    return Pipeline.load(args.weights, args.device, hubert_dir=args.hubert_dir)


def list_styles(args) -> int:
    pipeline = _load_pipeline(args)
    print("id\tkey\tname")
    for style in pipeline.styles:
        print(f"{style.id}\t{style.key}\t{style.name}")
    return 0


def result_arrays(result, pipeline, blink_rate: float | None = None,
                  brow_rate: float | None = None, lip_seal_mm: float = DEFAULT_SEAL_MM) -> dict[str, np.ndarray]:
    """Everything written to the .npz: the two outputs plus small metadata arrays.

    `blink_rate`, `brow_rate`: the rates asked for (NaN in the file for None: the speaking
    style's own rate); `lip_seal_mm` the lip seal distance used."""
    return {
        "offsets": np.asarray(result.offsets, np.float32),
        "wrinkle_maps": np.asarray(result.wrinkle_maps, np.float16),
        "fps": np.float64(result.fps),
        "n_frames": np.int64(result.n_frames),
        "duration_s": np.float64(result.duration_s),
        "speaking_style": np.str_(result.speaking_style.key),
        "speaking_style_name": np.str_(result.speaking_style.name),
        "wrinkle_style": np.str_(result.wrinkle_style.key),
        "wrinkle_style_name": np.str_(result.wrinkle_style.name),
        "seed": np.int64(result.seed),
        "steps": np.int64(result.steps),
        "blink_rate": np.float64(math.nan if blink_rate is None else blink_rate),
        "blink_input": np.bool_(pipeline.config.blink_condition),  # False: blink_rate was ignored
        "brow_rate": np.float64(math.nan if brow_rate is None else brow_rate),
        "brow_input": np.bool_(pipeline.config.brow_condition),  # False: brow_rate was ignored
        "lip_seal_mm": np.float64(lip_seal_mm),
        "device": np.str_(result.device),
        "weights_path": np.str_(str(pipeline.weights_path)),
        "weights_sha256": np.str_(pipeline.weights_sha256),
        "trained": np.bool_(pipeline.trained),
        "config_name": np.str_(pipeline.config.name),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a temporary file in the same folder, then rename), so an interrupted run
    never leaves a truncated result under the requested name. np.savez is given an open file so
    it does not append '.npz' to a name that lacks it."""
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def generate(args) -> int:
    from .errors import AudioError

    audio = Path(args.audio).expanduser()
    if not audio.is_file():  # say so before loading any weights
        raise AudioError(f"Audio file not found: {audio}")
    progress = _StderrProgress(not args.quiet)
    pipeline = _load_pipeline(args)
    try:
        result = pipeline.generate(str(audio), args.options, progress=progress)
    except ValueError as exc:  # steps out of range and the like: the user's input
        raise TexTalkerError(str(exc)) from exc
    for warning in result.warnings:  # core/audio.py: silent, very quiet, clipped, not speech
        print(f"warning: {warning}", file=sys.stderr)
    try:
        write_npz(args.out, result_arrays(result, pipeline, args.options.blink_rate, args.options.brow_rate,
                                          args.options.lip_seal_mm))
    except OSError as exc:
        from .errors import ResourceError

        raise ResourceError(f"Could not write {args.out}: {exc}") from exc
    if not args.quiet:
        print(
            f"wrote {args.out}: {result.n_frames} frames at {result.fps:g} fps, offsets "
            f"{result.offsets.shape}, wrinkle maps {result.wrinkle_maps.shape}, styles "
            f"{result.speaking_style.key}/{result.wrinkle_style.key}"
            + ("" if pipeline.trained else " (UNTRAINED weights: placeholder motion)"),
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------------------- describe
def _config_for(name: str):
    from .config import ModelConfig

    if name in ("bundled", "paper"):
        return ModelConfig.preset(name), None
    path = Path(name)
    if not path.is_file():
        raise TexTalkerError(f"--describe takes 'bundled', 'paper' or a weights file, not {name!r}")
    import json

    from .weights import load_weights

    metadata = load_weights(path, verify=False).metadata
    return ModelConfig.from_json(metadata["config"]), len(json.loads(metadata["style_names"]))


def _shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _hubert_frames(n_samples: int) -> int:
    """HuBERT's conv feature extractor output length (its default kernels and strides)."""
    from transformers import HubertConfig

    hubert = HubertConfig()
    length = max(n_samples, 400)  # HubertAudioEncoder pads to one analysis window
    for kernel, stride in zip(hubert.conv_kernel, hubert.conv_stride, strict=True):
        length = (length - kernel) // stride + 1
    return length


def describe_shapes(config, seconds: float = 10.0, n_styles: int | None = None, fps: float = 30.0):
    """Rows (stage, tensor, shape, note) from audio samples to per-vertex offsets for `config`.

    The audio front end runs for real (bundled: librosa + convs on silence); the VQ and the
    denoiser run on the meta device (shapes only). Forward hooks record the inner shapes.
    """
    import torch

    from .config import MODEL_FPS, SAMPLE_RATE
    from .denoiser import LatentDenoiser
    from .sampling import plan_windows
    from .pipeline import DECODE_BATCH
    from .resample import output_frame_count
    from .vq import VQAutoencoder

    rows: list[tuple[str, str, str, str]] = []

    def add(stage: str, tensor: str, shape: str, note: str = "") -> None:
        rows.append((stage, tensor, shape, note))

    n_samples = int(round(seconds * SAMPLE_RATE))
    n_frames = output_frame_count(seconds, MODEL_FPS)
    add("audio", "samples", _shape((n_samples,)), f"float32 mono {SAMPLE_RATE} Hz, {seconds:g} s")

    if config.audio_encoder == "bundled":
        from .features import BundledAudioEncoder

        encoder = BundledAudioEncoder(config).eval()
        mel = encoder.log_mel(np.zeros(n_samples, np.float32))
        add(
            "audio",
            "log-mel",
            _shape(mel.shape),
            f"(n_mels, M), {encoder.mel_fps:g} frames/s, hop {config.mel_hop}",
        )
        with torch.no_grad():
            inner = encoder.input_proj(torch.from_numpy(mel)[None])
            features = encoder.forward(torch.from_numpy(mel)[None], n_frames)[0]
        add(
            "audio",
            "front-end conv activations",
            _shape(inner.shape),
            f"(1, C, M), {len(encoder.convs)} dilated convs, "
            f"receptive radius {encoder.receptive_radius} mel frames",
        )
        add(
            "audio",
            "features",
            _shape(features.shape),
            f"(T, C) at {MODEL_FPS} fps (linear interpolation)",
        )
    else:
        native = _hubert_frames(n_samples)
        add(
            "audio",
            "HuBERT hidden states",
            _shape((native, config.audio_feature_dim)),
            "(T50, C), ~50 frames/s, frozen",
        )
        add(
            "audio",
            "features",
            _shape((n_frames, config.audio_feature_dim)),
            f"(T, C) at {MODEL_FPS} fps (linear interpolation)",
        )

    windows = plan_windows(n_frames, config.window_frames, config.prefix_frames)
    tw = windows[0].length
    joint = config.joint_latent_dim
    prefixes = ", ".join(str(w.prefix) for w in windows[1:]) or "none"
    add(
        "windows",
        "audio window",
        _shape((1, tw, config.audio_feature_dim)),
        f"{len(windows)} window(s) of Tw={config.window_frames}, prefixes {prefixes}",
    )
    add(
        "windows",
        "noisy latents x_t",
        _shape((1, tw, joint)),
        "(B, Tw, Dz) model space, Dz = Dz_f + Dz_w",
    )

    shapes: dict[str, tuple] = {}

    def record(name):
        def hook(_module, _inputs, output):
            shapes[name] = tuple(output.shape)

        return hook

    with torch.device("meta"):
        denoiser = LatentDenoiser(config)
        for name in ("input_proj", "audio_proj", "decoder", "output_proj"):
            getattr(denoiser, name).register_forward_hook(record(name))
        denoiser(
            torch.empty(1, tw, joint),
            torch.zeros(1, dtype=torch.long),
            torch.empty(1, tw, config.audio_feature_dim),
            torch.zeros(1, tw, dtype=torch.bool),
        )
    add(
        "denoiser",
        "tokens (input_proj)",
        _shape(shapes["input_proj"]),
        "+ frame position, timestep MLP, prefix flag/anchor",
    )
    add(
        "denoiser",
        "audio memory (audio_proj)",
        _shape(shapes["audio_proj"]),
        "cross-attention, frame t sees audio t only",
    )
    add(
        "denoiser",
        "decoder output",
        _shape(shapes["decoder"]),
        f"{config.layers} layers x {config.heads} heads, FF {config.width * config.ff_mult}, "
        f"self-attention {config.self_attention}",
    )
    add(
        "denoiser",
        "x0 prediction (output_proj)",
        _shape(shapes["output_proj"]),
        "(B, Tw, Dz) model space",
    )
    add(
        "latents",
        "x0 sequence",
        _shape((n_frames, joint)),
        "windows stitched: (T, Dz); z = x0 * latent_scale + latent_center + pivot, split at Dz_f",
    )

    for role, vq_config in (("motion", config.motion_vq), ("wrinkle", config.wrinkle_vq)):
        tag = "z_f" if role == "motion" else "z_w"
        r = vq_config.latent_resolution
        add(
            "latents",
            f"{tag} ({role})",
            _shape((n_frames, vq_config.latent_dim)),
            f"= (T, c, h, w) {_shape((n_frames, vq_config.latent_channels, r, r))} flattened; "
            f"codebook {vq_config.codebook_size} x {vq_config.latent_channels}"
            + (
                "; each cell snapped to its nearest code" if config.quantize_sampled_latents else ""
            ),
        )
    styles = "S" if n_styles is None else str(n_styles)
    add(
        "pivots",
        "speaking pivots p_f",
        f"({styles}, {config.motion_latent_dim})",
        "added to z_f: z_f = x0_f * scale + center + p_f[speaking]",
    )
    add("pivots", "wrinkle pivots p_w", f"({styles}, {config.wrinkle_latent_dim})", "added to z_w")

    for role, vq_config in (("motion", config.motion_vq), ("wrinkle", config.wrinkle_vq)):
        shapes.clear()
        with torch.device("meta"):
            vq = VQAutoencoder(vq_config)
            for index, block in enumerate(vq.decoder.blocks):
                block.register_forward_hook(record(f"block{index}"))
            vq.decoder.conv_in.register_forward_hook(record("conv_in"))
            batch = min(DECODE_BATCH, n_frames)
            maps = vq.decode(torch.empty(batch, vq_config.latent_dim))
        levels = [shapes["conv_in"]] + [shapes[f"block{i}"] for i in range(len(vq.decoder.blocks))]
        # One entry per resolution: the last activation at each spatial size.
        by_size: dict[int, tuple] = {}
        for shape in levels:
            by_size[shape[-1]] = shape
        add(
            "VQ decode",
            f"{role} decoder activations",
            " -> ".join(_shape(s[1:]) for s in by_size.values()),
            f"(C, h, w) per resolution, batches of {DECODE_BATCH} frames",
        )
        add(
            "VQ decode",
            f"{role} maps",
            _shape((n_frames, *maps.shape[1:])),
            "(T, H, W, 3) metres" if role == "motion" else "(T, H, W, 3) log ratio",
        )

    for role, vq_config in (("motion", config.motion_vq), ("wrinkle", config.wrinkle_vq)):
        shapes.clear()
        with torch.device("meta"):
            vq = VQAutoencoder(vq_config)
            vq.encoder.conv_in.register_forward_hook(record("conv_in"))
            for index, block in enumerate(vq.encoder.blocks):
                block.register_forward_hook(record(f"block{index}"))
            res = vq_config.resolution
            grid = vq.encoder(vq.normalize(torch.empty(1, res, res, vq_config.in_channels)))
        levels = [shapes["conv_in"]] + [shapes[f"block{i}"] for i in range(len(vq.encoder.blocks))]
        by_size = {}
        for shape in levels:
            by_size[shape[-1]] = shape
        add(
            "training only",
            f"{role} encoder: maps (B, H, W, 3) -> code grid",
            " -> ".join(_shape(s[1:]) for s in by_size.values()) + " -> " + _shape(grid.shape[1:]),
            "(C, h, w) per resolution; the grid is quantised per cell and flattened to (B, Dz)",
        )

    n_vertices = _template_vertex_count()
    vertices = "V" if n_vertices is None else str(n_vertices)
    add(
        "output",
        "offsets",
        f"({n_frames}, {vertices}, 3)",
        "float32 metres, motion maps sampled at the vertex UVs",
    )
    r = config.wrinkle_vq.resolution
    add(
        "output",
        "wrinkle ratio maps",
        _shape((n_frames, r, r, 3)),
        "float16 exp(log ratio), exactly 1 off the face",
    )
    n_out = output_frame_count(seconds, fps)
    add(
        "output",
        f"resampled to {fps:g} fps",
        f"({n_out}, {vertices}, 3) / {_shape((n_out, r, r, 3))}",
        "linear in time, ceil(duration * fps) frames",
    )
    return rows


def _template_vertex_count() -> int | None:
    try:
        from .template import load_template

        return len(load_template().vertices)
    except (FileNotFoundError, OSError):
        return None


def format_table(rows) -> str:
    lines = ["| stage | tensor | shape | note |", "| --- | --- | --- | --- |"]
    lines += [f"| {stage} | {tensor} | `{shape}` | {note} |" for stage, tensor, shape, note in rows]
    return "\n".join(lines)


def describe(args) -> int:
    config, n_styles = _config_for(args.describe)
    if n_styles is None and args.describe == "bundled":
        n_styles = _bundled_style_count()
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise TexTalkerError("--seconds must be a positive number")
    print(f"### `{config.name}` config, {args.seconds:g} s of audio\n")
    print(format_table(describe_shapes(config, args.seconds, n_styles, check_fps(args.fps))))
    return 0


def _bundled_style_count() -> int | None:
    import json

    from .pipeline import DEFAULT_WEIGHTS
    from .weights import load_weights

    try:
        return len(json.loads(load_weights(DEFAULT_WEIGHTS, verify=False).metadata["style_names"]))
    except (TexTalkerError, OSError, KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.describe is None and not args.list_styles:
        if args.audio is None:
            parser.error("give an audio file (or --list-styles / --describe)")
        if args.out is None:
            parser.error("--out is required to write the results")
        try:
            args.options = GenerationOptions(args.speaking_style, args.wrinkle_style, args.fps, args.seed,
                                             args.steps, args.blink_rate, args.brow_rate, args.lip_seal)
        except ArgumentError as exc:
            parser.error(str(exc))
    try:
        if args.describe is not None:
            return describe(args)
        if args.list_styles:
            return list_styles(args)
        return generate(args)
    except TexTalkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
