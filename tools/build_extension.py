#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the TexTalker Blender extension zips, one per platform and per Blender Python version.

    .venv/bin/python tools/build_extension.py                       # all platforms, Python 3.11 + 3.13
    .venv/bin/python tools/build_extension.py --platform linux-x64 --python 3.11 --wheels minimal

For each Python version the tool
1. downloads, with `pip download` for each target platform and Python, the wheels of
   tools/extension-requirements.txt and their dependencies into wheels/<cpXY>-<platform>/
   (git-ignored), then drops the distributions Blender already ships (numpy, requests, ...);
2. stages blender_manifest.toml + the contents of textalker_blender/ + wheels/ in build/extension/pyXY,
   writing `platforms`, `wheels` and the Blender version range into the STAGED manifest only
   (Python 3.11: Blender 4.2 up to, not including, 5.1; Python 3.13: Blender 5.1 and later);
3. validates the staged tree and builds the zips with Blender's own tool
   (`blender_ext.py build --split-platforms`, shipped in the bpy wheel), into dist/.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import tomli_w
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "textalker_blender"
SOURCE_MANIFEST = REPO_ROOT / "blender_manifest.toml"
EXTENSION_REQUIREMENTS = REPO_ROOT / "tools" / "extension-requirements.txt"
DEFAULT_WHEEL_DIR = REPO_ROOT / "wheels"
DEFAULT_STAGE_DIR = REPO_ROOT / "build" / "extension"
DEFAULT_OUT_DIR = REPO_ROOT / "dist"

# Blender platform -> pip --platform tags, newest first. Blender 4.2+ needs glibc 2.28 and macOS 11.2,
# and pip does not expand manylinux_2_X to older glibc versions by itself, so they are listed.
PLATFORM_TAGS: dict[str, list[str]] = {
    "linux-x64": [f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)] + ["manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    # pip expands macosx tags to older compatible ones. 12.0, not Blender's 11.2: scipy, scikit-learn,
    # numba and llvmlite publish no arm64 wheel older than macOS 12 (measured with pip --dry-run).
    "macos-arm64": ["macosx_12_0_arm64"],
}
PLATFORMS = tuple(PLATFORM_TAGS)

# What a requirement's environment marker sees for each target platform. tools/extension-requirements.txt
# pins some distributions per platform with markers (`torch==X; sys_platform == "darwin"`): pip
# download evaluates markers against the machine it runs on, not the --platform it downloads for,
# so the build evaluates them for the target itself and hands pip the bare requirement.
PLATFORM_MARKERS: dict[str, dict[str, str]] = {
    "linux-x64": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64"},
    "windows-x64": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix", "platform_machine": "arm64"},
}


@dataclasses.dataclass(frozen=True)
class PythonTarget:
    """One embedded Python of Blender, and the Blender versions that embed it."""

    version: str  # "3.11"
    blender_version_min: str
    blender_version_max: str | None  # first Blender version NOT supported (manifest semantics)
    # Resolve dependencies against the numpy Blender ships, since the bundled numpy is the one loaded.
    numpy_constraint: str

    @property
    def tag(self) -> str:  # "cp311"
        return "cp" + self.version.replace(".", "")

    @property
    def short(self) -> str:  # "py311"
        return "py" + self.version.replace(".", "")


PYTHON_TARGETS: dict[str, PythonTarget] = {
    # Blender 4.2-5.0 ship numpy 1.26 (bpy 5.0.1 requires numpy>=1.26,<2).
    "3.11": PythonTarget("3.11", "4.2.0", "5.1.0", "numpy==1.26.4"),
    # Blender 5.1+ ships numpy 2.x (bpy 5.2 requires numpy>=2.2,<3). Resolving against the lowest 2.x
    # it may ship keeps the bundle loadable with any later 2.x (numpy 2 builds are forward compatible).
    "3.13": PythonTarget("3.13", "5.1.0", None, "numpy>=2.2,<2.3"),
}

# Distributions that Blender's own Python already contains (the bpy wheel requires the same set):
# bundling them would shadow Blender's copies or be ignored.
BLENDER_BUNDLED = frozenset(
    canonicalize_name(name)
    for name in ("numpy", "requests", "certifi", "charset-normalizer", "idna", "urllib3", "zstandard", "cython")
)

WHEEL_SETS = ("none", "minimal", "full")
# `minimal` is for tests: one small platform-specific wheel exercises download, platform split and
# Blender's wheel installation in about a second. The add-on does not work without `full`.
MINIMAL_DISTRIBUTIONS = frozenset({"safetensors"})

