"""Learned baselines of the evaluation: small CPU-sized FaceFormer-, CodeTalker- and
FaceDiffuser-like models trained on the same data and splits as TexTalker (docs/DATASET.md).

    from tools.evaluation.baselines import LEARNED_BASELINES, load_baseline
    model = load_baseline("FaceFormer-like", Path("/work/textalker_runs/baselines/faceformer"))
    offsets = model.predict(audio_16k, n_frames, "S03")      # (n_frames, V, 3) float32 metres

Trained by `tools/train_baselines.py`. What all three share, so that the comparison with TexTalker
is about the generator and not about the inputs:
- Audio: the same input as TexTalker's bundled model: `load_audio` loudness normalisation, then
  `BundledAudioEncoder.log_mel` (80 mels, 100 frames/s) and the same kind of learned dilated-conv
  front end (the class itself, `BundledAudioEncoder`, at width 128 instead of the bundled 256),
  sampled at each 30 fps frame's centre time. Training perturbs the log-mel with the same
  augmentation as the bundled LDM (`tools/training/augment.py`, probability 0.8).
- Motion: vertex offsets from the subject's neutral in metres (the dataset's ground truth),
  represented by **PCA coefficients of the training offsets** (`MotionBasis`): the offsets live
  in a low-dimensional space (52 face units, fewer active), so K <= 48 components keep
  99.9999 % of the training variance and make the models CPU-feasible. Predictions are mapped
  back to all V vertices with the stored basis.
- Subject conditioning: a one-hot speaker embedding over the training subjects (a learned
  embedding row per subject, as in FaceFormer / CodeTalker). For a subject not seen in training
  (test-B) the **average of the training-subject embeddings** is used (the embedding of the
  uniform mixture of one-hots), recorded in `Baseline.unseen_subject_note`.

Weights: `<run_dir>/checkpoint/model.safetensors` (safetensors, JSON metadata: baseline name,
model config, training subjects, steps, dataset); never pickles.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[2]

from textalker_blender.core.audio import load_audio  # noqa: E402
from textalker_blender.core.config import SAMPLE_RATE, ModelConfig  # noqa: E402
from textalker_blender.core.denoiser import alignment_mask, sinusoidal_embedding  # noqa: E402
from textalker_blender.core.schedule import DDPMSchedule  # noqa: E402
from textalker_blender.core.features import BundledAudioEncoder  # noqa: E402
from textalker_blender.core.vq import VectorQuantizer  # noqa: E402

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = "1"
UNSEEN_SUBJECT_NOTE = "unseen subject: average of the training-subject embeddings"


# ---------------------------------------------------------------------------- config
@dataclass
class BaselineConfig:
    """Sizes of one baseline (all three read the fields they need)."""

    audio_width: int = 128          # learned conv front end on the log-mel (bundled: 256)
    width: int = 128                # transformer / GRU width
    layers: int = 2                 # transformer decoder layers (FaceFormer-, CodeTalker-like)
    heads: int = 4
    ff: int = 256
    dropout: float = 0.1
    period: int = 30                # FaceFormer's periodic positional encoding / ALiBi period
    # CodeTalker-like VQ-VAE: per frame `code_parts` codes of `code_dim` from one shared codebook
    codebook_size: int = 256
    code_parts: int = 8
    code_dim: int = 16
    vq_width: int = 128
    commitment_beta: float = 0.25
    # FaceDiffuser-like
    gru_layers: int = 2
    diffusion_steps: int = 1000
    beta_schedule: str = "cosine"
    sampling_steps: int = 100       # inference default (respaced DDPM); 1000 = the full chain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown baseline config keys: {sorted(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------- motion basis
class MotionBasis(nn.Module):
    """PCA of the training offsets: offsets (T, V, 3) <-> coefficients (T, K).

    `components` (K, 3V) are orthonormal, so the squared error of coefficients equals the squared
    vertex error (up to the part outside the basis). `scale` is one global scale (RMS of a
    component) used by the regressors, so their MSE stays proportional to the vertex MSE;
    `component_std` standardises each component for the diffusion model."""

    def __init__(self, n_vertices: int, n_components: int):
        super().__init__()
        self.n_vertices = int(n_vertices)
        self.register_buffer("mean", torch.zeros(3 * n_vertices))
        self.register_buffer("components", torch.zeros(n_components, 3 * n_vertices))
        self.register_buffer("component_std", torch.ones(n_components))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("explained_variance", torch.zeros(()))

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, offsets: np.ndarray, max_components: int = 48, variance: float = 0.999999,
            seed: int = 0) -> MotionBasis:
        """offsets (N, V, 3) training frames -> the smallest basis keeping `variance` of the
        total variance (at most `max_components`). torch.pca_lowrank (randomised SVD) with a
        fixed seed: the offsets have rank <= 52 (face units), so it is exact in practice."""
        n, v, _ = offsets.shape
        x = torch.from_numpy(np.ascontiguousarray(offsets, np.float32).reshape(n, 3 * v)).double()
        mean = x.mean(0)
        centred = x - mean
        total = float(centred.pow(2).sum() / max(n - 1, 1))
        q = int(min(max_components + 8, n, 3 * v))
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            _, s, vectors = torch.pca_lowrank(centred, q=q, center=False, niter=6)
        finally:
            torch.set_rng_state(state)
        explained = s.pow(2) / max(n - 1, 1)
        fraction = torch.cumsum(explained, 0) / max(total, 1e-30)
        k = int(torch.searchsorted(fraction, torch.tensor(variance, dtype=fraction.dtype)).item()) + 1
        k = max(1, min(k, max_components, q))
        basis = cls(v, k)
        components = vectors[:, :k].t()
        coefficients = centred @ components.t()
        std = coefficients.std(0).clamp_min(float(coefficients.std(0).max()) * 1e-3 + 1e-12)
        basis.mean.copy_(mean.float())
        basis.components.copy_(components.float())
        basis.component_std.copy_(std.float())
        basis.scale.copy_(torch.tensor(float(explained[:k].sum() / k) ** 0.5))
        basis.explained_variance.copy_(torch.tensor(float(fraction[k - 1])))
        return basis

    def coefficients(self, offsets) -> torch.Tensor:
        """(T, V, 3) metres -> (T, K) metres (unnormalised)."""
        x = torch.as_tensor(np.asarray(offsets, np.float32)).reshape(len(offsets), -1)
        return (x - self.mean) @ self.components.t()

    def offsets(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(T, K) -> (T, V, 3) metres."""
        flat = coefficients.to(self.components) @ self.components + self.mean
        return flat.reshape(len(coefficients), self.n_vertices, 3)


