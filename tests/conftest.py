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

if "bpy" in sys.modules:  # pragma: no cover - only when a plugin imported bpy before us
    warnings.warn("bpy was imported before tests/conftest.py: BLENDER_USER_RESOURCES may be ignored")

BLENDER_USER_RESOURCES = Path(tempfile.mkdtemp(prefix="textalker-blender-user-"))
os.environ["BLENDER_USER_RESOURCES"] = str(BLENDER_USER_RESOURCES)
atexit.register(shutil.rmtree, BLENDER_USER_RESOURCES, ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def blender_user_resources() -> Path:
    """The temporary folder bpy uses as its user resources in this test process."""
    return BLENDER_USER_RESOURCES


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