TORCH_CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"

# Licence texts travel with the code (GPL): copied from the repository root into each zip.
LICENSE_FILES = ("LICENSE", "LICENSES.md")

STAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "tests", "*.pt", "*.pth", "*.ckpt", "*.blend1")


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


class WheelDownloadError(BuildError):
    """pip could not download the wheels (no network, no wheel for the platform, ...)."""


@dataclasses.dataclass(frozen=True)
class BuiltZip:
    path: Path
    python: str
    platform: str
    wheels: tuple[str, ...]  # wheel file names inside this zip


def find_blender_ext_script() -> Path:
    """Blender's extension command-line tool, as shipped inside the installed bpy wheel."""
    spec = importlib.util.find_spec("bpy")  # locates bpy without importing (and starting) Blender
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("bpy is not installed: run tools/setup_env.sh (it provides blender_ext.py)")
    for location in spec.submodule_search_locations:
        matches = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if matches:
            return matches[-1]
    raise BuildError("blender_ext.py not found inside the bpy package")


def read_requirements(path: Path = EXTENSION_REQUIREMENTS) -> list[Requirement]:
    requirements = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirements.append(Requirement(line))
    return requirements


def requirements_for_set(wheel_set: str) -> list[Requirement]:
    if wheel_set not in WHEEL_SETS:
        raise BuildError(f"unknown wheel set {wheel_set!r}, expected one of {WHEEL_SETS}")
    if wheel_set == "none":
        return []
    requirements = read_requirements()
    if wheel_set == "minimal":
        requirements = [r for r in requirements if canonicalize_name(r.name) in MINIMAL_DISTRIBUTIONS]
    return requirements


def target_environment(python: PythonTarget, platform: str) -> dict[str, str]:
    """Environment-marker values of Blender's Python on the target platform."""
    return {
        **PLATFORM_MARKERS[platform],
        "python_version": python.version,
        "python_full_version": f"{python.version}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def requirements_for_target(requirements: list[Requirement], python: PythonTarget, platform: str) -> list[Requirement]:
    """The requirements whose environment marker holds on `platform` with `python`, markers removed."""
    environment = target_environment(python, platform)
    selected = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        bare = Requirement(str(requirement))
        bare.marker = None
        selected.append(bare)
    names = [canonicalize_name(r.name) for r in selected]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BuildError(f"{platform}, Python {python.version}: more than one requirement for {duplicates} "
                         "holds: make the markers in tools/extension-requirements.txt exclusive")
    return selected


def download_wheels(
    requirements: list[Requirement],
    python: PythonTarget,
    platform: str,
    wheel_dir: Path,
    torch_flavour: str = "cpu",
    torch_index_url: str | None = None,
) -> list[Path]:
    """pip-download the wheels (with dependencies) for one platform and Python; returns the wheels to
    bundle, Blender's own distributions removed. Already downloaded files are reused by pip."""
    requirements = requirements_for_target(requirements, python, platform)
    if not requirements:
        return []
    target_dir = wheel_dir / f"{python.tag}-{platform}"
    target_dir.mkdir(parents=True, exist_ok=True)
    wants_torch = any(canonicalize_name(r.name) == "torch" for r in requirements)

    constraints_file = target_dir / "blender-constraints.txt"
    constraints_file.write_text(python.numpy_constraint + "\n", encoding="utf-8")
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
        "--dest", str(target_dir),
        "--only-binary=:all:",
        "--python-version", python.version,
        "--implementation", "cp",
        "--abi", python.tag,
        "-c", str(constraints_file),
    ]
    for tag in PLATFORM_TAGS[platform]:
        command += ["--platform", tag]
    if wants_torch:
        index_url = torch_index_url
        if index_url is None and torch_flavour == "cpu" and platform == "linux-x64":
            # PyPI's Linux torch is the CUDA build; the CPU build lives on PyTorch's own index.
            index_url = TORCH_CPU_INDEX_URL
        if torch_flavour == "cuda" and platform == "macos-arm64":
            print("[build_extension] note: no CUDA on macOS, bundling the default (CPU/MPS) torch", flush=True)
        if index_url is None and torch_flavour == "cuda" and platform == "windows-x64":
            raise BuildError("CUDA torch for Windows is only on PyTorch's index: pass --torch-index-url "
                             "https://download.pytorch.org/whl/cu<version>")
        if index_url and index_url == TORCH_CPU_INDEX_URL and not url_reachable(index_url):
            # An unreachable extra index makes pip retry it for every package (minutes). Without it
            # pip can still use a local CPU wheel (find-links); the CUDA check below catches the rest.
            print(f"[build_extension] warning: {index_url} unreachable, resolving torch without it", flush=True)
            index_url = None
        if index_url:
            command += ["--extra-index-url", index_url]

    def pip_download(arguments: list[str], what: list[Requirement]) -> set[str]:
        print(f"[build_extension] pip download for {python.tag} {platform}: {' '.join(map(str, what))}", flush=True)
        result = subprocess.run(command + arguments + [str(r) for r in what], capture_output=True, text=True)
        if result.returncode != 0:
            raise WheelDownloadError(
                f"pip download failed for {python.tag} {platform} (exit {result.returncode}):\n"
                + (result.stderr or result.stdout)[-4000:]
            )
        # pip keeps earlier downloads in the folder: bundle only what this resolution named.
        return resolved_wheel_names(result.stdout)

    wanted: set[str] = set()
    if wants_torch:
        # pip evaluates dependency markers for the machine it runs on, not for --platform: asked for
        # a Windows or macOS torch on Linux it also wants torch's `platform_system == "Linux"`
        # nvidia-* wheels, which do not exist for those platforms. So torch comes alone, and its
        # dependencies, selected by their markers for the target, join the main resolution.
        torch_requirements = [r for r in requirements if canonicalize_name(r.name) == "torch"]
        wanted |= pip_download(["--no-deps"], torch_requirements)
        torch_wheel = next(target_dir / name for name in wanted if name.startswith("torch-"))
        if platform == "linux-x64":  # before its dependencies: the CUDA build's are gigabytes
            check_torch_flavour([torch_wheel], torch_flavour)
        requirements = [r for r in requirements if canonicalize_name(r.name) != "torch"]
        requirements += wheel_dependencies(torch_wheel, python, platform)
    wanted |= pip_download([], requirements)
    wheels = sorted(p for p in target_dir.glob("*.whl") if p.name in wanted)
    if not wheels:
        raise WheelDownloadError(
            f"pip download reported no wheels for {python.tag} {platform} (it named: {', '.join(sorted(wanted)) or 'nothing'})"
        )
    if wants_torch and platform == "linux-x64":
        check_torch_flavour(wheels, torch_flavour)
    return [p for p in wheels if canonicalize_name(parse_wheel_filename(p.name)[0]) not in BLENDER_BUNDLED]


