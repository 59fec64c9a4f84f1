"""Motion and texture metrics of the evaluation, with the definitions the peers use.

Motion (vertex offsets from the subject's neutral, metres, (T, V, 3)), after CodeTalker's
`main/cal_metric.py` (FaceDiffuser copies it):
- LVE: for each frame, the maximum over lip vertices of the **squared** L2 error; the mean over
  all test frames pooled (torchmetrics' `lip_vertex_error` per sequence, weighted by its frames).
  Papers label it "mm" but it is a squared distance; we report mm^2, and the unsquared variant
  (per-frame maximum L2 error over the lip, in mm) beside it.
- MVE (FaceDiffuser): mean over frames and face vertices of the unsquared L2 error, in mm.
- FDD: the upper-face dynamics of a sequence are the mean over upper-face vertices of the standard
  deviation over time of the vertex's squared displacement from the template; FDD of a sequence =
  dynamics(ground truth) - dynamics(prediction). CodeTalker averages this signed difference over
  sequences; we report that (`fdd_signed`) and the mean of its absolute value per sequence
  (`fdd`, the headline number: a model cannot win by being over-dynamic on some sequences and
  under-dynamic on others).

Texture (BasicSR's convention): PSNR and SSIM (11x11 Gaussian window, sigma 1.5) of the frame's
albedo in UV space, 8-bit, reconstructed as neutral albedo x wrinkle ratio, against the ground
truth reconstructed the same way, over the texels of the face mask. PSNR pools the squared error
over all frames of a sequence (a per-frame PSNR is infinite on frames without creases, where a
static texture is exact), through torchmetrics; SSIM is the SSIM map (torchmetrics' conventions,
computed separably for speed and tested against torchmetrics) averaged over the masked texels and
all frames. Both are averaged over sequences.

No maths here depends on the model or the dataset reader: arrays in, numbers out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.multimodal import lip_vertex_error

M_TO_MM = 1e3
M2_TO_MM2 = 1e6
SSIM_BATCH = 8  # frames per SSIM call: larger batches were slower at 128 px on one thread


def _check_pair(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape")
    if prediction.ndim != 4 and prediction.ndim != 3:
        raise ValueError(f"expected (T, V, 3) offsets or (T, H, W, 3) maps, got {prediction.shape}")


# ------------------------------------------------------------------------------------------------
# Motion


def lip_max_squared_errors(prediction: np.ndarray, truth: np.ndarray, lip_mask: np.ndarray) -> np.ndarray:
    """Per frame, the maximum over lip vertices of the squared L2 error (T,), metres^2."""
    _check_pair(prediction, truth)
    difference = np.asarray(truth, np.float64)[:, lip_mask] - np.asarray(prediction, np.float64)[:, lip_mask]
    return np.einsum("tvc,tvc->tv", difference, difference).max(axis=1)


def lve_sequence(prediction: np.ndarray, truth: np.ndarray, lip_mask: np.ndarray) -> float:
    """LVE of one sequence (mean over its frames), metres^2, through torchmetrics."""
    _check_pair(prediction, truth)
    lips = np.flatnonzero(lip_mask).tolist()
    return float(lip_vertex_error(torch.from_numpy(np.asarray(prediction, np.float64)),
                                  torch.from_numpy(np.asarray(truth, np.float64)), lips))


def mean_vertex_error(prediction: np.ndarray, truth: np.ndarray, vertex_mask: np.ndarray) -> float:
    """Mean over frames and masked vertices of the (unsquared) L2 error, metres."""
    _check_pair(prediction, truth)
    difference = np.asarray(truth, np.float64)[:, vertex_mask] - np.asarray(prediction, np.float64)[:, vertex_mask]
    return float(np.linalg.norm(difference, axis=-1).mean())


def upper_face_dynamics(offsets: np.ndarray, upper_face_mask: np.ndarray) -> float:
    """Mean over upper-face vertices of the std over time of the squared displacement, metres^2.

    CodeTalker's per-sequence "motion std": np.std (ddof 0) over frames of sum_xyz(d^2)."""
    offsets = np.asarray(offsets, np.float64)[:, upper_face_mask]
    squared = np.einsum("tvc,tvc->tv", offsets, offsets)
    return float(squared.std(axis=0).mean())


def fdd_sequence(prediction: np.ndarray, truth: np.ndarray, upper_face_mask: np.ndarray) -> float:
    """Signed FDD of one sequence: dynamics(truth) - dynamics(prediction), metres^2."""
    _check_pair(prediction, truth)
    return upper_face_dynamics(truth, upper_face_mask) - upper_face_dynamics(prediction, upper_face_mask)


