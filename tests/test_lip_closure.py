"""Stage 2's lip-closure term and telephone copies of the training audio
(tools/training/lip_closure.py), and their wiring into tools/train_ldm.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from core_helpers import needs_dataset_tools

from textalker_blender.core.template import load_template
from tools.real_speech.measures import lip_vertex_pair, mouth_aperture_mm
from tools.training.lip_closure import (
    DEFAULT_LIP_CLOSURE,
    LipGapReader,
    closures_hit,
    draw_frames,
    lip_closure_applies,
    lip_closure_loss,
    telephone_codec,
)
from tools.training.pauses import over_telephone, splice_with_pause

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tools" / "configs" / "tiny.json"


@pytest.fixture(scope="module")
def template():
    return load_template()


def test_gap_reader_matches_the_real_speech_measure_of_the_sampled_vertices(template):
    # The term must measure what the real-speech check measures: the same two vertices, read
    # from a motion map through the add-on's own UV sampler.
    resolution = 64
    sampler = template.uv_sampler(resolution)
    generator = torch.Generator().manual_seed(0)
    maps = 0.004 * torch.randn(3, resolution, resolution, 3, generator=generator)
    offsets = sampler.sample(maps).numpy()
    reader = LipGapReader(template, resolution)
    expected = mouth_aperture_mm(template, offsets)
    assert np.allclose(reader.gap_mm(maps).numpy(), expected, atol=1e-3)
    # A lowered lower-lip vertex opens the mouth (the sign users see).
    upper, lower = lip_vertex_pair(template)
    assert upper != lower and reader.rest_mm == pytest.approx(mouth_aperture_mm(template, np.zeros((1, template.n_vertices, 3)))[0])


def test_draw_frames_oversamples_closed_frames_weights_them_back_and_skips_prefix_frames():
    gap = torch.tensor([[0.0, 5.0, 0.5, 6.0, 1.0], [7.0, 0.2, 8.0, 9.0, 0.1]])
    usable = torch.tensor([[False, True, True, True, True], [True, True, True, True, True]])
    settings = {**DEFAULT_LIP_CLOSURE, "closed_frames": 10, "other_frames": 2}
    rows, frames, weight = draw_frames(gap, usable, settings, torch.Generator().manual_seed(0))
    picked = list(zip(rows.tolist(), frames.tolist()))
    closed = {(0, 2), (0, 4), (1, 1), (1, 4)}  # (0, 0) is closed but a prefix frame
    assert closed <= set(picked) and (0, 0) not in picked
    assert len(set(picked)) == len(rows) == len(closed) + 2
    # Each group weighs its share of the 9 usable frames: 4 closed (all drawn), 5 others (2 drawn).
    is_closed = torch.tensor([p in closed for p in picked])
    assert weight.sum().item() == pytest.approx(1.0)
    assert weight[is_closed].sum().item() == pytest.approx(4 / 9)
    assert torch.allclose(weight[~is_closed], torch.full((2,), 2.5 / 9))
    again = draw_frames(gap, usable, settings, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], rows) and torch.equal(again[1], frames) and torch.equal(again[2], weight)
    none = draw_frames(gap, torch.zeros_like(usable), settings, torch.Generator().manual_seed(0))
    assert len(none[0]) == 0


def test_lip_closure_applies_only_to_models_with_their_own_motion_vq():
    from tools.training.ablations import ABLATION_CONFIGS
    from tools.training.common import load_training_config

    applies = {name: lip_closure_applies(load_training_config(path).model) for name, path in ABLATION_CONFIGS.items()}
    assert applies == {"reference": True, "motion_only": True, "wrinkle_only": False, "joint_codebook": False,
                       "onehot": True}


def test_telephone_codec_is_fixed_by_the_id_and_uses_every_codec():
    from tools.synthetic_textalk4d.acoustics import TELEPHONE_CODECS

    codecs = [telephone_codec(f"S{i:02d}_{j:04d}") for i in range(5) for j in range(20)]
    assert set(codecs) == set(TELEPHONE_CODECS)
    assert codecs == [telephone_codec(f"S{i:02d}_{j:04d}") for i in range(5) for j in range(20)]


def test_pause_splice_carries_the_lip_gap_and_keeps_one_telephone_line():
    def item(n, value, subject="S00"):
        return {"subject": subject, "n_frames": n, "z_motion": torch.full((n, 2), value), "z_wrinkle": torch.full((n, 1), value),
                "lip_gap": torch.arange(n, dtype=torch.float32) + value, "audio": torch.zeros(4, 4 * n),
                "audio_phone": torch.ones(4, 4 * n)}

    first, second = item(5, 0.0), item(3, 100.0)
    spliced = splice_with_pause(first, second, 2, 4.0, torch.Generator().manual_seed(0))
    assert spliced["lip_gap"].tolist() == [0, 1, 2, 3, 4, 4, 4, 100, 101, 102]  # held through the gap
    phone = over_telephone(first)
    assert phone["telephone"] and torch.equal(phone["audio"], first["audio_phone"])
    assert not torch.equal(first["audio"], first["audio_phone"])  # the original item is untouched

    from tools.training.pauses import add_pauses

    pool = [item(5, 0.0), item(6, 100.0)]
    items, _ = add_pauses([over_telephone(pool[0])], [0], 4, pool, {"S00": [1]}, {"probability": 1.0}, 30.0, 4.0,
                          torch.Generator().manual_seed(0))
    # The second utterance's audio is its telephone copy too (ones), not its clean audio (zeros).
    assert items[0]["audio"][:, -4 * 6:].eq(1).all()


@pytest.fixture(scope="module")
def tiny_model():
    from tools.training.common import training_config_from_dict
    from textalker_blender.core.model import TexTalkerModel
    from textalker_blender.core.model import random_pivots

    config = training_config_from_dict(json.loads(TINY.read_text())).model
    torch.manual_seed(0)
    pivots = random_pivots(config, ["first", "second"], seed=0)
    model = TexTalkerModel(config, pivots)
    with torch.no_grad():
        model.denoiser.latent_scale.uniform_(0.5, 2.0)
        model.denoiser.latent_center.normal_()
    return model.eval()


def test_batch_from_model_space_inverts_batch_to_model_space(tiny_model):
    model = tiny_model
    subjects = torch.tensor([0, 1, 1])
    z_motion = torch.randn(3, model.config.motion_latent_dim)
    z_wrinkle = torch.randn(3, model.config.wrinkle_latent_dim)
    x0 = model.batch_to_model_space(z_motion, z_wrinkle, subjects)
    back_motion, back_wrinkle = model.batch_from_model_space(x0, subjects)
    assert torch.allclose(back_motion, z_motion, atol=1e-5) and torch.allclose(back_wrinkle, z_wrinkle, atol=1e-5)


def test_lip_closure_loss_reaches_the_denoiser_output_and_closures_hit_counts_runs(tiny_model, template):
    model = tiny_model
    reader = LipGapReader(template, model.config.motion_vq.resolution)
    batch, frames = 2, 6
    prediction = torch.randn(batch, frames, model.config.joint_latent_dim, requires_grad=True)
    truth = torch.tensor([[0.0, 0.0, 5.0, 5.0, 0.5, 9.0], [9.0, 9.0, 9.0, 0.0, 9.0, 9.0]])
    usable = torch.ones(batch, frames, dtype=torch.bool)
    loss = lip_closure_loss(model, reader, prediction, torch.tensor([0, 1]), truth, usable, DEFAULT_LIP_CLOSURE,
                            torch.Generator().manual_seed(0))
    assert loss.item() > 0
    loss.backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    # No usable frame: zero, and still differentiable.
    empty = lip_closure_loss(model, reader, prediction, torch.tensor([0, 1]), truth, torch.zeros_like(usable),
                             DEFAULT_LIP_CLOSURE, torch.Generator().manual_seed(0))
    assert empty.item() == 0.0 and empty.requires_grad

    # closures_hit: runs of closed truth frames; a huge threshold closes every run, a negative
    # one none.
    x0 = prediction.detach()[0]
    hit, runs = closures_hit(model, reader, x0, 0, truth[0].numpy(), closed_mm=1.0)
    assert runs == 2 and 0 <= hit <= 2  # frames 0-1 and frame 4
    assert closures_hit(model, reader, x0, 0, truth[0].numpy(), closed_mm=1e6)[1] == 1  # one run: all frames
    assert closures_hit(model, reader, x0, 0, np.full(frames, 9.0), closed_mm=1.0) == (0, 0)


@needs_dataset_tools
def test_stage_2_with_telephone_copies_and_the_lip_closure_term(tmp_path, tiny_dataset):
    from tools.synthetic_textalk4d.acoustics import TELEPHONE_BAND_HZ
    from tools.real_speech.telephone import band_energy_share
    from tools.training.common import Distributed, read_log, training_config_from_dict
    from tools.training.data import open_dataset
    from tools.training.ldm_stage import train_ldm
    from tools.training.vq_stage import train_vq

    def config(lips: bool):
        data = json.loads(TINY.read_text())
        data["ldm"].update({"batch_size": 8, "validate_every": 2, "checkpoint_every": 2, "log_every": 1})
        if lips:
            data["ldm"].update({"telephone": {"probability": 0.5}, "lip_closure": {"weight": 0.1}})
        return training_config_from_dict(data)

    cpu = Distributed()
    for kind in ("motion", "wrinkle"):
        train_vq(config(False), tiny_dataset, tmp_path / kind, kind, cpu, steps=2, progress_bar=False)
    run = tmp_path / "ldm"
    summary = train_ldm(config(True), tiny_dataset, run, tmp_path / "motion", tmp_path / "wrinkle", cpu, steps=2,
                        progress_bar=False)
    assert summary["step"] == 2
    log = read_log(run / "log.jsonl")
    steps = [r for r in log if r["event"] == "train"]
    assert steps and all(r["lip_gap_mm"] > 0 and r["loss"] > r["diffusion_loss"] for r in steps)
    validation = [r for r in log if r["event"] == "validation"]
    assert validation and 0.0 <= validation[-1]["val_closures_hit"] <= 1.0

    # One telephone copy per training utterance; a clean utterance's copy is band-limited: its
    # log-mel loses the energy below the line's low edge that the clean audio has.
    train_set = open_dataset(tiny_dataset, "train", 32, 32)
    copies = sorted((run / "cache" / "train-phone").glob("*.npz"))
    assert len(copies) == len(train_set)
    clean = next(i for i, e in enumerate(train_set.entries) if not e["acoustics"].get("telephone"))
    entry = train_set.entries[clean]
    with np.load(run / "cache" / "train" / f"{entry['id']}.npz") as cached, \
            np.load(run / "cache" / "train-phone" / f"{entry['id']}.npz") as phone:
        wide, narrow = cached["audio"], phone["audio"]
    assert wide.shape == narrow.shape
    import librosa

    centres = librosa.mel_frequencies(n_mels=wide.shape[0] + 2, fmin=20.0, fmax=8000)[1:-1]
    low = centres < TELEPHONE_BAND_HZ[0] * 0.6
    assert (np.exp(narrow[low]).mean() < 0.05 * np.exp(wide[low]).mean())
    sample = train_set.load(clean, maps=False)
    assert band_energy_share(sample.audio, sample.sample_rate, *TELEPHONE_BAND_HZ) < 0.999

    # The run resumes without re-encoding the copies (their files are kept as they are).
    stamp = copies[0].stat().st_mtime_ns
    train_ldm(config(True), tiny_dataset, run, tmp_path / "motion", tmp_path / "wrinkle", cpu, steps=3,
              progress_bar=False)
    assert copies[0].stat().st_mtime_ns == stamp
