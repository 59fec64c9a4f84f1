# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of tools/build_extension.py's decisions that need no network and no Blender."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import build_extension

LINUX_CPU_TORCH = Path("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
LINUX_CUDA_TORCH = Path("torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl")
NVIDIA_WHEEL = Path("nvidia_cublas-13.0.0-py3-none-manylinux_2_27_x86_64.whl")


def test_cpu_build_is_accepted_and_cuda_build_refused_when_cpu_is_asked():
    build_extension.check_torch_flavour([LINUX_CPU_TORCH], "cpu")
    with pytest.raises(build_extension.BuildError, match="CPU torch"):
        build_extension.check_torch_flavour([LINUX_CUDA_TORCH, NVIDIA_WHEEL], "cpu")


def test_local_cpu_wheel_is_refused_when_cuda_is_asked():
    build_extension.check_torch_flavour([LINUX_CUDA_TORCH, NVIDIA_WHEEL], "cuda")
    with pytest.raises(build_extension.BuildError, match="CUDA torch"):
        build_extension.check_torch_flavour([LINUX_CPU_TORCH], "cuda")


@pytest.mark.parametrize(
    ("wheel", "platform", "fits"),
    [
        ("tiny-1.0-py3-none-any.whl", "macos-arm64", True),
        ("safetensors-0.8.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "linux-x64", True),
        ("safetensors-0.8.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "windows-x64", False),
        ("safetensors-0.8.0-cp310-abi3-win_amd64.whl", "windows-x64", True),
        ("safetensors-0.8.0-cp310-abi3-macosx_11_0_arm64.whl", "macos-arm64", True),
        ("safetensors-0.8.0-cp310-abi3-macosx_11_0_arm64.whl", "linux-x64", False),
        ("charset_normalizer-3.5.2-cp311-cp311-macosx_10_9_universal2.whl", "macos-arm64", True),
        ("x-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", "linux-x64", False),
    ],
)
def test_wheel_platform_matching_follows_blender(wheel, platform, fits):
    assert build_extension.wheel_fits_platform(wheel, platform) is fits


def test_only_the_wheels_pip_named_in_this_run_are_bundled():
    stdout = "\n".join([
        "Collecting safetensors==0.8.0",
        "Saved ./wheels/cp311-linux-x64/safetensors-0.8.0-cp310-abi3-manylinux_2_17_x86_64.whl",
        "File was already downloaded /tmp/w/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl",
        "Successfully downloaded safetensors numpy",
    ])
    assert build_extension.resolved_wheel_names(stdout) == {
        "safetensors-0.8.0-cp310-abi3-manylinux_2_17_x86_64.whl",
        "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl",
    }


def test_wheel_sets():
    assert build_extension.requirements_for_set("none") == []
    minimal = build_extension.requirements_for_set("minimal")
    assert [r.name for r in minimal] == ["safetensors"] and str(minimal[0].specifier).startswith("==")
    full = {r.name: r for r in build_extension.requirements_for_set("full")}
    assert {"torch", "transformers", "librosa", "safetensors", "soundfile"} <= set(full)
    assert all(str(r.specifier).startswith("==") for r in full.values()), "bundled versions are pinned"
    assert not set(full) & build_extension.BLENDER_BUNDLED
    with pytest.raises(build_extension.BuildError):
        build_extension.requirements_for_set("everything")


def test_pip_platform_tags_reach_back_to_manylinux2014_for_linux():
    # safetensors and tokenizers only publish manylinux_2_17 wheels: an exact 2_28 tag would miss them
    tags = build_extension.PLATFORM_TAGS["linux-x64"]
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags


@pytest.mark.parametrize(("platform", "torch"), [("linux-x64", "==2.13.0"), ("windows-x64", "==2.13.0"),
                                                  ("macos-arm64", "==2.11.0")])
@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_each_target_gets_one_torch_pin_chosen_by_its_marker(python, platform, torch):
    """extension-requirements.txt pins torch per platform with markers, evaluated for the target."""
    selected = build_extension.requirements_for_target(
        build_extension.requirements_for_set("full"), build_extension.PYTHON_TARGETS[python], platform
    )
    torches = [r for r in selected if r.name == "torch"]
    assert [str(r.specifier) for r in torches] == [torch]
    assert all(r.marker is None for r in selected)  # pip gets bare requirements


def test_overlapping_markers_are_refused():
    from packaging.requirements import Requirement

    both = [Requirement('torch==2.13.0; sys_platform != "win32"'), Requirement("torch==2.11.0")]
    with pytest.raises(build_extension.BuildError, match="exclusive"):
        build_extension.requirements_for_target(both, build_extension.PYTHON_TARGETS["3.11"], "linux-x64")


def test_wheel_dependencies_follow_the_target_not_this_machine(tmp_path):
    """A Windows torch must not pull the Linux-only nvidia wheels (pip alone would: it evaluates
    dependency markers for the machine it runs on)."""
    import zipfile

    wheel = tmp_path / "torch-2.13.0-cp311-cp311-win_amd64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("torch-2.13.0.dist-info/METADATA", "\n".join([
            "Metadata-Version: 2.1", "Name: torch", "Version: 2.13.0",
            "Requires-Dist: filelock",
            'Requires-Dist: nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
            'Requires-Dist: setuptools; python_version >= "3.12"',
            'Requires-Dist: opt-einsum>=3.3; extra == "opt-einsum"',
        ]))
    names = lambda python, platform: [r.name for r in build_extension.wheel_dependencies(  # noqa: E731
        wheel, build_extension.PYTHON_TARGETS[python], platform)]
    assert names("3.11", "windows-x64") == ["filelock"]
    assert names("3.13", "windows-x64") == ["filelock", "setuptools"]
    assert names("3.11", "linux-x64") == ["filelock", "nvidia-nccl-cu13"]
