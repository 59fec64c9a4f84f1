"""Training tools (tools/train_vq.py, tools/train_ldm.py, tools/export_bundle.py) on a tiny
dataset built in a temporary folder and the tiny config (tools/configs/tiny.json)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]

from tools.training.common import (  # noqa: E402
    Distributed,
    load_training_config,
    read_log,
    training_config_from_dict,
)
from tools.training.data import BucketedOrder, EpochOrder  # noqa: E402
from tools.training.export import export_bundle  # noqa: E402
from tools.training.ldm_stage import train_ldm  # noqa: E402
from tools.training.artefacts import VQ_WEIGHTS  # noqa: E402
from tools.training.vq_stage import train_vq  # noqa: E402

TINY = REPO / "tools" / "configs" / "tiny.json"
CPU = Distributed()
# Unused codes die within a step, so dead-code revival (and its RNG) runs in short tests.
DYING_CODES = {"dead_code_fraction": 0.99, "usage_ema_decay": 0.5}


@pytest.fixture(scope="module")
def dataset(tiny_dataset) -> Path:
    return tiny_dataset


def tiny_config(**vq_overrides):
    data = json.loads(TINY.read_text())
    for key, value in vq_overrides.items():
        data["model"]["overrides"].setdefault("motion_vq", {})[key] = value
    return training_config_from_dict(data)


@pytest.fixture(scope="module")
def vq_runs(dataset, tmp_path_factory) -> dict[str, Path]:
    runs = tmp_path_factory.mktemp("vq_runs")
    for kind in ("motion", "wrinkle"):
        train_vq(tiny_config(), dataset, runs / kind, kind, CPU, steps=4, progress_bar=False)
    return {"motion": runs / "motion", "wrinkle": runs / "wrinkle"}


def test_config_files_load_and_reject_unknown_keys():
    for name in ("bundled", "paper", "tiny"):
        config = load_training_config(REPO / "tools" / "configs" / f"{name}.json")
        assert config.vq["batch_size"] > 0 and config.ldm["steps"] > 0
    assert load_training_config(REPO / "tools" / "configs" / "paper.json").model.motion_vq.resolution == 512
    assert load_training_config(TINY).model.motion_vq.resolution == 32
    with pytest.raises(ValueError, match="unknown keys"):
        training_config_from_dict({"model": {"preset": "bundled"}, "vq": {"batchsize": 3}})


def test_config_extends_merges_dicts_and_refuses_cycles(tmp_path):
    from tools.training.common import read_config_file

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.json").write_text(json.dumps(
        {"model": {"preset": "bundled", "overrides": {"width": 64, "layers": 2}}, "vq": {"steps": 10, "seed": 1}}))
    (tmp_path / "b.json").write_text(json.dumps(
        {"extends": "base/a.json", "model": {"overrides": {"layers": 3}}, "vq": {"steps": 20}}))
    merged = read_config_file(tmp_path / "b.json")
    assert merged == {"model": {"preset": "bundled", "overrides": {"width": 64, "layers": 3}},
                      "vq": {"steps": 20, "seed": 1}}
    config = load_training_config(tmp_path / "b.json")
    assert (config.model.width, config.model.layers, config.vq["steps"], config.vq["seed"]) == (64, 3, 20, 1)
    (tmp_path / "loop1.json").write_text(json.dumps({"extends": "loop2.json"}))
    (tmp_path / "loop2.json").write_text(json.dumps({"extends": "loop1.json"}))
    with pytest.raises(ValueError, match="extends itself"):
        read_config_file(tmp_path / "loop1.json")


def test_epoch_order_is_sharded_and_resumable():
    ranks = [EpochOrder(20, 3, 2, r, seed=1) for r in range(2)]
    first = [np.concatenate([o.next() for o in ranks]) for _ in range(3)]  # 3 global batches
    seen = np.concatenate(first)
    assert len(set(seen.tolist())) == 18  # no item twice within an epoch, ranks disjoint
    resumed = EpochOrder(20, 3, 2, 0, seed=1)
    resumed.load_state(ranks[0].state())
    assert np.array_equal(resumed.next(), ranks[0].next())
    lengths = np.array([50, 200, 60, 210, 55, 220, 58, 205])
    bucketed = BucketedOrder(lengths, 2, 1, 0, seed=0, bucket_batches=4)
    batches = [bucketed.next_global() for _ in range(4)]
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    assert all(int(lengths[b].max() - lengths[b].min()) <= 10 for b in batches)  # short with short


def test_vq_steps_reduce_loss_and_log_codebook_usage(dataset, tmp_path):
    run = tmp_path / "motion"
    summary = train_vq(tiny_config(), dataset, run, "motion", CPU, steps=8, progress_bar=False)
    assert summary["step"] == 8
    log = read_log(run / "log.jsonl")
    train = [r for r in log if r["event"] == "train"]
    assert train[-1]["reconstruction"] < 0.8 * train[0]["reconstruction"]
    for key in ("perplexity", "usage_perplexity", "dead_codes", "revived", "frames_per_s", "adversarial"):
        assert key in train[-1]
    validation = [r for r in log if r["event"] == "validation"]
    assert validation and 0 < validation[-1]["val_mae_mm"] < 50
    stats = json.loads((run / "stats.json").read_text())
    assert all(lo < 0 < hi for lo, hi in zip(stats["min"], stats["max"]))  # metres around 0
    assert (run / "checkpoint" / VQ_WEIGHTS).is_file() and (run / "checkpoint" / "state.pt").is_file()


def test_vq_resume_is_bit_identical(dataset, tmp_path):
    # A high dead-code threshold makes revival happen (step 3 and 6), so its RNG is covered too.
    config = tiny_config(**DYING_CODES)
    train_vq(config, dataset, tmp_path / "straight", "motion", CPU, steps=8, progress_bar=False)
    train_vq(tiny_config(**DYING_CODES), dataset, tmp_path / "split", "motion", CPU, steps=4, progress_bar=False)
    assert json.loads((tmp_path / "split" / "checkpoint" / "progress.json").read_text())["step"] == 4
    train_vq(tiny_config(**DYING_CODES), dataset, tmp_path / "split", "motion", CPU, steps=8, progress_bar=False)
    revived = sum(r.get("revived", 0) for r in read_log(tmp_path / "straight" / "log.jsonl"))
    assert revived > 0
    for name in (VQ_WEIGHTS, "discriminator.safetensors"):
        a = load_file(str(tmp_path / "straight" / "checkpoint" / name))
        b = load_file(str(tmp_path / "split" / "checkpoint" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    state_a = torch.load(tmp_path / "straight" / "checkpoint" / "state.pt", weights_only=True)
    state_b = torch.load(tmp_path / "split" / "checkpoint" / "state.pt", weights_only=True)
    moments_a = [s["exp_avg"] for s in state_a["optimizer"]["state"].values()]
    moments_b = [s["exp_avg"] for s in state_b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(moments_a, moments_b))


def test_ldm_pivots_resume_and_exported_bundle_runs(dataset, vq_runs, tmp_path):
    from textalker_blender.core.pipeline import Pipeline

    config = load_training_config(TINY)
    run = tmp_path / "ldm"
    train_ldm(config, dataset, run, vq_runs["motion"], vq_runs["wrinkle"], CPU, steps=3, progress_bar=False)
    train_ldm(load_training_config(TINY), dataset, run, vq_runs["motion"], vq_runs["wrinkle"], CPU, steps=6, progress_bar=False)
    straight = tmp_path / "straight"
    train_ldm(load_training_config(TINY), dataset, straight, vq_runs["motion"], vq_runs["wrinkle"], CPU, steps=6, progress_bar=False)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(run / "checkpoint" / name)), load_file(str(straight / "checkpoint" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name

    pivots = load_file(str(run / "pivots.safetensors"))
    motion_dim = config.model.motion_vq.latent_dim
    assert pivots["speaking"].shape == (2, motion_dim)  # two training subjects
    assert pivots["wrinkle"].shape == (2, config.model.wrinkle_vq.latent_dim)
    names = json.loads((run / "pivots.json").read_text())["names"]
    assert names[0].endswith("S00)") and names[1].endswith("S01)")
    log = read_log(run / "log.jsonl")
    validation = [r for r in log if r["event"] == "validation"]
    assert validation and np.isfinite(validation[-1]["val_loss"])
    assert validation[-1]["val_border_discontinuity"] > 0

    out = tmp_path / "assets" / "textalker_bundled.safetensors"
    result = export_bundle(run, out)
    manifest = json.loads((out.parent / "manifest.json").read_text())
    assert manifest["files"][out.name]["sha256"] == result["sha256"]
    Pipeline.clear_cache()
    pipe = Pipeline.load(weights=out, device="cpu", verify=True)
    assert pipe.trained and [s.name for s in pipe.styles] == names
    audio = (0.1 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    generated = pipe.generate((audio, 16000), speaking_style=1, wrinkle_style=0, seed=0)
    assert generated.offsets.shape == (30, pipe.template.n_vertices, 3)
    assert np.isfinite(generated.offsets).all() and np.abs(generated.offsets).max() < 0.05
    assert generated.wrinkle_maps.shape[0] == 30 and np.isfinite(generated.wrinkle_maps).all()
    Pipeline.clear_cache()


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(dataset, tmp_path):
    run = tmp_path / "motion"
    command = [sys.executable, str(REPO / "tools" / "train_vq.py"), "--config", str(TINY), "--data", str(dataset),
               "--run", str(run), "--which", "motion", "--steps", "100000", "--no-progress", "--threads", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = read_log(run / "log.jsonl") if (run / "log.jsonl").is_file() else []
            if any(r["event"] == "train" for r in records):
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    progress = json.loads((run / "checkpoint" / "progress.json").read_text())
    assert progress["step"] >= 2
    assert read_log(run / "log.jsonl")[-1]["stopped"] == "SIGTERM"
    summary = train_vq(tiny_config(), dataset, run, "motion", CPU, steps=progress["step"] + 2, progress_bar=False)
    assert summary["step"] == progress["step"] + 2 and summary["steps_this_session"] == 2


def test_torchrun_two_process_gloo_smoke(dataset, tmp_path):
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        pytest.skip("torch.distributed.run (torchrun) is unavailable")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is unavailable")
    run = tmp_path / "motion"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tools" / "train_vq.py"), "--config", str(TINY), "--data", str(dataset), "--run-dir", str(run),
               "--which", "motion", "--steps", "4", "--no-progress", "--device", "cpu", "--threads", "1"]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    log = read_log(run / "log.jsonl")
    assert log[0]["world_size"] == 2
    train = [r for r in log if r["event"] == "train"]
    assert train[-1]["step"] == 4
    progress = json.loads((run / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 4 and progress["world_size"] == 2
    assert progress["order"]["position"] == 4  # 4 global batches of 2 x batch_size frames
    assert log[-1]["ranks_in_sync"] is True  # averaged gradients keep the replicas identical


def test_ldm_time_limit_during_encoding_then_resume(dataset, vq_runs, tmp_path):
    run = tmp_path / "ldm"
    stopped = train_ldm(load_training_config(TINY), dataset, run, vq_runs["motion"], vq_runs["wrinkle"], CPU,
                        steps=2, max_minutes=1e-6, progress_bar=False)
    assert stopped["step"] == 0 and stopped["stopped"] == "time limit while encoding"
    assert not (run / "checkpoint").exists()
    done = train_ldm(load_training_config(TINY), dataset, run, vq_runs["motion"], vq_runs["wrinkle"], CPU,
                     steps=2, progress_bar=False)
    assert done["step"] == 2 and len(list((run / "cache" / "train").glob("*.npz"))) >= 19
