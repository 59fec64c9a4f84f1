"""Robustness, part 5: weights and inputs as an attack surface (issue #8).

Weights load only from safetensors after a SHA-256 check; tampered, truncated, pickled or
malformed files are refused without running anything; HuBERT loads from safetensors only; no code
path unpickles or opens a network socket; files are written only under the chosen output folder,
whatever the object and strip names say.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
import socket
import struct
from pathlib import Path

import pytest
import torch
from robustness_support import files_under, needs_assets, registered_scene, snapshot, template_head, unregister_addon, write_audio

from textalker_blender.blender import catalog
from textalker_blender.core.errors import WeightsError
from textalker_blender.core.weights import MANIFEST_NAME, load_weights, record_in_manifest, sha256_file

PACKAGE = Path(__file__).resolve().parents[1] / "textalker_blender"


class _WritesAFileWhenUnpickled:
    """A pickle payload: unpickling it calls open(marker, "w"), i.e. runs code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bundled_copy(folder: Path) -> Path:
    """The shipped weights and a manifest listing them, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / catalog.weights_path().name
    shutil.copyfile(catalog.weights_path(), copy)
    record_in_manifest(copy)
    return copy


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# Weights files


@needs_assets
def test_shipped_weights_match_the_shipped_manifest():
    manifest = json.loads((catalog.ASSETS_DIR / MANIFEST_NAME).read_text())
    entry = manifest["files"][catalog.weights_path().name]
    assert sha256_file(catalog.weights_path()) == entry["sha256"]
    assert catalog.weights_path().stat().st_size == entry["bytes"]


@needs_assets
def test_tampered_weights_are_refused(tmp_path):
    weights = _bundled_copy(tmp_path)
    _flip_byte(weights, weights.stat().st_size // 2)  # one tensor value changed
    with pytest.raises(WeightsError, match="does not match its recorded SHA-256"):
        load_weights(weights)


@needs_assets
def test_truncated_weights_are_refused_even_with_a_matching_manifest(tmp_path):
    weights = _bundled_copy(tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="SHA-256"):
        load_weights(weights)
    record_in_manifest(weights)  # the attacker rewrites the manifest as well
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_weights(weights)


def test_weights_without_manifest_entry_are_refused(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "extra.safetensors"
    save_file({"x": torch.zeros(2)}, str(weights))
    with pytest.raises(WeightsError, match="No manifest.json"):
        load_weights(weights)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"files": {}}))
    with pytest.raises(WeightsError, match="not listed"):
        load_weights(weights)


@pytest.mark.parametrize("payload", ["torch.save", "pickle"])
def test_pickle_disguised_as_safetensors_never_runs(tmp_path, payload):
    marker = tmp_path / "pwned.txt"
    weights = tmp_path / "model.safetensors"
    if payload == "torch.save":
        torch.save({"weight": torch.zeros(3), "evil": _WritesAFileWhenUnpickled(marker)}, str(weights))
    else:
        weights.write_bytes(pickle.dumps(_WritesAFileWhenUnpickled(marker)))
    record_in_manifest(weights)  # its hash matches: only the format check stands in the way
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_weights(weights)
    assert not marker.exists()


@pytest.mark.parametrize(
    "header",
    [
        b"\xff" * 8,  # header length of 2^64 - 1
        struct.pack("<Q", 40) + b'{"x": {"dtype": "F32", "shape": [1000000'  # cut JSON
        ,
        struct.pack("<Q", 64) + json.dumps(
            {"x": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}
        ).encode().ljust(64),  # tensor pointing past the end of the file
    ],
    ids=["huge header length", "cut header", "offsets past the end"],
)
def test_malformed_safetensors_headers_are_refused(tmp_path, header):
    weights = tmp_path / "bad.safetensors"
    weights.write_bytes(header + b"\x00" * 16)
    record_in_manifest(weights)
    with pytest.raises(WeightsError):
        load_weights(weights)


def test_hubert_folder_with_a_pickled_checkpoint_is_refused_without_unpickling(tmp_path):
    from transformers import HubertConfig

    from textalker_blender.core.features import HubertAudioEncoder

    folder = tmp_path / "hubert"
    HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                 ).save_pretrained(folder)
    marker = tmp_path / "pwned.txt"
    torch.save({"evil": _WritesAFileWhenUnpickled(marker)}, str(folder / "pytorch_model.bin"))
    with pytest.raises(WeightsError, match="Could not load HuBERT"):
        HubertAudioEncoder(folder)
    assert not marker.exists()


@needs_assets
def test_generate_with_tampered_weights_changes_nothing(tmp_path):
    pytest.importorskip("bpy")
    from blender_support import bpy

    from textalker_blender.blender import api

    weights = _bundled_copy(tmp_path / "weights")
    _flip_byte(weights, 4096)
    registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    head = template_head()
    before = snapshot()
    try:
        with pytest.raises(WeightsError, match="SHA-256"):
            api.generate(head, str(write_audio(tmp_path / "a.wav", 0.3)), steps=1, weights=str(weights))
        assert snapshot() == before
        assert files_under(tmp_path / "textalker") == []
    finally:
        unregister_addon()


# --------------------------------------------------------------------------------------------
# No unpickling, no network: in the code, and at run time


def _calls_and_imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in names:
                yield "import", (module or name).split(".")[0], node.lineno
        elif isinstance(node, ast.Call):
            function = node.func
            dotted = []
            while isinstance(function, ast.Attribute):
                dotted.append(function.attr)
                function = function.value
            if not isinstance(function, ast.Name):
                continue  # a method of a call's result, e.g. model.to(device).eval()
            dotted.append(function.id)
            keywords = {k.arg: k.value for k in node.keywords}
            yield "call", ".".join(reversed(dotted)), (node.lineno, keywords)


FORBIDDEN_IMPORTS = {"pickle", "dill", "joblib", "socket", "urllib", "http", "requests", "ftplib", "ssl"}
FORBIDDEN_CALLS = {"torch.load", "pickle.load", "pickle.loads", "eval", "exec", "torch.hub.load",
                   "urlopen", "hf_hub_download", "snapshot_download"}


def test_the_add_on_code_never_unpickles_evaluates_or_uses_the_network():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    problems = []
    for path in sources:
        for kind, name, where in _calls_and_imports(path):
            if kind == "import" and name in FORBIDDEN_IMPORTS:
                problems.append(f"{path.name}:{where} imports {name}")
            elif kind == "call":
                line, keywords = where
                if name in FORBIDDEN_CALLS:
                    problems.append(f"{path.name}:{line} calls {name}")
                if name.endswith("np.load") or name == "load" and "allow_pickle" in keywords:
                    value = keywords.get("allow_pickle")
                    if not (isinstance(value, ast.Constant) and value.value is False):
                        problems.append(f"{path.name}:{line} np.load without allow_pickle=False")
                if name.endswith("from_pretrained"):
                    for flag in ("local_files_only", "use_safetensors"):
                        value = keywords.get(flag)
                        if not (isinstance(value, ast.Constant) and value.value is True):
                            problems.append(f"{path.name}:{line} from_pretrained without {flag}=True")
    assert problems == []


class _NetworkAttempts(list):
    def refuse(self, *args, **kwargs):
        self.append(args[:2])
        raise OSError("network access is forbidden in this test")


@needs_assets
def test_a_whole_generation_opens_no_socket(tmp_path, monkeypatch):
    pytest.importorskip("bpy")
    from blender_support import bpy

    from textalker_blender.blender import api
    from textalker_blender.core.pipeline import Pipeline

    attempts = _NetworkAttempts()

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            attempts.refuse("socket", args)

    monkeypatch.setattr(socket, "socket", NoSocket)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "socketpair"):
        monkeypatch.setattr(socket, name, attempts.refuse)
    Pipeline.clear_cache()  # loading the weights and the template is part of the run
    registered_scene()
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
        head = template_head()
        summary = api.generate(head, str(write_audio(tmp_path / "a.wav", 0.5)), steps=1)
        assert summary.n_frames == 15
    finally:
        unregister_addon()
    assert attempts == []


# --------------------------------------------------------------------------------------------
# Paths: nothing outside the chosen output folder


HOSTILE_NAMES = ["../../../../tmp/escape", "..\\..\\windows", "/etc/passwd", "name\x00with nul", "C:\\x", "~root"]


@needs_assets
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_object_names_cannot_move_output_out_of_the_output_folder(tmp_path, name):
    pytest.importorskip("bpy")
    from blender_support import bpy

    from textalker_blender.blender import api

    output = tmp_path / "output"
    registered_scene()
    try:
        (tmp_path / "blend").mkdir()
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "blend" / "scene.blend"))
        head = template_head()
        head.name = name
        speech = write_audio(tmp_path / "audio" / "a.wav", 0.3)
        listing = {p for p in tmp_path.rglob("*")}
        request = api.prepare(head, str(speech), steps=1, output_folder=str(output))
        folder = request.sequence_folder.resolve()
        assert folder.is_relative_to((output / "textalker").resolve())
        assert folder.parent.parent == (output / "textalker").resolve()  # <output>/textalker/<object>/<run>
        summary = api.apply(request, api.compute(request))
        assert summary.exr_files == 9
        new = {p for p in tmp_path.rglob("*")} - listing
        assert new and all(p.resolve().is_relative_to(output.resolve()) for p in new)
    finally:
        unregister_addon()


@needs_assets
def test_packed_sound_with_hostile_name_is_unpacked_inside_the_temp_folder(tmp_path):
    pytest.importorskip("bpy")
    import tempfile

    from textalker_blender.blender import api

    scene = registered_scene()
    try:
        speech = write_audio(tmp_path / "a.wav", 0.3)
        strip = scene.sequence_editor_create().strips.new_sound("../../evil", str(speech), 1, 1)
        strip.sound.name = "../../../../tmp/evil"
        strip.sound.pack()
        path = Path(api.strip_audio_path(strip)).resolve()
        packed_folder = (Path(tempfile.gettempdir()) / "textalker_packed_audio").resolve()
        assert path.parent == packed_folder and path.is_file()
        assert path.read_bytes() == speech.read_bytes()
    finally:
        unregister_addon()


@needs_assets
def test_remove_output_deletes_only_wrinkle_files_of_a_forged_record(tmp_path):
    """A .blend from elsewhere may carry a forged output record: Remove deletes only files named
    like the add-on's EXR frames, nothing else in the folder it names."""
    pytest.importorskip("bpy")
    from textalker_blender.blender import api, writers

    registered_scene()
    try:
        head = template_head()
        victim = tmp_path / "precious"
        victim.mkdir()
        (victim / "thesis.txt").write_text("years of work")
        (victim / "render_0001.exr").write_bytes(b"v/1\x01")
        head[writers.OBJECT_RECORD] = json.dumps({"folder": str(victim)})
        api.remove_output(head)
        assert sorted(p.name for p in victim.iterdir()) == ["render_0001.exr", "thesis.txt"]
    finally:
        unregister_addon()
