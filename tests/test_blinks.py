"""Blink conditioning: core/blinks.py, the denoiser's blink input, the per-style statistics in the
weights, the pipeline's `blink_rate`, and the stage-2 training side (tools/training/ldm_stage.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from core_helpers import grid_template, needs_dataset_tools, speech_like, tiny_config, tiny_training_config

from textalker_blender.core.blinks import (
    CLOSED_THRESHOLD,
    DEFAULT_STATISTICS,
    MAX_RATE_PER_MIN,
    BlinkStatistics,
    blink_shape,
    blink_statistics,
    check_rate,
    eyelid_closure,
    sample_blink_track,
)
from textalker_blender.core.config import ModelConfig
from textalker_blender.core.denoiser import LatentDenoiser
from textalker_blender.core.sampling import sample_sequence
from textalker_blender.core.schedule import DDPMSchedule
from textalker_blender.core.errors import WeightsError
from textalker_blender.core.model import TexTalkerModel, random_pivots
from textalker_blender.core.style import StylePivots
from textalker_blender.core.template import DEFAULT_TEMPLATE_PATH, load_template
from textalker_blender.core.weights import load_weights, save_weights

REPO = Path(__file__).resolve().parents[1]

from tools.training.ldm_stage import initialise_from, trainable_parameters, window_blink  # noqa: E402

# The blink-conditioned denoiser's own parameters (the token input `blink_proj`, the output
# direction `blink_out`): what a warm start from a model without blink input may lack.
BLINK_PARAMETERS = "denoiser.blink_"

FPS = 30.0


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def template():
    if not DEFAULT_TEMPLATE_PATH.is_file():
        pytest.skip("template asset not built (run tools/build_template.py)")
    return load_template()


def tiny_model(blink: bool = True, seed: int = 0, n_styles: int = 3) -> TexTalkerModel:
    config = tiny_config(blink_condition=blink)
    torch.manual_seed(seed)
    names = [f"Subject {i}" for i in range(n_styles)]
    zero = StylePivots(np.zeros((n_styles, config.motion_latent_dim)), np.zeros((n_styles, config.wrinkle_latent_dim)), names)
    model = TexTalkerModel(config, zero)
    model.set_pivots(random_pivots(config, names, model, seed=seed))
    return model.eval()


def make_blink_proj_nonzero(denoiser: LatentDenoiser, seed: int = 3) -> None:
    """Random weights for the token input only (the output direction stays as it is)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        denoiser.blink_proj.weight.copy_(torch.randn(denoiser.blink_proj.weight.shape, generator=g))
        denoiser.blink_proj.bias.copy_(torch.randn(denoiser.blink_proj.bias.shape, generator=g))


def blink_events(track: np.ndarray) -> int:
    """Upward crossings of the closed threshold."""
    above = np.concatenate([[False], np.asarray(track) > CLOSED_THRESHOLD])
    return int(np.count_nonzero(~above[:-1] & above[1:]))


# ---------------------------------------------------------------------------- eyelid closure
def test_eyelid_closure_reads_the_template_blink_units(template):
    pairs = [(0.0, 0.0), (1.0, 1.0), (0.3, 0.7), (0.5, 0.5), (0.9, 0.2), (0.05, 0.0)]
    weights = np.stack([template.unit_weights(eyeBlinkLeft=left, eyeBlinkRight=right) for left, right in pairs])
    closure = eyelid_closure(template, template.apply_units(weights))
    assert closure.shape == (len(pairs),) and closure.dtype == np.float32
    np.testing.assert_allclose(closure, [(left + right) / 2 for left, right in pairs], atol=1e-3)
    # Other units do not count: jaw alone is no blink, and a blink under a jaw opening keeps its value.
    jaw = template.apply_units(np.stack([template.unit_weights(jawOpen=1.0),
                                         template.unit_weights(jawOpen=0.8, eyeBlinkLeft=0.4, eyeBlinkRight=0.6)]))
    np.testing.assert_allclose(eyelid_closure(template, jaw), [0.0, 0.5], atol=1e-3)
    # Clipped to [0, 1] (a wider-than-template closure, an opening eye).
    beyond = template.apply_units(np.stack([template.unit_weights(eyeBlinkLeft=2.0, eyeBlinkRight=2.0),
                                            template.unit_weights(eyeBlinkLeft=-1.0, eyeBlinkRight=-1.0)]))
    np.testing.assert_allclose(eyelid_closure(template, beyond), [1.0, 0.0], atol=1e-6)


