"""Stage 1b (tools/refine_decoder.py, tools/training/refine_stage.py): the motion VQ's decoder
refined on vertex offsets with the encoder, codebook and normalisation frozen, its exact resume,
its refusal to continue on a changed source VQ, and the export that swaps the refined decoder
into a bundle (tools/training/export.py) — on a tiny dataset and the tiny config."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from synthetic_textalk4d.builder import BuildConfig, build  # noqa: E402
from training.common import (  # noqa: E402
    Distributed,
    load_training_config,
    read_log,
    training_config_from_dict,
)
from training.data import FrameTable, open_dataset  # noqa: E402
from training.export import export_bundle  # noqa: E402
from training.ldm_stage import train_ldm  # noqa: E402
from training.refine_stage import (  # noqa: E402
    VertexLoss,
    load_refined_motion_vq,
    refine_motion_decoder,
    render_offsets_and_maps,
    same_codes,
)
from training.vq_stage import VQ_WEIGHTS, load_trained_vq, train_vq  # noqa: E402

from textalker_blender.core.weights import load_weights, sha256_file  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                reason="needs the Debian packages flite and sox (dataset build)")

TINY = REPO / "tools" / "configs" / "tiny.json"
CPU = Distributed()
# Small batches, a high learning rate (a 4-step VQ's decoder has far to go), a log record per step,
# a periodic checkpoint and validation (16 test-A frames) at step 2: the straight run passes
# through the state a 2-step session ends in, which the resume test restarts from.
TINY_REFINE = {"batch_size": 4, "learning_rate": 2e-3, "steps": 4, "checkpoint_every": 2, "log_every": 1,
               "validate_every": 2, "validation_frames": 16, "seed": 0}


def refine_config(**overrides):
    data = json.loads(TINY.read_text())
    data["refine"] = {**TINY_REFINE, **overrides}
    return training_config_from_dict(data)


def vq_config(seed: int = 0):
    data = json.loads(TINY.read_text())
    data["vq"]["seed"] = seed
    return training_config_from_dict(data)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """3 subjects (2 train, 1 test-B), ~20 train utterances and one test-A utterance."""
    root = tmp_path_factory.mktemp("refine") / "ds"
    build(BuildConfig(out=root, subjects=3, minutes=1.3, seed=5), log=lambda *a: None)
    return root


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


def test_config_refine_section_defaults_bundled_and_unknown_keys():
    tiny = load_training_config(TINY)
    assert tiny.refine["steps"] == 0  # tools/retrain.sh skips stage 1b for the tiny config
    bundled = load_training_config(REPO / "tools" / "configs" / "bundled.json")
    assert bundled.refine["steps"] > 0 and bundled.refine["lip_weight"] > 1 and bundled.refine["upper_face_weight"] > 1
    assert 0 < bundled.refine["learning_rate"] < 1e-2
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
    from training.ablations import train_ablation

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
           "MAX_MINUTES": "5", "OMP_NUM_THREADS": "1"}
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
