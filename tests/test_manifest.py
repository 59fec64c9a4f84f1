# SPDX-License-Identifier: GPL-3.0-or-later
"""The extension manifest and the staged build, checked with Blender's own validator and builder.

No network: these tests build with `--wheels none`.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tools import build_extension

SOURCE_MANIFEST = build_extension.SOURCE_MANIFEST


@pytest.fixture(scope="module")
def source_manifest() -> dict:
    with SOURCE_MANIFEST.open("rb") as handle:
        return tomllib.load(handle)


@pytest.fixture(scope="module")
def blender_ext():
    """Blender's extension tool (bl_pkg/cli/blender_ext.py from the bpy wheel) as a module."""
    path = build_extension.find_blender_ext_script()
    spec = importlib.util.spec_from_file_location("blender_ext_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built_without_wheels(tmp_path_factory) -> list[build_extension.BuiltZip]:
    root = tmp_path_factory.mktemp("build-none")
    return build_extension.build(
        wheel_set="none", out_dir=root / "dist", wheel_dir=root / "wheels", stage_root=root / "stage"
    )


def test_source_manifest_fields(source_manifest):
    assert source_manifest["schema_version"] == "1.0.0"
    assert source_manifest["id"] == "textalker"
    assert source_manifest["type"] == "add-on"
    assert source_manifest["blender_version_min"] == "4.2.0"
    assert source_manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert source_manifest["maintainer"].strip()
    tagline = source_manifest["tagline"]
    assert len(tagline) <= 64 and tagline[-1].isalnum()
    permissions = source_manifest["permissions"]
    assert set(permissions) == {"files"}, "files only: the add-on must not ask for network or others"
    for reason in permissions.values():
        assert 0 < len(reason) <= 64 and reason[-1].isalnum()
    # written per build target into the staged copy only
    assert not {"platforms", "wheels", "blender_version_max"} & set(source_manifest)


def test_source_manifest_passes_blender_strict_validation(blender_ext):
    result = blender_ext.pkg_manifest_from_toml_and_validate_all_errors(str(SOURCE_MANIFEST), strict=True)
    assert not isinstance(result, list), f"Blender rejects the manifest: {result}"
    assert result.id == "textalker"


def test_blender_validator_rejects_a_broken_manifest(tmp_path):
    """Guards the test above: the validator run through build_extension really reports errors."""
    stage = tmp_path / "stage"
    build_extension.stage(stage, build_extension.PYTHON_TARGETS["3.11"], ["linux-x64"], [])
    manifest = stage / "blender_manifest.toml"
    manifest.write_text(re.sub(r'(?m)^tagline = .*$', 'tagline = "Ends with a full stop."', manifest.read_text()))
    with pytest.raises(build_extension.BuildError, match="tagline"):
        build_extension.validate(stage)


@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_staged_manifest_targets_one_blender_python(tmp_path, python):
    stage = build_extension.stage(
        tmp_path / "stage", build_extension.PYTHON_TARGETS[python], ["linux-x64", "windows-x64"], []
    )
    with (stage / "blender_manifest.toml").open("rb") as handle:
        staged = tomllib.load(handle)
    assert staged["platforms"] == ["linux-x64", "windows-x64"]
    assert "wheels" not in staged  # an empty list is an error for Blender: left out
    if python == "3.11":
        assert (staged["blender_version_min"], staged["blender_version_max"]) == ("4.2.0", "5.1.0")
    else:
        assert staged["blender_version_min"] == "5.1.0"
        assert "blender_version_max" not in staged
    assert (stage / "__init__.py").is_file()
    assert not list(stage.rglob("__pycache__")) and not list(stage.rglob("*.pyc"))
    build_extension.validate(stage)  # raises with Blender's messages if invalid
    # the source manifest is never modified
    with SOURCE_MANIFEST.open("rb") as handle:
        assert "platforms" not in tomllib.load(handle)


def test_stage_lists_wheels_and_excludes_dev_files(tmp_path):
    package = tmp_path / "package"
    (package / "core" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("def register():\n    pass\n\n\ndef unregister():\n    pass\n")
    (package / "core" / "__init__.py").write_text("")
    (package / "core" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (package / "tests").mkdir()
    (package / "tests" / "test_x.py").write_text("")
    (package / "checkpoint.pt").write_bytes(b"\0" * 16)
    wheel_dir = tmp_path / "downloads"
    wheel_dir.mkdir()
    wheels = []
    for name in (
        "tiny-1.0-py3-none-any.whl",
        "fast-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "fast-2.0-cp311-cp311-win_amd64.whl",
    ):
        wheels.append(wheel_dir / name)
        with zipfile.ZipFile(wheels[-1], "w") as archive:
            archive.writestr("placeholder.txt", "not a real wheel; the build only packs the file")
    out = tmp_path / "dist"
    out.mkdir()
    stage = build_extension.stage(
        tmp_path / "stage", build_extension.PYTHON_TARGETS["3.11"], ["linux-x64", "windows-x64"], wheels,
        package_dir=package,
    )
    with (stage / "blender_manifest.toml").open("rb") as handle:
        staged = tomllib.load(handle)
    assert staged["wheels"] == [f"./wheels/{w.name}" for w in sorted(wheels, key=lambda w: w.name)]
    assert {p.name for p in stage.rglob("*")} >= {w.name for w in wheels}
    assert not (stage / "tests").exists() and not (stage / "checkpoint.pt").exists()
    assert not list(stage.rglob("*.pyc"))

    build_extension.run_blender_ext(
        "build", "--source-dir", str(stage), "--output-filepath", str(out / "t.zip"), "--split-platforms"
    )
    with zipfile.ZipFile(out / "t-linux_x64.zip") as archive:
        linux = {n for n in archive.namelist() if n.startswith("wheels/")}
    with zipfile.ZipFile(out / "t-windows_x64.zip") as archive:
        windows = {n for n in archive.namelist() if n.startswith("wheels/")}
    assert linux == {"wheels/tiny-1.0-py3-none-any.whl",
                     "wheels/fast-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"}
    assert windows == {"wheels/tiny-1.0-py3-none-any.whl", "wheels/fast-2.0-cp311-cp311-win_amd64.whl"}


def test_two_versions_of_a_distribution_in_one_platform_zip_are_refused():
    with pytest.raises(build_extension.BuildError, match="two wheels of tiny"):
        build_extension.check_one_version_per_platform(
            ["tiny-1.0-py3-none-any.whl", "tiny-1.1-py3-none-any.whl"], ["linux-x64"]
        )
    # same distribution for different platforms is fine
    build_extension.check_one_version_per_platform(
        ["fast-2.0-cp311-cp311-win_amd64.whl", "fast-2.0-cp311-cp311-manylinux_2_28_x86_64.whl"],
        ["linux-x64", "windows-x64"],
    )


def test_blender_bundled_distributions_are_never_bundled():
    assert {"numpy", "requests", "urllib3", "certifi", "idna", "charset-normalizer", "zstandard", "cython"} <= set(
        build_extension.BLENDER_BUNDLED
    )
    assert "torch" not in build_extension.BLENDER_BUNDLED


def test_build_without_wheels_gives_one_valid_zip_per_platform_and_python(built_without_wheels):
    targets = {(b.python, b.platform) for b in built_without_wheels}
    assert targets == {(p, q) for p in ("3.11", "3.13") for q in build_extension.PLATFORMS}
    for built in built_without_wheels:
        assert built.path.name == f"textalker-0.1.0-py{built.python.replace('.', '')}-{built.platform.replace('-', '_')}.zip"
        build_extension.validate(built.path)
        with zipfile.ZipFile(built.path) as archive:
            names = archive.namelist()
            manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        assert {"__init__.py", "blender_manifest.toml", "LICENSE", "LICENSES.md"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")]
        assert manifest["build"]["generated"]["platforms"] == [built.platform]
        assert manifest["blender_version_min"] == ("4.2.0" if built.python == "3.11" else "5.1.0")


def test_command_line_refuses_unknown_wheel_set():
    result = subprocess.run(
        [sys.executable, str(Path(build_extension.__file__)), "--wheels", "everything"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_tags_are_checked_against_blenders_list(tmp_path):
    """The standalone validator skips tags unless given Blender's list, as `blender --command extension` does."""
    assert build_extension.blender_valid_tags_file(build_extension.find_blender_ext_script()).is_file()
    stage = build_extension.stage(tmp_path / "stage", build_extension.PYTHON_TARGETS["3.11"], ["linux-x64"], [])
    manifest = stage / "blender_manifest.toml"
    manifest.write_text(manifest.read_text().replace('"Animation"', '"Not A Blender Tag"'))
    with pytest.raises(build_extension.BuildError, match="Not A Blender Tag"):
        build_extension.validate(stage)
