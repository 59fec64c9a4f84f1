# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the linux-x64 extension zip and install it into Blender (bpy-module mode) the way a user does.

Each Blender session runs in its own subprocess with its own BLENDER_USER_RESOURCES: installing and
enabling an extension changes global Blender state (preferences, registered classes, sys.path) that
other tests in this process must not inherit, and they must not leak theirs into this one either.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import build_extension

pytestmark = pytest.mark.blender

MODULE = "bl_ext.user_default.textalker"
# The zip for the Blender running these tests (its embedded Python: 3.11 for Blender 4.2-5.0, 3.13
# for 5.1+), and the other Python's zip, which this Blender must refuse.
RUNNING_PYTHON = "{}.{}".format(*sys.version_info[:2])
OTHER_PYTHON = {"3.11": "3.13", "3.13": "3.11"}.get(RUNNING_PYTHON)
REFUSAL_OF_OTHER_PYTHON = {  # keyed by the running Python
    "3.11": "minimum supported version (5.1.0)",  # a Python 3.11 Blender (4.2-5.0), given the 3.13 zip
    "3.13": "must be less than the maximum version (5.1.0)",  # a Python 3.13 Blender, given the 3.11 zip
}
needs_known_python = pytest.mark.skipif(
    RUNNING_PYTHON not in build_extension.PYTHON_TARGETS,
    reason=f"no extension zip is built for Python {RUNNING_PYTHON}",
)

# Runs inside a fresh Python process; prints one JSON line prefixed with RESULT.
BLENDER_SESSION = textwrap.dedent(
    """
    import json, os, sys, traceback
    import bpy, addon_utils

    zip_path, module = sys.argv[1], sys.argv[2]
    report = {"errors": []}
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    report["installed"] = os.path.isdir(os.path.join(bpy.utils.user_resource("EXTENSIONS"), "user_default", "textalker"))
    report["enabled"] = list(addon_utils.check(module))
    if report["installed"] and not all(report["enabled"]):
        try:  # enable again so that the reason it failed is reported
            addon_utils.enable(module, default_set=True, handle_error=lambda ex: (_ for _ in ()).throw(ex))
        except BaseException:
            report["errors"].append(traceback.format_exc())
    report["operator_registered"] = hasattr(bpy.types, "TEXTALKER_OT_generate")
    report["operator_callable"] = False
    try:
        report["operator_callable"] = bpy.ops.textalker.generate.get_rna_type().identifier == "TEXTALKER_OT_generate"
    except Exception:
        report["errors"].append(traceback.format_exc())
    report["panel_registered"] = hasattr(bpy.types, "TEXTALKER_PT_main")
    report["template_operator_registered"] = hasattr(bpy.types, "TEXTALKER_OT_add_template_head")
    # AddonPreferences only attach when their bl_idname equals the extension's module name
    # (bl_ext.<repo>.textalker), which exists only in an installed extension.
    addon = bpy.context.preferences.addons.get(module)
    report["preferences_attached"] = addon is not None and addon.preferences is not None
    local_site = os.path.join(
        bpy.utils.user_resource("EXTENSIONS"), ".local", "lib",
        "python{}.{}".format(*sys.version_info[:2]), "site-packages",
    )
    report["wheel_site_packages"] = sorted(os.listdir(local_site)) if os.path.isdir(local_site) else []

    try:
        addon_utils.disable(module, default_set=True, handle_error=lambda ex: (_ for _ in ()).throw(ex))
    except BaseException:
        report["errors"].append(traceback.format_exc())
    report["enabled_after_disable"] = list(addon_utils.check(module))
    report["operator_after_disable"] = hasattr(bpy.types, "TEXTALKER_OT_generate")
    report["panel_after_disable"] = hasattr(bpy.types, "TEXTALKER_PT_main")
    print("RESULT " + json.dumps(report))
    """
)