def test_eyelid_closure_of_a_sequence_follows_a_sampled_track(template):
    track = sample_blink_track(90, FPS, 120.0, 0.2, np.random.default_rng(4))
    assert track.max() > 0.8
    weights = np.zeros((90, template.n_units), np.float32)
    weights[:, template.unit_index("eyeBlinkLeft")] = track
    weights[:, template.unit_index("eyeBlinkRight")] = track
    weights[:, template.unit_index("jawOpen")] = np.linspace(0, 1, 90)
    np.testing.assert_allclose(eyelid_closure(template, template.apply_units(weights)), track, atol=1e-3)


# ---------------------------------------------------------------------------- statistics and sampling
@pytest.mark.parametrize("rate,duration", [(18.0, 0.15), (60.0, 0.25)])
def test_blink_statistics_recover_the_sampled_rate_and_duration(rate, duration):
    rng = np.random.default_rng(11)
    # 60 one-minute tracks: the rate estimate's spread is ~3 % at 18 per minute.
    tracks = [sample_blink_track(int(60 * FPS), FPS, rate, duration, rng) for _ in range(60)]
    for track in tracks:
        assert track.dtype == np.float32 and track.min() >= 0.0 and track.max() <= 1.0
    stats = blink_statistics(tracks, FPS)
    assert stats.rate_per_min == pytest.approx(rate, rel=0.1)
    assert stats.duration_s == pytest.approx(duration, rel=0.1)
    # The rate counts the upward threshold crossings per minute.
    assert stats.rate_per_min == pytest.approx(sum(blink_events(t) for t in tracks) / 60.0)


def test_blink_statistics_scale_with_fps_and_handle_no_blinks():
    times = (np.arange(int(10 * FPS)) + 0.5) / FPS
    track = np.maximum(blink_shape(times, 2.0, 0.2), blink_shape(times, 6.0, 0.2)).astype(np.float32)
    stats = blink_statistics([track], FPS)
    assert stats.rate_per_min == pytest.approx(12.0)  # 2 blinks in 10 s
    # (one frame is 17 % of this blink's width: two blinks at the same phase measure it coarsely)
    assert stats.duration_s == pytest.approx(0.2, rel=0.25)
    # The same frames read at twice the frame rate: twice the rate, about half the duration.
    fast = blink_statistics([track], 2 * FPS)
    assert fast.rate_per_min == pytest.approx(24.0)
    assert fast.duration_s == pytest.approx(stats.duration_s / 2, rel=0.15)
    # No blinks: rate 0, default duration; no frames: the defaults.
    assert blink_statistics([np.zeros(300, np.float32), np.full(50, 0.4, np.float32)], FPS) == BlinkStatistics(0.0, DEFAULT_STATISTICS.duration_s)
    assert blink_statistics([], FPS) == DEFAULT_STATISTICS
    with pytest.raises(ValueError):
        blink_statistics([track], 0.0)


def test_blink_shape_closes_holds_and_opens():
    times = np.linspace(0.0, 1.0, 1001)
    shape = blink_shape(times, 0.3, 0.2, depth=0.9)
    assert shape[times < 0.3].max() == 0.0 and shape[times > 0.5 + 1e-9].max() == 0.0
    assert shape.max() == pytest.approx(0.9)
    peak = int(np.argmax(shape))
    assert np.all(np.diff(shape[: peak + 1]) >= 0) and np.all(np.diff(shape[peak:]) <= 0)
    # closing (35 % of 0.2 s) is faster than opening
    closing = np.count_nonzero((shape > 0) & (times < times[peak]))
    opening = np.count_nonzero((shape > 0) & (shape < 0.9) & (times > times[peak]))
    assert opening > closing


