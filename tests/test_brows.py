"""Brow emphasis conditioning: core/brows.py (measuring brow tracks, finding syllable nuclei in
audio, placing emphases), the denoiser's brow input, the per-style statistics in the weights, the
pipeline's brow track, and the stage-2 training side (tools/training/ldm_stage.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from core_helpers import needs_dataset_tools, speech_like, tiny_config, tiny_training_config

from textalker_blender.core.brows import (
    DEFAULT_STATISTICS,
    MIN_GAP_S,
    BrowStatistics,
    Nucleus,
    brow_activity,
    brow_statistics,
    check_rate,
    choose_emphases,
    emphasis_nuclei,
    emphasis_shape,
    sample_brow_track,
)
from textalker_blender.core.config import ModelConfig
from textalker_blender.core.denoiser import LatentDenoiser
from textalker_blender.core.errors import WeightsError
from textalker_blender.core.model import TexTalkerModel
from textalker_blender.core.sampling import sample_sequence
from textalker_blender.core.schedule import DDPMSchedule
from textalker_blender.core.style import StylePivots
from textalker_blender.core.template import DEFAULT_TEMPLATE_PATH, load_template
from textalker_blender.core.weights import load_weights, save_weights

REPO = Path(__file__).resolve().parents[1]
FPS = 30.0
RATE = 16000


@pytest.fixture(scope="module")
def template():
    if not DEFAULT_TEMPLATE_PATH.is_file():
        pytest.skip("template asset not built (run tools/build_template.py)")
    return load_template()


def syllables(lengths_s: list[float], gaps_s: list[float], rate: int = RATE, level: float = 0.3,
              lead_s: float = 0.3) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Vowel-like bursts (harmonics of 140 Hz, formant-band energy) of the given lengths, separated
    by the given gaps of near silence; returns the audio and each burst's (start, end) in s."""
    rng = np.random.default_rng(0)
    pieces, spans, t = [np.zeros(int(lead_s * rate), np.float32)], [], lead_s
    for index, length in enumerate(lengths_s):
        n = int(length * rate)
        time = np.arange(n) / rate
        voiced = sum(np.sin(2 * np.pi * 140 * k * time) / k for k in range(1, 12))
        ramp = np.minimum(1.0, np.minimum(time, time[::-1]) / 0.01)  # 10 ms edges, flat top
        pieces.append((level * voiced * ramp).astype(np.float32))
        spans.append((t, t + length))
        t += length
        gap = gaps_s[index] if index < len(gaps_s) else 0.3
        pieces.append(np.zeros(int(gap * rate), np.float32))
        t += gap
    audio = np.concatenate(pieces)
    return audio + 1e-4 * rng.standard_normal(audio.size).astype(np.float32), spans


# ---------------------------------------------------------------------------- measuring
def test_brow_activity_reads_raise_and_furrow_from_offsets(template):
    units = np.asarray(template.unit_offsets, np.float32)
    up, down_l, down_r = (template.unit_index(n) for n in ("browInnerUp", "browDownLeft", "browDownRight"))
    smile = template.unit_index("mouthSmileLeft")
    weights = np.zeros((4, len(units)), np.float32)
    weights[1, up] = 0.7
    weights[2, [down_l, down_r]] = 0.4
    weights[3, smile] = 0.9  # the rest of the face does not move the track
    offsets = np.einsum("tu,uvc->tvc", weights, units)
    track = brow_activity(template, offsets)
    assert track.shape == (4, 2) and track.dtype == np.float32
    np.testing.assert_allclose(track, [[0, 0], [0.7, 0], [0, 0.4], [0, 0]], atol=0.02)


def test_brow_statistics_count_emphases_heights_and_furrow_share():
    track = np.zeros((600, 2), np.float32)  # 20 s at 30 fps
    for start in (30, 150, 300):
        track[start:start + 15, 0] = emphasis_shape(np.arange(15) / FPS, 0.2, 0.3, 0.6)
    track[450:465, 1] = 0.3
    track[500:510, 0] = 0.05  # below the peak level: not an emphasis
    stats = brow_statistics([track[:300], track[300:]], FPS)
    assert stats.rate_per_min == pytest.approx(4 / (600 / FPS / 60))
    assert stats.raise_peak == pytest.approx(0.6, abs=0.01)
    assert stats.furrow_peak == pytest.approx(0.3)
    assert stats.furrow_share == pytest.approx(0.25)
    assert brow_statistics([], FPS) == DEFAULT_STATISTICS
    quiet = brow_statistics([np.zeros((90, 2), np.float32)], FPS)
    assert quiet.rate_per_min == 0 and quiet.furrow_share == 0
    assert BrowStatistics.from_dict(stats.to_dict()).to_dict() == stats.to_dict()
    with pytest.raises(ValueError):
        brow_statistics([track], 0)