# ---------------------------------------------------------------------------- shared parts
def make_audio_front_end(width: int) -> BundledAudioEncoder:
    """The bundled model's front end class (log-mel + 4 residual dilated convs, receptive field
    0.61 s) at another width."""
    return BundledAudioEncoder(ModelConfig(audio_feature_dim=int(width)))


def padded_audio_features(front_end: BundledAudioEncoder, mels: list[torch.Tensor],
                          lengths: list[int]) -> torch.Tensor:
    """Each clip's full log-mel -> its (T_i, C) features, zero-padded to (B, T_max, C)."""
    t_max = max(lengths)
    out = []
    for mel, n in zip(mels, lengths):
        feats = front_end(mel[None], n)[0]
        out.append(F.pad(feats, (0, 0, 0, t_max - n)))
    return torch.stack(out)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid frames (mask (B, T) bool) and all channels."""
    weights = mask[..., None].to(prediction.dtype)
    squared = (prediction - target).pow(2) * weights
    return squared.sum() / (weights.sum() * prediction.shape[-1]).clamp_min(1.0)


class SubjectEmbedding(nn.Module):
    """One-hot speaker embedding over the training subjects; index -1 = an unseen subject, which
    gets the average of the training subjects' embeddings."""

    def __init__(self, n_subjects: int, width: int):
        super().__init__()
        self.table = nn.Embedding(max(1, n_subjects), width)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        indices = indices.long()
        rows = self.table(indices.clamp_min(0))
        unseen = (indices < 0)[:, None]
        return torch.where(unseen, self.table.weight.mean(0, keepdim=True).expand_as(rows), rows)