def test_sample_blink_track_arguments_zero_rate_and_seeding():
    assert not sample_blink_track(900, FPS, 0.0, 0.15, np.random.default_rng(0)).any()
    assert sample_blink_track(900, FPS, 0.0, 0.15, np.random.default_rng(0)).shape == (900,)
    assert sample_blink_track(0, FPS, 18.0, 0.15, np.random.default_rng(0)).shape == (0,)
    for kwargs in ({"rate_per_min": -1.0}, {"rate_per_min": MAX_RATE_PER_MIN + 0.5}, {"rate_per_min": 500.0},
                   {"duration_s": 0.0}, {"duration_s": -0.1}, {"n_frames": -1}):
        arguments = {"n_frames": 900, "fps": FPS, "rate_per_min": 18.0, "duration_s": 0.15, **kwargs}
        with pytest.raises(ValueError):
            sample_blink_track(**arguments, rng=np.random.default_rng(0))
    # The limits themselves are allowed.
    assert sample_blink_track(900, FPS, MAX_RATE_PER_MIN, 0.15, np.random.default_rng(0)).max() > 0.8
    a = sample_blink_track(1800, FPS, 18.0, 0.15, np.random.default_rng(42))
    b = sample_blink_track(1800, FPS, 18.0, 0.15, np.random.default_rng(42))
    c = sample_blink_track(1800, FPS, 18.0, 0.15, np.random.default_rng(43))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert blink_events(a) > 0


def test_check_rate_is_the_one_range_check():
    assert check_rate(0) == 0.0 and check_rate("12.5") == 12.5 and check_rate(np.float32(30)) == 30.0
    assert check_rate(MAX_RATE_PER_MIN) == MAX_RATE_PER_MIN
    for bad in (-0.01, MAX_RATE_PER_MIN + 0.01, float("nan"), float("inf"), "often", None, True):
        with pytest.raises(ValueError, match="blink rate must be between 0 and 120"):
            check_rate(bad)


def test_blink_statistics_dict_round_trip():
    stats = BlinkStatistics(17.123456, 0.1734567)
    data = json.loads(json.dumps(stats.to_dict()))
    assert data == {"rate_per_min": 17.1235, "duration_s": 0.1735}
    assert BlinkStatistics.from_dict(data) == BlinkStatistics(17.1235, 0.1735)


# ---------------------------------------------------------------------------- denoiser
def denoiser_inputs(denoiser: LatentDenoiser, n_frames: int = 12, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, n_frames, denoiser.latent_dim, generator=g)
    audio = torch.randn(batch, n_frames, denoiser.config.audio_feature_dim, generator=g)
    t = torch.tensor([10, 30][:batch])
    prefix = torch.zeros(batch, n_frames, dtype=torch.bool)
    prefix[:, :3] = True
    blink = torch.rand(batch, n_frames, generator=g)
    return x, t, audio, prefix, blink


def test_blink_input_is_zero_initialised_and_used_once_trained():
    torch.manual_seed(0)
    denoiser = LatentDenoiser(tiny_config(blink_condition=True)).eval()
    blink_parameters = {n: p for n, p in denoiser.named_parameters() if n.startswith("blink_")}
    assert {"blink_proj.weight", "blink_proj.bias"} <= set(blink_parameters)
    for name, parameter in blink_parameters.items():
        assert not parameter.any(), name
    x, t, audio, prefix, blink = denoiser_inputs(denoiser)
    with torch.no_grad():
        reference = denoiser(x, t, audio, prefix)
        for track in (blink, torch.ones_like(blink), torch.zeros_like(blink)):
            assert torch.equal(denoiser(x, t, audio, prefix, blink=track), reference)
    make_blink_proj_nonzero(denoiser)
    with torch.no_grad():
        with_blink = denoiser(x, t, audio, prefix, blink=blink)
        other_blink = denoiser(x, t, audio, prefix, blink=1.0 - blink)
        without = denoiser(x, t, audio, prefix)
    assert (with_blink - without).abs().max() > 1e-3
    assert (with_blink - other_blink).abs().max() > 1e-3
    # blink=None means "no blink input", the same as before the weights changed
    assert torch.equal(without, reference)