# ---------------------------------------------------------------------------- audio -> emphases
def test_emphasis_nuclei_find_each_syllable_and_rank_the_held_one_first():
    lengths = [0.12, 0.14, 0.40, 0.13, 0.12]
    audio, spans = syllables(lengths, [0.08, 0.08, 0.08, 0.08])
    nuclei = emphasis_nuclei(audio, RATE)
    assert len(nuclei) == len(lengths)
    for nucleus, (start, end) in zip(nuclei, spans):
        assert abs(nucleus.start_s - start) < 0.04 and abs(nucleus.end_s - end) < 0.04
    longest = max(nuclei, key=lambda n: n.prominence)
    assert longest is nuclei[2] and longest.prominence > 2.0
    assert len({n.phrase for n in nuclei}) == 1  # 80 ms gaps do not split a phrase


def test_emphasis_nuclei_split_phrases_at_pauses_and_ignore_level_rate_and_silence():
    audio, _ = syllables([0.15, 0.3, 0.15, 0.15, 0.3], [0.08, 0.08, 0.6, 0.08])
    nuclei = emphasis_nuclei(audio, RATE)
    assert [n.phrase for n in nuclei] == [0, 0, 0, 1, 1]
    quiet = emphasis_nuclei(audio * 0.01, RATE)
    assert [(round(n.start_s, 2), n.phrase) for n in quiet] == [(round(n.start_s, 2), n.phrase) for n in nuclei]
    from scipy.signal import resample_poly

    narrow = emphasis_nuclei(resample_poly(audio, 1, 2).astype(np.float32), 8000)  # telephone rate
    assert len(narrow) == len(nuclei)
    assert emphasis_nuclei(np.zeros(RATE, np.float32), RATE) == []
    assert emphasis_nuclei(np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1, RATE) == []
    assert emphasis_nuclei(audio[:100], RATE) == []


def test_choose_emphases_takes_the_longest_nuclei_of_each_phrase_at_the_rate():
    nuclei = [Nucleus(0.1 * i, 0.1 * i + 0.08, p, phrase=0) for i, p in enumerate([1.0, 2.0, 0.5, 1.5, 3.0, 0.8])]
    nuclei += [Nucleus(5.0 + 0.2 * i, 5.1 + 0.2 * i, p, phrase=1) for i, p in enumerate([1.0, 2.5, 1.0])]
    rng = np.random.default_rng(0)
    assert choose_emphases(nuclei, 0.0, rng) == []
    # 60/min over phrase 0 (0.58 s) and phrase 1 (0.5 s): 0.58 and 0.5 expected, rounded at random.
    counts = [len(choose_emphases(nuclei, 60.0, np.random.default_rng(seed))) for seed in range(2000)]
    assert 1.03 < np.mean(counts) < 1.13
    many = choose_emphases(nuclei, 120.0, np.random.default_rng(0))
    # Phrase 0: the most prominent (3.0 at 0.4 s); every other is within MIN_GAP_S of it.
    assert [n.prominence for n in many] == [3.0, 2.5]
    assert all(abs(a.start_s - b.start_s) >= MIN_GAP_S for a in many for b in many if a is not b)
    with pytest.raises(ValueError):
        choose_emphases(nuclei, -1.0, rng)
    assert check_rate("30") == 30.0
    with pytest.raises(ValueError):
        check_rate(True)