def wheel_dependencies(wheel: Path, python: PythonTarget, platform: str) -> list[Requirement]:
    """The Requires-Dist of a wheel whose markers hold on the target (extras not asked for)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode("utf-8")
    dependencies = [Requirement(line.split(":", 1)[1].strip())
                    for line in text.splitlines() if line.startswith("Requires-Dist:")]
    selected = []
    for requirement in dependencies:
        environment = {**target_environment(python, platform), "extra": ""}
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            selected.append(requirement)
    return selected


def check_torch_flavour(wheels: list[Path], torch_flavour: str) -> None:
    """Linux only: PyPI's torch is the CUDA build (with nvidia-* wheels), PyTorch's CPU index has `+cpu`."""
    names = [canonicalize_name(parse_wheel_filename(p.name)[0]) for p in wheels]
    torch_versions = [str(parse_wheel_filename(p.name)[1]) for p in wheels if parse_wheel_filename(p.name)[0] == "torch"]
    is_cpu_build = any(v.endswith("+cpu") for v in torch_versions)
    has_cuda_wheels = any(name.startswith("nvidia-") for name in names)
    if torch_flavour == "cpu" and (has_cuda_wheels or not is_cpu_build):
        raise BuildError(
            f"asked for CPU torch but pip resolved torch {torch_versions} (CUDA build): "
            f"make {TORCH_CPU_INDEX_URL} reachable or pass --torch-index-url"
        )
    if torch_flavour == "cuda" and is_cpu_build:
        raise BuildError(
            f"asked for CUDA torch but pip resolved {torch_versions} (a local CPU wheel, e.g. from pip's "
            "find-links, wins on version order); pass --torch-index-url https://download.pytorch.org/whl/cu<version> "
            "or remove the CPU wheel from pip's find-links"
        )


def url_reachable(url: str, timeout_s: float = 5.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered
    except (urllib.error.URLError, OSError):
        return False


def resolved_wheel_names(pip_stdout: str) -> set[str]:
    """File names pip reports as saved or already present ("Saved ./x.whl", "File was already downloaded /x.whl")."""
    names = set()
    for line in pip_stdout.splitlines():
        line = line.strip()
        for prefix in ("Saved ", "File was already downloaded "):
            if line.startswith(prefix) and line.endswith(".whl"):
                names.add(os.path.basename(line[len(prefix):].strip()))
    return names


def wheel_fits_platform(wheel_name: str, platform: str) -> bool:
    """Same rule as Blender's `--split-platforms`: pure wheels go everywhere."""
    platform_tags = {tag.platform for tag in parse_wheel_filename(wheel_name)[3]}
    if platform_tags == {"any"}:
        return True
    os_name, arch = platform.split("-")
    prefixes = {"linux": ("manylinux", "musllinux", "linux"), "windows": ("win",), "macos": ("macosx",)}[os_name]
    arch_names = {"x64": ("x86_64", "amd64"), "arm64": ("arm64", "aarch64", "universal2")}[arch]
    return any(tag.startswith(prefixes) and tag.endswith(arch_names) for tag in platform_tags)