def test_blink_output_direction_adds_closure_times_direction_and_is_fitted_by_least_squares():
    torch.manual_seed(0)
    denoiser = LatentDenoiser(tiny_config(blink_condition=True)).eval()
    x, t, audio, prefix, blink = denoiser_inputs(denoiser)
    g = torch.Generator().manual_seed(8)
    direction = torch.randn(denoiser.latent_dim, generator=g)
    with torch.no_grad():
        reference = denoiser(x, t, audio, prefix, blink=blink)
        denoiser.blink_out.weight.copy_(direction[:, None])
        moved = denoiser(x, t, audio, prefix, blink=blink)
        assert torch.equal(denoiser(x, t, audio, prefix), denoiser(x, t, audio, prefix, blink=None))
    torch.testing.assert_close(moved - reference, blink[..., None] * direction, atol=1e-5, rtol=1e-5)

    # Least squares: latents = base + closure x true direction (+ noise) give back that direction.
    closure = torch.from_numpy(sample_blink_track(3000, FPS, 60.0, 0.2, np.random.default_rng(1)))
    true = torch.randn(denoiser.latent_dim, generator=g) * 3
    x0 = torch.randn(denoiser.latent_dim, generator=g) + closure[:, None] * true
    x0 = x0 + 0.05 * torch.randn(3000, denoiser.latent_dim, generator=g)
    fitted = denoiser.set_blink_direction(x0, closure)
    torch.testing.assert_close(fitted, true, atol=0.05, rtol=0.0)
    assert torch.equal(denoiser.blink_out.weight[:, 0], fitted)
    with pytest.raises(ValueError, match="no blinks"):
        denoiser.set_blink_direction(x0, torch.zeros(3000))


def test_denoiser_without_blink_condition_has_no_blink_input_and_ignores_a_track():
    torch.manual_seed(0)
    denoiser = LatentDenoiser(tiny_config()).eval()
    assert not hasattr(denoiser, "blink_proj")
    assert not any("blink" in name for name in denoiser.state_dict())
    x, t, audio, prefix, blink = denoiser_inputs(denoiser)
    with torch.no_grad():
        assert torch.equal(denoiser(x, t, audio, prefix, blink=blink), denoiser(x, t, audio, prefix))


def test_sample_sequence_passes_the_blink_track_window_by_window():
    torch.manual_seed(0)
    config = tiny_config(blink_condition=True)
    denoiser = LatentDenoiser(config).eval()
    schedule = DDPMSchedule(config.diffusion_steps, config.beta_schedule)
    n_frames = 30  # three windows of 12 with a 3-frame prefix
    audio = torch.randn(n_frames, config.audio_feature_dim, generator=torch.Generator().manual_seed(2))
    blink = torch.from_numpy(sample_blink_track(n_frames, FPS, 120.0, 0.2, np.random.default_rng(0)))

    def sample(track):
        return sample_sequence(denoiser, schedule, audio, 3, torch.Generator().manual_seed(5), blink=track)

    with torch.no_grad():
        plain = sample(None)
        assert torch.equal(sample(blink), plain)  # zero init: the track changes nothing yet
        make_blink_proj_nonzero(denoiser)
        assert torch.equal(sample(None), plain)
        changed = sample(blink)
        assert changed.shape == plain.shape == (n_frames, denoiser.latent_dim)
        # A blink only in the last window changes frames there, nothing before its window.
        late = torch.zeros(n_frames)
        late[-4:] = 1.0
        late_out = sample(late)
        zero_out = sample(torch.zeros(n_frames))
    assert (changed - plain).abs().max() > 1e-3
    difference = (late_out - zero_out).abs().amax(dim=-1)
    assert difference[-4:].max() > 1e-4
    assert difference[:18].max() == 0.0  # windows 0..12 and 9..21 never see frames 26..29


# ---------------------------------------------------------------------------- config
def test_config_leaves_blink_condition_out_at_its_default_and_round_trips_it():
    assert "blink_condition" not in json.loads(ModelConfig().to_json())
    assert "blink_condition" not in ModelConfig.bundled().to_dict()
    assert ModelConfig.from_json(ModelConfig().to_json()).blink_condition is False
    config = ModelConfig(blink_condition=True)
    assert json.loads(config.to_json())["blink_condition"] is True
    loaded = ModelConfig.from_json(config.to_json())
    assert loaded == config and loaded.blink_condition is True
    tiny = tiny_config(blink_condition=True)
    assert ModelConfig.from_dict(tiny.to_dict()) == tiny


# ---------------------------------------------------------------------------- model and weights
STATS = [BlinkStatistics(12.0, 0.15), BlinkStatistics(30.0, 0.25), BlinkStatistics(6.0, 0.2)]


