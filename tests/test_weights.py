"""core.weights + core.model: safetensors round trip, SHA-256 manifest, no pickle, metadata."""

import json
import pickle

import numpy as np
import pytest
import torch
from core_helpers import tiny_config

from textalker_blender.core.config import ModelConfig
from textalker_blender.core.errors import WeightsError
from textalker_blender.core.model import TexTalkerModel, random_pivots
from textalker_blender.core.style import StylePivots
from tools.training.losses import ldm_loss
from textalker_blender.core.weights import (
    MANIFEST_NAME,
    load_weights,
    record_in_manifest,
    save_weights,
    sha256_file,
)

METADATA = {"config": "{}", "audio_encoder": "bundled", "style_names": "[]", "trained": "false"}


def tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=g), "b": torch.arange(5, dtype=torch.float32)}


def test_round_trip_with_manifest(tmp_path):
    path = tmp_path / "w.safetensors"
    digest = save_weights(path, tensors(), METADATA)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["files"]["w.safetensors"]["sha256"] == digest == sha256_file(path)
    loaded = load_weights(path)
    for name, tensor in tensors().items():
        torch.testing.assert_close(loaded.tensors[name], tensor)
    assert loaded.metadata["trained"] == "false" and loaded.metadata["format_version"] == "1"
    assert loaded.sha256 == digest


def test_same_content_gives_same_bytes(tmp_path):
    a = save_weights(tmp_path / "a" / "w.safetensors", tensors(), METADATA)
    b = save_weights(tmp_path / "b" / "w.safetensors", tensors(), dict(reversed(METADATA.items())))
    assert a == b


def test_tampered_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, tensors(), METADATA)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # flip one bit of a tensor value
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_weights(path)
    assert load_weights(path, verify=False).tensors["b"].shape == (5,)


def test_unlisted_or_unmanifested_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, tensors(), METADATA, update_manifest=False)
    with pytest.raises(WeightsError, match="manifest.json"):
        load_weights(path)
    other = tmp_path / "other.safetensors"
    save_weights(other, tensors(), METADATA)  # creates a manifest without w.safetensors
    with pytest.raises(WeightsError, match="not listed"):
        load_weights(path)
    record_in_manifest(path)
    load_weights(path)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")


def test_not_safetensors_and_missing_metadata_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file at all")
    record_in_manifest(junk)
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        load_weights(junk)
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file(tensors(), str(bare))
    record_in_manifest(bare)
    with pytest.raises(WeightsError, match="lacks metadata"):
        load_weights(bare)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_weights(path, tensors(), METADATA)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must not be used to load weights")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert load_weights(path).tensors["a.weight"].shape == (3, 4)


def tiny_model(config=None, seed=0):
    config = config or tiny_config()
    torch.manual_seed(seed)
    names = ["Subject A", "Subject B", "Subject B"]  # duplicate names get distinct keys
    zero = StylePivots(
        np.zeros((3, config.motion_latent_dim)), np.zeros((3, config.wrinkle_latent_dim)), names
    )
    model = TexTalkerModel(config, zero)
    model.set_pivots(random_pivots(config, names, model, seed=seed))
    return model.eval()


def test_model_round_trip_preserves_outputs_config_and_styles(tmp_path):
    model = tiny_model()
    model.denoiser.latent_scale.fill_(2.5)
    model.motion_vq.set_normalization_from_minmax([-0.01] * 3, [0.01] * 3)
    path = tmp_path / "model.safetensors"
    model.save(path, trained=False, dataset="unit test")
    loaded = TexTalkerModel.from_weights(load_weights(path))
    assert loaded.config == model.config and loaded.trained is False
    assert loaded.pivots.keys == ["subject_a", "subject_b", "subject_b_2"]
    np.testing.assert_array_equal(loaded.pivots.speaking, model.pivots.speaking)
    assert loaded.denoiser.latent_scale[0] == 2.5
    z = torch.randn(2, model.config.motion_latent_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded.motion_vq.decode(z), model.motion_vq.decode(z))


def test_model_metadata_is_checked(tmp_path):
    model = tiny_model()
    path = tmp_path / "model.safetensors"
    metadata = model.metadata(trained=True, dataset="x")
    metadata["audio_encoder"] = "hubert"  # disagrees with the config
    save_weights(path, model.weight_tensors(), metadata)
    with pytest.raises(WeightsError, match="audio encoder"):
        TexTalkerModel.from_weights(load_weights(path))
    tensors = model.weight_tensors()
    tensors.pop("denoiser.output_proj.weight")
    save_weights(path, tensors, model.metadata(trained=True, dataset="x"))
    with pytest.raises(WeightsError, match="does not fit"):
        TexTalkerModel.from_weights(load_weights(path))


