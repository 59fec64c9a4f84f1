"""core.pipeline.Pipeline end to end on the untrained bundled weights (short synthetic audio)."""

import threading

import numpy as np
import pytest
import torch
from core_helpers import grid_template, speech_like

from textalker_blender.core.errors import Cancelled, DeviceError, TexTalkerError, WeightsError
from textalker_blender.core.pipeline import DEFAULT_WEIGHTS, Pipeline, resolve_device
from textalker_blender.core.style import StyleInfo

AUDIO = (speech_like(1.5), 16000)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from textalker_blender.core.template import load_template
    from tools.make_untrained_weights import main

    out = tmp_path_factory.mktemp("weights")
    try:
        template = load_template()
    except FileNotFoundError:  # template asset not built: a synthetic grid with the same API
        template = grid_template()  # (the tool then records no UV region)
    assert main(["--out", str(out)]) == 0
    return Pipeline.load(out / "textalker_bundled.safetensors", "cpu", template=template)


@pytest.fixture(scope="module")
def result(pipeline):
    return pipeline.generate(AUDIO, speaking_style=0, wrinkle_style=0, fps=30, seed=0)


def test_shapes_dtypes_and_ranges(pipeline, result):
    n_vertices = len(pipeline.template.vertex_uvs)
    assert result.n_frames == 45 and result.fps == 30.0
    assert result.duration_s == pytest.approx(1.5)
    assert result.offsets.shape == (45, n_vertices, 3) and result.offsets.dtype == np.float32
    assert result.wrinkle_maps.shape == (45, 128, 128, 3)
    assert result.wrinkle_maps.dtype in (np.float16, np.float32)
    assert np.isfinite(result.offsets).all() and np.isfinite(result.wrinkle_maps).all()
    # untrained weights are scaled to give millimetre motion, not metres
    assert 1e-5 < np.abs(result.offsets).max() < 0.05
    assert result.wrinkle_maps.min() > 0


def test_ratio_is_exactly_one_outside_the_face(pipeline, result):
    outside = ~pipeline.wrinkle_face_mask
    assert outside.any() and pipeline.wrinkle_face_mask.any()
    assert np.all(result.wrinkle_maps[:, outside] == 1.0)
    assert np.any(result.wrinkle_maps[:, pipeline.wrinkle_face_mask] != 1.0)


def test_deterministic_for_a_seed(pipeline, result):
    again = pipeline.generate(AUDIO, fps=30, seed=0)
    np.testing.assert_array_equal(again.offsets, result.offsets)
    np.testing.assert_array_equal(again.wrinkle_maps, result.wrinkle_maps)
    other = pipeline.generate(AUDIO, fps=30, seed=1)
    assert np.abs(other.offsets - result.offsets).max() > 1e-6


@pytest.mark.parametrize("fps,frames", [(24.0, 36), (25.0, 38), (29.97, 45), (60.0, 90)])
def test_output_fps(pipeline, result, fps, frames):
    out = pipeline.generate(AUDIO, fps=fps, seed=0, steps=1 if fps != 60.0 else None)
    assert out.n_frames == frames == out.offsets.shape[0] == out.wrinkle_maps.shape[0]
    if fps == 60.0:  # same seed and steps: odd frames sit a quarter frame after a 30 fps frame
        expected = 0.75 * result.offsets[:-1] + 0.25 * result.offsets[1:]
        np.testing.assert_allclose(out.offsets[1:-1:2], expected, atol=1e-7)


def test_speaking_pivot_moves_motion_only_and_wrinkle_pivot_texture_only(pipeline, result):
    speaking = pipeline.generate(AUDIO, speaking_style=1, wrinkle_style=0, fps=30, seed=0)
    assert np.abs(speaking.offsets - result.offsets).max() > 1e-6
    np.testing.assert_array_equal(speaking.wrinkle_maps, result.wrinkle_maps)
    wrinkle = pipeline.generate(AUDIO, speaking_style=0, wrinkle_style=1, fps=30, seed=0)
    np.testing.assert_array_equal(wrinkle.offsets, result.offsets)
    assert np.abs(wrinkle.wrinkle_maps.astype(np.float32) - result.wrinkle_maps).max() > 1e-3


def test_styles_by_id_and_key(pipeline, result):
    styles = pipeline.styles
    assert all(isinstance(s, StyleInfo) for s in styles) and len(styles) == 4
    assert styles[1].name == "Untrained style 2" and styles[1].id == 1
    by_key = pipeline.generate(
        AUDIO, speaking_style=styles[0].key, wrinkle_style=styles[0].key, fps=30, seed=0
    )
    np.testing.assert_array_equal(by_key.offsets, result.offsets)
    with pytest.raises(TexTalkerError, match="unknown style"):
        pipeline.generate(AUDIO, speaking_style="nobody")