def test_style_blinks_round_trip_through_the_weights_file(tmp_path):
    model = tiny_model()
    make_blink_proj_nonzero(model.denoiser)
    model.style_blinks = list(STATS)
    path = tmp_path / "blink.safetensors"
    model.save(path, trained=True, dataset="unit test")
    weights = load_weights(path)
    assert json.loads(weights.metadata["style_blinks"]) == [s.to_dict() for s in STATS]
    assert "denoiser.blink_proj.weight" in weights.tensors
    loaded = TexTalkerModel.from_weights(weights)
    assert loaded.config.blink_condition is True
    assert loaded.style_blinks == STATS
    assert torch.equal(loaded.denoiser.blink_proj.weight, model.denoiser.blink_proj.weight)
    assert torch.equal(loaded.blink_track(300, FPS, 1, seed=3), model.blink_track(300, FPS, 1, seed=3))

    # Without statistics: no metadata key, and the loaded model has none.
    plain = tiny_model(blink=False)
    plain_path = tmp_path / "plain.safetensors"
    plain.save(plain_path, trained=False, dataset="unit test")
    assert "style_blinks" not in load_weights(plain_path).metadata
    assert TexTalkerModel.from_weights(load_weights(plain_path)).style_blinks is None

    # Unreadable statistics are a weights error, not a crash elsewhere.
    for broken in ("not json", json.dumps([{"rate_per_min": 3.0}]), json.dumps([5])):
        metadata = model.metadata(trained=True, dataset="unit test")
        metadata["style_blinks"] = broken
        broken_path = tmp_path / "broken.safetensors"
        save_weights(broken_path, model.weight_tensors(), metadata)
        with pytest.raises(WeightsError, match="blink statistics"):
            TexTalkerModel.from_weights(load_weights(broken_path))


def test_blink_track_per_style_rate_zero_seed_and_unknown_style():
    assert tiny_model(blink=False).blink_track(300, FPS, 0, seed=0) is None
    assert tiny_model(blink=False).blink_track(300, FPS, 0, seed=0, rate_per_min=60.0) is None

    model = tiny_model()
    model.style_blinks = list(STATS)
    assert model.blink_statistics_for(1) == STATS[1]
    mean = BlinkStatistics(16.0, 0.2)
    for beyond in (3, 17, -1):
        got = model.blink_statistics_for(beyond)
        assert got.rate_per_min == pytest.approx(mean.rate_per_min) and got.duration_s == pytest.approx(mean.duration_s)

    n_frames = int(600 * FPS)
    zero = model.blink_track(n_frames, FPS, 1, seed=0, rate_per_min=0)
    assert zero.shape == (n_frames,) and zero.dtype == torch.float32 and not zero.any()
    same = model.blink_track(n_frames, FPS, 1, seed=9)
    assert torch.equal(same, model.blink_track(n_frames, FPS, 1, seed=9))
    assert not torch.equal(same, model.blink_track(n_frames, FPS, 1, seed=10))
    assert not torch.equal(model.blink_track(n_frames, FPS, 1, seed=-9), same)
    # Each style blinks at its own rate over ten minutes; the artist's rate overrides it.
    for style, stats in enumerate(STATS):
        track = model.blink_track(n_frames, FPS, style, seed=1).numpy()
        assert blink_events(track) / 10.0 == pytest.approx(stats.rate_per_min, rel=0.25)
        assert blink_statistics([track], FPS).duration_s == pytest.approx(stats.duration_s, rel=0.1)
    override = model.blink_track(n_frames, FPS, 2, seed=1, rate_per_min=60.0).numpy()
    assert blink_events(override) / 10.0 == pytest.approx(60.0, rel=0.15)
    # A style beyond the table uses the mean rate and duration.
    unknown = model.blink_track(n_frames, FPS, 5, seed=1).numpy()
    measured = blink_statistics([unknown], FPS)
    assert measured.rate_per_min == pytest.approx(mean.rate_per_min, rel=0.25)
    assert measured.duration_s == pytest.approx(mean.duration_s, rel=0.1)
    # ...and is `sample_blink_track` at those statistics (not another style's)
    other = model.blink_track(n_frames, FPS, 5, seed=1, rate_per_min=mean.rate_per_min).numpy()
    np.testing.assert_array_equal(unknown, other)
    assert not np.array_equal(unknown, model.blink_track(n_frames, FPS, 0, seed=1, rate_per_min=mean.rate_per_min).numpy())
    # The salt (the pipeline's audio hash) moves the blinks; the same salt gives the same track.
    salted = model.blink_track(n_frames, FPS, 1, seed=9, salt=12345)
    assert torch.equal(salted, model.blink_track(n_frames, FPS, 1, seed=9, salt=12345))
    assert not torch.equal(salted, same)
    # No table at all: the defaults.
    model.style_blinks = None
    assert model.blink_statistics_for(0) == DEFAULT_STATISTICS