def test_sample_brow_track_raises_or_knits_to_the_measured_height():
    # At 120 per minute each 0.6-s phrase gets at least one emphasis: on its longer nucleus (the
    # shorter one is within MIN_GAP_S of it).
    # A nucleus twice the clip's mean length (as the chosen ones are) gets the measured height.
    nuclei = [Nucleus(1.0, 1.3, 2.0, 0), Nucleus(1.5, 1.6, 0.5, 0), Nucleus(3.0, 3.2, 2.0, 1), Nucleus(3.5, 3.6, 0.5, 1)]
    raised = sample_brow_track(nuclei, 150, FPS, BrowStatistics(120.0, 0.5, 0.3, 0.0), np.random.default_rng(0))
    assert raised.shape == (150, 2) and raised.dtype == np.float32
    assert raised[:, 1].max() == 0.0
    assert raised[:, 0].max() == pytest.approx(0.5, abs=1e-6)
    # The brows are up before the vowel starts and down again half a second after it ends.
    assert raised[int(0.98 * FPS), 0] == pytest.approx(0.5, abs=1e-6)
    assert raised[int(1.85 * FPS), 0] == 0.0 and raised[int(0.7 * FPS), 0] == 0.0
    knitted = sample_brow_track(nuclei, 150, FPS, BrowStatistics(120.0, 0.5, 0.3, 1.0), np.random.default_rng(0))
    assert knitted[:, 0].max() == 0.0 and knitted[:, 1].max() == pytest.approx(0.3, abs=1e-6)
    none = sample_brow_track(nuclei, 150, FPS, BrowStatistics(120.0, 0.5, 0.3, 0.0), np.random.default_rng(0), 0.0)
    assert not none.any()
    assert sample_brow_track([], 0, FPS, DEFAULT_STATISTICS, np.random.default_rng(0)).shape == (0, 2)
    with pytest.raises(ValueError):
        sample_brow_track(nuclei, 10, 0.0, DEFAULT_STATISTICS, np.random.default_rng(0))


# ---------------------------------------------------------------------------- denoiser
def denoiser_inputs(denoiser, batch: int = 2, n_frames: int = 12):
    g = torch.Generator().manual_seed(3)
    config = denoiser.config
    x = torch.randn(batch, n_frames, denoiser.latent_dim, generator=g)
    audio = torch.randn(batch, n_frames, config.audio_feature_dim, generator=g)
    t = torch.tensor([10, 30][:batch])
    prefix = torch.zeros(batch, n_frames, dtype=torch.bool)
    prefix[:, :3] = True
    brow = torch.rand(batch, n_frames, 2, generator=g)
    return x, t, audio, prefix, brow


def test_brow_input_is_zero_initialised_and_its_output_directions_are_least_squares():
    torch.manual_seed(0)
    denoiser = LatentDenoiser(tiny_config(brow_condition=True)).eval()
    own = {n: p for n, p in denoiser.named_parameters() if n.startswith("brow_")}
    assert set(own) == {"brow_proj.weight", "brow_proj.bias", "brow_out.weight"}
    assert all(not p.any() for p in own.values())
    x, t, audio, prefix, brow = denoiser_inputs(denoiser)
    with torch.no_grad():
        reference = denoiser(x, t, audio, prefix)
        assert torch.equal(denoiser(x, t, audio, prefix, brow=brow), reference)
        denoiser.brow_proj.weight.normal_(generator=torch.Generator().manual_seed(1))
        assert (denoiser(x, t, audio, prefix, brow=brow) - reference).abs().max() > 1e-3
        assert torch.equal(denoiser(x, t, audio, prefix), reference)  # None: no brow input

    g = torch.Generator().manual_seed(8)
    n = 4000
    track = torch.zeros(n, 2)
    track[:, 0] = (torch.rand(n, generator=g) < 0.2).float() * torch.rand(n, generator=g)
    track[:, 1] = (torch.rand(n, generator=g) < 0.05).float() * torch.rand(n, generator=g)
    true = torch.randn(2, denoiser.latent_dim, generator=g) * 3
    x0 = torch.randn(denoiser.latent_dim, generator=g) + track @ true + 0.05 * torch.randn(n, denoiser.latent_dim, generator=g)
    fitted = denoiser.set_brow_direction(x0, track)
    torch.testing.assert_close(fitted, true, atol=0.06, rtol=0.0)
    assert torch.equal(denoiser.brow_out.weight, fitted.T)
    no_furrow = track.clone()
    no_furrow[:, 1] = 0.0  # a channel the data never moves gets no direction
    assert denoiser.set_brow_direction(x0, no_furrow)[1].abs().max() < 1e-6
    with pytest.raises(ValueError, match="moves no brows"):
        denoiser.set_brow_direction(x0, torch.zeros(n, 2))