def check_one_version_per_platform(wheel_names: list[str], platforms: list[str]) -> None:
    """Each platform zip must hold one version of each distribution, or Blender picks one silently."""
    for platform in platforms:
        seen: dict[str, str] = {}
        for name in wheel_names:
            if not wheel_fits_platform(name, platform):
                continue
            distribution = canonicalize_name(parse_wheel_filename(name)[0])
            if distribution in seen:
                raise BuildError(
                    f"{platform}: two wheels of {distribution}: {seen[distribution]} and {name} "
                    "(different versions resolved for different platforms; pin it in tools/extension-requirements.txt)"
                )
            seen[distribution] = name


def staged_manifest(source_manifest: Path, python: PythonTarget, platforms: list[str], wheel_names: list[str]) -> dict:
    with source_manifest.open("rb") as handle:
        manifest = tomllib.load(handle)
    for generated_key in ("platforms", "wheels", "blender_version_max"):
        if generated_key in manifest:
            raise BuildError(f"{source_manifest.name}: remove `{generated_key}`, the build writes it per target")
    manifest["blender_version_min"] = max(
        (manifest["blender_version_min"], python.blender_version_min), key=lambda v: tuple(map(int, v.split(".")))
    )
    if python.blender_version_max:
        manifest["blender_version_max"] = python.blender_version_max
    manifest["platforms"] = list(platforms)
    if wheel_names:
        manifest["wheels"] = [f"./wheels/{name}" for name in wheel_names]
    return manifest


def stage(
    stage_dir: Path,
    python: PythonTarget,
    platforms: list[str],
    wheels: list[Path],
    package_dir: Path | None = None,
    source_manifest: Path | None = None,
) -> Path:
    """Lay out the extension source tree Blender's build expects: manifest and __init__.py at the root."""
    package_dir = package_dir or PACKAGE_DIR
    source_manifest = source_manifest or SOURCE_MANIFEST
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    shutil.copytree(package_dir, stage_dir, ignore=STAGE_IGNORE)
    if not (stage_dir / "__init__.py").is_file():
        raise BuildError(f"{package_dir} has no __init__.py")
    for name in LICENSE_FILES:
        if (REPO_ROOT / name).is_file():
            shutil.copy2(REPO_ROOT / name, stage_dir / name)
    wheel_names = sorted({w.name for w in wheels})
    check_one_version_per_platform(wheel_names, platforms)
    if wheels:
        (stage_dir / "wheels").mkdir()
        for wheel in {w.name: w for w in wheels}.values():
            link_or_copy(wheel, stage_dir / "wheels" / wheel.name)
    manifest = staged_manifest(source_manifest, python, platforms, wheel_names)
    (stage_dir / "blender_manifest.toml").write_text(
        "# Generated by tools/build_extension.py from the repository's blender_manifest.toml; do not edit.\n"
        + tomli_w.dumps(manifest),
        encoding="utf-8",
    )
    return stage_dir


def link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)  # wheels can be hundreds of MB: avoid copying when possible
    except OSError:
        shutil.copy2(source, destination)


def blender_valid_tags_file(blender_ext_script: Path) -> Path:
    """The tag list `blender --command extension` validates against (the standalone script checks none)."""
    return blender_ext_script.parents[3] / "modules" / "_bpy_internal" / "extensions" / "tags.py"


