"""core.features: bundled log-mel encoder and HuBERT from a tiny local checkpoint."""

import numpy as np
import pytest
import torch
from core_helpers import speech_like, tiny_config

from textalker_blender.core.errors import WeightsError
from textalker_blender.core.features import (
    BundledAudioEncoder,
    HubertAudioEncoder,
    build_audio_encoder,
    interpolate_frames,
)


def test_interpolate_frames_is_linear_in_time():
    ramp = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)
    out = interpolate_frames(ramp, 20)
    assert out.shape == (20, 3)
    assert torch.all(out[1:, 0] >= out[:-1, 0])  # monotone
    assert interpolate_frames(ramp, 10) is ramp
    assert interpolate_frames(ramp[:1], 4).shape == (4, 3)


@pytest.mark.parametrize("n_frames", [1, 30, 47])
def test_bundled_encoder_frame_count(n_frames):
    encoder = BundledAudioEncoder(tiny_config()).eval()
    features = encoder.encode(speech_like(n_frames / 30), n_frames)
    assert features.shape == (n_frames, 16) and torch.isfinite(features).all()


def test_bundled_encoder_depends_on_audio_and_is_deterministic_and_trainable():
    torch.manual_seed(0)
    encoder = BundledAudioEncoder(tiny_config()).eval()
    a = speech_like(1.0, seed=0)
    b = speech_like(1.0, seed=1) * 0.3 + np.roll(a, 4000)
    fa, fa2, fb = encoder.encode(a, 30), encoder.encode(a, 30), encoder.encode(b, 30)
    torch.testing.assert_close(fa, fa2)
    assert (fa - fb).abs().max() > 1e-3
    mel = torch.from_numpy(encoder.log_mel(a))[None]
    assert mel.shape[1] == 16 and abs(mel.shape[2] - 101) <= 1  # 100 mel frames per second
    encoder.train()
    encoder(mel, 30).pow(2).mean().backward()
    assert encoder.convs[0].weight.grad is not None


def test_bundled_encoder_local_receptive_field():
    """A click at 0.5 s changes features near 0.5 s but not 0.2 s away beyond the field."""
    config = tiny_config(frontend_dilations=(1,))  # receptive field 5 mel frames = 50 ms
    encoder = BundledAudioEncoder(config).eval()
    audio = speech_like(1.0)
    clicked = audio.copy()
    clicked[8000:8040] += 0.8
    diff = (encoder.encode(audio, 30) - encoder.encode(clicked, 30)).abs().sum(dim=1)
    assert diff[15] > 1e-3
    assert diff[:10].max() < 1e-5 and diff[21:].max() < 1e-5


def write_tiny_hubert(folder):
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(0)
    HubertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_hubert_dir(tmp_path_factory):
    return write_tiny_hubert(tmp_path_factory.mktemp("hubert"))


def test_hubert_tiny_checkpoint_loads_and_gives_model_fps_frames(tiny_hubert_dir):
    assert (tiny_hubert_dir / "model.safetensors").exists()  # saved as safetensors, not pickle
    encoder = HubertAudioEncoder(tiny_hubert_dir)
    assert encoder.kind == "hubert" and encoder.feature_dim == 32
    audio = speech_like(2.0)
    states = encoder.hidden_states(audio)
    assert abs(states.shape[0] - 2.0 * 50) <= 1  # HuBERT runs at 50 Hz
    features = encoder.encode(audio, 60)
    assert features.shape == (60, 32) and torch.isfinite(features).all()


def test_hubert_chunking_keeps_frame_count_and_values(tiny_hubert_dir):
    whole = HubertAudioEncoder(tiny_hubert_dir, chunk_seconds=100.0)
    chunked = HubertAudioEncoder(tiny_hubert_dir, chunk_seconds=1.0, context_seconds=0.5)
    audio = speech_like(3.3)
    a, b = whole.hidden_states(audio), chunked.hidden_states(audio)
    assert abs(a.shape[0] - b.shape[0]) <= 1
    n = min(a.shape[0], b.shape[0])
    # away from chunk borders the chunked run sees the same local audio
    assert torch.nn.functional.cosine_similarity(a[:n], b[:n], dim=1).mean() > 0.8


def test_hubert_errors(tmp_path, tiny_hubert_dir):
    with pytest.raises(WeightsError, match="config.json"):
        HubertAudioEncoder(tmp_path)
    config = tiny_config(audio_encoder="hubert", audio_feature_dim=32)
    with pytest.raises(WeightsError, match="hubert_dir"):
        build_audio_encoder(config)
    assert build_audio_encoder(config, tiny_hubert_dir).feature_dim == 32
    with pytest.raises(WeightsError, match="wide"):
        build_audio_encoder(
            tiny_config(audio_encoder="hubert", audio_feature_dim=768), tiny_hubert_dir
        )


def test_window_features_equal_whole_clip_features():
    torch.manual_seed(0)
    encoder = BundledAudioEncoder(tiny_config(frontend_dilations=(1, 2, 4))).eval()
    audio = speech_like(3.0)
    whole = encoder.encode(audio, 90)
    mel = torch.from_numpy(encoder.log_mel(audio))
    with torch.no_grad():
        for start, n in ((0, 12), (37, 12), (78, 12), (40, 50)):
            window = encoder.window_features(mel, start, n)
            torch.testing.assert_close(window, whole[start : start + n], atol=1e-5, rtol=1e-5)
