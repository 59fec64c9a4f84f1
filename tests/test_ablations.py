"""The paper's ablations (motion only, wrinkle only, joint codebook, one-hot style) as trainable
configurations: config files, the core's ablation switches (and that the full model is unchanged),
and, on a tiny dataset, train -> export -> Pipeline for each (tools/training/ablations.py)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from core_helpers import grid_template, speech_like, tiny_config

REPO = Path(__file__).resolve().parents[1]

from textalker_blender.core.config import ModelConfig, VQConfig  # noqa: E402
from textalker_blender.core.model import TexTalkerModel, random_pivots  # noqa: E402
from textalker_blender.core.pipeline import DEFAULT_WEIGHTS, Pipeline, layouts_of  # noqa: E402
from textalker_blender.core.style import StylePivots  # noqa: E402
from tools.training.losses import ldm_loss  # noqa: E402

CONFIGS = REPO / "tools" / "configs"
ABLATION_FIELDS = {"modalities", "joint_codebook_vq", "style_mode", "num_styles"}
AUDIO = (speech_like(1.0), 16000)


# ---------------------------------------------------------------------------- config files
def test_ablation_configs_are_the_bundled_config_plus_one_switch():
    from tools.training.ablations import ABLATION_CONFIGS
    from tools.training.common import load_training_config, read_config_file

    bundled = json.loads((CONFIGS / "bundled.json").read_text())
    expected = {"reference": None, "motion_only": "motion_only", "wrinkle_only": "wrinkle_only",
                "joint_codebook": "joint_codebook", "onehot": "onehot"}
    for name, path in ABLATION_CONFIGS.items():
        data = json.loads(path.read_text())
        if name != "reference":
            # The file states only its switch; everything else (VQs, LDM, budget) comes from
            # bundled.json through "extends", so the comparison stays fair when bundled.json changes.
            assert data.pop("extends") == "bundled.json", name
            assert set(data) == {"model"} and set(data["model"]) == {"overrides"}, name
            assert set(data["model"]["overrides"]) <= set(ABLATION_FIELDS), name
        resolved = read_config_file(path)
        overrides = resolved["model"]["overrides"]
        stripped = copy.deepcopy(resolved)
        stripped["model"]["overrides"] = {k: v for k, v in overrides.items() if k not in ABLATION_FIELDS}
        assert stripped == bundled, name
        config = load_training_config(path)
        assert config.model.ablation == expected[name], name
    joint = load_training_config(ABLATION_CONFIGS["joint_codebook"]).model
    assert joint.joint_codebook_vq.in_channels == 6
    assert joint.wrinkle_latent_dim == 0
    # same latent numbers per frame as the two separate codebooks (8x8x8 = 2 x 8x8x4)
    assert joint.motion_latent_dim == ModelConfig.bundled().joint_latent_dim == 512
    onehot = load_training_config(ABLATION_CONFIGS["onehot"]).model
    meta = REPO / "data" / "synthetic_textalk4d" / "meta.json"
    subjects = json.loads(meta.read_text())["subject_splits"] if meta.is_file() else {}
    assert onehot.num_styles >= max(len(subjects), 20)  # a table row per training subject


def test_full_model_serialises_exactly_as_before():
    bundled = ModelConfig.bundled()
    data = bundled.to_dict()
    assert "modalities" not in data and "joint_codebook_vq" not in data  # the old JSON, byte for byte
    assert ModelConfig.from_dict(data) == bundled and bundled.ablation is None
    assert bundled.joint_latent_dim == bundled.motion_latent_dim + bundled.wrinkle_latent_dim
    for overrides in ({"modalities": "motion"}, {"modalities": "wrinkle"},
                      {"joint_codebook_vq": VQConfig(in_channels=6, latent_channels=8, codebook_size=768)}):
        config = ModelConfig(**overrides)
        assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="modalities"):
        ModelConfig(modalities="texture").validate()
    with pytest.raises(ValueError, match="6 input channels"):
        ModelConfig(joint_codebook_vq=VQConfig(in_channels=3)).validate()


def test_shipped_weights_load_as_the_full_model_with_their_recorded_config():
    from textalker_blender.core.weights import load_weights

    weights = load_weights(DEFAULT_WEIGHTS, verify=False)
    model = TexTalkerModel.from_weights(weights)
    assert model.config.ablation is None and "ablation" not in model.metadata(True, "x")
    assert model.config.to_json() == weights.metadata["config"]  # the header would not change
    assert [type(vq).__name__ for vq in model.vq_modules()] == ["VQAutoencoder"] * 2


# ---------------------------------------------------------------------------- core, no training
def _model(config: ModelConfig, n_styles: int = 2) -> TexTalkerModel:
    torch.manual_seed(0)
    names = [f"Speaker {i}" for i in range(n_styles)]
    zero = StylePivots(np.zeros((n_styles, config.motion_latent_dim)), np.zeros((n_styles, config.wrinkle_latent_dim)), names)
    model = TexTalkerModel(config, zero)
    if config.joint_codebook_vq is None:
        model.set_pivots(random_pivots(config, names, model))
    return model


def _pipeline(config: ModelConfig, tmp_path: Path, name: str) -> Pipeline:
    template = grid_template()
    config.uv_layouts = layouts_of(template)
    path = tmp_path / f"{name}.safetensors"
    _model(config).save(path, trained=False, dataset="unit test")
    return Pipeline.load(path, "cpu", template=template)


@pytest.mark.parametrize("modalities", ["motion", "wrinkle"])
def test_one_modality_models_only_its_latents(modalities, tmp_path):
    config = tiny_config(modalities=modalities)
    full = tiny_config()
    kept = config.motion_latent_dim if modalities == "motion" else config.wrinkle_latent_dim
    assert config.joint_latent_dim == kept < full.joint_latent_dim
    model = _model(config)
    assert model.denoiser.input_proj.in_features == kept
    # training target and loss only see the modelled slot
    z_motion, z_wrinkle = torch.randn(2, 12, config.motion_latent_dim), torch.randn(2, 12, config.wrinkle_latent_dim)
    model.fit_latent_normalization(z_motion.reshape(-1, config.motion_latent_dim),
                                   z_wrinkle.reshape(-1, config.wrinkle_latent_dim), torch.zeros(24, dtype=torch.long))
    x0 = model.to_model_space(z_motion[0], z_wrinkle[0], 1, 1)
    assert x0.shape == (12, kept)
    back = model.from_model_space(x0, 1, 1)
    expected = z_motion[0] if modalities == "motion" else z_wrinkle[0]
    assert (back[0] is None) == (modalities == "wrinkle") and (back[1] is None) == (modalities == "motion")
    torch.testing.assert_close(back[0 if modalities == "motion" else 1], expected, atol=1e-4, rtol=1e-4)
    loss = ldm_loss(model, z_motion, z_wrinkle, torch.randn(2, 12, config.audio_feature_dim), torch.tensor([0, 1]))
    assert torch.isfinite(loss)

    pipe = _pipeline(config, tmp_path, modalities)
    assert pipe.model.metadata(False, "x")["ablation"] == f"{modalities}_only"
    result = pipe.generate(AUDIO, speaking_style=1, wrinkle_style=0, fps=25)
    assert result.offsets.shape[0] == result.wrinkle_maps.shape[0] == 25
    if modalities == "motion":
        assert not pipe.generates_texture and not result.has_texture and result.has_motion
        assert np.all(result.wrinkle_maps == 1.0)  # static, neutral texture
        assert np.abs(result.offsets).max() > 0
    else:
        assert not pipe.generates_motion and not result.has_motion and result.has_texture
        assert np.all(result.offsets == 0.0)  # the face stays neutral
        assert np.any(result.wrinkle_maps != 1.0)


def test_joint_codebook_core_round_trips_maps_between_layouts(tmp_path):
    joint_vq = VQConfig(resolution=16, in_channels=6, base_channels=8, channel_mult=(1, 2, 2), latent_channels=8,
                        codebook_size=32, discriminator_channels=8, discriminator_layers=2)
    config = tiny_config(joint_codebook_vq=joint_vq)
    assert config.motion_latent_dim == 4 * 4 * 8 and config.wrinkle_latent_dim == 0
    pipe = _pipeline(config, tmp_path, "joint")
    model = pipe.model
    assert model.motion_vq is None and model.wrinkle_vq is None
    assert [vq.config.in_channels for vq in model.vq_modules()] == [6]
    codebooks = [name for name, _ in model.named_parameters() if name.endswith("codebook.weight")]
    assert codebooks == ["joint_vq.quantizer.codebook.weight"]  # one codebook
    # Identical layouts (the grid's two rectangles): joining and splitting is the identity.
    codec = model.joint_codec()
    motion = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    wrinkle = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
    joined = codec.join(motion, wrinkle)
    assert joined.shape == (2, 16, 16, 6)
    back_motion, back_wrinkle = codec.split(joined)
    np.testing.assert_array_equal(back_motion, motion)
    np.testing.assert_allclose(back_wrinkle, wrinkle, atol=1e-5)
    result = pipe.generate(AUDIO, speaking_style=0, wrinkle_style=1, fps=30)
    assert result.offsets.shape == (30, len(pipe.template.vertex_uvs), 3)
    assert result.wrinkle_maps.shape == (30, 16, 16, 3) and result.has_texture and result.has_motion
    assert np.isfinite(result.offsets).all() and np.isfinite(result.wrinkle_maps.astype(np.float32)).all()


def test_joint_codec_between_the_template_layouts_keeps_the_face():
    """The real template: motion atlas and wrinkle rectangle differ; the round trip (wrinkle map
    -> motion layout -> wrinkle layout) keeps the face's wrinkles up to bilinear smoothing."""
    from textalker_blender.core.joint_codebook import JointMapCodec
    from textalker_blender.core.template import load_template

    try:
        template = load_template()
    except FileNotFoundError:
        pytest.skip("template asset not built")
    codec = JointMapCodec(template.motion_layout, template.wrinkle_layout, 128, 128)
    rasterizer = template.uv_rasterizer(128, layout="wrinkle")
    face = rasterizer.rasterize(np.asarray(template.face_mask, np.float32)[:, None])[..., 0] > 0.5
    # a smooth wrinkle field over the face (fold, shade, flush), zero elsewhere
    rows, cols = np.mgrid[0:128, 0:128] / 128.0
    field = (0.5 + 0.5 * np.sin(2 * np.pi * 3 * rows) * np.cos(2 * np.pi * 2 * cols))[None, ..., None]
    maps = (field * np.array([1.0, 0.3, 0.1]) * face[None, ..., None]).astype(np.float32)
    errors = codec.round_trip_error(maps, mask=face)
    assert errors["psnr_db"] > 35 and errors["ratio_mae"] < 0.01, errors