def test_progress_is_monotone_and_completes(pipeline):
    calls = []
    pipeline.generate(AUDIO, seed=0, steps=2, progress=lambda f, s: calls.append((f, s)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {"audio", "features", "diffusion", "decode", "resample"} <= {s for _, s in calls}


def test_cancel_before_and_during(pipeline):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        pipeline.generate(AUDIO, cancel=cancel)
    cancel.clear()

    def cancel_in_diffusion(fraction, stage):
        if stage == "diffusion":
            cancel.set()

    with pytest.raises(Cancelled):
        pipeline.generate(AUDIO, progress=cancel_in_diffusion, cancel=cancel)
    # the pipeline still works after a cancelled run
    assert pipeline.generate(AUDIO, steps=1).n_frames == 45


def test_other_mesh_uvs_and_silence(pipeline):
    uvs = np.asarray(pipeline.template.vertex_uvs)[::7]
    out = pipeline.generate(AUDIO, seed=0, steps=1, vertex_uvs=uvs)
    assert out.offsets.shape == (45, len(uvs), 3) and np.isfinite(out.offsets).all()
    silent = pipeline.generate((np.zeros(8000, np.float32), 16000), steps=1)
    assert silent.n_frames == 15 and np.isfinite(silent.offsets).all()
    with pytest.raises(ValueError):
        pipeline.generate(AUDIO, fps=0)
    with pytest.raises(ValueError):
        pipeline.generate(AUDIO, steps=0)


def test_devices(pipeline):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            resolve_device("cuda")
        with pytest.raises(DeviceError, match="CUDA"):
            Pipeline.load(pipeline.weights_path, device="cuda", template=pipeline.template)
    assert Pipeline.load(pipeline.weights_path, "cpu", template=pipeline.template) is pipeline


def test_missing_weights_and_wrong_map_layout(tmp_path, pipeline):
    with pytest.raises(WeightsError, match="not found"):
        Pipeline.load(tmp_path / "none.safetensors", "cpu", template=pipeline.template)
    if pipeline.config.uv_layouts is not None:
        with pytest.raises(WeightsError, match="map layout"):
            Pipeline.load(
                pipeline.weights_path, "cpu", template=grid_template(uv_region=(0.2, 0.2, 0.7, 0.7))
            )


def test_layout_check_accepts_the_template_and_refuses_old_region_weights(pipeline):
    from textalker_blender.core.config import ModelConfig
    from textalker_blender.core.pipeline import check_layouts, layouts_of

    check_layouts(layouts_of(pipeline.template), pipeline.template)
    check_layouts(None, pipeline.template)
    old = ModelConfig.from_dict({**ModelConfig.bundled().to_dict(), "uv_layouts": None,
                                 "uv_region": [0.0068, 0.0078, 0.998, 0.9785]})
    with pytest.raises(WeightsError, match="single-rectangle"):
        check_layouts(old.uv_layouts, pipeline.template)


def test_vertices_off_the_moving_head_triangles_get_exactly_zero_offset(pipeline):
    """A mesh whose UVs sit inside the motion islands' rectangles but not on a moving template
    triangle (a body next to the head islands, the static scalp) must not move at all."""
    template = pipeline.template
    moving = template.moving_triangles
    static_corner_uvs = template.triangle_uvs[~moving].reshape(-1, 2)
    static_only = ~template.motion_vertices[template.triangles[~moving].reshape(-1)]
    # Centroids of triangles not touching a moving one: on the head, some inside an island's
    # rectangle, never moving.
    apart = ~template.motion_vertices[template.triangles].any(axis=1)
    static_centroids = template.triangle_uvs[apart].mean(axis=1)
    outside_islands = np.array([[0.02, 0.02], [0.5, 0.5], [-1.0, 3.0]], np.float32)
    face_uvs = template.vertex_uvs[template.face_mask][::5]
    uvs = np.concatenate([face_uvs, static_corner_uvs[static_only][::3], static_centroids[::3], outside_islands])
    n_face = len(face_uvs)
    _, inside_island = template.motion_layout.to_map(uvs[n_face:])
    assert inside_island.any()  # some of the still points do fall in a motion island's rectangle
    out = pipeline.generate(AUDIO, seed=0, steps=1, vertex_uvs=uvs)
    assert np.all(out.offsets[:, n_face:] == 0.0)
    assert np.abs(out.offsets[:, :n_face]).max() > 1e-5
    # The template itself: vertices of no moving triangle stay exactly still too.
    head = pipeline.generate(AUDIO, seed=0, steps=1)
    still = ~template.motion_vertices
    if still.any():
        assert np.all(head.offsets[:, still] == 0.0)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="bundled weights not generated yet")
def test_shipped_weights_pass_their_sha256_check():
    from textalker_blender.core.weights import load_weights

    weights = load_weights(DEFAULT_WEIGHTS)
    assert weights.metadata["audio_encoder"] == "bundled"


def test_hubert_weights_run_end_to_end(tmp_path):
    from core_helpers import tiny_config
    from test_features import write_tiny_hubert

    from textalker_blender.core.features import build_audio_encoder
    from textalker_blender.core.model import TexTalkerModel, random_pivots
    from textalker_blender.core.style import StylePivots

    hubert_dir = write_tiny_hubert(tmp_path / "hubert")
    config = tiny_config(audio_encoder="hubert", audio_feature_dim=32)
    names = ["Speaker one", "Speaker two"]
    zero = StylePivots(
        np.zeros((2, config.motion_latent_dim)), np.zeros((2, config.wrinkle_latent_dim)), names
    )
    model = TexTalkerModel(config, zero, build_audio_encoder(config, hubert_dir))
    model.set_pivots(random_pivots(config, names, model))
    path = tmp_path / "hubert_model.safetensors"
    model.save(path, trained=False, dataset="unit test")
    template = grid_template()
    with pytest.raises(WeightsError, match="HuBERT"):
        Pipeline.load(path, "cpu", template=template)
    pipe = Pipeline.load(path, "cpu", hubert_dir=hubert_dir, template=template)
    out = pipe.generate((speech_like(1.0), 16000), speaking_style="speaker_two", fps=25)
    assert out.offsets.shape == (25, len(template.vertex_uvs), 3)
    assert out.wrinkle_maps.shape == (25, 16, 16, 3)
    assert [s.key for s in pipe.styles] == ["speaker_one", "speaker_two"]