def test_brow_direction_held_beside_the_other_units_leaves_out_what_moves_with_emphases():
    # Emphases fall on long vowels: a jaw that opens with the raise must not end up in the
    # raise's direction when the jaw is given as another unit.
    torch.manual_seed(0)
    denoiser = LatentDenoiser(tiny_config(brow_condition=True)).eval()
    g = torch.Generator().manual_seed(4)
    n = 5000
    track = torch.zeros(n, 2)
    track[:, 0] = (torch.rand(n, generator=g) < 0.25).float() * torch.rand(n, generator=g)
    jaw = 0.6 * track[:, :1] + 0.3 * torch.rand(n, 1, generator=g)
    brow_direction = torch.randn(denoiser.latent_dim, generator=g)
    jaw_direction = torch.randn(denoiser.latent_dim, generator=g) * 2
    x0 = track[:, :1] * brow_direction + jaw * jaw_direction + 0.02 * torch.randn(n, denoiser.latent_dim, generator=g)
    alone = denoiser.set_brow_direction(x0, track)[0]
    beside = denoiser.set_brow_direction(x0, track, others=jaw)[0]
    torch.testing.assert_close(beside, brow_direction, atol=0.03, rtol=0.0)
    assert (alone - brow_direction).abs().max() > 0.5  # on the track alone it carries the jaw


def test_denoiser_without_brow_condition_has_no_brow_input_and_sampling_passes_the_track():
    plain = LatentDenoiser(tiny_config()).eval()
    assert not any("brow" in name for name in plain.state_dict())
    x, t, audio, prefix, brow = denoiser_inputs(plain)
    with torch.no_grad():
        assert torch.equal(plain(x, t, audio, prefix, brow=brow), plain(x, t, audio, prefix))

    config = tiny_config(brow_condition=True)
    torch.manual_seed(0)
    denoiser = LatentDenoiser(config).eval()
    with torch.no_grad():
        denoiser.brow_out.weight.normal_(generator=torch.Generator().manual_seed(2))
    schedule = DDPMSchedule(config.diffusion_steps, config.beta_schedule)
    n_frames = 30
    feats = torch.randn(n_frames, config.audio_feature_dim, generator=torch.Generator().manual_seed(2))
    late = torch.zeros(n_frames, 2)
    late[-4:, 0] = 1.0

    def sample(track):
        return sample_sequence(denoiser, schedule, feats, 3, torch.Generator().manual_seed(5), brow=track)

    difference = (sample(late) - sample(torch.zeros(n_frames, 2))).abs().amax(dim=-1)
    assert difference[-4:].max() > 1e-4
    assert difference[:18].max() == 0.0  # earlier windows never see the last frames


def test_config_leaves_brow_condition_out_at_its_default_and_round_trips_it():
    assert "brow_condition" not in json.loads(ModelConfig().to_json())
    config = ModelConfig(brow_condition=True)
    assert ModelConfig.from_json(config.to_json()).brow_condition is True
    bundled = json.loads((REPO / "tools" / "configs" / "bundled.json").read_text())
    assert bundled["model"]["overrides"]["brow_condition"] is True


# ---------------------------------------------------------------------------- model and weights
STATS = [BrowStatistics(20.0, 0.5, 0.3, 0.0), BrowStatistics(60.0, 0.8, 0.4, 0.5), BrowStatistics(0.0, 0.45, 0.45, 0.0)]


def tiny_model(n_styles: int = 3) -> TexTalkerModel:
    config = tiny_config(brow_condition=True)
    names = [f"Subject {i}" for i in range(n_styles)]
    pivots = StylePivots(np.zeros((n_styles, config.motion_latent_dim)), np.zeros((n_styles, config.wrinkle_latent_dim)), names)
    return TexTalkerModel(config, pivots)


def test_brow_statistics_travel_in_the_weights_and_drive_the_track(tmp_path):
    model = tiny_model()
    model.style_brows = STATS
    path = tmp_path / "w.safetensors"
    model.save(path, trained=False, dataset="unit test", update_manifest=False)
    loaded = TexTalkerModel.from_weights(load_weights(path, verify=False))
    assert [s.to_dict() for s in loaded.style_brows] == [s.to_dict() for s in STATS]
    assert loaded.brow_statistics_for(1) == STATS[1]
    mean = loaded.brow_statistics_for(7)  # an added or averaged style: the mean of the table
    assert mean.rate_per_min == pytest.approx(80 / 3) and mean.furrow_share == pytest.approx(0.5 / 3)

    audio = speech_like(4.0)
    busy = loaded.brow_track(audio, RATE, 120, FPS, 1, seed=0)
    assert busy.shape == (120, 2) and busy.max() > 0
    assert torch.equal(busy, loaded.brow_track(audio, RATE, 120, FPS, 1, seed=0))  # seeded
    assert not loaded.brow_track(audio, RATE, 120, FPS, 2, seed=0).any()  # a style that never moves them

    tensors = dict(load_weights(path, verify=False).tensors)
    metadata = dict(load_weights(path, verify=False).metadata)
    metadata["style_brows"] = "[{\"rate_per_min\": 1}]"
    broken = tmp_path / "broken.safetensors"
    save_weights(broken, tensors, metadata, update_manifest=False)
    with pytest.raises(WeightsError, match="brow statistics"):
        TexTalkerModel.from_weights(load_weights(broken, verify=False))