class AudioConditionedNet(nn.Module):
    """What the three networks share: the audio front end and its projection to the network's
    width (`front_end`, `audio_proj`), and the subject embedding (`style`). Subclasses create
    these attributes themselves, in their own order, so their state-dict keys and their
    initialisation (the order random numbers are drawn in) stay their own."""

    def add_audio_input(self, config: BaselineConfig) -> None:
        self.front_end = make_audio_front_end(config.audio_width)
        self.audio_proj = nn.Linear(config.audio_width, config.width)

    def batch_audio_memory(self, batch: dict) -> torch.Tensor:
        """A training batch's audio features at the network's width, (B, T_max, width)."""
        return self.audio_proj(padded_audio_features(self.front_end, batch["mels"], batch["lengths"]))

    def audio_memory(self, mel: torch.Tensor, n_frames: int) -> torch.Tensor:
        """One clip's full log-mel -> its (1, n_frames, width) audio features."""
        return self.audio_proj(self.front_end(mel[None], n_frames))

    def subject_style(self, subject: int) -> torch.Tensor:
        """(1, width) embedding of one subject row (-1: unseen subject)."""
        return self.style(torch.tensor([subject]))


def periodic_positions(n_frames: int, width: int, period: int, device=None) -> torch.Tensor:
    """FaceFormer's periodic positional encoding: sinusoids of (frame index mod period)."""
    positions = torch.arange(n_frames, device=device) % period
    return sinusoidal_embedding(positions, width)


def alibi_slopes(heads: int) -> torch.Tensor:
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])


