"""`Pipeline`: the only door from blender/ and tools/ to the model.

    pipe = Pipeline.load(weights=None, device="auto")   # cached per (weights, device)
    result = pipe.generate("speech.wav", speaking_style=0, wrinkle_style=0, fps=24, seed=0)
    result.offsets        # float32 (T, V, 3) metres, T = ceil(duration * fps)
    result.wrinkle_maps   # float16 (T, H, W, 3) albedo ratio, exactly 1.0 outside the face

Steps: load audio (16 kHz mono, loudness-normalised) -> audio features at MODEL_FPS -> sliding-
window DDIM sampling of the joint latents -> add style pivots -> VQ-decode all frames in batches ->
motion maps sampled at the vertex UVs, wrinkle log-ratio maps exponentiated -> resampled to `fps`.
A run is deterministic for a given seed and device (the noise comes from a seeded CPU
torch.Generator).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .audio import AudioSource, load_audio
from .config import MODEL_FPS, SAMPLE_RATE
from .errors import Cancelled, DeviceError, WeightsError
from .model import TexTalkerModel
from .resample import output_frame_count, resample_frames
from .style import StyleInfo
from .weights import load_weights

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_WEIGHTS = ASSETS_DIR / "textalker_bundled.safetensors"
MAX_AUDIO_SECONDS = 600.0  # offsets + maps of 10 min at 60 fps already take several GB
# Frames per VQ-decoder call. On the CPU small batches are faster per frame (the thin 128x128
# layers' activations stay in cache: 8 frames ~5.7 ms, 32 frames ~7.7-12.7 ms per frame and
# decoder, 1 thread, tools/bench.py); a GPU wants larger batches to fill its cores.
DECODE_BATCH = 8
GPU_DECODE_BATCH = 64

ProgressCallback = Callable[[float, str], None]

# Share of the progress bar per stage (they add up to 1).
_STAGES = {"audio": 0.03, "features": 0.05, "diffusion": 0.52, "decode": 0.35, "resample": 0.05}


@dataclass
class GenerationResult:
    fps: float
    offsets: np.ndarray  # float32 (T, N, 3) metres
    wrinkle_maps: np.ndarray  # float16 (T, H, W, 3) ratio, image row order
    n_frames: int
    duration_s: float
    speaking_style: StyleInfo | None = None
    wrinkle_style: StyleInfo | None = None
    seed: int = 0
    steps: int = 0
    device: str = "cpu"
    # Wall seconds per stage (audio, features, diffusion, vq_decode, uv_sampling, resample):
    # what tools/bench.py reports, measured here so the benchmark runs the real code path.
    timings: dict[str, float] = field(default_factory=dict)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available else CPU; 'cuda' without CUDA raises DeviceError."""
    name = str(device).strip().lower()
    if name in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda'.") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but no CUDA GPU is usable here (PyTorch reports none). "
                "Choose 'Auto' or 'CPU'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"CUDA device {resolved.index} does not exist; this machine has "
                f"{torch.cuda.device_count()}."
            )
        return resolved
    raise DeviceError(f"Device {device!r} is not supported; use 'auto', 'cpu' or 'cuda'.")


def layouts_of(template) -> dict:
    """{"motion": layout dict, "wrinkle": layout dict}: what weights record as `uv_layouts`."""
    return {"motion": template.motion_layout.to_dict(), "wrinkle": template.wrinkle_layout.to_dict()}


def check_layouts(recorded: dict | None, template) -> None:
    """WeightsError unless the weights' recorded map layouts are the template's (None: any)."""
    if recorded is None:
        return
    from .uv import MapLayout

    if "legacy_uv_region" in recorded:
        raise WeightsError(
            f"The weights were made for the old single-rectangle UV layout (UV region "
            f"{recorded['legacy_uv_region']}); the template head now uses map layouts: "
            "regenerate or retrain the weights for this template."
        )
    for name in ("motion", "wrinkle"):
        expected = template.layout(name)
        try:
            found = MapLayout.from_dict(recorded[name])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"The weights' {name} map layout is unreadable ({exc}).") from exc
        if not _same_layout(found, expected):
            raise WeightsError(
                f"The weights were trained on another {name} map layout ({found.fingerprint}, "
                f"{found!r}) than the template head's ({expected.fingerprint}, {expected!r}): "
                "rebuild the weights for this template."
            )


def _same_layout(a, b) -> bool:
    if a.names != b.names or not np.isclose(a.margin, b.margin, atol=1e-9):
        return False
    return bool(
        np.allclose(a.sources, b.sources, atol=1e-7)
        and np.allclose(a.scales, b.scales, rtol=1e-7)
        and np.allclose(a.destinations, b.destinations, atol=1e-7)
    )


class _Progress:
    """Maps per-stage fractions to one monotone overall fraction and checks cancellation."""

    def __init__(self, callback: ProgressCallback | None, cancel: threading.Event | None):
        self.callback = callback
        self.cancel = cancel
        self.done = 0.0

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("Generation cancelled.")

    def stage(self, name: str, fraction: float) -> None:
        self.check()
        if self.callback is not None:
            self.callback(min(1.0, self.done + _STAGES[name] * min(1.0, fraction)), name)

    def finish_stage(self, name: str) -> None:
        self.stage(name, 1.0)
        self.done += _STAGES[name]