def test_a_model_without_brow_input_makes_no_track():
    config = tiny_config()
    model = TexTalkerModel(config, StylePivots(np.zeros((1, config.motion_latent_dim)),
                                               np.zeros((1, config.wrinkle_latent_dim)), ["a"]))
    assert model.brow_track(speech_like(1.0), RATE, 30, FPS, 0, seed=0) is None


# ---------------------------------------------------------------------------- stage 2 end to end
def brow_training_config(brow: bool):
    return tiny_training_config({"brow_condition": brow}, {"batch_size": 8, "validate_every": 2, "checkpoint_every": 2})


@needs_dataset_tools
def test_stage_2_warm_starts_the_brow_input_and_the_pipeline_uses_it(tmp_path, tiny_dataset):
    from tools.training.artefacts import MODEL_WEIGHTS
    from tools.training.common import Distributed, read_log
    from tools.training.data import open_dataset
    from tools.training.export import export_bundle
    from tools.training.ldm_stage import train_ldm
    from tools.training.vq_stage import train_vq

    from textalker_blender.core.config import MODEL_FPS
    from textalker_blender.core.pipeline import Pipeline

    cpu = Distributed()
    for kind in ("motion", "wrinkle"):
        train_vq(brow_training_config(False), tiny_dataset, tmp_path / kind, kind, cpu, steps=2, progress_bar=False)
    vqs = (tmp_path / "motion", tmp_path / "wrinkle")
    plain = tmp_path / "plain"
    train_ldm(brow_training_config(False), tiny_dataset, plain, *vqs, cpu, steps=1, progress_bar=False)
    source = load_weights(plain / "checkpoint" / MODEL_WEIGHTS, verify=False)
    assert not any("brow" in k for k in source.tensors) and "style_brows" not in source.metadata

    run = tmp_path / "brow"
    shutil.copytree(plain / "cache", run / "cache")
    summary = train_ldm(brow_training_config(True), tiny_dataset, run, *vqs, cpu, steps=2, progress_bar=False,
                        init_from=plain / "checkpoint" / MODEL_WEIGHTS)
    assert summary["step"] == 2
    fitted = [r for r in read_log(run / "log.jsonl") if r["event"] == "brow_direction"]
    assert len(fitted) == 1 and fitted[0]["norms"][0] > 0 and fitted[0]["raised_fraction"] > 0

    subjects = json.loads((run / "pivots.json").read_text())["subjects"]
    train_set = open_dataset(tiny_dataset, "train", 32, 32)
    tracks: dict[str, list[np.ndarray]] = {s: [] for s in subjects}
    for index, entry in enumerate(train_set.entries):
        offsets = train_set.geometry(entry["subject"]).offsets(train_set.weights(index))
        tracks[entry["subject"]].append(brow_activity(train_set.template, offsets))
    expected = [brow_statistics(tracks[s], MODEL_FPS).to_dict() for s in subjects]
    assert any(e["rate_per_min"] > 0 for e in expected)  # the tiny dataset raises its brows

    out = tmp_path / "assets" / "textalker_bundled.safetensors"
    export_bundle(run, out)
    assert json.loads(load_weights(out).metadata["style_brows"]) == expected
    Pipeline.clear_cache()
    try:
        pipe = Pipeline.load(out, "cpu", verify=True)
        busy = [k for k, e in enumerate(expected) if e["rate_per_min"] > 0][0]
        result = pipe.generate((speech_like(2.0), RATE), speaking_style=busy, seed=0)
        assert np.isfinite(result.offsets).all()
        # The brow input changes what is generated (its output direction is fitted, not zero).
        with torch.no_grad():
            pipe.model.denoiser.brow_out.weight.zero_()
            pipe.model.denoiser.brow_proj.weight.zero_()
        still = pipe.generate((speech_like(2.0), RATE), speaking_style=busy, seed=0)
        assert np.abs(still.offsets - result.offsets).max() > 0
    finally:
        Pipeline.clear_cache()