# ---------------------------------------------------------------------------- end to end
def _tiny_ablation_configs(folder: Path) -> dict[str, Path]:
    """tools/configs/tiny.json + each ablation's switch (tiny sizes: tests only)."""
    tiny = json.loads((CONFIGS / "tiny.json").read_text())
    tiny_vq = tiny["model"]["overrides"]["motion_vq"]
    switches = {
        "reference": {},
        "motion_only": {"modalities": "motion"},
        "wrinkle_only": {"modalities": "wrinkle"},
        "onehot": {"style_mode": "onehot", "num_styles": 4},
        "joint_codebook": {"joint_codebook_vq": {**tiny_vq, "in_channels": 6, "latent_channels": 4, "codebook_size": 64}},
    }
    paths = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, switch in switches.items():
        data = copy.deepcopy(tiny)
        data["model"]["overrides"].update(switch)
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    from tools.training.ablations import train_ablation
    from tools.training.common import Distributed, load_training_config
    from tools.training.vq_stage import train_vq

    root = tmp_path_factory.mktemp("ablations")
    data = tiny_dataset
    configs = _tiny_ablation_configs(root / "configs")
    cpu = Distributed()
    vq_runs = {kind: root / "vq" / kind for kind in ("motion", "wrinkle")}
    for kind, run in vq_runs.items():
        train_vq(load_training_config(configs["reference"]), data, run, kind, cpu, steps=3, progress_bar=False)
    runs = root / "runs"
    summaries = {}
    for name in ("reference", "motion_only", "wrinkle_only", "onehot", "joint_codebook"):
        summaries[name] = train_ablation(name, data, runs, vq_runs["motion"], vq_runs["wrinkle"], ldm_steps=3,
                                         joint_vq_steps=3, cache_from=runs / "reference" / "ldm",
                                         config_path=configs[name], progress_bar=False)
    return {"runs": runs, "summaries": summaries}


