"""tools/preview_dataset.py on a tiny synthetic TexTalk4D."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

from tools.synthetic_textalk4d.builder import BuildConfig, build  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                reason="needs the Debian packages flite and sox")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preview") / "ds"
    build(BuildConfig(out=root, subjects=1, minutes=0.1, seed=2), log=lambda *a: None)
    return root


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "preview_dataset.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_simple_preview_writes_contact_sheet_and_clip(tiny, tmp_path):
    result = _run(tiny, "--utterance", "S00_0000", "--out", tmp_path, "--renderer", "simple",
                  "--frames", "4", "--clip-frames", "3", "--wrinkle-resolution", "256",
                  "--resolution", "160", "--clip-resolution", "128")
    assert result.returncode == 0, result.stderr
    sheet = np.asarray(Image.open(tmp_path / "S00_0000_contact.png").convert("RGB"))
    assert sheet.shape[1] == 4 * 300 and sheet.shape[0] > 5 * 300
    assert sheet.std() > 20                                  # not a blank image
    frames = sorted((tmp_path / "S00_0000_frames").glob("*.png"))
    assert len(frames) == 3
    assert np.asarray(Image.open(frames[0])).shape == (128, 128, 3)
    if shutil.which("ffmpeg"):
        assert (tmp_path / "S00_0000.mp4").stat().st_size > 1000


@pytest.mark.blender
@pytest.mark.slow
def test_cycles_preview_renders_a_face(tiny, tmp_path):
    pytest.importorskip("bpy")
    result = _run(tiny, "--utterance", "S00_0000", "--out", tmp_path, "--frames", "2", "--clip-frames", "0",
                  "--resolution", "96", "--samples", "2", "--wrinkle-resolution", "256")
    assert result.returncode == 0, result.stderr
    sheet = np.asarray(Image.open(tmp_path / "S00_0000_contact.png").convert("RGB")).astype(float)
    face_tile = sheet[28:28 + 300, :300]
    # a lit head in front of a dark grey background: skin-coloured (red > blue) pixels in the middle
    centre = face_tile[100:200, 100:200]
    assert centre.mean() > 40
    assert (centre[..., 0] > centre[..., 2] + 5).mean() > 0.5
