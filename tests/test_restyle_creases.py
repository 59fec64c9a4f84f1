"""tools/export_bundle.py --restyle-creases: a weights file takes the crease generator's current
curves for its wrinkle styles, every tensor unchanged, and refuses a dataset it was not trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open


def _weights_named_after(dataset, path):
    """Untrained weights whose styles carry the tiny dataset's training subjects' names (as
    training names them) and stale crease curves (a single shallow line each)."""
    from textalker_blender.core.config import ModelConfig
    from textalker_blender.core.creases import Crease
    from textalker_blender.core.style import StylePivots
    from textalker_blender.core.template import load_template
    from tools.make_untrained_weights import build_untrained_model, template_layouts
    from tools.synthetic_textalk4d import SyntheticTextalk4D
    from tools.training.ldm_stage import describe_subject

    train = SyntheticTextalk4D(dataset, "train")
    subjects = sorted({e["subject"] for e in train.entries}, key=lambda s: train.subjects[s].index)
    config = ModelConfig.bundled()
    config.uv_layouts = template_layouts(None)
    model = build_untrained_model(seed=0, n_styles=len(subjects), config=config)
    model.set_pivots(StylePivots(model.pivots.speaking, model.pivots.wrinkle,
                                 [describe_subject(train.subjects[s]) for s in subjects]))
    stale = Crease("forehead", np.array([[0.0, 0.1], [0.02, 0.1]]), 0.01, 0.5)
    model.style_creases = [[stale] for _ in subjects]
    model.save(path, trained=False, dataset="tiny")
    return [train.subjects[s] for s in subjects], load_template()


def test_restyle_rewrites_the_crease_curves_and_keeps_every_tensor(tiny_dataset, tmp_path):
    from tools.export_bundle import main
    from tools.synthetic_textalk4d.creases import make_creases

    path = tmp_path / "weights.safetensors"
    subjects, template = _weights_named_after(tiny_dataset, path)
    with safe_open(str(path), framework="pt") as handle:
        before = {name: handle.get_tensor(name) for name in handle.keys()}
    assert main(["--restyle-creases", str(tiny_dataset), "--out", str(path)]) == 0
    with safe_open(str(path), framework="pt") as handle:
        after = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    expected = [[c.to_dict() for c in make_creases(template, s.wrinkle)] for s in subjects]
    assert json.loads(metadata["style_creases"]) == json.loads(json.dumps(expected))
    assert "restyle_creases" in json.loads(metadata["training"])["style_creases_from"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"][path.name]["bytes"] == path.stat().st_size  # the new file is recorded


def test_restyle_refuses_weights_whose_styles_are_not_the_datasets_subjects(tiny_dataset, tmp_path, crease_weights):
    from tools.training.export import restyle_creases

    copy = tmp_path / "other.safetensors"
    copy.write_bytes(crease_weights.read_bytes())
    with pytest.raises(ValueError, match="not the dataset these weights were trained on"):
        restyle_creases(copy, tiny_dataset, update_manifest=False)
