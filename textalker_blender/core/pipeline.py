"""`Pipeline`: the only door from blender/ and tools/ to the model.

    pipe = Pipeline.load(weights=None, device="auto")   # cached per (weights, device)
    result = pipe.generate("speech.wav", speaking_style=0, wrinkle_style=0, fps=24, seed=0)
    result.offsets        # float32 (T, V, 3) metres, T = ceil(duration * fps)
    result.wrinkle_maps   # float16 (T, H, W, 3) albedo ratio, exactly 1.0 outside the face
    result.fold_maps      # float16 (T, H, W) crease fold activation (None: weights without it)

Long clips stream (bounded memory, issue #7/#8): `generate_chunks` takes the same arguments and
returns a `GenerationStream` of `GenerationChunk`s (frames start..stop at `fps`) decoded only as
they are consumed; `generate` is that stream gathered into two arrays.

    stream = pipe.generate_chunks("long.wav", fps=24, chunk_frames=256)
    for chunk in stream:            # chunk.offsets (n, V, 3) float32, chunk.wrinkle_maps (n, H, W, 3)
        write(chunk.start, chunk.offsets, chunk.wrinkle_maps)

Steps: load audio (16 kHz mono, loudness-normalised) -> audio features at MODEL_FPS -> sliding-
window DDIM sampling of the joint latents -> add style pivots (all of it up front: the latents
are small) -> then per chunk: VQ-decode the frames in batches -> motion maps sampled at the
vertex UVs, wrinkle log-ratio maps exponentiated -> resampled to `fps`. A run is deterministic
for a given seed and device (the noise comes from a seeded CPU torch.Generator), and the same
whatever the chunk size.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import arguments
from .audio import AudioSource, load_audio_with_report
from .config import MODEL_FPS, SAMPLE_RATE
from .creases import DETAIL_RESOLUTION, detail_map_mm, most_lined_style
from .errors import Cancelled, DeviceError, WeightsError
from .lip_seal import LipSeal
from .model import TexTalkerModel
from .options import GenerationOptions
from .resample import output_frame_count, source_positions
from .style import StyleInfo
from .weights import load_weights
from .wrinkle_channels import fold_from_channels, ratio_from_channels

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_WEIGHTS = ASSETS_DIR / "textalker_bundled.safetensors"
# Longest clip accepted: an hour of one shape key per frame would not fit in Blender's memory
# (10 min at 30 fps on the template head is already 0.95 GB of keys).
MAX_AUDIO_SECONDS = 600.0
# Frames per VQ-decoder call. On the CPU small batches are faster per frame (the thin 128x128
# layers' activations stay in cache: 8 frames ~5.7 ms, 32 frames ~7.7-12.7 ms per frame and
# decoder, 1 thread, tools/bench.py); a GPU wants larger batches to fill its cores.
DECODE_BATCH = 8
GPU_DECODE_BATCH = 64
# Frames (at the scene rate) per chunk of `generate_chunks`: 256 frames of the template head are
# ~14 MB of offsets and ~25 MB of 128x128 maps, so a streamed run's working set stays a few tens
# of MB whatever the clip's length; large enough that per-chunk costs (one EXR writer scene, one
# progress report) stay negligible.
CHUNK_FRAMES = 256

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
    # False for the ablation bundles that make no motion (offsets exactly zero) or no texture
    # (wrinkle maps exactly 1.0); see ModelConfig.modalities.
    has_motion: bool = True
    has_texture: bool = True
    # What the audio conditioning found that the user should know (core/audio.py: silent, very
    # quiet, clipped, not speech); the run went ahead.
    warnings: list[str] = field(default_factory=list)
    # float16 (T, H, W) fold activation of the wrinkle style's crease detail, image row order,
    # exactly 0 outside the face; None for weights whose maps have none (core/wrinkle_channels.py).
    fold_maps: np.ndarray | None = None


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
        self.model.use_channels_last()
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
        self._uv_samplers: dict = {}
        self._lock = threading.Lock()  # one generation at a time per pipeline
        self._crease_detail: tuple[tuple[int, int], np.ndarray] | None = None
        self._lip_seal: LipSeal | None = None
        # Pay one-off costs at load time, not in the user's first Generate: the template's
        # vertex sampler (topology-aware taps) and librosa's first mel (import + JIT).
        template.uv_sampler(self.motion_resolution)
        self.model.audio_encoder.warm_up()

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
    def generates_motion(self) -> bool:
        """False for the wrinkle-only ablation (offsets are exactly zero)."""
        return self.config.generates_motion

    @property
    def generates_texture(self) -> bool:
        """False for the motion-only ablation (wrinkle maps are exactly 1.0)."""
        return self.config.generates_texture

    @property
    def default_wrinkle_style(self) -> int:
        """The style row used when none is asked for: the most lined one (core/creases.py)."""
        return most_lined_style(self.model.style_creases if self.generates_folds else None)

    def crease_detail_mm(self, wrinkle_style: int | str | None, resolution: int = DETAIL_RESOLUTION) -> np.ndarray | None:
        """(resolution, resolution) float32 full-fold crease height (mm, <= 0) of a wrinkle style
        on the template, in the wrinkle layout, image row order: what a frame's fold map
        scales. None when the weights carry no crease curves. The last one is cached (a 2048 px
        map takes about two seconds)."""
        creases = self.model.style_creases
        if creases is None or not self.generates_folds:
            return None
        index = self.default_wrinkle_style if wrinkle_style is None else self.model.pivots.index(wrinkle_style)
        key = (index, int(resolution))
        cached = self._crease_detail
        if cached is None or cached[0] != key:
            cached = (key, detail_map_mm(creases[index], self.template, resolution=int(resolution)))
            self._crease_detail = cached
        return cached[1]

    @property
    def generates_folds(self) -> bool:
        """True when the wrinkle maps carry a fold activation for crease detail (weights trained
        on "fold_shade_flush" channels, core/wrinkle_channels.py)."""
        return self.generates_texture and fold_from_channels(
            np.zeros((1, 3), np.float32), self.config.wrinkle_encoding) is not None

    @property
    def wrinkle_map_size(self) -> tuple[int, int]:
        return (self.wrinkle_resolution, self.wrinkle_resolution)

    def _uv_sampler(self, vertex_uvs: np.ndarray | None):
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
            if key not in self._uv_samplers:
                mask = self.template.uv_rasterizer(self.motion_resolution).mask
                sampler = UVSampler(uvs, self.template.motion_layout, self.motion_resolution, mask=mask)
                self._uv_samplers = {key: (sampler, motion_coverage(self.template, uvs))}
            return self._uv_samplers[key]

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        audio: AudioSource,
        options: GenerationOptions | None = None,
        **stream_arguments,
    ) -> GenerationResult:
        """The whole clip at once: `generate_chunks` gathered into two arrays (so both APIs give
        the same numbers; the arrays are the only per-frame memory). Takes `generate_chunks`'s
        arguments: `options`, or its fields as keywords (`speaking_style=1, fps=24, ...`; see
        `GenerationOptions`), and vertex_uvs, progress, cancel."""
        stream = self.generate_chunks(audio, options, **stream_arguments)
        offsets = np.empty((stream.n_frames, stream.n_points, 3), np.float32)
        ratio = np.empty((stream.n_frames, *stream.map_shape), np.float16)
        folds = np.empty((stream.n_frames, *stream.map_shape[:2]), np.float16) if stream.has_folds else None
        with stream:
            for chunk in stream:
                offsets[chunk.start : chunk.stop] = chunk.offsets
                ratio[chunk.start : chunk.stop] = chunk.wrinkle_maps
                if folds is not None:
                    folds[chunk.start : chunk.stop] = chunk.fold_maps
        return stream.result(offsets, ratio, folds)

    def generate_chunks(
        self,
        audio: AudioSource,
        options: GenerationOptions | None = None,
        *,
        vertex_uvs: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        chunk_frames: int | None = None,
        **option_values,
    ) -> GenerationStream:
        """Streamed generation for long clips: same arguments and numbers as `generate`.

        Loads the audio, computes the features and samples every window's latents now (they are
        small: 2 KB per frame), then returns a `GenerationStream` whose iteration decodes the
        frames chunk by chunk (`chunk_frames` frames at `fps` each, default CHUNK_FRAMES) as the
        consumer asks for them. Memory then stays constant in the clip's length as long as the
        consumer writes each chunk away (shape keys, EXR files) instead of keeping it.

        `options.blink_rate`: blinks per minute for a blink-conditioned model (core/blinks.py);
        None uses the speaking style's measured rate, 0 gives no blinks. Ignored by other models.
        `options.brow_rate`: brow emphases per minute of speech for a brow-conditioned model
        (core/brows.py), the same way.
        `options.lip_seal_mm`: decoded lips closer than this (mm) times the closure detector's
        probability of a closure at that frame are pressed shut (core/lip_seal.py,
        core/closure.py); 0, or weights without a detector, show the decoded lips as they are.
        """
        # Checked once where the options were made (core/options.py); here only what needs the
        # model: its number of diffusion steps and its style table.
        if option_values.get("steps") is not None:  # keyword callers: name the model's range in the message
            arguments.check_steps(option_values["steps"], self.config.diffusion_steps, self.config.sampling_steps)
        options = GenerationOptions.from_values(options, **option_values)
        fps, seed, blink_rate = options.fps, options.seed, options.blink_rate
        chunk_frames = CHUNK_FRAMES if chunk_frames is None else chunk_frames
        if int(chunk_frames) < 1:
            raise ValueError(f"chunk_frames must be at least 1, not {chunk_frames!r}")
        steps = arguments.check_steps_within(options.steps, self.config.diffusion_steps, self.config.sampling_steps)
        steps = self.config.sampling_steps if steps is None else steps
        pivots = self.model.pivots
        try:
            speaking = pivots.index(options.speaking_style)
            wrinkle = self.default_wrinkle_style if options.wrinkle_style is None else pivots.index(options.wrinkle_style)
        except ValueError as exc:
            from .errors import TexTalkerError

            raise TexTalkerError(str(exc)) from exc
        uv_sampler, movable = self._uv_sampler(vertex_uvs)
        tracker = _Progress(progress, cancel)
        timings: dict[str, float] = {}
        with self._lock, torch.inference_mode():
            tracker.stage("audio", 0.0)
            mark = time.perf_counter()
            samples, audio_report = load_audio_with_report(audio, SAMPLE_RATE, max_duration_s=MAX_AUDIO_SECONDS)
            duration = samples.size / SAMPLE_RATE
            # Blink timing depends on the seed *and* the audio: a batch of clips generated with
            # one seed does not blink at the same moments in every clip.
            audio_key = int.from_bytes(hashlib.blake2b(samples.tobytes(), digest_size=8).digest(), "little")
            mark = _lap(timings, "audio", mark)
            tracker.finish_stage("audio")

            n_model = output_frame_count(duration, MODEL_FPS)
            features = self.model.audio_encoder.encode(samples, n_model).to(self.device)
            brow = self.model.brow_track(samples, SAMPLE_RATE, n_model, MODEL_FPS, speaking, int(seed),
                                         options.brow_rate, salt=audio_key)
            lip_seal_mm = self.lip_seal_distances(samples, n_model, options.lip_seal_mm)
            del samples
            mark = _lap(timings, "features", mark)
            tracker.finish_stage("features")

            generator = torch.Generator().manual_seed(int(seed))
            blink = self.model.blink_track(n_model, MODEL_FPS, speaking, int(seed), blink_rate, salt=audio_key)
            z_motion, z_wrinkle = self.model.generate_latents(
                features,
                speaking,
                wrinkle,
                steps,
                generator,
                progress=lambda f: tracker.stage("diffusion", f),
                cancel=cancel,
                blink=blink,
                brow=brow,
            )
            del features
            _lap(timings, "diffusion", mark)
            tracker.finish_stage("diffusion")
        return GenerationStream(
            pipeline=self,
            decoder=_ModelFrameDecoder(self, z_motion, z_wrinkle, uv_sampler, movable, timings, wrinkle,
                                       lip_seal_mm=lip_seal_mm),
            tracker=tracker,
            fps=float(fps),
            n_frames=output_frame_count(duration, fps),
            duration_s=duration,
            chunk_frames=int(chunk_frames),
            speaking_style=self.styles[speaking],
            wrinkle_style=self.styles[wrinkle],
            seed=int(seed),
            steps=steps,
            warnings=list(audio_report.warnings),
        )

    def _decode_batch(
        self,
        z_motion: torch.Tensor | None,
        z_wrinkle: torch.Tensor | None,
        uv_sampler,
        movable: np.ndarray,
        timings: dict[str, float],
        wrinkle_style: int | None = None,
        lip_seal_mm: float | np.ndarray = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latents of a few frames -> per-point offsets (B, N, 3) float32 and wrinkle maps
        (B, H, W, 4) float16: RGB albedo ratio and, in A, the fold activation (0 for weights
        whose channels have none). `wrinkle_style` (an index) adds that style's wrinkle bias
        (`TexTalkerModel.decode_maps`). `lip_seal_mm` (one distance, or one per frame) presses the
        lips shut where the decoded midline gap is below it (core/lip_seal.py); 0 leaves the
        decoded motion as it is.

        Points that are not `movable` get exactly zero offset, whatever the maps hold there. The
        ratio is exactly 1.0 and the fold 0 outside the face mask; float16 is what the EXR writer
        stores anyway.
        """
        n_frames = (z_motion if z_motion is not None else z_wrinkle).shape[0]
        with torch.inference_mode():
            return self._decode_batch_inner(n_frames, z_motion, z_wrinkle, uv_sampler, movable, timings,
                                            wrinkle_style, lip_seal_mm)

    @property
    def lip_seal(self) -> LipSeal:
        """The template's lip seal at the motion maps' resolution (built on first use)."""
        if self._lip_seal is None:
            self._lip_seal = LipSeal(self.template, self.motion_resolution)
        return self._lip_seal

    def lip_seal_distances(self, samples: np.ndarray, n_frames: int, lip_seal_mm: float) -> np.ndarray | float:
        """The seal distance (mm) of each model frame: `lip_seal_mm` times the closure detector's
        probability that the lips are shut there (core/closure.py). 0 when the seal is off, and
        for weights without a detector: the default distance is meant for sure closures, and
        pressed on every frame it would shut open vowels."""
        if not lip_seal_mm or self.model.closure is None or not self.generates_motion:
            return 0.0
        return float(lip_seal_mm) * self.model.closure.probabilities(samples, n_frames)

    def _decode_batch_inner(self, n_frames, z_motion, z_wrinkle, uv_sampler, movable, timings, wrinkle_style,
                            lip_seal_mm: float | np.ndarray = 0.0):
        mark = time.perf_counter()
        motion_maps, channels = self.model.decode_maps(z_motion, z_wrinkle, wrinkle_style)
        mark = _lap(timings, "vq_decode", mark)
        if motion_maps is None:  # wrinkle-only ablation: the face stays neutral
            offsets = np.zeros((n_frames, uv_sampler.n_points, 3), np.float32)
        else:
            if np.any(np.asarray(lip_seal_mm) > 0):
                motion_maps = self.lip_seal.apply(motion_maps.float(), lip_seal_mm)
            offsets = uv_sampler.sample(motion_maps.float().cpu().numpy()).astype(np.float32, copy=False)
            offsets[:, ~movable] = 0.0
        mark = _lap(timings, "uv_sampling", mark)
        shape = (n_frames, self.wrinkle_resolution, self.wrinkle_resolution, 4)
        maps = np.zeros(shape, np.float32)
        maps[..., :3] = 1.0
        if channels is not None:  # None: motion-only ablation, the texture stays neutral
            channels = channels.float().cpu().numpy()
            face = self.wrinkle_face_mask
            maps[:, face, :3] = ratio_from_channels(channels[:, face], self.config.wrinkle_encoding)
            fold = fold_from_channels(channels[:, face], self.config.wrinkle_encoding)
            if fold is not None:
                maps[:, face, 3] = fold
        _lap(timings, "vq_decode", mark)
        return offsets, maps.astype(np.float16)


