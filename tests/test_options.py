"""core/options.py: one GenerationOptions, checked when it is made, used by the Pipeline as is."""

import dataclasses

import numpy as np
import pytest

from textalker_blender.core.arguments import ArgumentError
from textalker_blender.core.lip_seal import DEFAULT_SEAL_MM
from textalker_blender.core.options import GenerationOptions


def test_defaults_and_checked_values():
    options = GenerationOptions()
    assert (options.speaking_style, options.wrinkle_style, options.fps, options.seed, options.steps,
            options.blink_rate, options.brow_rate) == (0, None, 30.0, 0, None, None, None)  # wrinkle None: the weights' default
    assert options.lip_seal_mm == DEFAULT_SEAL_MM > 0  # the seal is on unless switched off
    assert GenerationOptions(lip_seal_mm=0).lip_seal_mm == 0.0
    whole = GenerationOptions(speaking_style=2.0, fps=24, seed=3.0, steps=4.0, blink_rate=12, brow_rate=6)
    assert whole.speaking_style == 2 and isinstance(whole.speaking_style, int)
    assert whole.fps == 24.0 and isinstance(whole.fps, float)
    assert (whole.seed, whole.steps, whole.blink_rate) == (3, 4, 12.0)
    assert whole.brow_rate == 6.0 and isinstance(whole.brow_rate, float)
    assert GenerationOptions(speaking_style="kal, S00").speaking_style == "kal, S00"
    with pytest.raises(ArgumentError, match="speaking style"):  # only the wrinkle style has a default
        GenerationOptions(speaking_style=None)


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be a whole number from 1"),
    ("steps", 2.5, "steps must be a whole number from 1"),
    ("seed", 1.5, "seed must be a whole number"),
    ("fps", "30", "fps must be a number"),
    ("fps", 0.5, "fps must be a number from 1"),
    ("blink_rate", 500, "blink_rate"),
    ("brow_rate", -1, "brow_rate: the brow emphasis rate must be between 0 and 120"),
    ("brow_rate", "often", "brow_rate"),
    ("brow_rate", True, "brow_rate"),
    ("lip_seal_mm", -0.5, "lip_seal_mm must be a number of millimetres from 0"),
    ("lip_seal_mm", 20.5, "lip_seal_mm must be a number of millimetres from 0"),
    ("lip_seal_mm", float("nan"), "lip_seal_mm"),
    ("lip_seal_mm", None, "lip_seal_mm"),
    ("lip_seal_mm", True, "lip_seal_mm"),
    ("speaking_style", -1, "speaking style must be a style number"),
    ("wrinkle_style", "  ", "wrinkle style must be a style number"),
    ("speaking_style", True, "speaking style must be a style number"),
])
def test_bad_values_are_refused_where_the_options_are_made(field, value, message):
    with pytest.raises(ArgumentError, match=message):
        GenerationOptions(**{field: value})
    with pytest.raises(ArgumentError, match=message):
        GenerationOptions().replace(**{field: value})


def test_options_are_frozen_and_replace_checks_names():
    options = GenerationOptions(seed=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 6
    assert options.replace(seed=6).seed == 6 and options.seed == 5
    with pytest.raises(TypeError, match="unknown generation option"):
        options.replace(sead=6)
    assert GenerationOptions.from_values(options) is options
    assert GenerationOptions.from_values(None, fps=25).fps == 25.0
    with pytest.raises(TypeError, match="must be GenerationOptions"):
        GenerationOptions.from_values({"fps": 25})


def test_pipeline_takes_the_options_object_or_its_fields_as_keywords():
    from textalker_blender.blender import catalog
    from textalker_blender.core.pipeline import Pipeline

    if not catalog.weights_path().is_file():
        pytest.skip("bundled weights not built")
    pipeline = Pipeline.load(device="cpu")
    audio = (np.zeros(8000, np.float32), 16000)
    by_object = pipeline.generate(audio, GenerationOptions(fps=25, seed=3, steps=1, blink_rate=0))
    by_keywords = pipeline.generate(audio, fps=25, seed=3, steps=1, blink_rate=0)
    np.testing.assert_array_equal(by_object.offsets, by_keywords.offsets)
    assert by_object.fps == 25.0 and by_object.steps == 1
    mixed = pipeline.generate(audio, GenerationOptions(fps=25, seed=3, blink_rate=0), steps=1)
    np.testing.assert_array_equal(mixed.offsets, by_object.offsets)
    with pytest.raises(ArgumentError, match="from 1 to"):  # the model's own bound, known only here
        pipeline.generate(audio, GenerationOptions(steps=10_000))