# ---------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def blink_pipeline(tmp_path_factory):
    from textalker_blender.core.pipeline import Pipeline

    model = tiny_model()
    make_blink_proj_nonzero(model.denoiser)
    model.style_blinks = list(STATS)
    path = tmp_path_factory.mktemp("blink_weights") / "blink.safetensors"
    model.save(path, trained=False, dataset="unit test")
    pipe = Pipeline.load(path, "cpu", template=grid_template())
    yield pipe
    Pipeline.clear_cache()


AUDIO = (speech_like(2.0), 16000)


@pytest.mark.parametrize("bad", [-1, -0.01, 120.5, 500, float("nan"), float("inf"), "12", True])
def test_pipeline_refuses_a_blink_rate_out_of_range(blink_pipeline, bad):
    with pytest.raises(ValueError, match="blink_rate"):
        blink_pipeline.generate(AUDIO, speaking_style=0, fps=30, seed=0, blink_rate=bad)
    with pytest.raises(ValueError, match="blink_rate"):
        blink_pipeline.generate_chunks(AUDIO, speaking_style=0, fps=30, seed=0, blink_rate=bad)


def test_pipeline_accepts_a_numpy_blink_rate(blink_pipeline):
    as_numpy = blink_pipeline.generate(AUDIO, speaking_style=0, fps=30, seed=0, blink_rate=np.float32(30.0)).offsets
    as_float = blink_pipeline.generate(AUDIO, speaking_style=0, fps=30, seed=0, blink_rate=30.0).offsets
    np.testing.assert_array_equal(as_numpy, as_float)


def test_sample_blink_track_refuses_a_frame_rate_that_is_not_positive():
    for fps in (0, -30):
        with pytest.raises(ValueError, match="fps"):
            sample_blink_track(90, fps, 15.0, 0.15, np.random.default_rng(0))


def test_pipeline_blink_rate_drives_a_blink_model_and_is_seeded(blink_pipeline):
    def run(rate, seed=0):
        return blink_pipeline.generate(AUDIO, speaking_style=0, fps=30, seed=seed, blink_rate=rate).offsets

    none = run(0)
    assert np.array_equal(none, run(0))
    busy = run(120)
    assert np.array_equal(busy, run(120))
    assert np.abs(busy - none).max() > 1e-6  # the blink input reaches the output
    assert np.array_equal(run(0.0), none)  # 0 and 0.0 are the same request
    assert np.array_equal(run(MAX_RATE_PER_MIN), busy)


def test_pipeline_blink_rate_is_ignored_by_a_model_without_blink_input(tmp_path):
    from textalker_blender.core.pipeline import Pipeline

    path = tmp_path / "plain.safetensors"
    tiny_model(blink=False).save(path, trained=False, dataset="unit test")
    pipe = Pipeline.load(path, "cpu", template=grid_template())
    try:
        default = pipe.generate(AUDIO, speaking_style=0, fps=30, seed=0).offsets
        assert np.array_equal(pipe.generate(AUDIO, speaking_style=0, fps=30, seed=0, blink_rate=120).offsets, default)
        with pytest.raises(ValueError, match="blink_rate"):
            pipe.generate(AUDIO, speaking_style=0, fps=30, seed=0, blink_rate=-1)
    finally:
        Pipeline.clear_cache()


# ---------------------------------------------------------------------------- training helpers
def test_window_blink_stacks_the_windows_or_gives_none():
    items = [{"blink": torch.arange(10.0)}, {"blink": torch.arange(10.0) + 100}]
    windows = window_blink(items, [2, 5], 4, "cpu")
    assert torch.equal(windows, torch.tensor([[2.0, 3, 4, 5], [105.0, 106, 107, 108]]))
    assert window_blink([{"z_motion": torch.zeros(3)}], [0], 2, "cpu") is None
    assert window_blink([], [], 2, "cpu") is None


