"""The main-job demo end to end (short audio, tiny render): .blend + EXRs + a rendered PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from blender_support import SOUND_SUPPORT, bpy, fresh_scene
from textalker_blender.blender import catalog, compat, writers

pytestmark = pytest.mark.blender

REPO_ROOT = Path(__file__).resolve().parents[1]

needs_assets = pytest.mark.skipif(
    not (catalog.weights_path().is_file() and (catalog.ASSETS_DIR / "template_head.npz").is_file()),
    reason="bundled weights or template head not built",
)


@needs_assets
def test_demo_writes_blend_exr_sequence_and_render(tmp_path):
    from tools import demo

    samples, rate = soundfile.read(str(catalog.SAMPLE_SPEECH_PATH), dtype="float32")
    audio = tmp_path / "speech.wav"
    soundfile.write(str(audio), samples[: 2 * rate], rate)  # 2 s: keeps the test quick
    out = tmp_path / "demo"

    summary = demo.main([
        "--out", str(out), "--audio", str(audio), "--frames-to-render", "1",
        "--fps", "25", "--resolution", "96", "--samples", "2", "--steps", "2",
    ])

    assert summary["frames"] == summary["shape_keys"] == summary["exr_files"] == 50
    assert summary["exr_image_path"].startswith("//textalker/")
    assert json.loads((out / "summary.json").read_text())["frames"] == 50
    (render,) = summary["renders"]
    assert Path(render).name == "render_0026.png"  # the middle of the speech

    # The saved file reopens with the animation and finds its wrinkle maps by relative path.
    fresh_scene()
    bpy.ops.wm.open_mainfile(filepath=str(out / "textalker_demo.blend"))
    head = bpy.data.objects[summary["object"]]
    assert len(writers.generated_key_names(head)) == 50
    image = next(i for i in bpy.data.images if i.get(writers.TAG))
    assert Path(bpy.path.abspath(image.filepath)).is_file()
    if SOUND_SUPPORT:  # else the demo used the panel's file field (bpy 4.2 module: no sound)
        assert summary["audio_source"] == "strip"
        assert compat.all_strips(bpy.context.scene.sequence_editor)[0].type == "SOUND"
    else:
        assert summary["audio_source"] == "file"
        assert bpy.context.scene.textalker.audio_file == str(audio)

    picture = bpy.data.images.load(render)
    pixels = np.array(picture.pixels[:]).reshape(96, 96, 4)[..., :3]
    centre = pixels[24:72, 24:72].mean()
    corners = [pixels[rows, columns].mean() for rows in (slice(0, 8), slice(-8, None))
               for columns in (slice(0, 8), slice(-8, None))]
    assert centre > min(corners) + 0.2  # a lit face in front of a dark background
