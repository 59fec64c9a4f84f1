# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared test set-up.

bpy-module mode reads BLENDER_USER_RESOURCES when bpy is first imported, so it is set here, at
conftest import time, before any test module can import bpy: Blender then keeps its user config,
extensions and add-on state in a temporary folder instead of the home directory. Every pytest
process (each xdist worker too) gets its own folder, removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_EXIT_STATUS = pytest.StashKey[int]()

if "bpy" in sys.modules:  # pragma: no cover - only when a plugin imported bpy before us
    warnings.warn("bpy was imported before tests/conftest.py: BLENDER_USER_RESOURCES may be ignored")

BLENDER_USER_RESOURCES = Path(tempfile.mkdtemp(prefix="textalker-blender-user-"))
os.environ["BLENDER_USER_RESOURCES"] = str(BLENDER_USER_RESOURCES)
atexit.register(shutil.rmtree, BLENDER_USER_RESOURCES, ignore_errors=True)

# Scripts the tests start (tools/*.py, tools/retrain.sh) import this checkout's `tools` and
# `textalker_blender`, not whichever checkout the venv's .pth names (a venv shared by two checkouts).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def blender_user_resources() -> Path:
    """The temporary folder bpy uses as its user resources in this test process."""
    return BLENDER_USER_RESOURCES


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory) -> Path:
    """Half a second of the sample speech as a 16 kHz WAV."""
    from robustness_support import write_audio

    return write_audio(tmp_path_factory.mktemp("audio") / "speech.wav", seconds=0.5, rate=16000)


@pytest.fixture
def saved_scene(tmp_path):
    """A registered add-on scene with the template head's catalog, saved as tmp_path/scene.blend
    (so output goes beside it). Imports bpy: only Blender tests ask for it."""
    from blender_support import bpy, registered_scene

    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    return scene


@pytest.fixture(scope="module", autouse=True)
def unregister_addon_after_module():
    """Every test module leaves the add-on unregistered after its last test, so the next module
    starts from Blender's own state. Modules that never imported bpy pay nothing."""
    yield
    if "bpy" in sys.modules:
        from blender_support import unregister_addon

        unregister_addon()


@pytest.fixture(scope="module")
def one_second_speech(tmp_path_factory) -> Path:
    """One second of the bundled sample voice as a WAV."""
    from blender_support import write_one_second_of_sample_speech

    return write_one_second_of_sample_speech(tmp_path_factory.mktemp("audio"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    # torch is imported only when a gpu test was collected: most runs do not pay for it here.
    if gpu_items and not _cuda_available():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip_gpu)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Ends a bpy 4.2 or 4.5 test process here, with pytest's own exit status.

    After a pytest session, the bpy 4.2 module segfaults and the 4.5 module deadlocks in their
    C++ exit code, after Python has finalised (gdb: 4.2 in a SpaceType destructor calling back
    into Python, even in a session that never registered the add-on; 4.5 in a static destructor
    waiting for Blender's delayed-close thread). The same steps in a plain script exit normally:
    this is bpy's teardown under pytest, not the add-on. The add-on's own clean exit is tested in
    a process of its own (tests/test_compat_smoke.py). bpy 5.0 and later exit normally, so
    nothing changes there. By now pytest has printed its summary and written its reports."""
    bpy = sys.modules.get("bpy")
    if bpy is None or tuple(bpy.app.version) >= (5, 0, 0):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    shutil.rmtree(BLENDER_USER_RESOURCES, ignore_errors=True)
    os._exit(config.stash.get(_EXIT_STATUS, 1))


@pytest.fixture(scope="session")
def crease_weights(tmp_path_factory):
    """Untrained weights with fold maps and two wrinkle styles' crease curves (as training
    stores them: `model.style_creases`), saved beside their manifest."""
    import numpy as np

    from textalker_blender.core.config import ModelConfig
    from textalker_blender.core.template import load_template
    from tools.make_untrained_weights import build_untrained_model, template_layouts
    from tools.synthetic_textalk4d.creases import CreaseStyle, make_creases

    template = load_template()
    config = ModelConfig.bundled()
    config.uv_layouts = template_layouts(None)
    model = build_untrained_model(seed=0, n_styles=2, config=config)
    rng = np.random.default_rng(3)
    model.style_creases = [make_creases(template, CreaseStyle.random(rng)) for _ in range(2)]
    path = tmp_path_factory.mktemp("crease_weights") / "textalker_bundled.safetensors"
    model.save(path, trained=False, dataset="none (test weights with crease curves)")
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The synthetic TexTalk4D the training, evaluation and baseline tests share: 3 subjects
    (2 train, 1 test-B), ~20 train utterances and one test-A utterance (seed 5). Built once per
    test session; tests read it and never write into it."""
    if shutil.which("flite") is None or shutil.which("sox") is None:
        pytest.skip("needs the Debian packages flite and sox (dataset build)")
    from tools.synthetic_textalk4d.builder import BuildConfig, build

    root = tmp_path_factory.mktemp("tiny_dataset") / "ds"
    build(BuildConfig(out=root, subjects=3, minutes=1.3, seed=5), log=lambda *a: None)
    return root