def _generate(path: Path):
    Pipeline.clear_cache()
    pipe = Pipeline.load(path, device="cpu", verify=True)
    result = pipe.generate(AUDIO, speaking_style=1, wrinkle_style=0, seed=0)
    return pipe, result


@pytest.mark.parametrize("name", ["reference", "motion_only", "wrinkle_only", "onehot", "joint_codebook"])
def test_each_ablation_trains_exports_and_generates(trained, name):
    summary = trained["summaries"][name]
    assert summary["stopped"] == "steps reached" and summary["ldm"]["step"] == 3
    # tiny.json: 3 steps x (1 - 0.9) < 3, so the raw weights are exported, not the young EMA
    assert summary["export"]["ema"] is False and summary["export"]["source"].endswith("model.safetensors")
    out = trained["runs"] / f"{name}.safetensors"
    assert Path(summary["export"]["out"]) == out and out.is_file()
    manifest = json.loads((out.parent / "manifest.json").read_text())
    assert manifest["files"][out.name]["sha256"] == summary["export"]["sha256"]
    pipe, result = _generate(out)
    assert pipe.trained and len(pipe.styles) == 2
    assert pipe.config.ablation == (None if name == "reference" else name)
    n_vertices = len(pipe.template.vertex_uvs)
    assert result.offsets.shape == (30, n_vertices, 3) and result.wrinkle_maps.shape[:1] == (30,)
    assert np.isfinite(result.offsets).all() and np.isfinite(result.wrinkle_maps.astype(np.float32)).all()
    from textalker_blender.core.weights import load_weights

    metadata = load_weights(out, verify=False).metadata
    if name == "reference":
        assert "ablation" not in metadata
    else:
        assert metadata["ablation"] == name
    if name == "motion_only":
        assert metadata["generates_texture"] == "false" and not result.has_texture
        assert np.all(result.wrinkle_maps == 1.0) and np.abs(result.offsets).max() > 0
    elif name == "wrinkle_only":
        assert metadata["generates_motion"] == "false" and not result.has_motion
        assert np.all(result.offsets == 0.0) and np.any(result.wrinkle_maps != 1.0)
    elif name == "joint_codebook":
        codebooks = [k for k in pipe.model.state_dict() if k.endswith("codebook.weight")]
        assert codebooks == ["joint_vq.quantizer.codebook.weight"]
        assert pipe.model.pivots.wrinkle.shape == (2, 0)
        assert summary["joint_vq"]["step"] == 3
    elif name == "onehot":
        assert pipe.config.style_mode == "onehot"
        assert pipe.model.denoiser.speaking_embedding.num_embeddings == 4
        # different speaking styles give different motion (the embedding is used)
        other = pipe.generate(AUDIO, speaking_style=0, wrinkle_style=0, seed=0)
        assert not np.array_equal(other.offsets, result.offsets)
    Pipeline.clear_cache()


