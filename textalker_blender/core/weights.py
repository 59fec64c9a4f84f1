"""Weights files: safetensors only (never pickle), checked against a recorded SHA-256.

Metadata (string -> string): `config` (ModelConfig JSON), `audio_encoder` (`bundled` | `hubert`),
`style_names` and `style_keys` (JSON lists), `format_version`, `trained` (`true`/`false`),
`dataset`. The SHA-256 of each shipped file is recorded in `manifest.json` next to it
(`{"files": {"name.safetensors": {"sha256": ..., "bytes": ...}}}`); `load_weights` refuses a file
whose hash differs from the manifest, or that the manifest does not list, unless `verify=False`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WeightsError

FORMAT_VERSION = "1"
MANIFEST_NAME = "manifest.json"
REQUIRED_METADATA = ("config", "audio_encoder", "style_names", "format_version", "trained")


@dataclass
class WeightsFile:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    path: Path
    sha256: str


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    update_manifest: bool = True,
) -> str:
    """Write `tensors` + `metadata` as safetensors; record its SHA-256 in the folder's manifest."""
    from safetensors.torch import save

    path = Path(path)
    metadata = {"format_version": FORMAT_VERSION, **metadata}
    bad = {k: type(v).__name__ for k, v in metadata.items() if not isinstance(v, str)}
    if bad:
        raise TypeError(f"safetensors metadata values must be strings: {bad}")
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    data = canonical_safetensors_bytes(save(contiguous, metadata=metadata))
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)  # never leave a half-written weights file behind
    digest = sha256_file(path)
    if update_manifest:
        record_in_manifest(path, digest)
    return digest


def canonical_safetensors_bytes(data: bytes) -> bytes:
    """Same file with the header's metadata keys sorted, so equal content gives equal bytes.

    The safetensors writer keeps metadata in a hash map whose order changes from run to run;
    tensor offsets are relative to the end of the header, so rewriting the header is safe.
    """
    header_length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data buffer 8-byte aligned
    return struct.pack("<Q", len(text)) + text + data[8 + header_length :]


def record_in_manifest(path: str | Path, digest: str | None = None) -> Path:
    """Add or update `path`'s entry in the manifest.json of its folder."""
    path = Path(path)
    manifest_path = path.parent / MANIFEST_NAME
    manifest = read_manifest(manifest_path) if manifest_path.exists() else {"files": {}}
    manifest.setdefault("files", {})[path.name] = {
        "sha256": digest or sha256_file(path),
        "bytes": path.stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest_path


def read_manifest(manifest_path: str | Path) -> dict:
    try:
        manifest = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"Cannot read the weights manifest {manifest_path}: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise WeightsError(f"The weights manifest {manifest_path} is malformed.")
    return manifest


def expected_sha256(path: Path, manifest_path: Path | None = None) -> str:
    manifest_path = manifest_path or path.parent / MANIFEST_NAME
    if not manifest_path.exists():
        raise WeightsError(
            f"No {MANIFEST_NAME} next to {path.name}: its SHA-256 cannot be checked. "
            "Record it with core.weights.record_in_manifest() after training."
        )
    entry = read_manifest(manifest_path)["files"].get(path.name)
    if not entry or "sha256" not in entry:
        raise WeightsError(f"{path.name} is not listed in {manifest_path}.")
    return str(entry["sha256"]).lower()


def load_weights(
    path: str | Path,
    verify: bool = True,
    manifest_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> WeightsFile:
    """Read a safetensors weights file after checking its SHA-256 against the manifest."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file not found: {path}")
    digest = sha256_file(path)
    if verify:
        expected = expected_sha256(path, Path(manifest_path) if manifest_path else None)
        if digest != expected:
            raise WeightsError(
                f"{path.name} does not match its recorded SHA-256 (file changed or corrupted). "
                "Reinstall the add-on or re-download the weights."
            )
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path.name} is not a valid safetensors file: {exc}") from exc
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise WeightsError(
            f"{path.name} lacks metadata {missing}; it was not written by TexTalker."
        )
    if metadata["format_version"] != FORMAT_VERSION:
        raise WeightsError(
            f"{path.name} has format version {metadata['format_version']}; this add-on reads "
            f"version {FORMAT_VERSION}."
        )
    return WeightsFile(tensors, metadata, path, digest)