def test_initialise_from_warm_starts_a_blink_model_from_weights_without_blink_input(tmp_path):
    source_model = tiny_model(blink=False, seed=0)
    source = tmp_path / "source.safetensors"
    source_model.save(source, trained=True, dataset="unit test", update_manifest=False)
    source_tensors = load_weights(source, verify=False).tensors
    assert not any(k.startswith(BLINK_PARAMETERS) for k in source_tensors)

    model = tiny_model(blink=True, seed=1)
    params = dict(trainable_parameters(model))
    blink_names = [k for k in params if k.startswith(BLINK_PARAMETERS)]
    assert {"denoiser.blink_proj.bias", "denoiser.blink_proj.weight"} <= set(blink_names)
    others = [k for k in params if not k.startswith(BLINK_PARAMETERS)]
    assert any(not torch.equal(params[k], source_tensors[k]) for k in others)  # starts elsewhere
    copied = initialise_from(model, params, source)
    assert copied == set(others)  # train_ldm fits the blink direction only when it was not copied
    for name in others:
        assert torch.equal(params[name].detach(), source_tensors[name]), name
    for name in blink_names:
        assert not params[name].any(), name
    # Zero blink input: the warm-started model computes what the source did, whatever the track.
    x, t, audio, prefix, blink = denoiser_inputs(model.denoiser)
    with torch.no_grad():
        assert torch.equal(model.denoiser(x, t, audio, prefix, blink=blink), source_model.denoiser(x, t, audio, prefix))

    # A source that has blink input gives its own values.
    trained = tiny_model(blink=True, seed=2)
    make_blink_proj_nonzero(trained.denoiser)
    with torch.no_grad():
        for name, parameter in trained.denoiser.named_parameters():
            if name.startswith("blink_") and not parameter.any():
                parameter.fill_(0.5)
    with_blink = tmp_path / "with_blink.safetensors"
    trained.save(with_blink, trained=True, dataset="unit test", update_manifest=False)
    assert initialise_from(model, params, with_blink) == set(params)
    trained_parameters = dict(trained.named_parameters())
    for name in blink_names:
        assert torch.equal(params[name].detach(), trained_parameters[name]), name

    # Any other missing denoiser tensor is still refused.
    name = "denoiser.output_proj.weight"
    stripped = {k: v for k, v in source_tensors.items() if k != name}
    broken = tmp_path / "stripped.safetensors"
    save_weights(broken, stripped, source_model.metadata(trained=True, dataset="unit test"), update_manifest=False)
    with pytest.raises(ValueError, match="not a warm start"):
        fresh = tiny_model(blink=True, seed=1)
        initialise_from(fresh, dict(trainable_parameters(fresh)), broken)
    # ...and so is a blink input of another shape.
    wide = dict(source_tensors)
    wide["denoiser.blink_proj.weight"] = torch.ones(model.config.width, 2)
    wide["denoiser.blink_proj.bias"] = torch.ones(model.config.width)
    wide_path = tmp_path / "wide.safetensors"
    save_weights(wide_path, wide, source_model.metadata(trained=True, dataset="unit test"), update_manifest=False)
    with pytest.raises(ValueError, match="not a warm start"):
        initialise_from(model, params, wide_path)


# ---------------------------------------------------------------------------- stage 2 end to end
def blink_training_config(blink: bool):
    # 8 windows a step: with ~3 % of the tiny dataset's frames in a blink, 4 steps all but surely
    # see some (the blink input's weight gets no gradient from an all-open window).
    return tiny_training_config({"blink_condition": blink}, {"batch_size": 8, "validate_every": 4, "checkpoint_every": 4})


