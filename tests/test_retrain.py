"""`bash tools/retrain.sh` — the one-command retrain — end to end on a tiny dataset and config."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from tools.synthetic_textalk4d.builder import BuildConfig, build  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                reason="needs the Debian packages flite and sox (dataset build)")


def pipeline_metadata(path: Path) -> dict:
    from textalker_blender.core.weights import load_weights

    return load_weights(path, verify=False).metadata


def run_retrain(runs: Path, data: Path, export_to: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONFIG": str(REPO / "tools/configs/tiny.json"), "DATA": str(data),
           "EXPORT_TO": str(export_to), "MAX_MINUTES": "20", "OMP_NUM_THREADS": "1",
           "CLOSURE_STEPS": "20"}
    return subprocess.run(["bash", str(REPO / "tools/retrain.sh"), str(runs)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_retrain_builds_trains_and_exports_a_loadable_bundle_then_resumes_as_a_no_op(tmp_path):
    data = tmp_path / "ds"
    build(BuildConfig(out=data, subjects=3, minutes=1.0, seed=11), log=lambda *a: None)
    export_to = tmp_path / "bundle" / "textalker_bundled.safetensors"
    export_to.parent.mkdir()
    first = run_retrain(tmp_path / "runs", data, export_to)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "stage 2" in first.stdout and export_to.is_file()

    from textalker_blender.core.pipeline import Pipeline
    from textalker_blender.core.weights import sha256_file

    manifest = json.loads((export_to.parent / "manifest.json").read_text())
    assert sha256_file(export_to) in json.dumps(manifest)
    pipeline = Pipeline.load(export_to, device="cpu")
    assert pipeline.styles  # pivots of the training subjects
    assert pipeline.model.closure is not None  # the lip seal's closure detector is in the export
    assert json.loads(pipeline_metadata(export_to)["training"])["closure_detector"]["steps"] == 20

    # A second run finds every stage finished and only re-exports.
    second = run_retrain(tmp_path / "runs", data, export_to)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "0 steps" in second.stdout
