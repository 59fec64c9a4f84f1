"""`TexTalkerModel`: the two VQ autoencoders, the audio encoder, the denoiser and the style pivots
as one module, with conversion between latents and the denoiser's model space and (de)serialisation
to the safetensors weights format of `core.weights`.

Tensor names in the weights file: `motion_vq.*`, `wrinkle_vq.*`, `audio_encoder.*` (bundled encoder
only; HuBERT weights stay in their own checkpoint folder), `denoiser.*`, `style.speaking`,
`style.wrinkle`. The joint-codebook ablation has `joint_vq.*` instead of the two VQs.

Ablations (`ModelConfig.modalities`, `joint_codebook_vq`, `style_mode`): latents always come as
the two slots z_f (Dz_f) and z_w (Dz_w) of the VQ encoders; the denoiser models the columns
`config.modelled_latent_slice` of [z_f, z_w], and a slot it does not model comes back as None from
`from_model_space` / `generate_latents` / `decode_maps` (neutral output). The full model's numbers
are unchanged: its slice is all columns.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .blinks import DEFAULT_STATISTICS, BlinkStatistics, sample_blink_track
from .brows import BrowStatistics, emphasis_nuclei, sample_brow_track
from .closure import CLOSURE_METADATA, CLOSURE_PREFIX, ClosureDetector
from .config import ModelConfig
from .creases import Crease
from .denoiser import LatentDenoiser
from .sampling import sample_sequence
from .schedule import DDPMSchedule
from .errors import WeightsError
from .features import AudioEncoder, audio_encoder_class, build_audio_encoder
from .style import StylePivots
from .vq import VQAutoencoder
from .weights import WeightsFile, save_weights

STYLE_SPEAKING = "style.speaking"
STYLE_WRINKLE = "style.wrinkle"
# Per wrinkle style, the mean error of the wrinkle autoencoder on that style's training frames
# (S, H, W, C) in decoded-channel units: the static skin detail its codes blur, added back at
# decode (`decode_maps`). Optional: weights without it decode as before.
STYLE_WRINKLE_BIAS = "style.wrinkle_bias"


class TexTalkerModel(nn.Module):
    def __init__(
        self, config: ModelConfig, pivots: StylePivots, audio_encoder: AudioEncoder | None = None
    ):
        super().__init__()
        config.validate()
        self.config = config
        if config.joint_codebook_vq is not None:
            # One VQ, one codebook for both maps (ablation); its latent is slot z_f.
            self.joint_vq = VQAutoencoder(config.joint_codebook_vq)
            self.motion_vq = None
            self.wrinkle_vq = None
            self._joint_codec = None  # built on first use from config.uv_layouts
        else:
            self.motion_vq = VQAutoencoder(config.motion_vq)
            self.wrinkle_vq = VQAutoencoder(config.wrinkle_vq)
        self.audio_encoder = (
            audio_encoder
            if audio_encoder is not None
            else (build_audio_encoder(config) if self.audio_encoder_stored else None)
        )
        self.denoiser = LatentDenoiser(config)
        self.schedule = DDPMSchedule(config.diffusion_steps, config.beta_schedule)
        self.set_pivots(pivots)
        # Blink rate and duration per style (core/blinks.py), measured on the training data;
        # None for a model without blink input.
        self.style_blinks: list[BlinkStatistics] | None = None
        # Brow emphasis rate, heights and furrow share per style (core/brows.py), measured on the
        # training data; None for a model without brow input.
        self.style_brows: list[BrowStatistics] | None = None
        # Per style: the crease curves its fold activation scales (core/creases.py); None for
        # weights trained without crease detail.
        self.style_creases: list[list[Crease]] | None = None
        # Per wrinkle style: the wrinkle autoencoder's mean reconstruction error (S, H, W, C),
        # added to its decoded channels (STYLE_WRINKLE_BIAS); None: nothing added.
        self.style_wrinkle_bias: torch.Tensor | None = None
        # Optional closure detector (core/closure.py): where the lip seal belongs. None: no
        # seal. Stored as the `closure.*` tensors.
        self.closure: ClosureDetector | None = None

    # ------------------------------------------------------------------ blinks
    def blink_statistics_for(self, speaking: int) -> BlinkStatistics:
        """The speaking style's measured blinks; the mean over styles for a style without its
        own (an averaged or added style), the defaults for weights without statistics."""
        table = self.style_blinks or []
        if 0 <= speaking < len(table):
            return table[speaking]
        if table:
            return BlinkStatistics(float(np.mean([b.rate_per_min for b in table])),
                                   float(np.mean([b.duration_s for b in table])))
        return DEFAULT_STATISTICS

    def blink_track(self, n_frames: int, fps: float, speaking: int, seed: int,
                    rate_per_min: float | None = None, salt: int = 0) -> torch.Tensor | None:
        """Eyelid closure track (n_frames,) for generation, or None for a model without blink
        input. `rate_per_min` None: the speaking style's own rate; 0: no blinks. `salt` (e.g. a
        hash of the audio) varies the timing between clips generated with the same seed."""
        if not self.config.blink_condition:
            return None
        measured = self.blink_statistics_for(speaking)
        rate = measured.rate_per_min if rate_per_min is None else float(rate_per_min)
        # Its own stream, so the diffusion noise of a seed is the same with and without blinks.
        rng = np.random.default_rng([abs(int(seed)), int(int(seed) < 0), int(salt) & (2**64 - 1), 0xB1])
        return torch.from_numpy(sample_blink_track(n_frames, fps, rate, measured.duration_s, rng))

    # ------------------------------------------------------------------ brows
    def brow_statistics_for(self, speaking: int) -> BrowStatistics:
        """The speaking style's measured brow emphases; the mean over styles for a style without
        its own, the defaults for weights without statistics."""
        table = self.style_brows or []
        if 0 <= speaking < len(table):
            return table[speaking]
        return BrowStatistics.mean(table)

    def brow_track(self, audio: np.ndarray, sample_rate: int, n_frames: int, fps: float, speaking: int,
                   seed: int, rate_per_min: float | None = None, salt: int = 0) -> torch.Tensor | None:
        """Brow track (n_frames, 2) for generation: emphases on the audio's longest syllable
        nuclei at the speaking style's measured rate, or `rate_per_min` (0: none; core/brows.py),
        or None for a model without brow input. Seeded by `seed` and `salt` like the blinks, in a
        stream of its own."""
        if not self.config.brow_condition:
            return None
        rng = np.random.default_rng([abs(int(seed)), int(int(seed) < 0), int(salt) & (2**64 - 1), 0xB20])
        nuclei = emphasis_nuclei(audio, sample_rate)
        return torch.from_numpy(sample_brow_track(nuclei, n_frames, fps, self.brow_statistics_for(speaking), rng,
                                                  rate_per_min))

    @property
    def audio_encoder_stored(self) -> bool:
        """The audio encoder trains with the denoiser and its weights are in this model's file."""
        return audio_encoder_class(self.config.audio_encoder).stored_with_model

    # ------------------------------------------------------------------ styles
    def set_pivots(self, pivots: StylePivots) -> None:
        if (
            pivots.speaking.shape[1] != self.config.motion_latent_dim
            or pivots.wrinkle.shape[1] != self.config.wrinkle_latent_dim
        ):
            raise ValueError("pivot dimensions do not match the VQ latent sizes")
        if self.config.style_mode == "onehot" and len(pivots) > self.config.num_styles:
            raise ValueError("more styles than the one-hot table holds")
        self.pivots = pivots
        self.register_buffer(
            "speaking_pivots", torch.from_numpy(pivots.speaking.copy()), persistent=False
        )
        self.register_buffer(
            "wrinkle_pivots", torch.from_numpy(pivots.wrinkle.copy()), persistent=False
        )

    # ------------------------------------------------------------------ model space
    def _pivot_offsets(self, speaking: int, wrinkle: int) -> torch.Tensor:
        if self.config.style_mode != "pivot":
            return torch.zeros(self.config.joint_latent_dim, device=self.speaking_pivots.device)
        pivots = torch.cat([self.speaking_pivots[speaking], self.wrinkle_pivots[wrinkle]])
        return pivots[self.config.modelled_latent_slice]

    def to_model_space(
        self, z_motion: torch.Tensor, z_wrinkle: torch.Tensor, speaking: int, wrinkle: int
    ) -> torch.Tensor:
        """Latents (T, Dz_f), (T, Dz_w) of one subject -> denoiser target x0 (T, Dz)."""
        joint = torch.cat([z_motion, z_wrinkle], dim=-1)[..., self.config.modelled_latent_slice]
        joint = joint - self._pivot_offsets(speaking, wrinkle)
        return (joint - self.denoiser.latent_center) / self.denoiser.latent_scale

    def from_model_space(
        self, x0: torch.Tensor, speaking: int, wrinkle: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """x0 (T, Dz) -> z_f (T, Dz_f), z_w (T, Dz_w); None for a slot the model does not make."""
        joint = x0 * self.denoiser.latent_scale + self.denoiser.latent_center
        return self._split_modelled(joint + self._pivot_offsets(speaking, wrinkle))

    def _split_modelled(self, joint: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Modelled latents (..., Dz) -> z_f, z_w; None for a slot the model does not make."""
        if self.config.modalities == "motion":
            return joint, None
        if self.config.modalities == "wrinkle":
            return None, joint
        split = self.config.motion_latent_dim
        return joint[..., :split], joint[..., split:]

    # ------------------------------------------------------------------ training helpers
    def _batch_pivots(self, speaking: torch.Tensor, wrinkle: torch.Tensor) -> torch.Tensor:
        """(B,) style rows -> (B, Dz) pivot offsets (zeros in one-hot mode)."""
        if self.config.style_mode != "pivot":
            return torch.zeros(
                len(speaking), self.config.joint_latent_dim, device=self.speaking_pivots.device
            )
        pivots = torch.cat([self.speaking_pivots[speaking], self.wrinkle_pivots[wrinkle]], dim=-1)
        return pivots[..., self.config.modelled_latent_slice]

    @torch.no_grad()
    def fit_latent_normalization(
        self, z_motion: torch.Tensor, z_wrinkle: torch.Tensor, subjects: torch.Tensor
    ) -> None:
        """Set the denoiser's model-space centre/scale from training latents (N, D) of known
        subjects (N,): per-dimension mean and standard deviation of z - pivot."""
        joint = torch.cat([z_motion, z_wrinkle], dim=-1)[..., self.config.modelled_latent_slice]
        offsets = joint - self._batch_pivots(subjects, subjects)
        self.denoiser.latent_center.copy_(offsets.mean(dim=0))
        self.denoiser.latent_scale.copy_(offsets.std(dim=0).clamp_min(1e-4))

    def batch_to_model_space(
        self, z_motion: torch.Tensor, z_wrinkle: torch.Tensor, subjects: torch.Tensor
    ) -> torch.Tensor:
        """The denoiser's target x0 for latents (..., T, Dz_f), (..., T, Dz_w) of known subjects
        (...,): the modelled slice of [z_f, z_w] minus the subject's pivots, centred and scaled."""
        joint = torch.cat([z_motion, z_wrinkle], dim=-1)[..., self.config.modelled_latent_slice]
        pivots = self._batch_pivots(subjects, subjects)
        if joint.dim() == pivots.dim() + 1:
            pivots = pivots[:, None]
        return (joint - pivots - self.denoiser.latent_center) / self.denoiser.latent_scale

    def batch_from_model_space(
        self, x0: torch.Tensor, subjects: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Inverse of `batch_to_model_space` for frames x0 (N, Dz) of known subjects (N,):
        z_f (N, Dz_f), z_w (N, Dz_w); None for a slot the model does not make. Differentiable
        (training decodes predicted latents through it)."""
        joint = x0 * self.denoiser.latent_scale + self.denoiser.latent_center
        return self._split_modelled(joint + self._batch_pivots(subjects, subjects))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate_latents(
        self,
        audio_features: torch.Tensor,
        speaking: int,
        wrinkle: int,
        steps: int,
        generator: torch.Generator,
        progress: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
        blink: torch.Tensor | None = None,
        brow: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Audio features (T, C) -> latents z_f (T, Dz_f), z_w (T, Dz_w) (None: not modelled).
        `blink` (T,): eyelid closure track for a blink-conditioned model (`blink_track`);
        `brow` (T, 2): brow track for a brow-conditioned model (`brow_track`)."""
        onehot = self.config.style_mode == "onehot"
        x0 = sample_sequence(
            self.denoiser,
            self.schedule,
            audio_features,
            steps,
            generator,
            speaking_style=speaking if onehot else None,
            wrinkle_style=wrinkle if onehot else None,
            progress=progress,
            cancel=cancel,
            blink=blink,
            brow=brow,
        )
        z_motion, z_wrinkle = self.from_model_space(x0, speaking, wrinkle)
        if self.config.quantize_sampled_latents:
            # The decoders were trained on codebook vectors only: snap to the nearest codes.
            if self.config.joint_codebook_vq is not None:
                z_motion = self.joint_vq.quantize_latent(z_motion)
            else:
                if z_motion is not None:
                    z_motion = self.motion_vq.quantize_latent(z_motion)
                if z_wrinkle is not None:
                    z_wrinkle = self.wrinkle_vq.quantize_latent(z_wrinkle)
        return z_motion, z_wrinkle

    # ------------------------------------------------------------------ maps
    def vq_modules(self) -> list[VQAutoencoder]:
        """The frozen map autoencoders this model holds (two, or one with a joint codebook)."""
        if self.config.joint_codebook_vq is not None:
            return [self.joint_vq]
        return [self.motion_vq, self.wrinkle_vq]

    def use_channels_last(self) -> TexTalkerModel:
        for vq in self.vq_modules():
            vq.use_channels_last()
        return self

    def joint_codec(self):
        """`core.joint_codebook.JointMapCodec` of a joint-codebook model (from its uv_layouts)."""
        if self._joint_codec is None:
            from .joint_codebook import JointMapCodec

            self._joint_codec = JointMapCodec.from_layouts(
                self.config.uv_layouts,
                self.config.motion_vq.resolution,
                self.config.wrinkle_vq.resolution,
            )
        return self._joint_codec

    def decode_maps(
        self,
        z_motion: torch.Tensor | None,
        z_wrinkle: torch.Tensor | None,
        wrinkle_style: int | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Latents of a batch of frames -> (motion maps (B, H, W, 3) metres, wrinkle channel
        maps (B, Hw, Ww, C) in the wrinkle layout); None where the model makes no such output.
        With `wrinkle_style` and weights that carry `style_wrinkle_bias`, that style's bias is
        added to the wrinkle channels."""
        if self.config.joint_codebook_vq is not None:
            return self.joint_codec().split(self.joint_vq.decode(z_motion))
        motion = None
        wrinkle = None
        if z_motion is not None and self.config.generates_motion:
            motion = self.motion_vq.decode(z_motion)
        if z_wrinkle is not None and self.config.generates_texture:
            wrinkle = self.wrinkle_vq.decode(z_wrinkle)
            if wrinkle_style is not None and self.style_wrinkle_bias is not None:
                wrinkle = wrinkle + self.style_wrinkle_bias[int(wrinkle_style)].to(wrinkle.device, wrinkle.dtype)
        return motion, wrinkle

    def set_wrinkle_bias(self, bias: torch.Tensor | np.ndarray | None) -> None:
        """Set (or clear, with None) the per-style wrinkle bias (S, H, W, C); checked against the
        styles and the wrinkle autoencoder's output shape."""
        if bias is None:
            self.style_wrinkle_bias = None
            return
        bias = torch.as_tensor(bias).float()
        vq = self.config.wrinkle_vq
        expected = (len(self.pivots), vq.resolution, vq.resolution, vq.in_channels)
        if self.wrinkle_vq is None or tuple(bias.shape) != expected:
            raise ValueError(f"wrinkle bias of shape {tuple(bias.shape)}; this model needs {expected}")
        if not torch.isfinite(bias).all():
            raise ValueError("wrinkle bias has non-finite values")
        self.style_wrinkle_bias = bias

    # ------------------------------------------------------------------ weights
    def weight_tensors(self) -> dict[str, torch.Tensor]:
        state = {
            name: tensor
            for name, tensor in self.state_dict().items()
            if not (name.startswith("audio_encoder.") and not self.audio_encoder_stored)
        }
        state[STYLE_SPEAKING] = torch.from_numpy(self.pivots.speaking)
        state[STYLE_WRINKLE] = torch.from_numpy(self.pivots.wrinkle)
        if self.style_wrinkle_bias is not None:
            # float16: its values are hundredths of the channels' range (2 MB for 20 styles)
            state[STYLE_WRINKLE_BIAS] = self.style_wrinkle_bias.to(torch.float16)
        return state

    def metadata(self, trained: bool, dataset: str) -> dict[str, str]:
        metadata = {
            "config": self.config.to_json(),
            "audio_encoder": self.config.audio_encoder,
            "style_names": json.dumps(self.pivots.names),
            "style_keys": json.dumps(self.pivots.keys),
            "trained": "true" if trained else "false",
            "dataset": dataset,
        }
        if self.style_blinks is not None:
            metadata["style_blinks"] = json.dumps([b.to_dict() for b in self.style_blinks])
        if self.style_brows is not None:
            metadata["style_brows"] = json.dumps([b.to_dict() for b in self.style_brows])
        if self.closure is not None:
            metadata[CLOSURE_METADATA] = self.closure.config.to_json()
        if self.style_creases is not None:
            metadata["style_creases"] = json.dumps([[c.to_dict() for c in creases] for creases in self.style_creases],
                                                   separators=(",", ":"))
        if self.config.ablation is not None:
            # Spelled out for readers that do not parse the config (the evaluator prints '-'
            # for texture metrics of a bundle that generates no texture). Absent for the full
            # model, whose metadata stays as it was.
            metadata["ablation"] = self.config.ablation
            metadata["generates_motion"] = "true" if self.config.generates_motion else "false"
            metadata["generates_texture"] = "true" if self.config.generates_texture else "false"
        return metadata

    def save(
        self, path: str | Path, trained: bool, dataset: str, update_manifest: bool = True
    ) -> str:
        """Write the weights file (and its manifest entry); returns the SHA-256."""
        return save_weights(
            path,
            self.weight_tensors(),
            self.metadata(trained, dataset),
            update_manifest=update_manifest,
        )

    @classmethod
    def from_weights(
        cls, weights: WeightsFile, hubert_dir: str | Path | None = None
    ) -> TexTalkerModel:
        metadata = weights.metadata
        try:
            config = ModelConfig.from_json(metadata["config"])
            names = json.loads(metadata["style_names"])
            keys = json.loads(metadata["style_keys"]) if "style_keys" in metadata else None
        except (ValueError, TypeError) as exc:
            raise WeightsError(f"{weights.path.name} has unreadable metadata: {exc}") from exc
        if metadata["audio_encoder"] != config.audio_encoder:
            raise WeightsError(
                f"{weights.path.name}: metadata says audio encoder "
                f"{metadata['audio_encoder']!r} but its config says {config.audio_encoder!r}."
            )
        tensors = dict(weights.tensors)
        wrinkle_bias = tensors.pop(STYLE_WRINKLE_BIAS, None)
        closure_tensors = {name: tensors.pop(name) for name in list(tensors) if name.startswith(CLOSURE_PREFIX)}
        try:
            pivots = StylePivots(
                tensors.pop(STYLE_SPEAKING).numpy(), tensors.pop(STYLE_WRINKLE).numpy(), names, keys
            )
        except (KeyError, ValueError) as exc:
            raise WeightsError(f"{weights.path.name} has no usable style pivots: {exc}") from exc
        encoder = build_audio_encoder(config, hubert_dir)
        model = cls(config, pivots, encoder)
        external_keys = (  # an encoder not stored with the model (HuBERT) loads from its own folder
            set() if model.audio_encoder_stored else {n for n in model.state_dict() if n.startswith("audio_encoder.")}
        )
        try:
            result = model.load_state_dict(tensors, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise WeightsError(f"{weights.path.name} does not fit its config: {exc}") from exc
        missing = [k for k in result.missing_keys if k not in external_keys]
        if missing or result.unexpected_keys:
            raise WeightsError(
                f"{weights.path.name} does not fit its config (missing {missing[:5]}, "
                f"unexpected {list(result.unexpected_keys)[:5]})."
            )
        if "style_blinks" in metadata:
            try:
                model.style_blinks = [BlinkStatistics.from_dict(b) for b in json.loads(metadata["style_blinks"])]
            except (ValueError, TypeError, KeyError) as exc:
                raise WeightsError(f"{weights.path.name} has unreadable blink statistics: {exc}") from exc
        if "style_brows" in metadata:
            try:
                model.style_brows = [BrowStatistics.from_dict(b) for b in json.loads(metadata["style_brows"])]
            except (ValueError, TypeError, KeyError) as exc:
                raise WeightsError(f"{weights.path.name} has unreadable brow statistics: {exc}") from exc
        if "style_creases" in metadata:
            try:
                styles = [[Crease.from_dict(c) for c in creases] for creases in json.loads(metadata["style_creases"])]
            except (ValueError, TypeError, KeyError) as exc:
                raise WeightsError(f"{weights.path.name} has unreadable crease styles: {exc}") from exc
            if len(styles) != len(pivots):
                raise WeightsError(f"{weights.path.name} has crease curves for {len(styles)} styles, "
                                   f"and {len(pivots)} styles")
            model.style_creases = styles
        if wrinkle_bias is not None:
            try:
                model.set_wrinkle_bias(wrinkle_bias)
            except ValueError as exc:
                raise WeightsError(f"{weights.path.name}: {exc}") from exc
        if closure_tensors or CLOSURE_METADATA in metadata:
            try:
                model.closure = ClosureDetector.from_weights(closure_tensors, metadata[CLOSURE_METADATA])
            except (KeyError, ValueError, TypeError) as exc:
                raise WeightsError(f"{weights.path.name} has an unusable closure detector: {exc}") from exc
        model.trained = metadata.get("trained") == "true"
        return model.eval()


def random_pivots(
    config: ModelConfig, names: list[str], model: TexTalkerModel | None = None, seed: int = 0
) -> StylePivots:
    """Placeholder pivots for untrained weights: random code vectors of each codebook."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for vq_config, vq in (
        (config.motion_vq, model.motion_vq if model else None),
        (config.wrinkle_vq, model.wrinkle_vq if model else None),
    ):
        cells = vq_config.latent_resolution**2
        if vq is not None:
            picks = torch.randint(
                0, vq_config.codebook_size, (len(names), cells), generator=generator
            )
            codes = vq.quantizer.codebook.weight.detach()[picks]  # (S, h*w, D)
            rows.append(codes.permute(0, 2, 1).reshape(len(names), -1).numpy())
        else:
            rows.append(np.zeros((len(names), vq_config.latent_dim), np.float32))
    return StylePivots(rows[0], rows[1], names)
