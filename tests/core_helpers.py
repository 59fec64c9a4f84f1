"""Small synthetic inputs for the model-core tests (no dependency on the built template asset)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from textalker_blender.core.config import ModelConfig, VQConfig
from textalker_blender.core.template import TemplateHead
from textalker_blender.core.uv import MapLayout

TINY_TRAINING_CONFIG = Path(__file__).resolve().parents[1] / "tools" / "configs" / "tiny.json"
# Stage tests that train on the tiny dataset (built with flite and sox by the `tiny_dataset` fixture).
needs_dataset_tools = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                         reason="needs the Debian packages flite and sox (dataset build)")


def tiny_training_config(model_overrides: dict | None = None, ldm: dict | None = None):
    """tools/configs/tiny.json as a TrainingConfig, with model overrides and `ldm` settings added."""
    from tools.training.common import training_config_from_dict

    data = json.loads(TINY_TRAINING_CONFIG.read_text())
    data["model"]["overrides"].update(model_overrides or {})
    data["ldm"].update(ldm or {})
    return training_config_from_dict(data)


# The test machine's 2 cores are shared: one thread per test process avoids oversubscription,
# which made these small models ~10x slower than single-threaded.
torch.set_num_threads(1)


def grid_template(cells: int = 20, uv_region=(0.1, 0.1, 0.9, 0.9)) -> TemplateHead:
    """A flat (cells+1)^2-vertex quad grid whose UVs tile `uv_region`; the inner half is 'face'.

    Motion and wrinkle maps both cover `uv_region` (one-rectangle map layouts)."""
    n = cells + 1
    u0, v0, u1, v1 = uv_region
    us, vs = np.meshgrid(np.linspace(u0, u1, n), np.linspace(v0, v1, n))
    vertex_uvs = np.stack([us.ravel(), vs.ravel()], axis=1).astype(np.float32)
    vertices = np.stack([us.ravel(), np.zeros(n * n), vs.ravel()], axis=1).astype(np.float32) * 0.2
    ids = np.arange(n * n).reshape(n, n)
    quads = np.stack([ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]], axis=-1).reshape(
        -1, 4
    )
    loops = quads.reshape(-1).astype(np.int32)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
    centre = (vertex_uvs - np.array([(u0 + u1) / 2, (v0 + v1) / 2])) / np.array([u1 - u0, v1 - v0])
    face = np.abs(centre).max(axis=1) < 0.25
    return TemplateHead(
        vertices=vertices,
        loop_vertex_indices=loops,
        polygon_sizes=np.full(len(quads), 4, np.int32),
        loop_uvs=vertex_uvs[loops],
        triangles=triangles,
        triangle_uvs=vertex_uvs[triangles],
        vertex_uvs=vertex_uvs,
        source_indices=np.arange(n * n, dtype=np.int32),
        unit_names=[],
        unit_offsets=np.zeros((0, n * n, 3), np.float32),
        lip_mask=face.copy(),
        upper_face_mask=face.copy(),
        face_mask=face,
        motion_layout=MapLayout.rectangle(uv_region),
        wrinkle_layout=MapLayout.rectangle(uv_region),
        albedo_path=Path("albedo.png"),
        parts={},
    )


def tiny_config(**overrides) -> ModelConfig:
    """A model small enough for sub-second tests: 16x16 maps, 4x4x4 latents, width 32."""

    def tiny_vq(codes: int) -> VQConfig:
        return VQConfig(
            resolution=16,
            base_channels=8,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            latent_channels=4,
            codebook_size=codes,
            discriminator_channels=8,
            discriminator_layers=2,
            adversarial_start_step=0,
        )

    values = dict(
        name="tiny",
        motion_vq=tiny_vq(32),
        wrinkle_vq=tiny_vq(16),
        audio_feature_dim=16,
        n_mels=16,
        frontend_dilations=(1, 2),
        width=32,
        layers=2,
        heads=2,
        dropout=0.0,
        window_frames=12,
        prefix_frames=3,
        diffusion_steps=50,
        sampling_steps=3,
    )
    values.update(overrides)
    config = ModelConfig(**values)
    config.validate()
    return config


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A syllable-rate amplitude-modulated harmonic tone with noise bursts (not silence)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None)
    noise = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0.8)
    return (0.3 * voiced * envelope + 0.05 * noise).astype(np.float32)


def write_blink_input_weights(folder: Path) -> Path:
    """Untrained bundled-size weights whose denoiser takes a blink track, styles 0-3 measured at
    40, 10, 20 and 30 blinks per minute. The blink input layer starts at zero (the track would
    change nothing), so it is filled with seeded random numbers here."""
    from textalker_blender.core.blinks import BlinkStatistics
    from tools.make_untrained_weights import WEIGHTS_NAME, build_untrained_model, template_layouts

    config = ModelConfig.bundled()
    config.blink_condition = True
    config.uv_layouts = template_layouts(None)
    model = build_untrained_model(seed=0, n_styles=4, config=config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        model.denoiser.blink_proj.weight.normal_(0.0, 1.0, generator=generator)
    model.style_blinks = [BlinkStatistics(rate, 0.2) for rate in (40.0, 10.0, 20.0, 30.0)]
    path = Path(folder) / WEIGHTS_NAME
    model.save(path, trained=False, dataset="none (test weights with blink input)")
    return path
