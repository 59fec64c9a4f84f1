"""Model constants and the `ModelConfig` dataclass with its two presets.

Presets
-------
`paper` follows the TexTalker paper and its official code: 512x512 motion and wrinkle maps,
VQGAN encoders with channel multipliers (1, 2, 2, 4, 4, 8) down to a 16x16x16 latent per map and
1024 codes per codebook, an 8-layer, width-1024, 4-head transformer decoder denoiser, HuBERT audio
features (768 wide), 500 DDPM steps.

`bundled` is sized to train on 2 CPU cores in a few hours on ~100k frames and to run 10 s of audio
in a few seconds on 2 CPU cores:
- motion maps 128x128x3 -> latent 8x8x4 = 256 numbers, codebook 256 codes of dimension 4;
- wrinkle maps 128x128x3 -> latent 8x8x4 = 256 numbers, codebook 512 codes of dimension 4;
  so one frame's joint latent X0 = [z_f, z_w] has 512 numbers. Motion maps are 128 and not 64
  because docs/UV.md measures the motion atlas (the face's UV islands packed at 2.2x their hm08
  size) at 128x128 with a 0.12 mm mean / 0.9 mm p99 / 6.7 mm max round trip on random unit mixes,
  at 64x64 with about twice that (0.23 / 1.6 / 7.2 mm); wrinkle texels are ~2.5 mm at 128;
- VQ encoders/decoders: base width 8, multipliers (1, 2, 4, 8, 8) (widths 8, 16, 32, 64, 64 from
  full to latent resolution), i.e. four 2x down-samplings, one residual block per level; the
  full-resolution levels are kept thin because decoding every frame's 128x128 wrinkle map is the
  dominant inference cost on a CPU (measured: base width 16 decodes 300 wrinkle maps in 11 CPU-s,
  base width 8 in 3.5 CPU-s with channels-last tensors);
- audio: librosa log-mel (80 mels, 16 kHz, 25 ms window, 10 ms hop = 100 frames/s) with a learned
  front end of 4 dilated 1-D convolutions (kernel 5, dilations 1, 2, 4, 8: receptive field 0.61 s)
  to width 256, interpolated linearly to MODEL_FPS;
- denoiser: width 256, 4 layers, 4 heads, feed-forward 512; 500 DDPM steps (cosine betas);
  DDIM with 6 steps at inference by default (the shipped weights carry 2: tools/configs/bundled.json
  overrides it after the sampler sweep of tools/evaluate.py).
Both presets use sliding windows of Tw=90 frames with a Tp=10 frame prefix.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .wrinkle_channels import CURRENT_ENCODING as CURRENT_WRINKLE_ENCODING
from .wrinkle_channels import LEGACY_ENCODING as LEGACY_WRINKLE_ENCODING
from .wrinkle_channels import check_encoding

MODEL_FPS = 30
SAMPLE_RATE = 16000

STYLE_MODES = ("pivot", "onehot")
AUDIO_ENCODERS = ("bundled", "hubert")
SELF_ATTENTION_MODES = ("full", "causal", "none")
BETA_SCHEDULES = ("cosine", "linear")
# Which latent streams the denoiser models (the paper's ablations "w/o wrinkle" and "w/o motion").
MODALITIES = ("motion+wrinkle", "motion", "wrinkle")
# Ablation fields: left out of `to_dict()` while at their default, so configs and weights files
# of the full model serialise exactly as before these fields existed.
_ABLATION_DEFAULTS: dict[str, Any] = {"modalities": "motion+wrinkle", "joint_codebook_vq": None}
# Fields added after weights were shipped: left out of the JSON at their default, so the
# metadata of earlier weights (and their SHA-256) stays what it was.
# Fields left out of a config's JSON at these values, so the headers of weights saved before the
# field existed stay the same (from_dict restores them; the encoding at its legacy value).
_OMITTED_AT_DEFAULT: dict[str, Any] = {**_ABLATION_DEFAULTS, "blink_condition": False, "brow_condition": False,
                                       "wrinkle_encoding": LEGACY_WRINKLE_ENCODING}


@dataclass
class VQConfig:
    """One VQGAN-style autoencoder (motion maps or wrinkle maps)."""

    resolution: int = 128
    in_channels: int = 3
    base_channels: int = 8
    channel_mult: tuple[int, ...] = (1, 2, 4, 8, 8)
    num_res_blocks: int = 1
    latent_channels: int = 4  # code dimension
    codebook_size: int = 256
    commitment_beta: float = 0.25
    # Loss weights; a weight of zero or a False switch removes the term (and its network cost).
    use_perceptual: bool = True
    use_adversarial: bool = True
    use_codebook: bool = True
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 0.1
    adversarial_weight: float = 0.05
    codebook_weight: float = 1.0
    adversarial_start_step: int = 2000
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    # A code used by less than this fraction of an average code (EMA of assignments) is dead.
    dead_code_fraction: float = 0.03
    usage_ema_decay: float = 0.99

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_resolution(self) -> int:
        return self.resolution // self.downsample_factor

    @property
    def latent_dim(self) -> int:
        """Numbers in one frame's flattened latent (h * w * code dimension)."""
        return self.latent_resolution**2 * self.latent_channels

    def validate(self) -> None:
        if self.resolution % self.downsample_factor:
            raise ValueError(
                f"resolution {self.resolution} is not divisible by {self.downsample_factor}"
            )