def run_blender_ext(subcommand: str, *arguments: str) -> str:
    script = find_blender_ext_script()
    command = [sys.executable, str(script), subcommand]
    tags_file = blender_valid_tags_file(script)
    if subcommand in ("build", "validate") and tags_file.is_file():
        command += ["--valid-tags", str(tags_file)]
    command += list(arguments)
    result = subprocess.run(command, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or "Error" in output.split("\n", 1)[0]:
        raise BuildError(f"blender_ext {subcommand} failed (exit {result.returncode}):\n{output}")
    return output


def validate(path: Path) -> str:
    """Blender's validator on a staged folder or a built zip; raises BuildError with its messages."""
    return run_blender_ext("validate", str(path))


def build(
    pythons: list[str] | None = None,
    platforms: list[str] | None = None,
    wheel_set: str = "full",
    out_dir: Path = DEFAULT_OUT_DIR,
    wheel_dir: Path = DEFAULT_WHEEL_DIR,
    stage_root: Path = DEFAULT_STAGE_DIR,
    torch_flavour: str = "cpu",
    torch_index_url: str | None = None,
    package_dir: Path | None = None,
    source_manifest: Path | None = None,
) -> list[BuiltZip]:
    package_dir = package_dir or PACKAGE_DIR
    source_manifest = source_manifest or SOURCE_MANIFEST
    pythons = list(pythons or PYTHON_TARGETS)
    platforms = list(platforms or PLATFORMS)
    for platform in platforms:
        if platform not in PLATFORM_TAGS:
            raise BuildError(f"unknown platform {platform!r}, expected one of {PLATFORMS}")
    for version in pythons:
        if version not in PYTHON_TARGETS:
            raise BuildError(f"unknown Python {version!r}, expected one of {tuple(PYTHON_TARGETS)}")
    if torch_flavour not in ("cpu", "cuda"):
        raise BuildError(f"--torch must be cpu or cuda, not {torch_flavour!r}")
    requirements = requirements_for_set(wheel_set)
    out_dir.mkdir(parents=True, exist_ok=True)
    with source_manifest.open("rb") as handle:
        source = tomllib.load(handle)

    built: list[BuiltZip] = []
    for version in pythons:
        python = PYTHON_TARGETS[version]
        wheels: list[Path] = []
        for platform in platforms:
            wheels += download_wheels(requirements, python, platform, wheel_dir, torch_flavour, torch_index_url)
        stage_dir = stage(stage_root / python.short, python, platforms, wheels, package_dir, source_manifest)
        validate(stage_dir)
        zip_stem = out_dir / f"{source['id']}-{source['version']}-{python.short}.zip"
        run_blender_ext(
            "build", "--source-dir", str(stage_dir), "--output-filepath", str(zip_stem), "--split-platforms"
        )
        for platform in platforms:
            path = zip_stem.with_name(f"{zip_stem.stem}-{platform.replace('-', '_')}.zip")
            if not path.is_file():
                raise BuildError(f"Blender's build did not write {path}")
            with zipfile.ZipFile(path) as archive:
                names = tuple(sorted(Path(n).name for n in archive.namelist() if n.startswith("wheels/")))
            built.append(BuiltZip(path, version, platform, names))
            print(f"[build_extension] {path} ({path.stat().st_size / 1e6:.1f} MB, {len(names)} wheels)", flush=True)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", action="append", choices=PLATFORMS,
                        help="target platform (repeatable; default: all)")
    parser.add_argument("--python", action="append", choices=tuple(PYTHON_TARGETS),
                        help="Blender's embedded Python (repeatable; default: 3.11 and 3.13)")
    parser.add_argument("--wheels", choices=WHEEL_SETS, default="full",
                        help="none: no wheels; minimal: safetensors only (tests); full: everything the add-on needs")
    parser.add_argument("--torch", choices=("cpu", "cuda"), default="cpu",
                        help="torch build to bundle (cpu keeps the zip small; cuda is PyPI's Linux build)")
    parser.add_argument("--torch-index-url", default=None,
                        help=f"extra pip index for torch (default for cpu on Linux: {TORCH_CPU_INDEX_URL})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder for the zips")
    parser.add_argument("--wheel-dir", type=Path, default=DEFAULT_WHEEL_DIR, help="download cache for wheels")
    parser.add_argument("--stage-dir", type=Path, default=DEFAULT_STAGE_DIR, help="staging folder")
    args = parser.parse_args(argv)
    try:
        build(
            pythons=args.python, platforms=args.platform, wheel_set=args.wheels, out_dir=args.out,
            wheel_dir=args.wheel_dir, stage_root=args.stage_dir, torch_flavour=args.torch,
            torch_index_url=args.torch_index_url,
        )
    except BuildError as error:
        print(f"build_extension: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