def test_hubert_weights_need_and_use_a_hubert_folder(tmp_path):
    from test_features import write_tiny_hubert

    hubert_dir = write_tiny_hubert(tmp_path / "hubert")
    config = tiny_config(audio_encoder="hubert", audio_feature_dim=32)
    names = ["S1"]
    pivots = StylePivots(
        np.zeros((1, config.motion_latent_dim)), np.zeros((1, config.wrinkle_latent_dim)), names
    )
    from textalker_blender.core.features import build_audio_encoder

    model = TexTalkerModel(config, pivots, build_audio_encoder(config, hubert_dir))
    path = tmp_path / "hubert_model.safetensors"
    model.save(path, trained=False, dataset="x")
    weights = load_weights(path)
    assert not any(name.startswith("audio_encoder.") for name in weights.tensors)
    assert weights.metadata["audio_encoder"] == "hubert"
    with pytest.raises(WeightsError, match="HuBERT"):
        TexTalkerModel.from_weights(weights)
    loaded = TexTalkerModel.from_weights(weights, hubert_dir=hubert_dir)
    assert loaded.audio_encoder.kind == "hubert"


def test_config_round_trip_and_presets():
    for config in (ModelConfig.bundled(), ModelConfig.paper(), tiny_config(style_mode="onehot")):
        assert ModelConfig.from_json(config.to_json()) == config
        assert ModelConfig.from_dict(config.to_dict()) == config
    paper = ModelConfig.paper()
    assert (paper.layers, paper.width, paper.heads) == (8, 1024, 4)
    assert paper.motion_vq.resolution == 512 and paper.audio_encoder == "hubert"
    assert (paper.window_frames, paper.prefix_frames) == (90, 10)
    with pytest.raises(ValueError, match="unknown ModelConfig"):
        ModelConfig.from_dict({"nonsense": 1})
    with pytest.raises(ValueError, match="style_mode"):
        ModelConfig.from_dict({"style_mode": "vibes"})


def test_make_untrained_weights_tool(tmp_path):
    from tools.make_untrained_weights import main

    assert main(["--out", str(tmp_path / "a"), "--styles", "3"]) == 0
    assert main(["--out", str(tmp_path / "b"), "--styles", "3"]) == 0
    path_a = tmp_path / "a" / "textalker_bundled.safetensors"
    path_b = tmp_path / "b" / "textalker_bundled.safetensors"
    assert path_a.stat().st_size < 30e6
    # Seeded: same bytes. Both files are made here, so this holds on any processor by construction
    # (torch's vectorised random kernels may differ between CPUs; nothing compares across them).
    assert sha256_file(path_a) == sha256_file(path_b)
    weights = load_weights(path_a)
    assert weights.metadata["trained"] == "false"
    assert json.loads(weights.metadata["style_names"]) == [
        "Untrained style 1",
        "Untrained style 2",
        "Untrained style 3",
    ]
    model = TexTalkerModel.from_weights(weights)
    assert model.config.name == "bundled" and model.trained is False
    # placeholder pivots differ per style
    assert np.abs(model.pivots.speaking[0] - model.pivots.speaking[1]).max() > 0.1


def test_ldm_loss_trains_through_pivots_and_audio_front_end():
    model = tiny_model()
    model.train()
    config = model.config
    g = torch.Generator().manual_seed(0)
    subjects = torch.tensor([0, 2])
    z_motion = torch.randn(2, 12, config.motion_latent_dim, generator=g)
    z_wrinkle = torch.randn(2, 12, config.wrinkle_latent_dim, generator=g)
    model.fit_latent_normalization(
        z_motion.reshape(-1, config.motion_latent_dim),
        z_wrinkle.reshape(-1, config.wrinkle_latent_dim),
        subjects.repeat_interleave(12),
    )
    assert model.denoiser.latent_center.abs().max() > 0
    mel = torch.randn(config.n_mels, 200, generator=g)
    features = torch.stack([model.audio_encoder.window_features(mel, s, 12) for s in (0, 30)])
    loss = ldm_loss(model, z_motion, z_wrinkle, features, subjects, generator=g)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.audio_encoder.convs[0].weight.grad.abs().sum() > 0
    assert model.denoiser.output_proj.weight.grad.abs().sum() > 0