def biased_causal_mask(n_frames: int, heads: int, period: int, device=None) -> torch.Tensor:
    """FaceFormer's biased causal self-attention mask (heads, T, T): -inf on future frames,
    -slope_h * floor((i - j) / period) on the past (ALiBi with a period)."""
    i = torch.arange(n_frames, device=device)
    distance = i[:, None] - i[None, :]
    bias = -(distance.clamp_min(0) // period).float()
    mask = alibi_slopes(heads).to(bias.device)[:, None, None] * bias[None]
    return mask.masked_fill((distance < 0)[None], float("-inf"))


class AlignedDecoder(nn.Module):
    """Transformer decoder of FaceFormer: causal ALiBi-biased self-attention over the motion
    tokens, cross-attention with the alignment mask (frame t sees the audio feature of frame t)."""

    def __init__(self, config: BaselineConfig):
        super().__init__()
        self.heads = config.heads
        self.period = config.period
        layer = nn.TransformerDecoderLayer(config.width, config.heads, config.ff, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.layers, norm=nn.LayerNorm(config.width))

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        batch, n, width = tokens.shape
        tokens = tokens + periodic_positions(n, width, self.period, tokens.device)[None]
        self_mask = biased_causal_mask(n, self.heads, self.period, tokens.device)
        self_mask = self_mask.repeat(batch, 1, 1)  # (B * heads, T, T), batch-major as torch expects
        cross_mask = alignment_mask(n, memory.shape[1], tokens.device)
        return self.decoder(tokens, memory, tgt_mask=self_mask, memory_mask=cross_mask)


class AutoregressiveDecoderNet(AudioConditionedNet):
    """FaceFormer-/CodeTalker-like: an `AlignedDecoder` (`decoder`) over one token per frame made
    from the previous frame (frame -1 is the learned `start` token) plus the subject embedding.
    Subclasses say how a previous frame becomes a token (`embed_frames`)."""

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tokens(self, previous: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """previous (B, T, C): frames -1..T-2 (frame -1 is replaced by the start token)."""
        h = self.embed_frames(previous)
        h = torch.cat([self.start.expand(h.shape[0], 1, -1), h[:, 1:]], dim=1)
        return h + style[:, None]

    def teacher_forced_hidden(self, memory: torch.Tensor, frames: torch.Tensor,
                              style: torch.Tensor) -> torch.Tensor:
        """Decoder output for every frame with the true previous frames as inputs (training)."""
        previous = F.pad(frames, (0, 0, 1, 0))[:, :-1]
        return self.decoder(self.tokens(previous, style), memory)

    def generate_frames(self, mel: torch.Tensor, n_frames: int, subject: int, frame_size: int,
                        next_frame) -> torch.Tensor:
        """(1, n_frames, frame_size) frames, one at a time: `next_frame(decoder output of frames
        0..t)` -> frame t (1, frame_size), fed back as the input of frame t + 1."""
        memory = self.audio_memory(mel, n_frames)
        style = self.subject_style(subject)
        frames = torch.zeros(1, n_frames, frame_size)
        for t in range(n_frames):
            previous = F.pad(frames[:, :t], (0, 0, 1, 0))
            h = self.decoder(self.tokens(previous, style), memory[:, : t + 1])
            frames[:, t] = next_frame(h)
        return frames


# ---------------------------------------------------------------------------- FaceFormer-like
class FaceFormerNet(AutoregressiveDecoderNet):
    """Audio features -> autoregressive transformer decoder -> per-frame PCA coefficients
    (normalised by the basis' global scale). Sizes (defaults): front end width 128, decoder width
    128, 2 layers, 4 heads, feed-forward 256, period 30; ~0.6 M parameters."""

    def __init__(self, config: BaselineConfig, n_components: int, n_subjects: int):
        super().__init__()
        self.config = config
        self.add_audio_input(config)
        self.motion_in = nn.Linear(n_components, config.width)
        self.start = nn.Parameter(torch.zeros(config.width))
        self.style = SubjectEmbedding(n_subjects, config.width)
        self.decoder = AlignedDecoder(config)
        self.motion_out = nn.Linear(config.width, n_components)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.motion_in(frames)

    def teacher_forced(self, memory: torch.Tensor, inputs: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.motion_out(self.teacher_forced_hidden(memory, inputs, style))

    def loss(self, batch: dict, generator: torch.Generator, sampling_probability: float = 0.0) -> dict:
        memory = self.batch_audio_memory(batch)
        style = self.style(batch["subjects"])
        target = batch["motion"]
        inputs = target
        if sampling_probability > 0:
            # Scheduled sampling (one-pass approximation): some previous-frame inputs are the
            # model's own teacher-forced predictions, closer to what inference feeds back.
            with torch.no_grad():
                predicted = self.teacher_forced(memory, target, style)
            use = torch.rand(target.shape[:2], generator=generator) < sampling_probability
            inputs = torch.where(use[..., None], predicted, target)
        prediction = self.teacher_forced(memory, inputs, style)
        loss = masked_mse(prediction, target, batch["mask"])
        return {"loss": loss, "motion_mse": loss.detach()}

    @torch.no_grad()
    def generate(self, mel: torch.Tensor, n_frames: int, subject: int, generator: torch.Generator) -> torch.Tensor:
        outputs = self.generate_frames(mel, n_frames, subject, self.motion_out.out_features,
                                       lambda h: self.motion_out(h[:, -1]))
        return outputs[0]


# ---------------------------------------------------------------------------- CodeTalker-like
class ResidualConv1d(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))


def residual_conv_stack(channels_in: int, width: int, channels_out: int, last_kernel: int) -> nn.Sequential:
    """Conv (kernel 3) to `width`, two residual dilated convs (dilation 1, 2), LeakyReLU, conv
    (kernel `last_kernel`, same length) to `channels_out`: CodeTalker-like encoder and decoder."""
    return nn.Sequential(nn.Conv1d(channels_in, width, 3, padding=1),
                         ResidualConv1d(width, 1), ResidualConv1d(width, 2),
                         nn.LeakyReLU(0.2), nn.Conv1d(width, channels_out, last_kernel, padding=last_kernel // 2))


class MotionVQVAE(nn.Module):
    """Stage 1 of CodeTalker: temporal conv encoder over per-frame motion (normalised PCA
    coefficients), a discrete codebook (each frame = `code_parts` codes of `code_dim` from one
    codebook of `codebook_size`, like CodeTalker's per-frame face components), conv decoder.
    The quantizer is the project's `core.vq.VectorQuantizer` (usage EMA, dead-code revival).
    Each code vector of the encoder output is layer-normalised (no affine) before quantisation
    and the codebook starts from encoder outputs (`init_codebook`): measured without both, the
    encoder outputs outgrew the Adam-updated codes (commitment loss in the hundreds, 15 of 256
    codes in use after 150 steps)."""

    def __init__(self, config: BaselineConfig, n_components: int):
        super().__init__()
        self.parts, self.code_dim = config.code_parts, config.code_dim
        latent = config.code_parts * config.code_dim
        self.encoder = residual_conv_stack(n_components, config.vq_width, latent, last_kernel=1)
        self.quantizer = VectorQuantizer(config.codebook_size, config.code_dim)
        self.decoder = residual_conv_stack(latent, config.vq_width, n_components, last_kernel=3)

    @property
    def latent_dim(self) -> int:
        return self.parts * self.code_dim

    def encode(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, T, K) -> continuous latent (B, T, parts * code_dim), each code vector normalised."""
        latent = self.encoder(motion.transpose(1, 2)).transpose(1, 2)
        b, t, _ = latent.shape
        parts = latent.reshape(b, t, self.parts, self.code_dim)
        return F.layer_norm(parts, (self.code_dim,)).reshape(b, t, self.latent_dim)

    @torch.no_grad()
    def init_codebook(self, latent: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> None:
        """Codes = randomly chosen encoder output vectors of valid frames (k-means++-free start)."""
        vectors = latent[mask].reshape(-1, self.code_dim)
        picks = torch.randint(0, vectors.shape[0], (self.quantizer.codebook_size,), generator=generator)
        self.quantizer.codebook.weight.copy_(vectors[picks])

    def quantize(self, latent: torch.Tensor):
        """(B, T, P*D) -> QuantizerOutput whose `quantized` is (B, T, P*D) (straight-through)."""
        b, t, _ = latent.shape
        z = latent.reshape(b, t, self.parts, self.code_dim).permute(0, 3, 1, 2)  # (B, D, T, P)
        out = self.quantizer(z)
        out.quantized = out.quantized.permute(0, 2, 3, 1).reshape(b, t, self.latent_dim)
        return out

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent.transpose(1, 2)).transpose(1, 2)


class CodeTalkerNet(AutoregressiveDecoderNet):
    """Stage 1 `vqvae` (above; conv width 128, 8 codes of 16 per frame from 256 codes); stage 2
    an autoregressive transformer (same decoder as the FaceFormer-like, width 128, 2 layers) that
    regresses each frame's latent features from audio and the previous frames' quantised
    features; as in CodeTalker the features are quantised with the frozen codebook before they
    are fed back and decoded. Loss of stage 2: feature regression to the ground truth's quantised
    features + motion loss through the frozen decoder (straight-through quantisation)."""

    def __init__(self, config: BaselineConfig, n_components: int, n_subjects: int):
        super().__init__()
        self.config = config
        self.vqvae = MotionVQVAE(config, n_components)
        latent = self.vqvae.latent_dim
        self.add_audio_input(config)
        self.feature_in = nn.Linear(latent, config.width)
        self.start = nn.Parameter(torch.zeros(config.width))
        self.style = SubjectEmbedding(n_subjects, config.width)
        self.decoder = AlignedDecoder(config)
        self.feature_out = nn.Linear(config.width, latent)

    def stage_parameters(self, stage: int):
        for name, p in self.named_parameters():
            if (stage == 1) == name.startswith("vqvae."):
                yield name, p

    def vq_loss(self, batch: dict, generator: torch.Generator, first_step: bool = False) -> dict:
        target = batch["motion"]
        latent = self.vqvae.encode(target)
        if first_step:
            self.vqvae.init_codebook(latent, batch["mask"], generator)
        out = self.vqvae.quantize(latent)
        reconstruction = masked_mse(self.vqvae.decode(out.quantized), target, batch["mask"])
        loss = reconstruction + out.codebook_loss + self.config.commitment_beta * out.commitment_loss
        return {"loss": loss, "reconstruction": reconstruction.detach(),
                "perplexity": out.perplexity.detach()}

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.feature_in(frames)

    def predictor_loss(self, batch: dict, generator: torch.Generator) -> dict:
        self.vqvae.eval()  # frozen: no usage updates, no revival
        target = batch["motion"]
        with torch.no_grad():
            features = self.vqvae.quantize(self.vqvae.encode(target)).quantized
        memory = self.batch_audio_memory(batch)
        style = self.style(batch["subjects"])
        predicted = self.feature_out(self.teacher_forced_hidden(memory, features, style))
        feature_loss = masked_mse(predicted, features, batch["mask"])
        motion = self.vqvae.decode(self.vqvae.quantize(predicted).quantized)
        motion_loss = masked_mse(motion, target, batch["mask"])
        return {"loss": feature_loss + motion_loss, "feature_mse": feature_loss.detach(),
                "motion_mse": motion_loss.detach()}

    @torch.no_grad()
    def generate(self, mel: torch.Tensor, n_frames: int, subject: int, generator: torch.Generator) -> torch.Tensor:
        # As in CodeTalker, each frame's features are quantised before they are fed back.
        features = self.generate_frames(
            mel, n_frames, subject, self.vqvae.latent_dim,
            lambda h: self.vqvae.quantize(self.feature_out(h[:, -1:])).quantized[:, 0],
        )
        return self.vqvae.decode(features)[0]


# ---------------------------------------------------------------------------- FaceDiffuser-like
class FaceDiffuserNet(AudioConditionedNet):
    """DDPM over whole sequences of per-component standardised PCA coefficients (1000 steps,
    cosine betas), predicting the clean sample x0 like FaceDiffuser; denoiser: noisy motion +
    audio features + step embedding + subject embedding -> 2-layer GRU (width 128) -> x0."""

    def __init__(self, config: BaselineConfig, n_components: int, n_subjects: int):
        super().__init__()
        self.config = config
        self.add_audio_input(config)
        self.motion_in = nn.Linear(n_components, config.width)
        self.time_mlp = nn.Sequential(nn.Linear(config.width, config.width), nn.SiLU(),
                                      nn.Linear(config.width, config.width))
        self.style = SubjectEmbedding(n_subjects, config.width)
        self.gru = nn.GRU(config.width, config.width, num_layers=config.gru_layers, batch_first=True,
                          dropout=config.dropout if config.gru_layers > 1 else 0.0)
        self.motion_out = nn.Linear(config.width, n_components)
        self.schedule = DDPMSchedule(config.diffusion_steps, config.beta_schedule)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, memory: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        step = self.time_mlp(sinusoidal_embedding(t, memory.shape[-1]))
        h = self.motion_in(x_t) + memory + (step + style)[:, None]
        h, _ = self.gru(h)
        return self.motion_out(h)

    def loss(self, batch: dict, generator: torch.Generator) -> dict:
        x0 = batch["motion"]
        memory = self.batch_audio_memory(batch)
        style = self.style(batch["subjects"])
        t = torch.randint(0, self.schedule.n_steps, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        prediction = self.denoise(self.schedule.q_sample(x0, t, noise), t, memory, style)
        loss = masked_mse(prediction, x0, batch["mask"])
        return {"loss": loss, "x0_mse": loss.detach()}

    def timesteps(self, steps: int) -> list[int]:
        """Descending timesteps of a respaced chain; steps == n_steps is the plain DDPM chain."""
        steps = int(min(max(1, steps), self.schedule.n_steps))
        return self.schedule.ddim_timesteps(steps)

    @torch.no_grad()
    def generate(self, mel: torch.Tensor, n_frames: int, subject: int, generator: torch.Generator,
                 steps: int | None = None) -> torch.Tensor:
        """Ancestral DDPM sampling; with fewer steps than trained, the chain is respaced
        (Nichol & Dhariwal): betas recomputed between the kept steps' alpha-bars."""
        memory = self.audio_memory(mel, n_frames)
        style = self.subject_style(subject)
        k = self.motion_out.out_features
        x = torch.randn((1, n_frames, k), generator=generator)
        chain = self.timesteps(steps or self.config.sampling_steps)
        abar = self.schedule.alphas_cumprod
        for i, t in enumerate(chain):
            x0 = self.denoise(x, torch.tensor([t]), memory, style)
            if i == len(chain) - 1:
                x = x0
                break
            t_prev = chain[i + 1]
            abar_t, abar_prev = float(abar[t]), float(abar[t_prev])
            beta = 1.0 - abar_t / abar_prev
            mean = (math.sqrt(abar_prev) * beta / (1 - abar_t)) * x0 + \
                   (math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)) * x
            variance = beta * (1 - abar_prev) / (1 - abar_t)
            x = mean + math.sqrt(max(variance, 0.0)) * torch.randn(x.shape, generator=generator)
        return x[0]


# ---------------------------------------------------------------------------- the interface
class Baseline:
    """A trained baseline: `predict(audio_16k, n_frames, subject) -> (n_frames, V, 3)` float32
    vertex offsets from the subject's neutral in metres (the dataset's units), 30 fps frames
    (frame i covers [i, i+1) / 30 s), motion only."""

    name: str = ""
    slug: str = ""
    inference_note: str = ""
    net_class: type = nn.Module
    # "global": coefficients / basis.scale (the regressors' MSE ~ vertex MSE);
    # "component": coefficients / basis.component_std (unit variance, for diffusion)
    normalisation: str = "global"

    def __init__(self, net: nn.Module, basis: MotionBasis, subjects: list[str], info: dict | None = None):
        self.net = net.eval()
        self.basis = basis
        self.subjects = list(subjects)
        self.info = dict(info or {})
        self.unseen_subject_note = UNSEEN_SUBJECT_NOTE

    # -- construction
    @classmethod
    def build(cls, config: BaselineConfig, basis: MotionBasis, subjects: list[str]) -> Baseline:
        net = cls.net_class(config, basis.n_components, len(subjects))
        return cls(net, basis, subjects)

    @property
    def config(self) -> BaselineConfig:
        return self.net.config

    # -- normalisation of the motion representation
    def normaliser(self) -> torch.Tensor:
        if self.normalisation == "component":
            return self.basis.component_std
        return self.basis.scale.expand(self.basis.n_components)

    def to_model_space(self, coefficients: torch.Tensor) -> torch.Tensor:
        return coefficients / self.normaliser()

    def from_model_space(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.normaliser()

    def subject_index(self, subject: str) -> int:
        return self.subjects.index(subject) if subject in self.subjects else -1

    # -- inference
    def generate_kwargs(self) -> dict:
        return {}

    def predict(self, audio_16k: np.ndarray, n_frames: int, subject: str, seed: int = 0) -> np.ndarray:
        """Offsets (n_frames, V, 3) float32 metres. The audio is loudness-normalised with
        `load_audio` as in training (idempotent on audio that already went through it).
        Deterministic for a given `seed` (only the diffusion baseline draws noise)."""
        n_frames = int(n_frames)
        if n_frames <= 0:
            return np.zeros((0, self.basis.n_vertices, 3), np.float32)
        audio = load_audio((np.asarray(audio_16k, np.float32), SAMPLE_RATE))
        mel = torch.from_numpy(self.net.front_end.log_mel(audio))
        generator = torch.Generator().manual_seed(int(seed))
        self.net.eval()
        with torch.inference_mode():
            values = self.net.generate(mel, n_frames, self.subject_index(subject), generator,
                                       **self.generate_kwargs())
            offsets = self.basis.offsets(self.from_model_space(values))
        return offsets.numpy().astype(np.float32)

    # -- weights
    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update({f"basis.{k}": v for k, v in self.basis.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def metadata(self, extra: dict | None = None) -> dict[str, str]:
        meta = {"baseline": self.name, "format_version": FORMAT_VERSION,
                "config": json.dumps(asdict(self.config), sort_keys=True),
                "subjects": json.dumps(self.subjects), "n_vertices": str(self.basis.n_vertices),
                "unseen_subject": self.unseen_subject_note}
        for key, value in {**self.info, **(extra or {})}.items():
            meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return meta

    def save(self, path: Path, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors(), str(path), metadata=self.metadata(extra))

    @classmethod
    def from_file(cls, path: Path, **options) -> Baseline:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        if meta.get("baseline") != cls.name:
            raise ValueError(f"{path} holds {meta.get('baseline')!r}, not {cls.name!r}")
        config = BaselineConfig.from_dict(json.loads(meta["config"]))
        for key, value in options.items():
            setattr(config, key, value)
        subjects = json.loads(meta["subjects"])
        components = tensors["basis.components"]
        basis = MotionBasis(int(meta["n_vertices"]), components.shape[0])
        basis.load_state_dict({k[len("basis."):]: v for k, v in tensors.items() if k.startswith("basis.")})
        model = cls.build(config, basis, subjects)
        model.net.load_state_dict({k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")})
        known = {"baseline", "format_version", "config", "subjects", "n_vertices", "unseen_subject"}
        model.info = {k: _maybe_json(v) for k, v in meta.items() if k not in known}
        model.net.eval()
        return model


def _maybe_json(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


class FaceFormerBaseline(Baseline):
    name = "FaceFormer-like"
    slug = "faceformer"
    net_class = FaceFormerNet
    inference_note = ("autoregressive over frames; teacher-forced training with scheduled "
                      "sampling; PCA coefficients of the offsets")


class CodeTalkerBaseline(Baseline):
    name = "CodeTalker-like"
    slug = "codetalker"
    net_class = CodeTalkerNet
    inference_note = ("autoregressive feature regression + codebook quantisation per frame, "
                      "VQ-VAE decoder; PCA coefficients of the offsets")


class FaceDiffuserBaseline(Baseline):
    name = "FaceDiffuser-like"
    slug = "facediffuser"
    net_class = FaceDiffuserNet
    normalisation = "component"

    @property
    def inference_note(self) -> str:  # depends on the sampling steps in use
        steps = self.config.sampling_steps
        trained = self.config.diffusion_steps
        kind = "full DDPM chain" if steps >= trained else f"respaced DDPM, {steps} of {trained} steps"
        return f"DDPM trained with {trained} steps; inference: {kind}; seed 0; PCA coefficients"

    def generate_kwargs(self) -> dict:
        return {"steps": self.config.sampling_steps}


LEARNED_BASELINES: dict[str, type] = {
    cls.name: cls for cls in (FaceFormerBaseline, CodeTalkerBaseline, FaceDiffuserBaseline)
}


def baseline_class(name: str) -> type:
    """The class of a baseline by display name ("FaceFormer-like") or slug ("faceformer")."""
    for cls in LEARNED_BASELINES.values():
        if name in (cls.name, cls.slug):
            return cls
    raise KeyError(f"unknown baseline {name!r}; choose from {sorted(LEARNED_BASELINES)}")


def weights_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / WEIGHTS_NAME


def load_baseline(name: str, run_dir: Path, **options) -> Baseline:
    """The trained baseline `name` from `run_dir` (= <baselines-dir>/<slug>). Raises
    FileNotFoundError when it has not been trained (no checkpoint). `options` override inference
    settings of the config, e.g. `sampling_steps=1000` for the FaceDiffuser-like's full chain.
    `info` of the result has `trained_steps`, `total_steps` and `finished` from training."""
    cls = baseline_class(name)
    path = weights_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{cls.name} is not trained: no {path} "
                                f"(run tools/train_baselines.py --only {cls.slug})")
    return cls.from_file(path, **options)
