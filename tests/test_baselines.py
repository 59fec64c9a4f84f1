"""Learned baselines of the evaluation (tools/evaluation/baselines.py, tools/train_baselines.py)
on a tiny dataset built in a temporary folder, with tiny model sizes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

from tools.evaluation.baselines import (  # noqa: E402
    LEARNED_BASELINES,
    BaselineConfig,
    FaceFormerBaseline,
    MotionBasis,
    biased_causal_mask,
    load_baseline,
)
from tools.train_baselines import make_batch, prepare_inputs, train_baseline  # noqa: E402
from tools.training.common import read_log  # noqa: E402

torch.set_num_threads(1)

needs_dataset_tools = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("sox") is None,
    reason="needs the Debian packages flite and sox (dataset build)")

TINY = BaselineConfig(audio_width=16, width=32, layers=1, heads=2, ff=64, codebook_size=32, code_parts=2,
                      code_dim=8, vq_width=32, gru_layers=1, sampling_steps=10)
FAST = {"batch_size": 4, "bucket_batches": 2, "log_every": 2, "checkpoint_every": 1000, "validate_every": 1000,
        "validation_utterances": 2, "generation_utterances": 1, "warmup_steps": 2, "vq_steps": 3}
SLUGS = {"FaceFormer-like": "faceformer", "CodeTalker-like": "codetalker", "FaceDiffuser-like": "facediffuser"}


@pytest.fixture(scope="module")
def dataset(tiny_dataset) -> Path:
    return tiny_dataset


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """All three baselines trained a few steps into one baselines folder (shared input cache)."""
    out = tmp_path_factory.mktemp("baseline_runs")
    for name in LEARNED_BASELINES:
        summary = train_baseline(name, dataset, out, steps=6, settings=FAST, config=TINY, log=lambda *a: None,
                                 progress_bar=False)
        assert summary["step"] == 6
    return out


def test_interface_names():
    assert set(LEARNED_BASELINES) == {"FaceFormer-like", "CodeTalker-like", "FaceDiffuser-like"}
    for name, cls in LEARNED_BASELINES.items():
        assert cls.name == name and cls.slug == SLUGS[name]


def test_load_baseline_on_empty_folder_raises(tmp_path):
    for name in LEARNED_BASELINES:
        with pytest.raises(FileNotFoundError):
            load_baseline(name, tmp_path / SLUGS[name])
        (tmp_path / SLUGS[name]).mkdir()
        with pytest.raises(FileNotFoundError):
            load_baseline(name, tmp_path / SLUGS[name])


def test_motion_basis_reconstructs_offsets_in_its_span():
    rng = np.random.default_rng(0)
    units = rng.normal(size=(6, 50, 3)).astype(np.float32) * 1e-3
    weights = rng.uniform(0, 1, size=(400, 6)).astype(np.float32)
    offsets = np.einsum("tu,uvc->tvc", weights, units)
    basis = MotionBasis.fit(offsets, max_components=20)
    assert basis.n_components == 6  # rank of the data, not the cap
    components = basis.components.double()
    assert torch.allclose(components @ components.t(), torch.eye(6, dtype=torch.float64), atol=1e-5)
    rebuilt = basis.offsets(basis.coefficients(offsets)).numpy()
    assert np.abs(rebuilt - offsets).max() < 1e-6 * np.abs(offsets).max() + 1e-9


def test_biased_causal_mask_is_causal_and_periodic():
    mask = biased_causal_mask(7, heads=2, period=3)
    assert mask.shape == (2, 7, 7)
    assert torch.isinf(mask[:, 0, 1:]).all() and torch.isinf(mask[:, 3, 4:]).all()
    assert (mask[:, 6, 4:7] == 0).all()            # same period: no penalty
    assert (mask[0, 6, 1:4] < 0).all() and (mask[0, 6, 0] < mask[0, 6, 1])  # older periods: more


@needs_dataset_tools
@pytest.mark.parametrize("name", list(LEARNED_BASELINES))
def test_trained_baseline_reloads_and_predicts(trained, dataset, name):
    from tools.synthetic_textalk4d import SyntheticTextalk4D

    run = trained / SLUGS[name]
    assert (run / "checkpoint" / "model.safetensors").is_file()
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl"))  # no pickles
    records = read_log(run / "log.jsonl")
    assert [r for r in records if r["event"] == "train"] and records[-1]["event"] == "stop"
    model = load_baseline(name, run)
    assert model.name == name and isinstance(model.inference_note, str) and model.inference_note
    assert model.info["trained_steps"] == 6 and model.info["finished"] is True
    test_b = SyntheticTextalk4D(dataset, "test-B", maps=False)
    sample = test_b.load(0)
    n = sample.n_frames
    for subject in (model.subjects[0], sample.subject):  # a training subject, an unseen one
        first = model.predict(sample.audio, n, subject)
        assert first.shape == (n, test_b.template.n_vertices, 3) and first.dtype == np.float32
        assert np.isfinite(first).all()
        assert np.array_equal(first, model.predict(sample.audio, n, subject))  # deterministic
    assert sample.subject not in model.subjects
    # Outside the face nothing moves in the data, so nothing moves in the prediction either.
    still = ~test_b.template.motion_vertices
    assert np.abs(first[:, still]).max() < 1e-6


@needs_dataset_tools
def test_finished_baseline_is_skipped_and_resume_matches_uninterrupted(trained, dataset, tmp_path):
    summary = train_baseline("FaceFormer-like", dataset, trained, log=lambda *a: None, progress_bar=False)
    assert summary["stopped"] == "already finished"
    # 3 steps, stop, 3 more = 6 uninterrupted steps, bit for bit (data order, RNG, Adam moments).
    shutil.copytree(trained / "cache", tmp_path / "cache")
    kwargs = dict(settings=FAST, config=TINY, log=lambda *a: None, progress_bar=False)
    first = train_baseline("faceformer", dataset, tmp_path, steps=6, session_steps=3, **kwargs)
    assert first["step"] == 3
    assert load_baseline("FaceFormer-like", tmp_path / "faceformer").info["finished"] is False
    resumed = train_baseline("faceformer", dataset, tmp_path, **kwargs)
    assert resumed["steps_this_session"] == 3 and resumed["step"] == 6
    a = load_baseline("FaceFormer-like", tmp_path / "faceformer").tensors()
    b = load_baseline("FaceFormer-like", trained / "faceformer").tensors()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_dataset_tools
def test_faceformer_overfits_one_utterance(trained, dataset):
    """Teacher-forced loss on one utterance drops to a small fraction of its start."""
    basis, subjects, splits = prepare_inputs(dataset, trained / "cache", log=lambda *a: None)
    torch.manual_seed(0)
    model = FaceFormerBaseline.build(BaselineConfig(audio_width=16, width=32, layers=1, heads=2, ff=64,
                                                    dropout=0.0), basis, subjects)
    batch = make_batch(model, splits["train"][:1])
    optimizer = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.net.train()
    losses = []
    for _ in range(80):
        loss = model.net.loss(batch, generator)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0], losses[::10]