@needs_dataset_tools
def test_stage_2_trains_the_blink_input_and_stores_per_style_statistics(tmp_path, tiny_dataset):
    from tools.training.common import Distributed, read_log
    from tools.training.data import open_dataset
    from tools.training.export import export_bundle
    from tools.training.artefacts import EMA_WEIGHTS, MODEL_WEIGHTS
    from tools.training.ldm_stage import train_ldm
    from tools.training.vq_stage import train_vq

    from textalker_blender.core.config import MODEL_FPS
    from textalker_blender.core.pipeline import Pipeline

    cpu = Distributed()
    data = tiny_dataset
    for kind in ("motion", "wrinkle"):
        train_vq(blink_training_config(False), data, tmp_path / kind, kind, cpu, steps=2, progress_bar=False)
    vqs = (tmp_path / "motion", tmp_path / "wrinkle")

    # A model without blink input, one step: the warm start's source.
    plain = tmp_path / "plain"
    train_ldm(blink_training_config(False), data, plain, *vqs, cpu, steps=1, progress_bar=False)
    source = load_weights(plain / "checkpoint" / MODEL_WEIGHTS, verify=False)
    assert "style_blinks" not in source.metadata
    assert not any(k.startswith(BLINK_PARAMETERS) for k in source.tensors)

    # The blink-conditioned run starts from it (step 0 checkpoint), then trains 4 steps.
    run = tmp_path / "blink"
    shutil.copytree(plain / "cache", run / "cache")  # same VQs: the latent cache is valid
    config = blink_training_config(True)
    config.ldm["seed"] = 1
    train_ldm(config, data, run, *vqs, cpu, steps=0, progress_bar=False, init_from=plain / "checkpoint" / MODEL_WEIGHTS)
    start = load_weights(run / "checkpoint" / MODEL_WEIGHTS, verify=False)
    for name, tensor in source.tensors.items():
        if name.startswith(("denoiser.", "audio_encoder.")) and not name.startswith("denoiser.latent_"):
            assert torch.equal(start.tensors[name], tensor), name
    # The token input starts at zero; the output direction is fitted to the data before step 1.
    assert not start.tensors["denoiser.blink_proj.weight"].any() and not start.tensors["denoiser.blink_proj.bias"].any()
    assert start.tensors["denoiser.blink_out.weight"].abs().max() > 0
    fitted = [r for r in read_log(run / "log.jsonl") if r["event"] == "blink_direction"]
    assert len(fitted) == 1 and fitted[0]["norm"] > 0 and fitted[0]["closed_fraction"] > 0

    config = blink_training_config(True)
    config.ldm["seed"] = 1
    summary = train_ldm(config, data, run, *vqs, cpu, steps=4, progress_bar=False)
    assert summary["step"] == 4
    # A resumed run keeps its trained direction (fitted once, in the first session).
    assert len([r for r in read_log(run / "log.jsonl") if r["event"] == "blink_direction"]) == 1
    validation = [r for r in read_log(run / "log.jsonl") if r["event"] == "validation"]
    assert validation and np.isfinite(validation[-1]["val_loss"])

    # Per-style statistics: one per training subject, in pivot order, measured from the data.
    subjects = json.loads((run / "pivots.json").read_text())["subjects"]
    assert len(subjects) == 2
    train_set = open_dataset(data, "train", 32, 32)
    tracks: dict[str, list[np.ndarray]] = {s: [] for s in subjects}
    for index, entry in enumerate(train_set.entries):
        offsets = train_set.geometry(entry["subject"]).offsets(train_set.weights(index))
        tracks[entry["subject"]].append(eyelid_closure(train_set.template, offsets))
    expected = [blink_statistics(tracks[s], MODEL_FPS).to_dict() for s in subjects]
    assert any(e["rate_per_min"] > 0 for e in expected)  # the tiny dataset blinks
    for name in (MODEL_WEIGHTS, EMA_WEIGHTS):
        weights = load_weights(run / "checkpoint" / name, verify=False)
        assert json.loads(weights.metadata["style_blinks"]) == expected, name
        assert json.loads(weights.metadata["config"])["blink_condition"] is True
        assert weights.tensors["denoiser.blink_proj.weight"].abs().max() > 0, name

    out = tmp_path / "assets" / "textalker_bundled.safetensors"
    export_bundle(run, out)
    exported = load_weights(out)
    assert json.loads(exported.metadata["style_blinks"]) == expected
    Pipeline.clear_cache()
    try:
        pipe = Pipeline.load(out, "cpu", verify=True)
        assert [b.to_dict() for b in pipe.model.style_blinks] == expected
        generated = pipe.generate((speech_like(1.0), 16000), speaking_style=0, seed=0, blink_rate=120)
        assert generated.offsets.shape[0] == 30 and np.isfinite(generated.offsets).all()
        # The trained blink input changes the sampled latents (before they snap to codes: four
        # steps move it too little to change a code).
        model = pipe.model
        features = torch.randn(40, model.config.audio_feature_dim, generator=torch.Generator().manual_seed(0))
        track = model.blink_track(40, MODEL_FPS, 0, seed=0, rate_per_min=120)
        assert track.max() > 0.8

        def sample(blink):
            return sample_sequence(model.denoiser, model.schedule, features, 2, torch.Generator().manual_seed(1), blink=blink)

        with torch.no_grad():
            assert not torch.equal(sample(track), sample(torch.zeros(40)))
    finally:
        Pipeline.clear_cache()
