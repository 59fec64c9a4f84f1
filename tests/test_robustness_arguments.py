"""Robustness, round 2 (issue #17): one rule per generation argument everywhere, and messages
that say what is wrong.

`core.arguments` holds the rules; the Pipeline, the add-on API, the panel and both command lines
use them, so `steps=0`, `steps=2.5` or `seed=1.5` get the same answer wherever they are given
(they used to mean "default" in the API, be refused by the core CLI, or be truncated silently).
"""

from __future__ import annotations

import numpy as np
import pytest

from textalker_blender.core import arguments, resources
from textalker_blender.core.errors import ResourceError, TexTalkerError

BAD_STEPS = [0, -1, 2.5, float("nan"), True, "4", 501]
BAD_SEEDS = [1.5, float("inf"), "7", None, False, 2**64]


def test_one_rule_per_argument():
    assert arguments.check_steps(None, 500) is None
    assert arguments.check_steps(4, 500) == 4 and arguments.check_steps(4.0, 500) == 4
    assert arguments.check_steps(np.int64(3), 500) == 3
    for bad in BAD_STEPS:
        with pytest.raises(arguments.ArgumentError, match="steps must be a whole number from 1 to 500"):
            arguments.check_steps(bad, 500)
    assert arguments.check_seed(0) == 0 and arguments.check_seed(-5) == -5 and arguments.check_seed(7.0) == 7
    for bad in BAD_SEEDS:
        with pytest.raises(arguments.ArgumentError, match="seed must be a whole number"):
            arguments.check_seed(bad)
    for bad in (0, 0.5, 1001, float("nan"), "30", True):
        with pytest.raises(arguments.ArgumentError, match="fps must be a number from 1 to 1000"):
            arguments.check_fps(bad)
    error = arguments.ArgumentError("x")
    assert isinstance(error, TexTalkerError) and isinstance(error, ValueError)


def test_the_command_lines_parse_text_by_the_same_rules():
    import argparse

    parse_steps = arguments.argparse_type(arguments.check_steps)
    assert parse_steps("4") == 4 and parse_steps(" 6 ") == 6
    for text in ("0", "2.5", "four", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="steps must be a whole number"):
            parse_steps(text)
    parse_seed = arguments.argparse_type(arguments.check_seed)
    assert parse_seed("-3") == -3 and parse_seed("1e3") == 1000
    with pytest.raises(argparse.ArgumentTypeError, match="seed must be a whole number"):
        parse_seed("1.5")


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "steps must be a whole number from 1"),
    (["--steps", "2.5"], "steps must be a whole number from 1"),
    (["--seed", "1.5"], "seed must be a whole number"),
    (["--fps", "0"], "fps must be a number from 1 to 1000"),
])
def test_core_cli_refuses_what_the_api_refuses(tmp_path, capsys, argv, message):
    from textalker_blender.core.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["speech.wav", "--out", str(tmp_path / "x.npz"), *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def pipeline():
    from textalker_blender.blender import catalog
    from textalker_blender.core.pipeline import Pipeline

    if not catalog.weights_path().is_file():
        pytest.skip("bundled weights not built")
    return Pipeline.load(device="cpu")


@pytest.mark.parametrize("options, message", [
    ({"steps": 0}, "steps must be a whole number from 1 to 500"),
    ({"steps": 2.5}, "steps must be a whole number from 1 to 500"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"fps": "30"}, "fps must be a number"),
])
def test_pipeline_refuses_zero_and_fractional_steps_and_seeds(pipeline, options, message):
    audio = (np.zeros(1600, np.float32), 16000)
    with pytest.raises(TexTalkerError, match=message):
        pipeline.generate(audio, **options)
    assert pipeline.generate(audio, steps=1.0, seed=2.0).steps == 1  # whole floats are whole numbers


def test_disk_space_refusal_states_the_reserve_when_it_is_the_shortfall(tmp_path):
    needed, free = int(88.5 * 1024**2), 300 * 1024**2  # fits the free space, not with the reserve
    with pytest.raises(ResourceError) as raised:
        resources.check_disk_space(tmp_path, needed, free=free)
    message = str(raised.value)
    assert "need 88.5 MB" in message and "300.0 MB free" in message
    assert f"at least {resources.format_bytes(resources.DISK_RESERVE_BYTES)} free" in message
    assert "44.5 MB short" in message
