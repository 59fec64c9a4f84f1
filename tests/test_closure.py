"""core/closure.py and tools/training/closure_fit.py: where the lip seal belongs."""

import json
import shutil

import numpy as np
import pytest
import torch
from core_helpers import needs_dataset_tools, speech_like

from textalker_blender.core.closure import (
    CLOSURE_METADATA,
    CLOSURE_PREFIX,
    ClosureDetector,
    ClosureDetectorConfig,
)
from textalker_blender.core.config import MODEL_FPS, SAMPLE_RATE
from textalker_blender.core.errors import WeightsError
from textalker_blender.core.weights import load_weights, save_weights


def _detector(seed: int = 0) -> ClosureDetector:
    torch.manual_seed(seed)
    detector = ClosureDetector(ClosureDetectorConfig(width=16))
    with torch.no_grad():  # a non-trivial head, so the probabilities vary over time
        detector.head.weight.normal_(0, 1.0)
    return detector.eval()


def test_a_window_gives_the_whole_clips_logits_for_its_frames():
    detector = _detector()
    audio = speech_like(3.0)
    n_frames = 90
    mel = torch.from_numpy(detector.log_mel(audio))
    with torch.no_grad():
        whole = detector(mel[None], n_frames)[0]
        start, n = 30, 20
        mel_fps = SAMPLE_RATE / detector.config.hop
        radius = sum(d * (detector.config.kernel - 1) // 2 for d in detector.config.dilations) + 2
        lo = int(np.floor((start + 0.5) * mel_fps / MODEL_FPS)) - radius
        hi = int(np.ceil((start + n - 0.5) * mel_fps / MODEL_FPS)) + radius + 1
        window = detector(mel[None, :, lo:hi], n, start, lo)[0]
    torch.testing.assert_close(window, whole[start:start + n], rtol=1e-4, atol=1e-4)
    probabilities = detector.probabilities(audio, n_frames)
    assert probabilities.shape == (n_frames,) and probabilities.dtype == np.float32
    assert np.all((probabilities >= 0) & (probabilities <= 1)) and probabilities.std() > 0


def test_config_round_trips_and_unknown_keys_are_ignored():
    config = ClosureDetectorConfig(width=24, dilations=(1, 3))
    assert ClosureDetectorConfig.from_json(config.to_json()) == config
    values = json.loads(config.to_json())
    values["later_field"] = 1
    assert ClosureDetectorConfig.from_json(json.dumps(values)) == config


def test_the_detector_travels_in_the_weights_and_drives_the_seal(tmp_path, crease_weights):
    from textalker_blender.core.lip_seal import DEFAULT_SEAL_MM
    from textalker_blender.core.pipeline import Pipeline
    from tools.training.closure_fit import write_detector

    plain = tmp_path / "plain.safetensors"
    shutil.copy(crease_weights, plain)
    detector = _detector(seed=1)
    out = tmp_path / "with_detector.safetensors"
    write_detector(plain, detector, {"steps": 0}, out, update_manifest=False)
    stored = load_weights(out, verify=False)
    assert json.loads(stored.metadata["training"])["closure_detector"]["from"] == "tools/train_closure.py"
    assert {k for k in stored.tensors if k.startswith(CLOSURE_PREFIX)} == {
        CLOSURE_PREFIX + k for k in detector.state_dict()}
    assert set(stored.tensors) - {k for k in stored.tensors if k.startswith(CLOSURE_PREFIX)} == set(
        load_weights(plain, verify=False).tensors)  # every other tensor kept

    with_detector = Pipeline.load(out, device="cpu", verify=False)
    without = Pipeline.load(plain, device="cpu", verify=False)
    assert with_detector.model.closure is not None and without.model.closure is None
    audio = speech_like(1.0)
    expected = DEFAULT_SEAL_MM * detector.probabilities(audio, 30)
    np.testing.assert_allclose(with_detector.lip_seal_distances(audio, 30, DEFAULT_SEAL_MM), expected, rtol=1e-5)
    assert without.lip_seal_distances(audio, 30, DEFAULT_SEAL_MM) == 0.0  # no detector: no seal
    assert with_detector.lip_seal_distances(audio, 30, 0.0) == 0.0
    # The model saves it back as it loaded it (a retrained export keeps what the file holds).
    resaved = tmp_path / "resaved.safetensors"
    with_detector.model.save(resaved, trained=False, dataset="test", update_manifest=False)
    assert CLOSURE_METADATA in load_weights(resaved, verify=False).metadata
    result = with_detector.generate((audio, SAMPLE_RATE), steps=1)
    assert np.isfinite(result.offsets).all()


def test_a_broken_detector_is_refused_with_the_file_named(tmp_path, crease_weights):
    from textalker_blender.core.model import TexTalkerModel

    weights = load_weights(crease_weights, verify=False)
    tensors = dict(weights.tensors)
    tensors.update(_detector().weight_tensors())
    metadata = dict(weights.metadata)
    metadata[CLOSURE_METADATA] = ClosureDetectorConfig(width=32).to_json()  # tensors are 16 wide
    broken = tmp_path / "broken.safetensors"
    save_weights(broken, tensors, metadata, update_manifest=False)
    with pytest.raises(WeightsError, match="broken.safetensors has an unusable closure detector"):
        TexTalkerModel.from_weights(load_weights(broken, verify=False))


@needs_dataset_tools
def test_training_learns_the_closures_of_the_dataset(tiny_dataset):
    from textalker_blender.core.template import load_template
    from tools.training.closure_fit import closure_examples, detector_scores, train_detector

    template = load_template()
    probe = ClosureDetector(ClosureDetectorConfig(width=16))
    examples = closure_examples(tiny_dataset, "train", probe, template, telephone=True, limit=6, log=lambda *a: None)
    assert len(examples) >= 6 and any(e.telephone for e in examples)
    assert all(len(e.closed) > 0 and 0 < e.closed.mean() < 1 for e in examples)
    untrained = detector_scores(ClosureDetector(probe.config).eval(), examples)
    detector, record = train_detector(examples, probe.config, steps=60, batch=8, learning_rate=3e-3, seed=0,
                                      log=lambda *a: None)
    trained = detector_scores(detector, examples)
    assert record["steps"] == 60 and record["examples"] == len(examples)
    assert trained["wideband"]["auc"] > max(0.8, untrained["wideband"]["auc"])
    again, _ = train_detector(examples, probe.config, steps=60, batch=8, learning_rate=3e-3, seed=0,
                              log=lambda *a: None)
    for name, tensor in detector.state_dict().items():  # same seed, same detector
        torch.testing.assert_close(again.state_dict()[name], tensor)