@dataclass
class ModelConfig:
    name: str = "bundled"
    motion_vq: VQConfig = field(default_factory=VQConfig)
    wrinkle_vq: VQConfig = field(
        default_factory=lambda: VQConfig(
            resolution=128, base_channels=8, latent_channels=4, codebook_size=512
        )
    )
    # Audio
    audio_encoder: str = "bundled"  # "bundled" | "hubert"
    audio_feature_dim: int = 256  # width of the encoder's output features
    n_mels: int = 80
    mel_n_fft: int = 400
    mel_hop: int = 160
    frontend_kernel: int = 5
    frontend_dilations: tuple[int, ...] = (1, 2, 4, 8)
    # Denoiser
    width: int = 256
    layers: int = 4
    heads: int = 4
    ff_mult: int = 2
    dropout: float = 0.1
    self_attention: str = "full"  # "full" | "causal" | "none"
    window_frames: int = 90  # Tw
    prefix_frames: int = 10  # Tp
    prefix_probability: float = 0.5  # training: chance a window is conditioned on a prefix
    # Add the last prefix frame (projected) to every token of the window: see denoiser.py.
    prefix_anchor: bool = True
    # Diffusion
    diffusion_steps: int = 500
    beta_schedule: str = "cosine"
    sampling_steps: int = 6
    quantize_sampled_latents: bool = True
    # x0 = sqrt(abar_t) * x_t + sqrt(1 - abar_t) * network(...): the linear minimum-error estimate
    # of x0 for unit-variance data plus a learned correction (the x0 form of v-prediction).
    # Off by default (the paper's direct x0 prediction): in a measured toy run it fitted low-noise
    # steps better but an under-trained network let the per-frame noise of x_t through as jitter
    # in few-step samples, where direct x0 prediction stayed smooth.
    x0_skip: bool = False
    # Blink timing as a per-frame input of the denoiser (core/blinks.py). Blinks do not follow
    # the audio, so a model conditioned on audio alone can only average them away; with this
    # flag it is told when the eyes close (training: the eyelid closure measured in the data;
    # generation: a track sampled at the speaking style's blink rate) and draws the blink itself.
    blink_condition: bool = False
    # Brow emphasis as two per-frame inputs, raise and furrow (core/brows.py). Which syllable a
    # speaker emphasises with the brows is only loosely fixed by the audio, so without it the
    # model averages the brow raises (and the forehead folds they make) away; with it, training
    # gives the brow motion measured in the data and generation places emphases on the longest
    # syllable nuclei at the speaking style's measured rate.
    brow_condition: bool = False
    # Style
    style_mode: str = "pivot"  # "pivot" | "onehot"
    num_styles: int = 8  # one-hot table size (only used when style_mode == "onehot")
    # The map layouts the maps were made in, {"motion": MapLayout dict, "wrinkle": MapLayout
    # dict} (core/uv.py); checked against the template at load. None = accept the template's.
    uv_layouts: dict[str, Any] | None = None
    # Ablations (docs/TRAINING.md, "Ablations"); the defaults are the full TexTalker.
    # "motion": the denoiser models motion latents only and the texture stays neutral (ratio 1);
    # "wrinkle": wrinkle latents only and the face stays neutral (zero offsets).
    modalities: str = "motion+wrinkle"
    # "Joint codebook": ONE VQ (one codebook) over the motion map and the wrinkle log-ratio map
    # concatenated channel-wise (6 channels) in the motion map's layout and resolution; the wrinkle
    # map is resampled into the motion layout and back (core/joint_codebook.py). Its latent is
    # slot z_f (`motion_latent_dim`); z_w is empty and so are the wrinkle pivots.
    joint_codebook_vq: VQConfig | None = None
    # What the wrinkle maps' three channels mean (core/wrinkle_channels.py): "fold_shade_flush"
    # (fold activation of the crease detail, shading, flush) or "log_ratio_rgb" (bundles trained
    # before crease detail; `from_dict` assumes it for weights that do not say).
    wrinkle_encoding: str = CURRENT_WRINKLE_ENCODING

    # ------------------------------------------------------------------ presets
    @classmethod
    def bundled(cls) -> ModelConfig:
        return cls()

    @classmethod
    def paper(cls) -> ModelConfig:
        def paper_vq() -> VQConfig:
            return VQConfig(
                resolution=512,
                base_channels=128,
                channel_mult=(1, 2, 2, 4, 4, 8),
                num_res_blocks=2,
                latent_channels=16,
                codebook_size=1024,
                discriminator_channels=64,
                adversarial_start_step=30000,
            )

        return cls(
            name="paper",
            motion_vq=paper_vq(),
            wrinkle_vq=paper_vq(),
            audio_encoder="hubert",
            audio_feature_dim=768,
            width=1024,
            layers=8,
            heads=4,
            diffusion_steps=500,
            sampling_steps=25,
        )

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        presets = {"bundled": cls.bundled, "paper": cls.paper}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    # ------------------------------------------------------------------ derived
    @property
    def motion_latent_dim(self) -> int:
        """Width of latent slot z_f: the motion VQ's latent (the joint VQ's with a joint codebook)."""
        if self.joint_codebook_vq is not None:
            return self.joint_codebook_vq.latent_dim
        return self.motion_vq.latent_dim

    @property
    def wrinkle_latent_dim(self) -> int:
        """Width of latent slot z_w: the wrinkle VQ's latent (0 with a joint codebook)."""
        return 0 if self.joint_codebook_vq is not None else self.wrinkle_vq.latent_dim

    @property
    def modelled_latent_slice(self) -> slice:
        """Columns of [z_f, z_w] the denoiser models (all of them unless an ablation drops one)."""
        if self.modalities == "motion":
            return slice(0, self.motion_latent_dim)
        if self.modalities == "wrinkle":
            return slice(self.motion_latent_dim, self.motion_latent_dim + self.wrinkle_latent_dim)
        return slice(0, self.motion_latent_dim + self.wrinkle_latent_dim)

    @property
    def joint_latent_dim(self) -> int:
        """Width of the denoiser's latent X0 (Dz_f + Dz_w for the full model)."""
        modelled = self.modelled_latent_slice
        return modelled.stop - modelled.start

    @property
    def generates_motion(self) -> bool:
        return self.modalities != "wrinkle"

    @property
    def generates_texture(self) -> bool:
        return self.modalities != "motion"

    @property
    def ablation(self) -> str | None:
        """The paper's ablation this config is ("motion_only", "wrinkle_only", "joint_codebook",
        "onehot"), or None for the full model."""
        if self.modalities == "motion":
            return "motion_only"
        if self.modalities == "wrinkle":
            return "wrinkle_only"
        if self.joint_codebook_vq is not None:
            return "joint_codebook"
        if self.style_mode == "onehot":
            return "onehot"
        return None

    def validate(self) -> None:
        self.motion_vq.validate()
        self.wrinkle_vq.validate()
        check_encoding(self.wrinkle_encoding)
        if self.joint_codebook_vq is not None:
            self.joint_codebook_vq.validate()
            joint = self.joint_codebook_vq
            if joint.resolution != self.motion_vq.resolution or joint.in_channels != 6:
                raise ValueError(
                    "joint_codebook_vq must have the motion map's resolution "
                    f"({self.motion_vq.resolution}) and 6 input channels (motion + wrinkle)"
                )
            if self.modalities != "motion+wrinkle":
                raise ValueError("a joint codebook models both modalities")
        checks = [
            (
                self.audio_encoder in AUDIO_ENCODERS,
                f"audio_encoder must be one of {AUDIO_ENCODERS}",
            ),
            (self.style_mode in STYLE_MODES, f"style_mode must be one of {STYLE_MODES}"),
            (self.modalities in MODALITIES, f"modalities must be one of {MODALITIES}"),
            (
                self.self_attention in SELF_ATTENTION_MODES,
                f"self_attention must be one of {SELF_ATTENTION_MODES}",
            ),
            (
                self.beta_schedule in BETA_SCHEDULES,
                f"beta_schedule must be one of {BETA_SCHEDULES}",
            ),
            (self.width % self.heads == 0, "width must be divisible by heads"),
            (
                0 <= self.prefix_frames < self.window_frames,
                "need 0 <= prefix_frames < window_frames",
            ),
            (
                1 <= self.sampling_steps <= self.diffusion_steps,
                "need 1 <= sampling_steps <= diffusion_steps",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, default in _OMITTED_AT_DEFAULT.items():
            if data[key] == default:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        # Weights from before the map layouts recorded one UV rectangle: keep it under a key no
        # template layout has, so the Pipeline refuses them with a clear message.
        legacy_region = data.pop("uv_region", None)
        if legacy_region is not None and data.get("uv_layouts") is None:
            data["uv_layouts"] = {"legacy_uv_region": list(legacy_region)}
        # Weights saved before the encoding was recorded were trained on log ratios.
        data.setdefault("wrinkle_encoding", LEGACY_WRINKLE_ENCODING)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        for key in ("motion_vq", "wrinkle_vq", "joint_codebook_vq"):
            if key in data and isinstance(data[key], dict):
                data[key] = _vq_from_dict(data[key])
        # JSON turns tuples into lists; keep tuples so equality and hashing behave.
        for key in ("frontend_dilations",):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        config = cls(**data)
        config.validate()
        return config

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


def _vq_from_dict(data: dict[str, Any]) -> VQConfig:
    known = {f.name for f in dataclasses.fields(VQConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown VQConfig fields: {sorted(unknown)}")
    data = dict(data)
    if "channel_mult" in data:
        data["channel_mult"] = tuple(data["channel_mult"])
    return VQConfig(**data)