@dataclass
class MotionScores:
    """Accumulates motion metrics over sequences; `summary()` gives them in mm / mm^2."""

    lip_mask: np.ndarray
    face_mask: np.ndarray
    upper_face_mask: np.ndarray
    frames: int = 0
    sequences: int = 0
    lve_sum: float = 0.0            # sum over frames of the lip max squared error (m^2)
    lve_unsquared_sum: float = 0.0  # sum over frames of the lip max L2 error (m)
    mve_sum: float = 0.0            # sum over frames of the mean face-vertex error (m)
    fdd: list = field(default_factory=list)                 # signed, per sequence (m^2)
    truth_dynamics: list = field(default_factory=list)      # per sequence (m^2)

    def add(self, prediction: np.ndarray, truth: np.ndarray) -> dict:
        """Adds one sequence; returns its own metrics (same keys and units as `summary`)."""
        _check_pair(prediction, truth)
        n = len(truth)
        lve = lve_sequence(prediction, truth, self.lip_mask)
        lip_max = lip_max_squared_errors(prediction, truth, self.lip_mask)
        mve = mean_vertex_error(prediction, truth, self.face_mask)
        truth_dynamics = upper_face_dynamics(truth, self.upper_face_mask)
        fdd = truth_dynamics - upper_face_dynamics(prediction, self.upper_face_mask)
        self.frames += n
        self.sequences += 1
        self.lve_sum += lve * n
        self.lve_unsquared_sum += float(np.sqrt(lip_max).sum())
        self.mve_sum += mve * n
        self.fdd.append(fdd)
        self.truth_dynamics.append(truth_dynamics)
        return {"lve_mm2": lve * M2_TO_MM2, "lve_mm": float(np.sqrt(lip_max).mean()) * M_TO_MM,
                "mve_mm": mve * M_TO_MM, "fdd_mm2": abs(fdd) * M2_TO_MM2, "fdd_signed_mm2": fdd * M2_TO_MM2}

    def summary(self) -> dict:
        if not self.frames:
            return {}
        fdd = np.asarray(self.fdd)
        return {
            "lve_mm2": self.lve_sum / self.frames * M2_TO_MM2,
            "lve_mm": self.lve_unsquared_sum / self.frames * M_TO_MM,
            "mve_mm": self.mve_sum / self.frames * M_TO_MM,
            "fdd_mm2": float(np.abs(fdd).mean()) * M2_TO_MM2,
            "fdd_signed_mm2": float(fdd.mean()) * M2_TO_MM2,
            "truth_dynamics_mm2": float(np.mean(self.truth_dynamics)) * M2_TO_MM2,
            "frames": self.frames,
            "sequences": self.sequences,
        }


# ------------------------------------------------------------------------------------------------
# Texture


def albedo_8bit(neutral_albedo: np.ndarray, ratio: np.ndarray) -> torch.Tensor:
    """Neutral albedo (H, W, 3) in [0, 1] x ratio maps (T, H, W, 3) -> 8-bit values as float32
    (T, 3, H, W) in [0, 255] (rounded, clipped), the layout torchmetrics' image metrics take."""
    neutral = np.asarray(neutral_albedo, np.float32)
    ratio = np.asarray(ratio, np.float32)
    if ratio.ndim != 4 or ratio.shape[1:] != neutral.shape:
        raise ValueError(f"ratio maps {ratio.shape} do not match the albedo {neutral.shape}")
    values = np.rint(np.clip(neutral[None] * ratio, 0.0, 1.0) * 255.0).astype(np.float32)
    return torch.from_numpy(values).permute(0, 3, 1, 2).contiguous()


def masked_psnr(prediction: torch.Tensor, truth: torch.Tensor, mask: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR (dB) over the masked texels of all frames and channels pooled (torchmetrics);
    inf when they are identical. Images (T, C, H, W)."""
    selected = torch.from_numpy(np.asarray(mask, bool))
    return float(peak_signal_noise_ratio(prediction[..., selected], truth[..., selected], data_range=data_range))


def gaussian_ssim_map(prediction: torch.Tensor, truth: torch.Tensor, data_range: float = 255.0,
                      sigma: float = 1.5, kernel_size: int = 11, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """SSIM map (N, C, H, W) with torchmetrics' exact conventions (Gaussian window `kernel_size` x
    `kernel_size`, reflection padding, full-size map), filtering separably.

    Why not torchmetrics' `structural_similarity_index_measure` itself: it filters with a dense
    11x11 grouped conv2d, 31-36 ms per 128 px frame on this machine's loaded CPU against 7 ms for two
    1-D passes, and the evaluation scores ~50k frames. tests/test_evaluate.py checks that both agree
    to 1e-5 on the full map (torchmetrics stays the reference)."""
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    coordinates = torch.arange(kernel_size, dtype=truth.dtype) - (kernel_size - 1) / 2
    kernel = torch.exp(-(coordinates ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    pad = (kernel_size - 1) // 2
    channels = truth.shape[1]
    stack = torch.cat([prediction, truth, prediction * prediction, truth * truth, prediction * truth], dim=1)
    stack = torch.nn.functional.pad(stack, (pad, pad, pad, pad), mode="reflect")
    groups = stack.shape[1]
    stack = torch.nn.functional.conv2d(stack, kernel.view(1, 1, 1, -1).expand(groups, 1, 1, kernel_size), groups=groups)
    stack = torch.nn.functional.conv2d(stack, kernel.view(1, 1, -1, 1).expand(groups, 1, kernel_size, 1), groups=groups)
    mu_p, mu_t, pp, tt, pt = stack.split(channels, dim=1)
    mu_pp, mu_tt, mu_pt = mu_p * mu_p, mu_t * mu_t, mu_p * mu_t
    return ((2 * mu_pt + c1) * (2 * (pt - mu_pt) + c2)) / ((mu_pp + mu_tt + c1) * (pp - mu_pp + tt - mu_tt + c2))


def torchmetrics_ssim_map(prediction: torch.Tensor, truth: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """torchmetrics' SSIM map (N, C, H, W), Gaussian 11x11, sigma 1.5: the reference."""
    _, full = structural_similarity_index_measure(
        prediction, truth, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=data_range,
        reduction="none", return_full_image=True)
    return full


