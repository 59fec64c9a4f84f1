"""Closure detector: which frames of the audio are lips-shut sounds (issue #19).

The lip seal (core/lip_seal.py) presses near-closures of the generated lips shut. Pressed on
every frame it also shuts lips the data keeps slightly apart (/f v/, rounded /u w/, the onset of
a vowel), which costs lip accuracy on the synthetic test set (docs/RESULTS.md). The detector
says where a seal belongs: a small dilated 1-D convolution over the log-mel spectrogram that
gives, per output frame, the probability that the lips are shut there (a /p b m/, or silence
between words). It is trained on the synthetic dataset's ground-truth lip gap, with telephone
copies and the stage-2 log-mel augmentations (tools/train_closure.py), and travels in the weights
file as the optional tensors `closure.*` plus a `closure_detector` metadata entry (its
hyperparameters). Weights without it get no seal.

Independent of the diffusion model's audio front end on purpose: it is trained in minutes on top
of a shipped bundle without touching the network whose lips it judges.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import MODEL_FPS, SAMPLE_RATE
from .features import MEL_LOG_CENTER, MEL_LOG_SCALE  # the bundled front end's log-mel normalisation

CLOSURE_PREFIX = "closure."
CLOSURE_METADATA = "closure_detector"


@dataclass(frozen=True)
class ClosureDetectorConfig:
    n_mels: int = 80
    n_fft: int = 400
    hop: int = 160  # 100 mel frames per second at 16 kHz
    width: int = 64
    kernel: int = 3
    # mel frames: receptive field +-(1+2+4+8+16) * (kernel-1)/2 = +-31 frames = +-0.31 s
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 8, 16))
    closed_mm: float = 1.67  # the training label: ground-truth midline lip gap at most this

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClosureDetectorConfig:
        values = json.loads(text)
        values["dilations"] = tuple(int(d) for d in values.get("dilations", cls.dilations))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


class ClosureDetector(nn.Module):
    """Log-mel (B, n_mels, M) -> closure logits (B, n_frames) at MODEL_FPS frame centres."""

    def __init__(self, config: ClosureDetectorConfig | None = None):
        super().__init__()
        self.config = config or ClosureDetectorConfig()
        width = self.config.width
        kernel = self.config.kernel
        self.input_proj = nn.Conv1d(self.config.n_mels, width, 1)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in self.config.dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in self.config.dilations)
        self.head = nn.Conv1d(width, 1, 1)

    def log_mel(self, audio_16k: np.ndarray) -> np.ndarray:
        """(N,) audio at 16 kHz -> (n_mels, M) natural-log mel power (librosa, centred frames)."""
        import librosa

        audio = np.asarray(audio_16k, dtype=np.float32)
        if audio.size < self.config.n_fft:
            audio = np.pad(audio, (0, self.config.n_fft - audio.size))
        mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=self.config.n_fft,
                                             hop_length=self.config.hop, n_mels=self.config.n_mels,
                                             fmin=20.0, fmax=SAMPLE_RATE / 2, center=True)
        return np.log(mel + 1e-6).astype(np.float32)

    def forward(self, log_mel: torch.Tensor, n_frames: int, start_frame: int = 0, mel_offset: int = 0) -> torch.Tensor:
        """Logits of model frames start_frame .. start_frame + n_frames, where mel column 0 is
        mel frame `mel_offset` of the clip (training windows); differentiable."""
        x = self.input_proj((log_mel - MEL_LOG_CENTER) / MEL_LOG_SCALE)
        for conv, norm in zip(self.convs, self.norms):
            x = x + conv(F.gelu(norm(x.transpose(1, 2)).transpose(1, 2)))
        logits = self.head(x)[:, 0]  # (B, M)
        # Linear interpolation at each model frame's centre time (mel frame j is centred at
        # j * hop / SAMPLE_RATE seconds).
        mel_fps = SAMPLE_RATE / self.config.hop
        frames = torch.arange(start_frame, start_frame + n_frames, device=x.device, dtype=torch.float64)
        positions = ((frames + 0.5) * (mel_fps / MODEL_FPS)).float() - mel_offset
        positions = positions.clamp(0, logits.shape[-1] - 1)
        lower = positions.floor().long()
        upper = (lower + 1).clamp(max=logits.shape[-1] - 1)
        weight = positions - lower
        return logits[..., lower] * (1 - weight) + logits[..., upper] * weight

    @torch.no_grad()
    def probabilities(self, audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
        """(n_frames,) float32 probability that the lips are shut at each model frame."""
        device = self.head.weight.device
        mel = torch.from_numpy(self.log_mel(audio_16k)).to(device)
        return torch.sigmoid(self.forward(mel[None], n_frames)[0]).float().cpu().numpy()

    # ------------------------------------------------------------------ weights
    def weight_tensors(self) -> dict[str, torch.Tensor]:
        return {CLOSURE_PREFIX + name: tensor.detach().float().contiguous() for name, tensor in self.state_dict().items()}

    @classmethod
    def from_weights(cls, tensors: dict[str, torch.Tensor], metadata_json: str) -> ClosureDetector:
        """The detector stored as `closure.*` tensors and its config (metadata JSON); ValueError
        when they do not fit together."""
        detector = cls(ClosureDetectorConfig.from_json(metadata_json))
        state = {name[len(CLOSURE_PREFIX):]: tensor for name, tensor in tensors.items()}
        try:
            result = detector.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"closure detector tensors do not fit its config: {exc}") from exc
        del result
        return detector.eval()