# ---------------------------------------------------------------------------- streaming
@dataclass
class GenerationChunk:
    """Frames `start` .. `stop` - 1 (at the stream's fps) of a streamed generation."""

    start: int
    offsets: np.ndarray  # float32 (n, N, 3) metres
    wrinkle_maps: np.ndarray  # float16 (n, H, W, 3) ratio, image row order
    fold_maps: np.ndarray | None = None  # float16 (n, H, W) fold activation, or None (see GenerationResult)

    @property
    def stop(self) -> int:
        return self.start + len(self.offsets)


class _ModelFrameDecoder:
    """Decodes model-rate frames on demand and forgets those no longer needed.

    Frames are always decoded in the same batches as an all-at-once decode would use (multiples
    of the batch size from frame 0), whatever the chunk size, so streamed and whole-clip results
    are the same numbers. It holds at most one chunk plus one batch of decoded frames.
    """

    def __init__(self, pipeline: Pipeline, z_motion, z_wrinkle, uv_sampler, movable, timings,
                 wrinkle_style: int | None = None, lip_seal_mm: float | np.ndarray = 0.0):
        self.pipeline = pipeline
        self.wrinkle_style = wrinkle_style  # index: its wrinkle bias is added at decode
        self.lip_seal_mm = lip_seal_mm  # one distance (mm) or one per model frame
        self.z_motion = z_motion
        self.z_wrinkle = z_wrinkle
        self.uv_sampler = uv_sampler
        self.movable = np.asarray(movable, dtype=bool)
        self.timings = timings
        self.n_frames = int((z_motion if z_motion is not None else z_wrinkle).shape[0])
        self.batch = DECODE_BATCH if pipeline.device.type == "cpu" else GPU_DECODE_BATCH
        resolution = pipeline.wrinkle_resolution
        self.first = 0  # model frame held at index 0 of the buffers
        self.offsets = np.empty((0, uv_sampler.n_points, 3), np.float32)
        self.ratio = np.empty((0, resolution, resolution, 4), np.float16)  # RGB ratio + fold

    @property
    def decoded(self) -> int:
        return self.first + len(self.offsets)

    def frames(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, ratio) of model frames lo .. hi - 1; frames before `lo` are dropped for good."""
        if lo > self.first:  # the consumer moves forward only: drop what is behind it
            keep = max(0, lo - self.first)
            self.offsets, self.ratio = self.offsets[keep:], self.ratio[keep:]
            self.first += keep
        new_offsets, new_ratio = [self.offsets], [self.ratio]
        decoded = self.decoded
        while decoded < hi:
            stop = min(self.n_frames, decoded - decoded % self.batch + self.batch)
            z_f = None if self.z_motion is None else self.z_motion[decoded:stop]
            z_w = None if self.z_wrinkle is None else self.z_wrinkle[decoded:stop]
            seal = self.lip_seal_mm if np.ndim(self.lip_seal_mm) == 0 else self.lip_seal_mm[decoded:stop]
            offsets, ratio = self.pipeline._decode_batch(z_f, z_w, self.uv_sampler, self.movable, self.timings,
                                                         self.wrinkle_style, seal)
            new_offsets.append(offsets)
            new_ratio.append(ratio)
            decoded = stop
        if len(new_offsets) > 1:
            self.offsets = np.concatenate(new_offsets)
            self.ratio = np.concatenate(new_ratio)
        return self.offsets[lo - self.first : hi - self.first], self.ratio[lo - self.first : hi - self.first]


class GenerationStream:
    """The frames of one generation, decoded chunk by chunk while it is iterated.

    Made by `Pipeline.generate_chunks` once the latents are sampled, so the clip's length and
    styles are known before the first chunk: `n_frames`, `fps`, `duration_s`, `n_points` (N),
    `map_shape` (H, W, 3), `movable` ((N,) bool: the points whose offsets may be non-zero; all
    others are exactly zero in every chunk). Iterating yields `GenerationChunk`s in order;
    `close()` (or leaving a `with` block) drops the rest. Cancelling raises `Cancelled` at the
    next chunk. One stream is iterated by one thread at a time; the Pipeline's lock is held
    while a chunk decodes, so streams and `generate` calls of other threads take turns.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        decoder: _ModelFrameDecoder,
        tracker: _Progress,
        fps: float,
        n_frames: int,
        duration_s: float,
        chunk_frames: int,
        speaking_style: StyleInfo,
        wrinkle_style: StyleInfo,
        seed: int,
        steps: int,
        warnings: list[str] | None = None,
    ):
        self.pipeline = pipeline
        self.warnings = list(warnings or [])
        self.fps = fps
        self.n_frames = n_frames
        self.duration_s = duration_s
        self.chunk_frames = chunk_frames
        self.speaking_style = speaking_style
        self.wrinkle_style = wrinkle_style
        self.seed = seed
        self.steps = steps
        self.device = str(pipeline.device)
        self.timings = decoder.timings
        self.has_motion = pipeline.generates_motion
        self.has_texture = pipeline.generates_texture
        self.n_points = decoder.uv_sampler.n_points
        self.map_shape = (pipeline.wrinkle_resolution, pipeline.wrinkle_resolution, 3)
        self.has_folds = pipeline.generates_folds
        self.movable = decoder.movable.copy() if self.has_motion else np.zeros(self.n_points, bool)
        self._decoder = decoder
        self._tracker = tracker
        self._chunks = self._generate()

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> GenerationChunk:
        return next(self._chunks)

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stops the stream: the latents and decoded frames are released."""
        self._chunks.close()
        self._decoder = None

    def result(self, offsets: np.ndarray, wrinkle_maps: np.ndarray,
               fold_maps: np.ndarray | None = None) -> GenerationResult:
        """A `GenerationResult` with this stream's information and the given arrays."""
        return GenerationResult(
            fps=self.fps,
            offsets=offsets,
            wrinkle_maps=wrinkle_maps,
            fold_maps=fold_maps,
            n_frames=self.n_frames,
            duration_s=self.duration_s,
            speaking_style=self.speaking_style,
            wrinkle_style=self.wrinkle_style,
            seed=self.seed,
            steps=self.steps,
            device=self.device,
            timings=self.timings,
            has_motion=self.has_motion,
            has_texture=self.has_texture,
            warnings=list(self.warnings),
        )

    def _generate(self):
        decoder, tracker, timings = self._decoder, self._tracker, self.timings
        n_model, n_out = decoder.n_frames, self.n_frames
        # The same resampling as core.resample.resample_frames (linear in time between the two
        # nearest model frames), chunk by chunk; at the model rate the frames pass through.
        same_rate = math.isclose(self.fps, MODEL_FPS, rel_tol=0, abs_tol=1e-9) and n_out <= n_model
        if same_rate:
            lower = upper = np.arange(n_out)
            weight = None
        else:
            position = source_positions(n_out, MODEL_FPS, self.fps, n_model)
            lower = np.floor(position).astype(np.int64)
            upper = np.minimum(lower + 1, n_model - 1)
            weight = (position - lower).astype(np.float32)
        for start in range(0, n_out, self.chunk_frames):
            stop = min(n_out, start + self.chunk_frames)
            tracker.check()
            first, last = int(lower[start]), int(upper[stop - 1])
            with self.pipeline._lock:
                offsets, ratio = decoder.frames(first, last + 1)
            mark = time.perf_counter()
            if same_rate:
                offsets, maps = offsets.copy(), ratio.copy()
            else:
                w = weight[start:stop]
                offsets = _interpolate(offsets, lower[start:stop] - first, upper[start:stop] - first, w)
                maps = _interpolate(ratio, lower[start:stop] - first, upper[start:stop] - first, w)
            chunk = GenerationChunk(start, offsets, np.ascontiguousarray(maps[..., :3]),
                                    np.ascontiguousarray(maps[..., 3]) if self.has_folds else None)
            _lap(timings, "resample", mark)
            tracker.stage("decode", stop / n_out)
            yield chunk
        tracker.finish_stage("decode")
        tracker.finish_stage("resample")


def _interpolate(frames: np.ndarray, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """frames[lower] + (frames[upper] - frames[lower]) * weight per output frame, computed in
    float32 and stored in the frames' dtype (exactly what `resample_frames` does)."""
    w = weight.reshape((-1,) + (1,) * (frames.ndim - 1))
    a = frames[lower].astype(np.float32)
    b = frames[upper].astype(np.float32)
    return (a + (b - a) * w).astype(frames.dtype)


def _lap(timings: dict[str, float], stage: str, since: float) -> float:
    """Adds the seconds since `since` to timings[stage]; returns now (the next lap's start)."""
    now = time.perf_counter()
    timings[stage] = timings.get(stage, 0.0) + (now - since)
    return now