def masked_ssim(prediction: torch.Tensor, truth: torch.Tensor, mask: np.ndarray, data_range: float = 255.0,
                batch: int = SSIM_BATCH) -> float:
    """Mean of the SSIM map (Gaussian 11x11, sigma 1.5, whole image with reflection padding) over
    the masked texels, channels and frames. Images (T, C, H, W)."""
    selected = torch.from_numpy(np.asarray(mask, bool))
    total, count = 0.0, 0
    for start in range(0, len(truth), batch):
        full = gaussian_ssim_map(prediction[start:start + batch], truth[start:start + batch], data_range)
        values = full[..., selected]
        total += float(values.double().sum())
        count += values.numel()
    return total / count if count else math.nan


@dataclass
class TextureScores:
    """Accumulates per-sequence PSNR / SSIM of the reconstructed albedo over the face mask."""

    mask: np.ndarray
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    frames: int = 0

    def add(self, prediction_ratio: np.ndarray, truth_ratio: np.ndarray, neutral_albedo: np.ndarray,
            with_ssim: bool = True) -> dict:
        """Adds one sequence (ratio maps (T, H, W, 3)); `with_ssim=False` skips SSIM (~3-7 ms per
        128 px frame on one CPU thread, about half the cost of generating the frame)."""
        if np.shape(prediction_ratio) != np.shape(truth_ratio):
            raise ValueError(f"ratio maps {np.shape(prediction_ratio)} and {np.shape(truth_ratio)} differ")
        truth = albedo_8bit(neutral_albedo, truth_ratio)
        prediction = albedo_8bit(neutral_albedo, prediction_ratio)
        psnr = masked_psnr(prediction, truth, self.mask)
        ssim = masked_ssim(prediction, truth, self.mask) if with_ssim else math.nan
        self.psnr.append(psnr)
        if with_ssim:
            self.ssim.append(ssim)
        self.frames += len(truth)
        return {"psnr_db": psnr, "ssim": ssim}

    def summary(self) -> dict:
        if not self.psnr:
            return {}
        psnr = np.asarray(self.psnr)
        finite = psnr[np.isfinite(psnr)]
        return {
            # Sequences reproduced exactly (infinite PSNR) are left out of the mean and counted.
            "psnr_db": float(finite.mean()) if finite.size else math.inf,
            "psnr_exact_sequences": int((~np.isfinite(psnr)).sum()),
            "ssim": float(np.mean(self.ssim)) if self.ssim else math.nan,
            "frames": self.frames,
            "sequences": len(self.psnr),
        }


@dataclass
class CreaseScores:
    """Accumulates the error of the crease fold: the fold activation (0..1) over the face texels,
    and the crease height it gives (mm: the subject's full-depth detail, averaged to the map's
    texels, times the fold) over the texels that hold a crease. A method with no fold (older
    weights, a static texture) is scored as fold 0: no crease ever forms."""

    mask: np.ndarray
    fold_abs: float = 0.0
    fold_count: int = 0
    height_abs: float = 0.0
    height_count: int = 0

    def add(self, prediction_fold: np.ndarray | None, truth_fold: np.ndarray, detail_mm: np.ndarray) -> None:
        truth = np.asarray(truth_fold, np.float32)
        prediction = np.zeros_like(truth) if prediction_fold is None else np.asarray(prediction_fold, np.float32)
        if prediction.shape != truth.shape:
            raise ValueError(f"fold maps {prediction.shape} and {truth.shape} differ")
        difference = (prediction - truth)[:, self.mask]
        self.fold_abs += float(np.abs(difference).sum())
        self.fold_count += difference.size
        creased = (np.asarray(detail_mm) < -0.01)[self.mask]
        heights = difference[:, creased] * np.asarray(detail_mm)[self.mask][creased]
        self.height_abs += float(np.abs(heights).sum())
        self.height_count += heights.size

    def summary(self) -> dict:
        if not self.fold_count:
            return {}
        return {"fold_mae": self.fold_abs / self.fold_count,
                "crease_height_mae_mm": self.height_abs / max(self.height_count, 1)}