def run_blender_session(zip_path: Path, user_resources: Path) -> tuple[dict, str]:
    environment = dict(os.environ, BLENDER_USER_RESOURCES=str(user_resources))
    # cwd away from the repository: `python -c` puts the cwd on sys.path, and a checkout's
    # textalker_blender/ there would hide imports that only work from the source tree.
    result = subprocess.run(
        [sys.executable, "-c", BLENDER_SESSION, str(zip_path), MODULE],
        capture_output=True, text=True, env=environment, timeout=600, cwd=user_resources.parent,
    )
    log = result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, f"Blender session failed (exit {result.returncode}):\n{log[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):]), log


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def linux_zip_with_a_wheel(tmp_path_factory) -> build_extension.BuiltZip:
    blender_package = build_extension.PACKAGE_DIR / "blender" / "__init__.py"
    assert blender_package.is_file(), f"{blender_package} is missing: the add-on has nothing to register"
    root = tmp_path_factory.mktemp("build-minimal")
    try:
        (built,) = build_extension.build(
            pythons=[RUNNING_PYTHON], platforms=["linux-x64"], wheel_set="minimal",
            out_dir=root / "dist", wheel_dir=root / "wheels", stage_root=root / "stage",
        )
    except build_extension.WheelDownloadError as error:
        if not pypi_reachable():
            pytest.skip(f"PyPI unreachable, cannot download the test wheel: {error}")
        raise
    return built


@pytest.mark.network
@needs_known_python
def test_zip_installs_enables_and_disables_cleanly(linux_zip_with_a_wheel, tmp_path):
    built = linux_zip_with_a_wheel
    assert built.platform == "linux-x64" and len(built.wheels) == 1 and built.wheels[0].startswith("safetensors-")
    assert built.python == RUNNING_PYTHON and f"-py{RUNNING_PYTHON.replace('.', '')}-" in built.path.name

    report, log = run_blender_session(built.path, tmp_path / "blender-user")

    assert report["installed"], log
    assert report["enabled"] == [True, True], "\n".join(report["errors"]) or log
    assert report["operator_registered"] and report["operator_callable"], "\n".join(report["errors"]) or log
    assert report["panel_registered"] and report["template_operator_registered"], log
    assert report["preferences_attached"], "add-on preferences bl_idname does not match the extension module"
    # Blender unpacked the bundled wheel into its shared extension site-packages
    assert "safetensors" in report["wheel_site_packages"], report["wheel_site_packages"]
    # and disabling removes every class again
    assert report["enabled_after_disable"] == [False, False], "\n".join(report["errors"])
    assert not report["operator_after_disable"] and not report["panel_after_disable"]
    assert not report["errors"], "\n".join(report["errors"])


@needs_known_python
@pytest.mark.parametrize(
    ("python", "platform", "reason"),
    [
        (OTHER_PYTHON, "linux-x64", REFUSAL_OF_OTHER_PYTHON.get(RUNNING_PYTHON)),
        (RUNNING_PYTHON, "windows-x64", "isn't one of (windows-x64)"),
    ],
    ids=["other-python", "other-platform"],
)
def test_zip_for_another_blender_python_or_platform_is_refused(tmp_path, python, platform, reason):
    """The per-Python and per-platform zips carry the metadata Blender uses to refuse them."""
    (built,) = build_extension.build(
        pythons=[python], platforms=[platform], wheel_set="none",
        out_dir=tmp_path / "dist", wheel_dir=tmp_path / "wheels", stage_root=tmp_path / "stage",
    )
    report, log = run_blender_session(built.path, tmp_path / "blender-user")
    assert not report["installed"]
    assert report["enabled"] == [False, False]
    assert reason in log


def test_package_imports_itself_relatively():
    """Installed, the package is `bl_ext.<repo>.textalker`: `import textalker_blender...` would fail there."""
    offenders = []
    for path in sorted(build_extension.PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "textalker_blender" for name in names):
                offenders.append(f"{path.relative_to(build_extension.REPO_ROOT)}:{node.lineno}")
    assert not offenders, f"use relative imports inside the package: {offenders}"
