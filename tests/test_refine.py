"""Stage 1b (tools/refine_decoder.py, tools/training/refine_stage.py): the motion VQ's decoder
refined on vertex offsets with the encoder, codebook and normalisation frozen, its exact resume,
its refusal to continue on a changed source VQ, and the export that swaps the refined decoder
into a bundle (tools/training/export.py); with `refine.train_encoder` the whole motion VQ refined
(blink frames oversampled) and stage 2 trained on it; stage 2's warm start (`init_from`) — on a
tiny dataset and the tiny config."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]

from tools.training.common import (  # noqa: E402
    REFINE_DEFAULTS,
    Distributed,
    load_training_config,
    read_log,
    training_config_from_dict,
)
from tools.training.data import EpochOrder, FrameTable, open_dataset  # noqa: E402
from tools.training.export import export_bundle  # noqa: E402
from tools.training.artefacts import MODEL_WEIGHTS, VQ_WEIGHTS, load_refined_motion_vq, load_trained_vq, same_codes  # noqa: E402
from tools.training.ldm_stage import train_ldm  # noqa: E402
from tools.training.refine_stage import (  # noqa: E402
    VertexLoss,
    batch_indices,
    oversampling_rows,
    refine_motion_decoder,
    render_offsets_and_maps,
)
from tools.training.vq_stage import train_vq  # noqa: E402

from textalker_blender.core.weights import load_weights, sha256_file  # noqa: E402

TINY = REPO / "tools" / "configs" / "tiny.json"
CPU = Distributed()
# Small batches, a high learning rate (a 4-step VQ's decoder has far to go), a log record per step,
# a periodic checkpoint and validation (16 test-A frames) at step 2: the straight run passes
# through the state a 2-step session ends in, which the resume test restarts from.
TINY_REFINE = {"batch_size": 4, "learning_rate": 2e-3, "steps": 4, "checkpoint_every": 2, "log_every": 1,
               "validate_every": 2, "validation_frames": 16, "seed": 0}

# Stage 1b with the encoder and codebook learning too: half of every batch (2 of 4) drawn from the
# blink frames (~2 % of the tiny dataset's training frames exceed 0.3), dead-code revival at
# steps 2 and 4.
ENCODER_REFINE = {"train_encoder": True, "oversample_units": ["eyeBlinkLeft", "eyeBlinkRight"],
                  "oversample_threshold": 0.3, "oversample_fraction": 0.5, "revive_every": 2}


def refine_config(**overrides):
    data = json.loads(TINY.read_text())
    data["refine"] = {**TINY_REFINE, **overrides}
    return training_config_from_dict(data)


def vq_config(seed: int = 0):
    data = json.loads(TINY.read_text())
    data["vq"]["seed"] = seed
    return training_config_from_dict(data)


@pytest.fixture(scope="module")
def dataset(tiny_dataset) -> Path:
    return tiny_dataset


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory) -> dict[str, Path]:
    """A runs folder laid out as tools/retrain.sh lays it out, and the config it was trained
    with (the tiny config with 4 VQ steps, 1 LDM step and 4 refinement steps)."""
    root = tmp_path_factory.mktemp("runs")
    data = json.loads(TINY.read_text())
    data["vq"]["steps"] = 4
    data["ldm"]["steps"] = 1
    data["refine"] = TINY_REFINE
    config = root / "config.json"
    config.write_text(json.dumps(data))
    train_vq(load_training_config(config), dataset, root / "motion", "motion", CPU, progress_bar=False)
    return {"root": root, "config": config, "motion": root / "motion"}


@pytest.fixture(scope="module")
def motion_vq(runs) -> Path:
    return runs["motion"]


@pytest.fixture(scope="module")
def refined(dataset, runs) -> Path:
    """4 refinement steps straight through (validation at steps 0, 2 and 4)."""
    run = runs["root"] / "motion_refine"
    summary = refine_motion_decoder(load_training_config(runs["config"]), dataset, run, runs["motion"], CPU,
                                    progress_bar=False)
    assert summary["step"] == 4 and summary["stopped"] == "steps reached"
    return run


@pytest.fixture(scope="module")
def ldm(dataset, runs) -> Path:
    """Stage 2 for one step on the stage-1 VQs (the refinement plays no part in it)."""
    root = runs["root"]
    train_vq(load_training_config(runs["config"]), dataset, root / "wrinkle", "wrinkle", CPU, progress_bar=False)
    train_ldm(load_training_config(runs["config"]), dataset, root / "ldm", root / "motion", root / "wrinkle", CPU,
              progress_bar=False)
    return root / "ldm"


@pytest.fixture(scope="module")
def refined_encoder(dataset, motion_vq, tmp_path_factory) -> Path:
    """4 steps of stage 1b with ENCODER_REFINE, straight through."""
    run = tmp_path_factory.mktemp("refine_encoder") / "motion_refine"
    summary = refine_motion_decoder(refine_config(**ENCODER_REFINE), dataset, run, motion_vq, CPU, progress_bar=False)
    assert summary["step"] == 4 and summary["stopped"] == "steps reached"
    return run


@pytest.fixture(scope="module")
def train_table(dataset):
    train_set = open_dataset(dataset, "train", 32, 32)
    return train_set, FrameTable.build(train_set)


def unit_activity(train_set, table, names) -> np.ndarray:
    """Per row of `table`: the largest weight of the face units `names` in that frame."""
    columns = [train_set.unit_names.index(name) for name in names]
    return np.array([table.weights[int(u)][int(f)][columns].max() for u, f in zip(table.utterances, table.frames)])


def test_config_refine_section_defaults_bundled_and_unknown_keys():
    tiny = load_training_config(TINY)
    assert tiny.refine["steps"] == 0  # tools/retrain.sh skips stage 1b for the tiny config
    # the defaults: decoder alone, no oversampling
    assert tiny.refine["train_encoder"] is False and tiny.refine["oversample_units"] == []
    assert tiny.refine["oversample_fraction"] == 0 and tiny.refine["revive_every"] > 0
    bundled = load_training_config(REPO / "tools" / "configs" / "bundled.json")
    assert bundled.refine["steps"] > 0 and bundled.refine["lip_weight"] > 1 and bundled.refine["upper_face_weight"] > 1
    assert 0 < bundled.refine["learning_rate"] < 1e-2
    # the bundled model refines the whole motion VQ (stage 2 then trains on it) with blinks oversampled
    assert bundled.refine["train_encoder"] is True
    assert bundled.refine["oversample_units"] == ["eyeBlinkLeft", "eyeBlinkRight"]
    assert 0 < bundled.refine["oversample_fraction"] < 1 and 0 < bundled.refine["oversample_threshold"] < 1
    with pytest.raises(ValueError, match="unknown keys in config section 'refine'"):
        training_config_from_dict({"model": {"preset": "bundled"}, "refine": {"step": 10}})


def test_vertex_loss_reads_offsets_from_ground_truth_maps(dataset):
    """The loss's sampler turns a rendered motion map back into that frame's vertex offsets: the
    ground-truth map scores a small fraction of an all-zero map's error, and the weights favour
    the lips and the upper face as configured."""
    train_set = open_dataset(dataset, "train", 32, 32)
    template = train_set.template
    loss = VertexLoss.for_template(template, 32, lip_weight=6.0, upper_face_weight=4.0)
    assert float(loss.weights.sum()) == pytest.approx(1.0)
    lips = np.asarray(template.lip_mask, bool) & loss.movable
    upper = np.asarray(template.upper_face_mask, bool) & loss.movable & ~lips
    cheeks = np.asarray(template.face_mask, bool) & loss.movable & ~lips & ~upper
    weights = loss.weights.numpy()
    assert lips.any() and upper.any() and cheeks.any()
    assert weights[lips].min() == pytest.approx(6 * weights[cheeks].max())
    assert weights[upper].min() == pytest.approx(4 * weights[cheeks].max())
    assert np.all(weights[~loss.movable] == 0)

    table = FrameTable.build(train_set)
    rows = table.evenly_spaced(8)
    offsets, maps = render_offsets_and_maps(train_set, table.utterances[rows], table.frames[rows], table.weights)
    assert offsets.shape == (8, template.n_vertices, 3) and maps.shape == (8, 32, 32, 3)
    truth = torch.from_numpy(offsets)
    exact = float(loss(torch.from_numpy(maps), truth))
    nothing = float(loss(torch.zeros_like(torch.from_numpy(maps)), truth))
    assert nothing > 0.5  # the frames move the face by a visible fraction of a millimetre or more
    assert exact < 0.25 * nothing


def test_refinement_changes_only_the_decoder_and_logs_vertex_errors(refined, motion_vq):
    source = load_file(str(motion_vq / "checkpoint" / VQ_WEIGHTS))
    result = load_file(str(refined / "checkpoint" / VQ_WEIGHTS))
    assert source.keys() == result.keys()
    decoder = [k for k in source if k.startswith("decoder.")]
    frozen = [k for k in source if not k.startswith("decoder.")]
    assert decoder and any(k.startswith("encoder.") for k in frozen) and any(".usage" in k for k in frozen)
    for key in frozen:  # bit-identical, codebook-usage bookkeeping included
        assert torch.equal(source[key], result[key]), key
    changed = [k for k in decoder if not torch.equal(source[k], result[k])]
    assert len(changed) >= len(decoder) // 2

    recorded = json.loads((refined / "config.json").read_text())
    assert recorded["stage"] == "refine"
    assert recorded["motion_vq_sha256"] == sha256_file(motion_vq / "checkpoint" / VQ_WEIGHTS)
    # the run refines (and records) the source VQ's model, whatever --config says
    assert training_config_from_dict(recorded).model == load_trained_vq(motion_vq)[1]["config"].model

    log = read_log(refined / "log.jsonl")
    validation = [r for r in log if r["event"] == "validation"]
    assert [r["step"] for r in validation] == [0, 2, 4]
    for record in validation:
        assert 0 < record["val_face_mm"] < 100 and record["val_lip_max_sq_mm2"] > 0 and record["val_upper_face_mm"] > 0
    train = [r for r in log if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(np.isfinite(r["vertex_mm"]) and r["vertex_mm"] > 0 and np.isfinite(r["map_l1"]) for r in train)
    # The stage-1 VQ here has trained 4 steps: a few decoder steps on the vertex loss must
    # already bring the held-out face error down.
    assert validation[-1]["val_face_mm"] < validation[0]["val_face_mm"]

    vq, info = load_refined_motion_vq(refined)
    assert info["step"] == 4 and info["source_sha256"] == recorded["motion_vq_sha256"]
    assert same_codes(vq, load_trained_vq(motion_vq)[0])
    assert torch.equal(vq.state_dict()[decoder[0]], result[decoder[0]])


def test_refinement_resume_is_bit_identical(dataset, motion_vq, refined, tmp_path):
    split = tmp_path / "split"
    first = refine_motion_decoder(refine_config(), dataset, split, motion_vq, CPU, steps=2, progress_bar=False)
    assert first["step"] == 2
    second = refine_motion_decoder(refine_config(), dataset, split, motion_vq, CPU, progress_bar=False)
    assert second["step"] == 4 and second["steps_this_session"] == 2
    a = load_file(str(refined / "checkpoint" / VQ_WEIGHTS))
    b = load_file(str(split / "checkpoint" / VQ_WEIGHTS))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state_a = torch.load(refined / "checkpoint" / "state.pt", weights_only=True)
    state_b = torch.load(split / "checkpoint" / "state.pt", weights_only=True)
    moments_a = [s["exp_avg_sq"] for s in state_a["optimizer"]["state"].values()]
    moments_b = [s["exp_avg_sq"] for s in state_b["optimizer"]["state"].values()]
    assert moments_a and all(torch.equal(x, y) for x, y in zip(moments_a, moments_b))
    # the resumed session logs the same training losses as the straight run
    straight_train = [r["vertex_mm"] for r in read_log(refined / "log.jsonl") if r["event"] == "train"]
    split_train = [r["vertex_mm"] for r in read_log(split / "log.jsonl") if r["event"] == "train"]
    assert split_train == straight_train


def test_refinement_refuses_to_resume_on_a_changed_motion_vq(dataset, motion_vq, tmp_path):
    source = tmp_path / "motion"
    shutil.copytree(motion_vq, source)
    run = tmp_path / "refine"
    refine_motion_decoder(refine_config(validation_frames=0), dataset, run, source, CPU, steps=1, progress_bar=False)
    train_vq(vq_config(), dataset, source, "motion", CPU, steps=5, progress_bar=False)  # stage 1 trained on
    with pytest.raises(ValueError, match="another motion VQ checkpoint"):
        refine_motion_decoder(refine_config(validation_frames=0), dataset, run, source, CPU, steps=2, progress_bar=False)
    assert json.loads((run / "checkpoint" / "progress.json").read_text())["step"] == 1  # untouched


def test_export_swaps_in_the_refined_decoder_and_rejects_another_vq(dataset, motion_vq, refined, ldm, tmp_path):
    out = tmp_path / "assets" / "bundle.safetensors"
    result = export_bundle(ldm, out, motion_decoder=refined)
    assert result["motion_decoder_refine_step"] == 4
    bundle = load_weights(out, verify=True)  # its manifest entry was written
    training = json.loads(bundle.metadata["training"])
    assert training["motion_decoder_refine_step"] == 4 and training["motion_decoder_run"] == refined.name
    refined_tensors = load_file(str(refined / "checkpoint" / VQ_WEIGHTS))
    source_tensors = load_file(str(motion_vq / "checkpoint" / VQ_WEIGHTS))
    for key, value in refined_tensors.items():
        if key.startswith("decoder."):
            assert torch.equal(bundle.tensors["motion_vq." + key], value), key
        elif not key.endswith(".usage"):  # the LDM's (= stage 1's) encoder, codebook, normalisation
            assert torch.equal(bundle.tensors["motion_vq." + key], source_tensors[key]), key
    plain = export_bundle(ldm, tmp_path / "plain" / "bundle.safetensors")
    assert plain["motion_decoder_refine_step"] is None
    plain_tensors = load_weights(plain["out"], verify=False).tensors
    changed = [k for k in plain_tensors if not torch.equal(plain_tensors[k], bundle.tensors[k])]
    assert changed and all(k.startswith("motion_vq.decoder.") for k in changed)

    # A refinement of another motion VQ (stage 1 with another seed) does not fit this bundle.
    other_vq = tmp_path / "other_motion"
    train_vq(vq_config(seed=1), dataset, other_vq, "motion", CPU, steps=1, progress_bar=False)
    other = tmp_path / "other_refine"
    refine_motion_decoder(refine_config(validation_frames=0), dataset, other, other_vq, CPU, steps=1, progress_bar=False)
    with pytest.raises(ValueError, match="another motion VQ"):
        export_bundle(ldm, tmp_path / "rejected" / "bundle.safetensors", motion_decoder=other)
    assert not (tmp_path / "rejected" / "bundle.safetensors").exists()
    with pytest.raises(ValueError, match="not a decoder-refinement run"):
        export_bundle(ldm, tmp_path / "rejected" / "bundle.safetensors", motion_decoder=other_vq)


def test_ablations_that_decode_motion_get_the_refined_decoder(dataset, runs, refined, ldm, tmp_path):
    """tools/training/ablations.py: `motion_decoder` goes into the motion-only bundle (it decodes
    motion with the shared motion VQ) and not into the wrinkle-only one (no motion)."""
    from tools.training.ablations import train_ablation

    base = json.loads(runs["config"].read_text())
    refined_decoder = {k: v for k, v in load_file(str(refined / "checkpoint" / VQ_WEIGHTS)).items()
                       if k.startswith("decoder.")}
    for name, expect_refined in (("motion_only", True), ("wrinkle_only", False)):
        data = json.loads(json.dumps(base))
        data["model"]["overrides"]["modalities"] = name.split("_")[0]
        config_path = tmp_path / f"{name}.json"
        config_path.write_text(json.dumps(data))
        summary = train_ablation(name, dataset, tmp_path / "ablations", runs["motion"], runs["root"] / "wrinkle",
                                 cache_from=ldm, config_path=config_path, progress_bar=False, motion_decoder=refined)
        assert summary["cache_reused"] and summary["stopped"] == "steps reached"
        assert summary["export"]["motion_decoder_refine_step"] == (4 if expect_refined else None), name
        tensors = load_weights(summary["export"]["out"], verify=True).tensors
        same = [torch.equal(tensors["motion_vq." + k], v) for k, v in refined_decoder.items()]
        assert all(same) if expect_refined else not any(same), name


def test_oversampling_rows_are_the_frames_with_an_active_unit(train_table):
    train_set, table = train_table
    section = {**REFINE_DEFAULTS, **ENCODER_REFINE}
    rows = oversampling_rows(train_set, table, section)
    activity = unit_activity(train_set, table, ENCODER_REFINE["oversample_units"])
    # the tiny dataset blinks: some frames, but few of them (what oversampling is for)
    assert 0 < len(rows) < 0.1 * len(table)
    assert np.all(activity[rows] > 0.3)
    others = np.setdiff1d(np.arange(len(table)), rows)
    assert np.all(activity[others] <= 0.3)
    # a lower threshold takes in more frames (eyelids half-closed), a subset of them the same
    lower = oversampling_rows(train_set, table, {**section, "oversample_threshold": 0.05})
    assert len(lower) > len(rows) and np.isin(rows, lower).all()
    # one unit alone
    jaw = oversampling_rows(train_set, table, {**section, "oversample_units": ["jawOpen"]})
    assert np.array_equal(jaw, np.nonzero(unit_activity(train_set, table, ["jawOpen"]) > 0.3)[0])

    with pytest.raises(ValueError, match="unknown face units"):
        oversampling_rows(train_set, table, {**section, "oversample_units": ["eyeBlinkLeft", "eyeBlink"]})
    with pytest.raises(ValueError, match="no training frame exceeds"):
        oversampling_rows(train_set, table, {**section, "oversample_threshold": 1.5})
    for off in ({"oversample_fraction": 0.0}, {"oversample_units": []}):
        empty = oversampling_rows(train_set, table, {**section, **off})
        assert empty.shape == (0,) and empty.dtype == np.int64
    # a misspelt unit is reported even while oversampling is off
    with pytest.raises(ValueError, match="unknown face units"):
        oversampling_rows(train_set, table, {**section, "oversample_fraction": 0.0, "oversample_units": ["eyeblink"]})


def test_batches_carry_the_oversampled_frames(train_table):
    """`batch_indices` (the refinement loop's batches): the first rows of each batch are blink
    frames drawn with the generator, the rest is the epoch order's batch; the same generator
    state draws the same frames (exact resume); without oversampling the order's batch is used
    as is and the generator is not touched."""
    train_set, table = train_table
    rare = oversampling_rows(train_set, table, {**REFINE_DEFAULTS, **ENCODER_REFINE})
    activity = unit_activity(train_set, table, ENCODER_REFINE["oversample_units"])
    order, twin = EpochOrder(len(table), 4, 1, 0, 0), EpochOrder(len(table), 4, 1, 0, 0)
    generator = torch.Generator().manual_seed(1)
    batches, drawn, plain_active = [], set(), 0
    for _ in range(60):
        plain = twin.next()
        batch = batch_indices(order, rare, 2, generator)
        assert batch.shape == (4,) and np.array_equal(batch[2:], plain[2:])
        assert np.isin(batch[:2], rare).all() and np.all(activity[batch[:2]] > 0.3)
        batches.append(batch)
        drawn.update(int(i) for i in batch[:2])
        plain_active += int(np.sum(activity[plain] > 0.3))
    assert len(drawn) > len(rare) // 2  # the draws spread over the blink frames
    assert plain_active < 0.25 * 60 * 2  # the epoch order alone brings far fewer of them

    replay_order, replay = EpochOrder(len(table), 4, 1, 0, 0), torch.Generator().manual_seed(1)
    for batch in batches:
        assert np.array_equal(batch_indices(replay_order, rare, 2, replay), batch)
    state = generator.get_state()
    for _ in range(3):
        assert np.array_equal(batch_indices(order, rare, 0, generator), twin.next())
    assert torch.equal(generator.get_state(), state)
    # a batch smaller than the oversampled share is all oversampled frames
    small = batch_indices(EpochOrder(len(table), 2, 1, 0, 0), rare, 3, generator)
    assert small.shape == (2,) and np.isin(small, rare).all()


def test_train_encoder_refinement_changes_encoder_codebook_and_decoder(refined_encoder, motion_vq, train_table):
    source = load_file(str(motion_vq / "checkpoint" / VQ_WEIGHTS))
    result = load_file(str(refined_encoder / "checkpoint" / VQ_WEIGHTS))
    assert source.keys() == result.keys()
    for prefix in ("encoder.", "decoder."):
        keys = [k for k in source if k.startswith(prefix)]
        changed = [k for k in keys if not torch.equal(source[k], result[k])]
        assert keys and len(changed) >= len(keys) // 2, prefix
    assert not torch.equal(source["quantizer.codebook.weight"], result["quantizer.codebook.weight"])
    assert not torch.equal(source["quantizer.usage"], result["quantizer.usage"])  # usage tracked again
    for key in ("map_offset", "map_scale"):  # the normalisation is stage 1's
        assert torch.equal(source[key], result[key]), key

    recorded = json.loads((refined_encoder / "config.json").read_text())
    assert recorded["stage"] == "refine" and recorded["kind"] == "motion" and recorded["refine"]["train_encoder"] is True

    log = read_log(refined_encoder / "log.jsonl")
    start = next(r for r in log if r["event"] == "start")
    train_set, table = train_table
    assert start["train_encoder"] is True and start["oversampled_per_batch"] == 2
    assert start["oversampled_frames"] == len(oversampling_rows(train_set, table, {**REFINE_DEFAULTS, **ENCODER_REFINE}))
    train = [r for r in log if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    codebook_size = source["quantizer.codebook.weight"].shape[0]
    for record in train:
        assert 1 <= record["perplexity"] <= codebook_size
        assert isinstance(record["dead_codes"], int) and 0 <= record["dead_codes"] <= codebook_size
        assert np.isfinite(record["vertex_mm"]) and record["vertex_mm"] > 0
    assert [r["step"] for r in train if "revived" in r] == [2, 4]  # revive_every 2

    # the run folder is a motion VQ run (what stage 2 and load_trained_vq read) ...
    vq, info = load_trained_vq(refined_encoder)
    assert info["kind"] == "motion" and info["step"] == 4
    state = vq.state_dict()
    assert all(torch.equal(state[k], result[k]) for k in result)
    assert not same_codes(vq, load_trained_vq(motion_vq)[0])
    # ... and a refinement run that says it changed the codes
    _, refined_info = load_refined_motion_vq(refined_encoder)
    assert refined_info["train_encoder"] is True and refined_info["step"] == 4


def test_train_encoder_refinement_with_oversampling_resumes_bit_identically(dataset, motion_vq, refined_encoder, tmp_path):
    split = tmp_path / "split"
    first = refine_motion_decoder(refine_config(**ENCODER_REFINE), dataset, split, motion_vq, CPU, steps=2, progress_bar=False)
    assert first["step"] == 2
    second = refine_motion_decoder(refine_config(**ENCODER_REFINE), dataset, split, motion_vq, CPU, progress_bar=False)
    assert second["step"] == 4 and second["steps_this_session"] == 2
    a = load_file(str(refined_encoder / "checkpoint" / VQ_WEIGHTS))
    b = load_file(str(split / "checkpoint" / VQ_WEIGHTS))
    assert a.keys() == b.keys()
    for key in a:  # encoder, codebook (and its usage), decoder
        assert torch.equal(a[key], b[key]), key
    state_a = torch.load(refined_encoder / "checkpoint" / "state.pt", weights_only=True)
    state_b = torch.load(split / "checkpoint" / "state.pt", weights_only=True)
    moments_a = [s["exp_avg_sq"] for s in state_a["optimizer"]["state"].values()]
    moments_b = [s["exp_avg_sq"] for s in state_b["optimizer"]["state"].values()]
    assert moments_a and len(moments_a) == len(moments_b) and all(torch.equal(x, y) for x, y in zip(moments_a, moments_b))
    # the generator (oversampling draws, revival) ends in the same state
    assert torch.equal(state_a["rng"][0]["generator"], state_b["rng"][0]["generator"])
    keys = ("vertex_mm", "map_l1", "perplexity", "dead_codes", "revived")
    straight = [{k: r.get(k) for k in keys} for r in read_log(refined_encoder / "log.jsonl") if r["event"] == "train"]
    resumed = [{k: r.get(k) for k in keys} for r in read_log(split / "log.jsonl") if r["event"] == "train"]
    assert resumed == straight


def test_refinement_loop_trains_on_the_oversampled_batches(dataset, motion_vq, tmp_path):
    """The loop takes its batches from `batch_indices`: one step with half of the batch blink
    frames ends elsewhere than the same step on the epoch order's batch alone."""
    results = {}
    for fraction in (0.0, 0.5):
        run = tmp_path / f"fraction_{fraction}"
        refine_motion_decoder(refine_config(**{**ENCODER_REFINE, "oversample_fraction": fraction}, validation_frames=0),
                              dataset, run, motion_vq, CPU, steps=1, progress_bar=False)
        start = next(r for r in read_log(run / "log.jsonl") if r["event"] == "start")
        assert start["oversampled_per_batch"] == (2 if fraction else 0)
        results[fraction] = load_file(str(run / "checkpoint" / VQ_WEIGHTS))
    decoder = [k for k in results[0.0] if k.startswith("decoder.")]
    assert any(not torch.equal(results[0.0][k], results[0.5][k]) for k in decoder)


def test_export_refuses_a_train_encoder_refinement_as_motion_decoder(refined_encoder, ldm, tmp_path):
    out = tmp_path / "assets" / "bundle.safetensors"
    with pytest.raises(ValueError, match="refined the encoder and codebook too"):
        export_bundle(ldm, out, motion_decoder=refined_encoder)
    assert not out.exists()


def test_stage_2_trains_on_a_train_encoder_refinement(dataset, runs, ldm, refined_encoder, motion_vq, tmp_path):
    """The refinement run is stage 2's motion VQ: the LDM learns its codes and the bundle carries
    it whole (encoder, codebook, decoder)."""
    run = tmp_path / "ldm"
    summary = train_ldm(load_training_config(runs["config"]), dataset, run, refined_encoder, runs["root"] / "wrinkle", CPU,
                        progress_bar=False)
    assert summary["step"] == 1 and summary["stopped"] == "steps reached"
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["motion_vq_run"] == str(refined_encoder.resolve())
    # the latents were encoded with the refined VQ, not taken over from stage 1's
    assert json.loads((run / "cache" / "vq.json").read_text()) != json.loads((ldm / "cache" / "vq.json").read_text())

    result = export_bundle(run, tmp_path / "assets" / "bundle.safetensors")
    assert result["motion_decoder_refine_step"] is None
    bundle = load_weights(result["out"], verify=True)
    refined_tensors = load_file(str(refined_encoder / "checkpoint" / VQ_WEIGHTS))
    source_tensors = load_file(str(motion_vq / "checkpoint" / VQ_WEIGHTS))
    compared = [k for k in refined_tensors if not k.endswith(".usage")]
    assert any(k.startswith("encoder.") for k in compared) and "quantizer.codebook.weight" in compared
    assert any(k.startswith("decoder.") for k in compared)
    for key in compared:
        assert torch.equal(bundle.tensors["motion_vq." + key], refined_tensors[key]), key
    assert not torch.equal(bundle.tensors["motion_vq.quantizer.codebook.weight"], source_tensors["quantizer.codebook.weight"])


def test_ldm_warm_start_copies_the_trainable_tensors_and_refuses_another_model(dataset, runs, ldm, tmp_path):
    source = ldm / "checkpoint" / MODEL_WEIGHTS

    def start(name: str, init_from, steps: int = 0) -> Path:
        run = tmp_path / name
        if not run.exists():  # same VQs as `ldm`: its latent cache is valid here (keyed on VQ contents)
            shutil.copytree(ldm / "cache", run / "cache")
        config = load_training_config(runs["config"])
        config.ldm["seed"] = 1  # another random initialisation than the source run's
        summary = train_ldm(config, dataset, run, runs["motion"], runs["root"] / "wrinkle", CPU, steps=steps,
                            progress_bar=False, init_from=init_from)
        assert summary["step"] == steps
        return run

    source_tensors = load_file(str(source))
    trainable = [k for k in source_tensors if k.startswith(("denoiser.", "audio_encoder."))]
    assert any(k.startswith("denoiser.") for k in trainable) and any(k.startswith("audio_encoder.") for k in trainable)

    warm = start("warm", source)
    warm_tensors = load_file(str(warm / "checkpoint" / MODEL_WEIGHTS))  # the step-0 checkpoint
    for key in trainable:
        assert torch.equal(warm_tensors[key], source_tensors[key]), key
    recorded = json.loads((warm / "config.json").read_text())
    assert recorded["init_from"] == str(source.resolve()) and recorded["init_from_sha256"] == sha256_file(source)
    # the control: the same run without the warm start starts elsewhere
    cold = start("cold", None)
    cold_tensors = load_file(str(cold / "checkpoint" / MODEL_WEIGHTS))
    differ = [k for k in trainable if k.startswith("denoiser.") and not torch.equal(cold_tensors[k], source_tensors[k])]
    assert len(differ) >= len([k for k in trainable if k.startswith("denoiser.")]) // 2
    assert "init_from" not in json.loads((cold / "config.json").read_text())

    # Weights of another model: a trainable tensor missing, or of another shape.
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    name = next(k for k in trainable if k.startswith("denoiser.") and source_tensors[k].ndim == 2)
    stripped = {k: v for k, v in source_tensors.items() if k != name}
    wider = {**source_tensors, name: torch.zeros(source_tensors[name].shape[0] + 1, source_tensors[name].shape[1])}
    for label, tensors in (("stripped", stripped), ("wider", wider)):
        path = tmp_path / f"{label}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        with pytest.raises(ValueError, match="not a warm start for this model config"):
            start(label, path)
    # A run with a checkpoint resumes from it: `init_from` is for the first session only.
    start("warm", tmp_path / "stripped.safetensors")


@pytest.mark.slow  # 6 Python processes start (each stage script and the export): ~15 s CPU
def test_retrain_runs_stage_1b_and_exports_the_refined_decoder(dataset, runs, ldm, tmp_path):
    """tools/retrain.sh with a config whose "refine" section asks for steps, on copies of finished
    stage-1 and stage-2 runs: the script only checks those, refines the motion decoder (stage 1b)
    and exports the bundle with the refined decoder."""
    root = tmp_path / "runs"
    for stage in ("motion", "wrinkle", "ldm"):  # the LDM's latent cache is keyed on VQ contents, not paths
        shutil.copytree(runs["root"] / stage, root / stage)
    export_to = tmp_path / "bundle" / "textalker_bundled.safetensors"
    export_to.parent.mkdir()
    env = {**os.environ, "CONFIG": str(runs["config"]), "DATA": str(dataset), "EXPORT_TO": str(export_to),
           "MAX_MINUTES": "5", "OMP_NUM_THREADS": "1", "CLOSURE_STEPS": "3"}
    completed = subprocess.run(["bash", str(REPO / "tools" / "retrain.sh"), str(root)], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "stage 1b" in completed.stdout and "motion decoder refined 4 steps" in completed.stdout
    refine_run = root / "motion_refine"
    assert json.loads((refine_run / "checkpoint" / "progress.json").read_text())["step"] == 4
    assert [r["step"] for r in read_log(refine_run / "log.jsonl") if r["event"] == "train"] == [1, 2, 3, 4]
    bundle = load_weights(export_to, verify=True)
    training = json.loads(bundle.metadata["training"])
    assert training["motion_decoder_refine_step"] == 4 and training["motion_decoder_run"] == "motion_refine"
    refined_tensors = load_file(str(refine_run / "checkpoint" / VQ_WEIGHTS))
    decoder = [k for k in refined_tensors if k.startswith("decoder.")]
    assert decoder and all(torch.equal(bundle.tensors["motion_vq." + k], refined_tensors[k]) for k in decoder)


@pytest.mark.slow  # 6 Python processes start, stage 2 encodes the dataset anew: ~20 s CPU
def test_retrain_trains_stage_2_on_a_train_encoder_refinement(dataset, runs, ldm, tmp_path):
    """tools/retrain.sh with refine.train_encoder: stage 1b refines the whole motion VQ, stage 2
    trains on it (motion_refine, not motion) and the export takes it whole, with no
    --motion-decoder swap."""
    root = tmp_path / "runs"
    for stage in ("motion", "wrinkle"):
        shutil.copytree(runs["root"] / stage, root / stage)
    data = json.loads(runs["config"].read_text())
    data["refine"] = {**TINY_REFINE, **ENCODER_REFINE}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    export_to = tmp_path / "bundle" / "textalker_bundled.safetensors"
    export_to.parent.mkdir()
    env = {**os.environ, "CONFIG": str(config), "DATA": str(dataset), "EXPORT_TO": str(export_to),
           "MAX_MINUTES": "5", "OMP_NUM_THREADS": "1", "CLOSURE_STEPS": "3"}
    completed = subprocess.run(["bash", str(REPO / "tools" / "retrain.sh"), str(root)], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "stage 1b" in completed.stdout and "motion decoder refined" not in completed.stdout
    refine_run = root / "motion_refine"
    assert json.loads((refine_run / "checkpoint" / "progress.json").read_text())["step"] == 4
    assert json.loads((refine_run / "config.json").read_text())["refine"]["train_encoder"] is True
    ldm_recorded = json.loads((root / "ldm" / "config.json").read_text())
    assert Path(ldm_recorded["motion_vq_run"]).name == "motion_refine"
    assert json.loads((root / "ldm" / "checkpoint" / "progress.json").read_text())["step"] == 1

    bundle = load_weights(export_to, verify=True)
    training = json.loads(bundle.metadata["training"])
    assert training.get("motion_decoder_refine_step") is None and "motion_decoder_run" not in training
    refined_tensors = load_file(str(refine_run / "checkpoint" / VQ_WEIGHTS))
    stage_1 = load_file(str(root / "motion" / "checkpoint" / VQ_WEIGHTS))
    encoder = [k for k in refined_tensors if k.startswith("encoder.")]
    assert encoder and all(torch.equal(bundle.tensors["motion_vq." + k], refined_tensors[k]) for k in encoder)
    assert any(not torch.equal(refined_tensors[k], stage_1[k]) for k in encoder)
    for key in ("quantizer.codebook.weight",) + tuple(k for k in refined_tensors if k.startswith("decoder.")):
        assert torch.equal(bundle.tensors["motion_vq." + key], refined_tensors[key]), key


def test_refinement_follows_the_configured_learning_rate_decay(dataset, motion_vq, tmp_path):
    """`refine.lr_decay`: the logged rate is the base rate until `start_step`, then decays (cosine);
    it is set from the config every step, so a resumed session follows the same schedule."""
    config = refine_config(validation_frames=0, lr_decay={"start_step": 2, "final_fraction": 0.1})
    run = tmp_path / "decay"
    refine_motion_decoder(config, dataset, run, motion_vq, CPU, steps=2, progress_bar=False)
    refine_motion_decoder(config, dataset, run, motion_vq, CPU, progress_bar=False)  # resumed: steps 3, 4
    rates = [r["lr"] for r in read_log(run / "log.jsonl") if r["event"] == "train"]
    base = TINY_REFINE["learning_rate"]
    assert rates[:3] == pytest.approx([base] * 3)
    assert rates[3] == pytest.approx(base * 0.55)  # halfway through the cosine from 1 to 0.1
