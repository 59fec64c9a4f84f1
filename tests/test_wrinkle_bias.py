"""Per-style wrinkle bias maps: the model adds its wrinkle style's bias to the decoded wrinkle
channels, the weights file carries it (float16), tools/export_bundle.py --fit-wrinkle-bias fits it
as the autoencoder's mean error on each style's training frames, and the evaluator's average
style for unseen subjects gets the mean bias."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from textalker_blender.core.model import STYLE_WRINKLE_BIAS, TexTalkerModel
from textalker_blender.core.weights import WeightsError, load_weights


@pytest.fixture(scope="module")
def model():
    from tools.make_untrained_weights import build_untrained_model

    return build_untrained_model(seed=0, n_styles=3)


def _bias(model, seed=0):
    vq = model.config.wrinkle_vq
    generator = torch.Generator().manual_seed(seed)
    return 0.01 * torch.randn(len(model.pivots), vq.resolution, vq.resolution, vq.in_channels, generator=generator)


def test_decode_adds_the_chosen_styles_bias_only(model):
    z = torch.randn(2, model.config.wrinkle_latent_dim)
    model.set_wrinkle_bias(None)
    plain = model.decode_maps(None, z, wrinkle_style=1)[1]
    bias = _bias(model)
    model.set_wrinkle_bias(bias)
    try:
        with_bias = model.decode_maps(None, z, wrinkle_style=1)[1]
        assert torch.allclose(with_bias - plain, bias[1].expand_as(plain), atol=1e-5)
        assert torch.equal(model.decode_maps(None, z)[1], plain)  # no style given: nothing added
    finally:
        model.set_wrinkle_bias(None)


def test_set_wrinkle_bias_checks_shape_and_values(model):
    good = _bias(model)
    with pytest.raises(ValueError, match="needs"):
        model.set_wrinkle_bias(good[:-1])  # one style short
    with pytest.raises(ValueError, match="needs"):
        model.set_wrinkle_bias(good[..., :2])
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model.set_wrinkle_bias(bad)
    assert model.style_wrinkle_bias is None


def test_the_bias_round_trips_through_the_weights_file_and_a_wrong_one_is_refused(model, tmp_path):
    bias = _bias(model)
    model.set_wrinkle_bias(bias)
    try:
        path = tmp_path / "weights.safetensors"
        model.save(path, trained=False, dataset="unit test", update_manifest=False)
    finally:
        model.set_wrinkle_bias(None)
    loaded = TexTalkerModel.from_weights(load_weights(path, verify=False))
    assert torch.allclose(loaded.style_wrinkle_bias, bias, atol=1e-4)  # float16 in the file
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor(STYLE_WRINKLE_BIAS).dtype == torch.float16
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata()
    from safetensors.torch import save_file

    tensors[STYLE_WRINKLE_BIAS] = tensors[STYLE_WRINKLE_BIAS][:2]
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata)
    with pytest.raises(WeightsError, match="wrinkle bias"):
        TexTalkerModel.from_weights(load_weights(broken, verify=False))
    # Weights without it load as before: nothing is added.
    del tensors[STYLE_WRINKLE_BIAS]
    save_file(tensors, str(broken), metadata)
    assert TexTalkerModel.from_weights(load_weights(broken, verify=False)).style_wrinkle_bias is None


def test_fit_wrinkle_bias_lowers_the_round_trip_error_on_the_frames_it_was_fitted_on(tiny_dataset, tmp_path):
    from tests.test_restyle_creases import _weights_named_after

    from tools.export_bundle import main
    from tools.synthetic_textalk4d import SyntheticTextalk4D
    from tools.training.data import to_physical

    path = tmp_path / "weights.safetensors"
    subjects, _ = _weights_named_after(tiny_dataset, path)
    with safe_open(str(path), framework="pt") as handle:
        before = {name: handle.get_tensor(name) for name in handle.keys()}
    assert main(["--fit-wrinkle-bias", str(tiny_dataset), "--out", str(path)]) == 0
    with safe_open(str(path), framework="pt") as handle:
        after = {name: handle.get_tensor(name) for name in handle.keys()}
        record = json.loads(handle.metadata()["training"])["wrinkle_bias"]
    assert set(after) == set(before) | {STYLE_WRINKLE_BIAS}
    assert all(torch.equal(before[k], after[k]) for k in before)  # every other tensor as it was
    model = TexTalkerModel.from_weights(load_weights(path, verify=False))
    assert model.style_wrinkle_bias.shape[0] == len(subjects) and record["frames"] > 0

    # The fitted frames (same strides): adding each style's bias lowers the squared error of the
    # round trip, as the least-squares per-style correction must.
    train = SyntheticTextalk4D(tiny_dataset, "train", maps=False, wrinkle_resolution=model.config.wrinkle_vq.resolution)
    errors = {"without": 0.0, "with": 0.0}
    for style, subject in enumerate(subjects):
        indices = [i for i, e in enumerate(train.entries) if e["subject"] == subject.name][::record["utterance_stride"]]
        for index in indices:
            weights = train.weights(index)[::record["frame_stride"]]
            truth = torch.from_numpy(to_physical("wrinkle", train.geometry(subject.name).wrinkle_maps(weights).astype(np.float32)))
            with torch.inference_mode():
                z = model.wrinkle_vq.encode(truth)
                errors["without"] += float(((model.decode_maps(None, z)[1] - truth) ** 2).sum())
                errors["with"] += float(((model.decode_maps(None, z, style)[1] - truth) ** 2).sum())
    assert errors["with"] < 0.9 * errors["without"]


def test_fit_wrinkle_bias_refuses_weights_of_another_dataset(tiny_dataset, tmp_path, model):
    from tools.training.export import fit_wrinkle_bias

    path = tmp_path / "weights.safetensors"
    model.save(path, trained=False, dataset="unit test", update_manifest=False)  # styles named "Style 1", ...
    with pytest.raises(ValueError, match="not the dataset"):
        fit_wrinkle_bias(path, tiny_dataset, update_manifest=False)


def test_evaluator_average_style_takes_the_mean_bias_and_restores_the_styles(model):
    from tools.evaluate import StyleChooser

    class FakePipe:
        def __init__(self, model):
            self.model, self.device = model, "cpu"
            self.config = model.config
            self.styles = [type("Info", (), {"name": name}) for name in model.pivots.names]

    bias = _bias(model)
    model.set_wrinkle_bias(bias)
    original = model.pivots
    try:
        chooser = StyleChooser(FakePipe(model), ["S00"])
        average = chooser.style_for("unseen subject")
        assert average == len(original)
        assert torch.allclose(model.style_wrinkle_bias[average], bias.mean(dim=0), atol=1e-6)
        chooser.restore()
        assert model.pivots is original and torch.equal(model.style_wrinkle_bias, bias)
    finally:
        model.set_pivots(original)
        model.set_wrinkle_bias(None)