class Pipeline:
    _cache: dict[tuple, Pipeline] = {}
    _cache_lock = threading.Lock()

    def __init__(
        self,
        model: TexTalkerModel,
        device: torch.device,
        template,
        weights_path: Path,
        weights_sha256: str,
    ):
        self.model = model.to(device).eval()
        self.model.motion_vq.use_channels_last()
        self.model.wrinkle_vq.use_channels_last()
        self.device = device
        self.template = template
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        self.config = model.config
        self.trained = bool(getattr(model, "trained", False))
        check_layouts(self.config.uv_layouts, template)
        self.motion_resolution = self.config.motion_vq.resolution
        self.wrinkle_resolution = self.config.wrinkle_vq.resolution
        rasterizer = template.uv_rasterizer(self.wrinkle_resolution, layout="wrinkle")
        face_values = rasterizer.rasterize(np.asarray(template.face_mask, np.float32)[:, None])
        # Wrinkles are only allowed on the face: elsewhere the ratio is exactly 1.
        self.wrinkle_face_mask = (face_values[..., 0] > 0.5) & rasterizer.mask
        self._samplers: dict = {}
        self._lock = threading.Lock()  # one generation at a time per pipeline
        # Pay one-off costs at load time, not in the user's first Generate: the template's
        # vertex sampler (topology-aware taps) and librosa's first mel (import + JIT).
        template.uv_sampler(self.motion_resolution)
        if self.config.audio_encoder == "bundled":
            self.model.audio_encoder.log_mel(np.zeros(SAMPLE_RATE // 10, np.float32))

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        weights: str | Path | None = None,
        device: str | torch.device = "auto",
        *,
        hubert_dir: str | Path | None = None,
        template=None,
        verify: bool = True,
    ) -> Pipeline:
        """Load weights once (cached per weights file, device and template)."""
        resolved_device = resolve_device(device)
        path = Path(weights).resolve() if weights is not None else DEFAULT_WEIGHTS
        key = (
            str(path),
            path.stat().st_mtime_ns if path.exists() else 0,
            str(resolved_device),
            str(hubert_dir),
            id(template),
            verify,
        )
        with cls._cache_lock:
            if key in cls._cache:
                return cls._cache[key]
        if not path.is_file():
            raise WeightsError(
                f"Model weights not found: {path}. Reinstall the add-on or run "
                "tools/make_untrained_weights.py."
            )
        weights_file = load_weights(path, verify=verify)
        model = TexTalkerModel.from_weights(weights_file, hubert_dir=hubert_dir)
        if template is None:
            from .template import load_template

            try:
                template = load_template()
            except FileNotFoundError as exc:
                raise WeightsError(str(exc)) from exc
        pipeline = cls(model, resolved_device, template, path, weights_file.sha256)
        with cls._cache_lock:
            cls._cache[key] = pipeline
        return pipeline

    @classmethod
    def clear_cache(cls) -> None:
        with cls._cache_lock:
            cls._cache.clear()

    # ------------------------------------------------------------------ info
    @property
    def styles(self) -> list[StyleInfo]:
        return self.model.pivots.infos

    @property
    def wrinkle_map_size(self) -> tuple[int, int]:
        return (self.wrinkle_resolution, self.wrinkle_resolution)

    def _sampler(self, vertex_uvs: np.ndarray | None):
        """(UVSampler of the motion maps, movable (N,) bool) for the template or another mesh.

        Only points on a template triangle that moves may move (`movable`): the template's
        corners of moving triangles, another mesh's vertices whose UV lies on such a triangle.
        """
        if vertex_uvs is None:
            return self.template.uv_sampler(self.motion_resolution), self.template.motion_vertices
        from .mesh_match import motion_coverage
        from .uv import UVSampler

        uvs = np.asarray(vertex_uvs, dtype=np.float32)
        if uvs.ndim != 2 or uvs.shape[1] != 2 or not np.all(np.isfinite(uvs)):
            from .errors import MeshError

            raise MeshError("vertex_uvs must be a finite (N, 2) array of UV coordinates.")
        key = uvs.tobytes()
        with self._lock:
            if key not in self._samplers:
                mask = self.template.uv_rasterizer(self.motion_resolution).mask
                sampler = UVSampler(uvs, self.template.motion_layout, self.motion_resolution, mask=mask)
                self._samplers = {key: (sampler, motion_coverage(self.template, uvs))}
            return self._samplers[key]

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        audio: AudioSource,
        speaking_style: int | str = 0,
        wrinkle_style: int | str = 0,
        fps: float = 30.0,
        seed: int = 0,
        steps: int | None = None,
        vertex_uvs: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 1.0 <= fps <= 1000.0):
            raise ValueError(f"fps must be between 1 and 1000, not {fps!r}")
        steps = int(self.config.sampling_steps if steps is None else steps)
        if not 1 <= steps <= self.config.diffusion_steps:
            raise ValueError(f"steps must be in 1..{self.config.diffusion_steps}, not {steps}")
        pivots = self.model.pivots
        try:
            speaking = pivots.index(speaking_style)
            wrinkle = pivots.index(wrinkle_style)
        except ValueError as exc:
            from .errors import TexTalkerError

            raise TexTalkerError(str(exc)) from exc
        sampler, movable = self._sampler(vertex_uvs)
        tracker = _Progress(progress, cancel)
        timings: dict[str, float] = {}
        with self._lock, torch.inference_mode():
            tracker.stage("audio", 0.0)
            mark = time.perf_counter()
            samples = load_audio(audio, SAMPLE_RATE, max_duration_s=MAX_AUDIO_SECONDS)
            duration = samples.size / SAMPLE_RATE
            mark = _lap(timings, "audio", mark)
            tracker.finish_stage("audio")

            n_model = output_frame_count(duration, MODEL_FPS)
            features = self.model.audio_encoder.encode(samples, n_model).to(self.device)
            mark = _lap(timings, "features", mark)
            tracker.finish_stage("features")

            generator = torch.Generator().manual_seed(int(seed))
            z_motion, z_wrinkle = self.model.generate_latents(
                features,
                speaking,
                wrinkle,
                steps,
                generator,
                progress=lambda f: tracker.stage("diffusion", f),
                cancel=cancel,
            )
            mark = _lap(timings, "diffusion", mark)
            tracker.finish_stage("diffusion")

            offsets, ratio = self._decode(z_motion, z_wrinkle, sampler, movable, tracker, timings)
            mark = time.perf_counter()
            tracker.finish_stage("decode")

            n_out = output_frame_count(duration, fps)
            if math.isclose(fps, MODEL_FPS, rel_tol=0, abs_tol=1e-9) and n_out <= len(offsets):
                # Already at the scene rate: the decoded arrays are ours, so no copy (a copy
                # doubled the peak memory of long clips: 4.6 GB instead of 2.5 GB for 10 min).
                offsets, ratio = offsets[:n_out], ratio[:n_out]
            else:
                offsets = resample_frames(offsets, MODEL_FPS, fps, n_out)
                ratio = resample_frames(ratio, MODEL_FPS, fps, n_out)
            _lap(timings, "resample", mark)
            tracker.finish_stage("resample")
        return GenerationResult(
            fps=float(fps),
            offsets=offsets.astype(np.float32, copy=False),
            wrinkle_maps=ratio,
            n_frames=n_out,
            duration_s=duration,
            speaking_style=self.styles[speaking],
            wrinkle_style=self.styles[wrinkle],
            seed=int(seed),
            steps=steps,
            device=str(self.device),
            timings=timings,
        )

    def _decode(
        self,
        z_motion: torch.Tensor,
        z_wrinkle: torch.Tensor,
        sampler,
        movable: np.ndarray,
        tracker: _Progress,
        timings: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """All frames' latents -> per-point offsets (T, N, 3) and ratio maps (T, H, W, 3).

        Points that are not `movable` get exactly zero offset, whatever the maps hold there.

        Decoded in batches so memory stays bounded; the ratio is exp(log ratio), set to exactly
        1.0 outside the face mask, stored as float16 (what the EXR writer stores anyway).
        """
        n_frames = z_motion.shape[0]
        offsets = np.empty((n_frames, sampler.n_points, 3), np.float32)
        ratio = np.empty(
            (n_frames, self.wrinkle_resolution, self.wrinkle_resolution, 3), np.float16
        )
        outside_face = ~self.wrinkle_face_mask
        timings = {} if timings is None else timings
        timings.setdefault("vq_decode", 0.0)
        timings.setdefault("uv_sampling", 0.0)
        batch = DECODE_BATCH if self.device.type == "cpu" else GPU_DECODE_BATCH
        for start in range(0, n_frames, batch):
            stop = min(n_frames, start + batch)
            mark = time.perf_counter()
            motion_maps = self.model.motion_vq.decode(z_motion[start:stop]).float().cpu().numpy()
            mark = _lap(timings, "vq_decode", mark)
            batch_offsets = sampler.sample(motion_maps)
            batch_offsets[:, ~movable] = 0.0
            offsets[start:stop] = batch_offsets
            mark = _lap(timings, "uv_sampling", mark)
            log_ratio = self.model.wrinkle_vq.decode(z_wrinkle[start:stop]).float().cpu().numpy()
            batch_ratio = np.exp(log_ratio)
            batch_ratio[:, outside_face] = 1.0
            ratio[start:stop] = batch_ratio
            _lap(timings, "vq_decode", mark)
            tracker.stage("decode", stop / n_frames)
        return offsets, ratio


def _lap(timings: dict[str, float], stage: str, since: float) -> float:
    """Adds the seconds since `since` to timings[stage]; returns now (the next lap's start)."""
    now = time.perf_counter()
    timings[stage] = timings.get(stage, 0.0) + (now - since)
    return now
