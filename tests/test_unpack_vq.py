"""tools/unpack_vq.py: a bundle's VQ as a stage-1 run folder that stage 2 and the export read."""

import pytest
import torch

from textalker_blender.blender import catalog
from tools.training.artefacts import VQ_WEIGHTS, load_trained_vq
from tools.unpack_vq import main, unpack_vq

needs_bundle = pytest.mark.skipif(not catalog.weights_path().is_file(), reason="bundled weights not built")


@needs_bundle
@pytest.mark.parametrize("which", ["motion", "wrinkle"])
def test_unpacked_vq_is_the_bundles_own(tmp_path, which):
    from textalker_blender.core.pipeline import Pipeline

    run = unpack_vq(catalog.weights_path(), which, tmp_path / which)
    vq, info = load_trained_vq(run)
    assert info["kind"] == which
    bundled = getattr(Pipeline.load(device="cpu").model, f"{which}_vq").state_dict()
    unpacked = vq.state_dict()
    assert unpacked.keys() == bundled.keys()
    assert all(torch.equal(unpacked[name], bundled[name]) for name in bundled)
    again = unpack_vq(catalog.weights_path(), which, tmp_path / "again")  # same bundle, same bytes
    assert (again / "checkpoint" / VQ_WEIGHTS).read_bytes() == (run / "checkpoint" / VQ_WEIGHTS).read_bytes()


@needs_bundle
def test_unpacking_into_a_trained_run_is_refused(tmp_path, capsys):
    unpack_vq(catalog.weights_path(), "motion", tmp_path / "run")
    assert main(["--weights", str(catalog.weights_path()), "--which", "motion", "--run", str(tmp_path / "run")]) == 1
    assert "already holds a checkpoint" in capsys.readouterr().err
