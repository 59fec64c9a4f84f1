"""Audio encoders: 16 kHz mono audio -> one feature vector per model frame (MODEL_FPS).

Both encoders share one interface, `AudioEncoder.encode(audio_16k, n_frames) -> (T, C)`:
- `BundledAudioEncoder`: librosa log-mel spectrogram (100 frames/s) + a small learned front end
  (dilated 1-D convolutions), trained jointly with the denoiser; its weights ship in the
  project's safetensors file. Features are linearly interpolated to `n_frames`.
- `HubertAudioEncoder`: a HuBERT model loaded with transformers from a *local* directory
  (`HubertModel.from_pretrained(local_dir)`; model hubs are never contacted). Its 50 Hz hidden
  states are linearly interpolated to `n_frames`. Long audio is processed in overlapping chunks so
  memory stays bounded (self-attention is quadratic in length).
Which encoder a weights file needs is recorded in its metadata (`audio_encoder`), checked at load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import MODEL_FPS, SAMPLE_RATE, ModelConfig
from .errors import WeightsError


def interpolate_frames(features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Linear interpolation along time: (T_in, C) -> (n_frames, C), covering the same duration."""
    if features.shape[0] == n_frames:
        return features
    if features.shape[0] == 1:
        return features.expand(n_frames, -1).clone()
    x = features.t().unsqueeze(0)  # (1, C, T)
    return F.interpolate(x, size=n_frames, mode="linear", align_corners=False)[0].t().contiguous()