def test_ablations_share_the_reference_latent_cache(trained):
    summaries = trained["summaries"]
    assert all(summaries[n]["cache_reused"] for n in ("motion_only", "wrinkle_only", "onehot"))
    runs = trained["runs"]
    reference = sorted((runs / "reference" / "ldm" / "cache" / "train").glob("*.npz"))
    shared = runs / "onehot" / "ldm" / "cache" / "train" / reference[0].name
    assert shared.stat().st_ino == reference[0].stat().st_ino  # hard link, no copy
    joint = np.load(next((runs / "joint_codebook" / "ldm" / "cache" / "train").glob("*.npz")))
    assert joint["z_wrinkle"].shape[1] == 0 and joint["z_motion"].shape[1] == 8 * 8 * 4  # 32 / 2^2 = 8, 4 channels


def test_ema_export_rule():
    from tools.training.ablations import ema_is_reliable

    assert not ema_is_reliable(500, 0.999) and ema_is_reliable(3000, 0.999) and ema_is_reliable(6000, 0.999)
    assert not ema_is_reliable(10**6, 0.0)


def test_cache_is_not_shared_across_audio_settings(trained, tmp_path):
    from tools.training.ablations import reuse_latent_cache

    runs = trained["runs"]
    vq = {k: Path(json.loads((runs / "reference" / "ldm" / "config.json").read_text())[f"{k}_vq_run"]) for k in ("motion", "wrinkle")}
    # the real bundled config logs-mels with 80 bands, the tiny reference run with 40
    assert not reuse_latent_cache(runs / "reference" / "ldm", tmp_path / "a", vq["motion"], vq["wrinkle"],
                                  config_path=CONFIGS / "ablation_motion_only.json")
    assert reuse_latent_cache(runs / "reference" / "ldm", tmp_path / "b", vq["motion"], vq["wrinkle"])


