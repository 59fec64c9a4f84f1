"""`python -m textalker_blender.core`: generation to .npz, --list-styles, --describe, user errors.

Runs the real command in a subprocess (plain Python, no bpy) on a 1 s synthetic WAV with the
bundled weights, as a user would.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from core_helpers import speech_like, write_blink_input_weights

from textalker_blender.core.__main__ import describe_shapes
from textalker_blender.core.lip_seal import DEFAULT_SEAL_MM
from textalker_blender.core.config import ModelConfig
from textalker_blender.core.pipeline import DEFAULT_WEIGHTS
from textalker_blender.core.weights import load_weights, sha256_file

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "textalker_blender.core", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "one_second.wav"
    soundfile.write(path, speech_like(1.0, seed=2), 16000)
    return path


@pytest.fixture(scope="module")
def bundled_metadata() -> dict:
    return load_weights(DEFAULT_WEIGHTS).metadata


def test_generates_npz_with_consistent_shapes_and_metadata(wav, tmp_path, bundled_metadata):
    out = tmp_path / "nested" / "result"  # no .npz suffix and a missing folder: both handled
    styles = json.loads(bundled_metadata["style_keys"])
    done = run_cli(
        wav,
        "--out",
        out,
        "--fps",
        "24",
        "--seed",
        "3",
        "--steps",
        "2",
        "--wrinkle-style",
        styles[1],
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # progress and summary go to stderr
    assert "diffusion" in done.stderr and "wrote" in done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["result"]  # no temporary left

    with np.load(out) as result:  # allow_pickle stays False: metadata are plain arrays
        offsets, maps = result["offsets"], result["wrinkle_maps"]
        config = ModelConfig.from_json(bundled_metadata["config"])
        assert offsets.dtype == np.float32 and maps.dtype == np.float16
        assert offsets.shape[0] == maps.shape[0] == int(result["n_frames"]) == 24  # 1 s at 24 fps
        assert offsets.shape[2] == 3 and maps.shape[1:] == (config.wrinkle_vq.resolution,) * 2 + (
            3,
        )
        assert float(result["fps"]) == 24.0 and float(result["duration_s"]) == pytest.approx(1.0)
        assert np.isfinite(offsets).all() and np.abs(offsets).max() > 0
        assert str(result["speaking_style"]) == styles[0]
        assert str(result["wrinkle_style"]) == styles[1]
        assert int(result["seed"]) == 3 and int(result["steps"]) == 2
        assert np.isnan(float(result["blink_rate"]))  # not given: the speaking style's own rate
        assert bool(result["blink_input"]) == config.blink_condition
        assert np.isnan(float(result["brow_rate"]))
        assert bool(result["brow_input"]) == config.brow_condition
        assert float(result["lip_seal_mm"]) == DEFAULT_SEAL_MM
        assert str(result["weights_sha256"]) == sha256_file(DEFAULT_WEIGHTS)
        assert bool(result["trained"]) == (bundled_metadata["trained"] == "true")
        assert str(result["device"]) == "cpu"


def test_list_styles_prints_every_style(bundled_metadata):
    done = run_cli("--list-styles", "--weights", DEFAULT_WEIGHTS)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    keys = json.loads(bundled_metadata["style_keys"])
    names = json.loads(bundled_metadata["style_names"])
    assert lines[0] == "id\tkey\tname"
    assert lines[1:] == [f"{i}\t{k}\t{n}" for i, (k, n) in enumerate(zip(keys, names, strict=True))]


def test_user_errors_exit_1_with_a_message_and_no_traceback(wav, tmp_path):
    missing = run_cli(tmp_path / "nothing_here.wav", "--out", tmp_path / "r.npz")
    assert missing.returncode == 1
    assert "Audio file not found" in missing.stderr and "nothing_here.wav" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown_style = run_cli(
        wav, "--out", tmp_path / "r.npz", "--speaking-style", "nobody", "--quiet"
    )
    assert unknown_style.returncode == 1
    assert "unknown style" in unknown_style.stderr and "Traceback" not in unknown_style.stderr
    assert not (tmp_path / "r.npz").exists()
    usage = run_cli(wav)  # no --out: argparse's usage error
    assert usage.returncode == 2 and "--out" in usage.stderr
    for rate in ("-1", "120.5", "nan", "often"):
        bad_rate = run_cli(wav, "--out", tmp_path / "r.npz", "--blink-rate", rate, "--quiet")
        assert bad_rate.returncode == 2, rate
        assert "the blink rate must be between 0 and 120 blinks per minute" in bad_rate.stderr
        assert "Traceback" not in bad_rate.stderr
    bad_brows = run_cli(wav, "--out", tmp_path / "r.npz", "--brow-rate", "-2", "--quiet")
    assert bad_brows.returncode == 2 and "brow emphasis rate must be between 0 and 120" in bad_brows.stderr
    bad_seal = run_cli(wav, "--out", tmp_path / "r.npz", "--lip-seal", "25", "--quiet")
    assert bad_seal.returncode == 2 and "lip_seal_mm must be a number of millimetres from 0" in bad_seal.stderr
    assert not (tmp_path / "r.npz").exists()


@pytest.fixture(scope="module")
def blink_weights(tmp_path_factory) -> Path:
    return write_blink_input_weights(tmp_path_factory.mktemp("blink_weights"))


def test_blink_rate_is_used_and_recorded(wav, tmp_path, blink_weights):
    results = {}
    for rate in ("0", "120"):
        out = tmp_path / f"blinks_{rate}.npz"
        done = run_cli(wav, "--out", out, "--weights", blink_weights, "--blink-rate", rate,
                       "--steps", "1", "--seed", "1", "--device", "cpu", "--quiet")
        assert done.returncode == 0, done.stderr
        with np.load(out) as result:
            assert float(result["blink_rate"]) == float(rate)
            assert bool(result["blink_input"]) is True
            results[rate] = result["offsets"]
    assert np.abs(results["0"]).max() > 0
    assert not np.array_equal(results["0"], results["120"])  # blinks change the motion


@pytest.mark.parametrize("preset", ["bundled", "paper"])
def test_describe_matches_the_config(preset):
    config = ModelConfig.preset(preset)
    rows = {
        (stage, tensor): shape for stage, tensor, shape, _ in describe_shapes(config, seconds=4.0)
    }
    frames = 120  # 4 s at MODEL_FPS
    assert rows[("audio", "samples")] == "(64000,)"
    assert rows[("audio", "features")] == str((frames, config.audio_feature_dim))
    assert rows[("windows", "noisy latents x_t")] == str(
        (1, config.window_frames, config.joint_latent_dim)
    )
    assert rows[("denoiser", "tokens (input_proj)")] == str((1, config.window_frames, config.width))
    assert rows[("denoiser", "x0 prediction (output_proj)")] == str(
        (1, config.window_frames, config.joint_latent_dim)
    )
    assert rows[("latents", "z_f (motion)")] == str((frames, config.motion_latent_dim))
    assert rows[("latents", "z_w (wrinkle)")] == str((frames, config.wrinkle_latent_dim))
    r = config.wrinkle_vq.resolution
    assert rows[("VQ decode", "wrinkle maps")] == str((frames, r, r, 3))
    latent = config.motion_vq.latent_resolution
    decoder = rows[("VQ decode", "motion decoder activations")]
    assert decoder.startswith(
        str((config.motion_vq.base_channels * config.motion_vq.channel_mult[-1], latent, latent))
    )
    assert decoder.endswith(
        str(
            (
                config.motion_vq.base_channels,
                config.motion_vq.resolution,
                config.motion_vq.resolution,
            )
        )
    )


def test_describe_command_prints_a_markdown_table():
    done = run_cli("--describe", "bundled", "--seconds", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("### `bundled` config, 2 s of audio")
    assert "| latents | z_f (motion) | `(60, 256)` |" in done.stdout
    bad = run_cli("--describe", "huge")
    assert bad.returncode == 1 and "--describe takes" in bad.stderr