class AudioEncoder(nn.Module):
    """The one interface to an audio encoder, for generation and for training.

    `kind` is the name in the weights' metadata and in `ModelConfig.audio_encoder`;
    `feature_dim` the output width. `stored_with_model`: its weights are trained with the denoiser
    and saved in the model's weights file (else they come from elsewhere and stay frozen).
    `augments_input`: stage 2's log-mel augmentation applies to its cached training input.
    """

    kind: str = ""
    feature_dim: int = 0
    stored_with_model: bool = False
    augments_input: bool = False

    def encode(self, audio_16k: np.ndarray, n_frames: int) -> torch.Tensor:
        """(N,) audio at SAMPLE_RATE -> (n_frames, feature_dim) features at MODEL_FPS."""
        raise NotImplementedError

    def training_input(self, audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
        """What stage 2 caches per utterance, from which `window_features` cuts windows."""
        raise NotImplementedError

    def window_features(self, cached: torch.Tensor, start_frame: int, n_frames: int) -> torch.Tensor:
        """(n_frames, C) features of model frames start..start+n from a cached training input
        (differentiable where the encoder trains)."""
        raise NotImplementedError

    def clip_features(self, cached: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(n_frames, C) features of a whole cached clip."""
        return self.window_features(cached, 0, n_frames)

    def warm_up(self) -> None:
        """Pay one-off costs (imports, JIT) before the user's first generation."""

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")


# Fixed affine scaling of the natural-log mel power (audio is loudness-normalised by load_audio,
# so absolute levels mean something): silence (-13.8) maps to about -1.2, loud speech to +2.
# Not a per-frame normalisation, which would make breaths and background noise look like speech.
MEL_LOG_CENTER = -9.0
MEL_LOG_SCALE = 4.0


class BundledAudioEncoder(AudioEncoder):
    """Log-mel + learned dilated-conv front end (receptive field 0.61 s with the defaults)."""

    kind = "bundled"
    stored_with_model = True
    augments_input = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_mels = config.n_mels
        self.n_fft = config.mel_n_fft
        self.hop = config.mel_hop
        self.feature_dim = config.audio_feature_dim
        width = config.audio_feature_dim
        kernel = config.frontend_kernel
        self.input_proj = nn.Conv1d(config.n_mels, width, 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, kernel, dilation=d, padding=d * (kernel - 1) // 2)
            for d in config.frontend_dilations
        )
        # Normalised per frame over channels (not over time): a frame's features depend only on
        # audio within the receptive field, the same in training windows and in whole clips.
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in config.frontend_dilations)
        self.output_norm = nn.LayerNorm(width)

    def log_mel(self, audio_16k: np.ndarray) -> np.ndarray:
        """(N,) audio -> (n_mels, frames) log-mel at SAMPLE_RATE / hop frames per second."""
        import librosa

        audio = np.asarray(audio_16k, dtype=np.float32)
        if audio.size < self.n_fft:  # keep at least one analysis frame
            audio = np.pad(audio, (0, self.n_fft - audio.size))
        mel = librosa.feature.melspectrogram(
            y=audio,
            sr=SAMPLE_RATE,
            n_fft=self.n_fft,
            hop_length=self.hop,
            n_mels=self.n_mels,
            fmin=20.0,
            fmax=SAMPLE_RATE / 2,
            center=True,
        )
        return np.log(mel + 1e-6).astype(np.float32)

    @property
    def mel_fps(self) -> float:
        return SAMPLE_RATE / self.hop

    @property
    def receptive_radius(self) -> int:
        """Mel frames on each side that influence one output position."""
        return sum(conv.dilation[0] * (conv.kernel_size[0] - 1) // 2 for conv in self.convs)

    def mel_positions(self, start_frame: int, n_frames: int, device=None) -> torch.Tensor:
        """Fractional mel index of the centre time of model frames start..start+n (MODEL_FPS).

        Model frame i spans [i, i + 1) / MODEL_FPS seconds; mel frame j (librosa, center=True)
        is centred at j / mel_fps seconds."""
        frames = torch.arange(
            start_frame, start_frame + n_frames, device=device, dtype=torch.float64
        )
        return ((frames + 0.5) * (self.mel_fps / MODEL_FPS)).float()

    def forward(
        self, log_mel: torch.Tensor, n_frames: int, start_frame: int = 0, mel_offset: int = 0
    ) -> torch.Tensor:
        """(B, n_mels, M) log-mel -> (B, n_frames, C) features of model frames
        start_frame..start_frame+n_frames, where mel column 0 is mel frame `mel_offset` of the
        clip. Differentiable (used in training)."""
        x = self.input_proj((log_mel - MEL_LOG_CENTER) / MEL_LOG_SCALE)
        for conv, norm in zip(self.convs, self.norms):
            x = x + conv(F.gelu(norm(x.transpose(1, 2)).transpose(1, 2)))  # residual
        # Linear interpolation at each model frame's centre time (same formula for whole clips
        # and training windows, so both see identical features).
        positions = self.mel_positions(start_frame, n_frames, x.device) - mel_offset
        positions = positions.clamp(0, x.shape[-1] - 1)
        lower = positions.floor().long()
        upper = (lower + 1).clamp(max=x.shape[-1] - 1)
        weight = (positions - lower).to(x.dtype)
        x = x[..., lower] * (1 - weight) + x[..., upper] * weight
        return self.output_norm(x.transpose(1, 2))

    def training_input(self, audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
        return self.log_mel(audio_16k)

    def clip_features(self, cached: torch.Tensor, n_frames: int) -> torch.Tensor:
        return self.forward(cached[None], n_frames)[0]

    def warm_up(self) -> None:
        self.log_mel(np.zeros(SAMPLE_RATE // 10, np.float32))

    def window_features(
        self, log_mel: torch.Tensor, start_frame: int, n_frames: int
    ) -> torch.Tensor:
        """Features (n_frames, C) of one training window from the clip's full log-mel
        (n_mels, M): only the mel columns the window needs (plus the receptive field) are
        processed, and the result equals the whole-clip features of those frames."""
        positions = self.mel_positions(start_frame, n_frames)
        margin = self.receptive_radius + 1
        lo = max(0, int(positions[0].floor()) - margin)
        hi = min(log_mel.shape[-1], int(positions[-1].ceil()) + margin + 1)
        return self.forward(log_mel[None, :, lo:hi], n_frames, start_frame, lo)[0]

    @torch.no_grad()
    def encode(self, audio_16k: np.ndarray, n_frames: int) -> torch.Tensor:
        mel = torch.from_numpy(self.log_mel(audio_16k)).to(self.device)
        return self.forward(mel[None], n_frames)[0]


class HubertAudioEncoder(AudioEncoder):
    """Frozen HuBERT from a local transformers checkpoint directory."""

    kind = "hubert"
    NATIVE_FPS = 50.0  # HuBERT's conv feature extractor: 16 kHz / 320 samples

    def __init__(
        self, local_dir: str | Path, chunk_seconds: float = 20.0, context_seconds: float = 2.0
    ):
        super().__init__()
        local_dir = Path(local_dir)
        if not (local_dir / "config.json").is_file():
            raise WeightsError(
                f"No HuBERT checkpoint in {local_dir} (config.json missing). Point to a folder "
                "saved with transformers' save_pretrained()."
            )
        from transformers import HubertModel

        try:
            # safetensors only: a pytorch_model.bin would be unpickled (it can run code).
            self.model = HubertModel.from_pretrained(
                str(local_dir), local_files_only=True, use_safetensors=True
            )
        except Exception as exc:  # noqa: BLE001 - any loading failure becomes one clear error
            raise WeightsError(f"Could not load HuBERT from {local_dir}: {exc}") from exc
        self.model.eval().requires_grad_(False)
        self.feature_dim = int(self.model.config.hidden_size)
        self.do_normalize = _read_do_normalize(local_dir)
        self.chunk_samples = int(chunk_seconds * SAMPLE_RATE)
        self.context_samples = int(context_seconds * SAMPLE_RATE)

    def hidden_states(self, audio_16k: np.ndarray) -> torch.Tensor:
        """(N,) audio -> (T50, C) last hidden states at ~50 Hz, chunked for long audio."""
        audio = np.asarray(audio_16k, dtype=np.float32)
        if self.do_normalize:  # what Wav2Vec2FeatureExtractor does when do_normalize is true
            audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        min_samples = 400  # HuBERT's conv stack needs ~25 ms for one output frame
        if audio.size < min_samples:
            audio = np.pad(audio, (0, min_samples - audio.size))
        total = audio.size
        if total <= self.chunk_samples + 2 * self.context_samples:
            return self._run(audio)
        # Overlapping chunks: each keeps only its centre part, so every kept frame had
        # `context_seconds` of audio on both sides (except at the clip's ends).
        samples_per_frame = SAMPLE_RATE / self.NATIVE_FPS
        pieces = []
        for start in range(0, total, self.chunk_samples):
            stop = min(total, start + self.chunk_samples)
            lo, hi = max(0, start - self.context_samples), min(total, stop + self.context_samples)
            states = self._run(audio[lo:hi])
            first = int(round((start - lo) / samples_per_frame))
            count = int(round(stop / samples_per_frame)) - int(round(start / samples_per_frame))
            pieces.append(states[first : first + count])
        return torch.cat(pieces, dim=0)

    @torch.no_grad()
    def _run(self, audio: np.ndarray) -> torch.Tensor:
        inputs = torch.from_numpy(audio)[None].to(self.device)
        return self.model(inputs).last_hidden_state[0]

    @torch.no_grad()
    def encode(self, audio_16k: np.ndarray, n_frames: int) -> torch.Tensor:
        return interpolate_frames(self.hidden_states(audio_16k), n_frames)

    def training_input(self, audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
        return self.encode(audio_16k, n_frames).cpu().numpy().astype(np.float32)

    def window_features(self, cached: torch.Tensor, start_frame: int, n_frames: int) -> torch.Tensor:
        return cached[start_frame : start_frame + n_frames]


def _read_do_normalize(local_dir: Path) -> bool:
    config_path = local_dir / "preprocessor_config.json"
    if config_path.is_file():
        try:
            return bool(json.loads(config_path.read_text()).get("do_normalize", True))
        except (OSError, ValueError):
            return True
    return True  # zero-mean unit-variance input is what most HuBERT checkpoints expect


AUDIO_ENCODER_CLASSES: dict[str, type[AudioEncoder]] = {
    BundledAudioEncoder.kind: BundledAudioEncoder,
    HubertAudioEncoder.kind: HubertAudioEncoder,
}


def audio_encoder_class(kind: str) -> type[AudioEncoder]:
    try:
        return AUDIO_ENCODER_CLASSES[kind]
    except KeyError:
        raise WeightsError(f"Unknown audio encoder {kind!r} in the weights.") from None


def build_audio_encoder(config: ModelConfig, hubert_dir: str | Path | None = None) -> AudioEncoder:
    """The encoder a config asks for; HuBERT needs its local checkpoint directory."""
    encoder_class = audio_encoder_class(config.audio_encoder)
    if encoder_class is BundledAudioEncoder:
        return BundledAudioEncoder(config)
    if encoder_class is HubertAudioEncoder:
        if hubert_dir is None:
            raise WeightsError(
                "These weights use the HuBERT audio encoder: give the folder of a local HuBERT "
                "checkpoint (hubert_dir)."
            )
        encoder = HubertAudioEncoder(hubert_dir)
        if encoder.feature_dim != config.audio_feature_dim:
            raise WeightsError(
                f"The HuBERT checkpoint in {hubert_dir} gives {encoder.feature_dim}-wide features "
                f"but the weights expect {config.audio_feature_dim}."
            )
        return encoder
    raise WeightsError(f"Unknown audio encoder {config.audio_encoder!r} in the weights.")