def test_train_ablations_cli_runs_a_real_config_and_prints_evaluator_arguments(trained, tmp_path, capsys):
    """tools/train_ablations.py with the real motion-only config (bundled denoiser) for 2 steps."""
    from tools import train_ablations

    runs = trained["runs"]
    recorded = json.loads((runs / "reference" / "ldm" / "config.json").read_text())
    out = tmp_path / "cli"
    argv = ["--data", recorded["data"], "--runs", str(out), "--motion-vq", recorded["motion_vq_run"],
            "--wrinkle-vq", recorded["wrinkle_vq_run"], "--ldm-steps", "2", "--only", "motion_only", "--no-progress"]
    assert train_ablations.main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == f"--ablation motion_only={out / 'motion_only.safetensors'}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["motion_only"]["ldm"]["step"] == 2 and summary["motion_only"]["config"].endswith("ablation_motion_only.json")
    pipe, result = _generate(out / "motion_only.safetensors")
    assert pipe.config.width == 256 and not result.has_texture
    Pipeline.clear_cache()
    with pytest.raises(SystemExit):
        train_ablations.main(argv[:-3] + ["--only", "no_such_ablation"])


def test_a_signal_ends_the_whole_sequence(monkeypatch, tmp_path, capsys):
    from tools import train_ablations

    calls = []

    def fake(name, *args, **kwargs):
        calls.append(name)
        return {"name": name, "stopped": "SIGTERM" if name == "motion_only" else "steps reached"}

    monkeypatch.setattr(train_ablations, "train_ablation", fake)
    argv = ["--data", str(tmp_path), "--runs", str(tmp_path / "runs"), "--motion-vq", "m", "--wrinkle-vq", "w"]
    assert train_ablations.main(argv) == 0
    assert calls == ["reference", "motion_only"]  # nothing started after the signal
    assert "run the same command again" in capsys.readouterr().out
