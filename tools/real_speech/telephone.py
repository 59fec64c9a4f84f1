"""8 kHz telephone versions of wideband recordings (issue #19: report every clip per band).

`telephone_version` runs sox (Debian package sox): band-limit to 300-3400 Hz (sinc, linear phase:
no time shift), resample to 8 kHz, encode with a narrowband codec (G.711 mu-law, or GSM 06.10
full rate), decode and resample back to 16 kHz, the rate the model reads. The codec alternates
over the wideband clips (`codec_for`), so both kinds of telephone line are in the set.
`band_energy_share` measures the result (used by the tests).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

TELEPHONE_BAND_HZ = (300, 3400)
CODECS = {"mu-law": ("ul", ["-e", "mu-law"]), "gsm": ("gsm", [])}


def sox_available() -> bool:
    return shutil.which("sox") is not None


def codec_for(index: int) -> str:
    """mu-law for even, GSM for odd clip indices (a fixed, reproducible mix)."""
    return "mu-law" if index % 2 == 0 else "gsm"


def telephone_version(source: Path, target: Path, codec: str = "mu-law") -> Path:
    """source (any sox-readable audio) -> target: 16 kHz mono 16-bit WAV of a telephone line."""
    if not sox_available():
        raise RuntimeError("sox is missing: apt-get install sox (tools/setup_env.sh installs it)")
    kind, encoding = CODECS[codec]
    low, high = TELEPHONE_BAND_HZ
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        line = Path(folder) / f"line.{kind}"
        subprocess.run(["sox", "-V1", str(source), "-t", kind, *encoding, "-r", "8000", "-c", "1",
                        str(line), "sinc", f"{low}-{high}", "rate", "-v", "8000"],
                       check=True, capture_output=True)
        partial = Path(folder) / "out.wav"
        subprocess.run(["sox", "-V1", "-t", kind, *encoding, "-r", "8000", "-c", "1", str(line),
                        "-b", "16", str(partial), "rate", "-v", "16000"],
                       check=True, capture_output=True)
        shutil.move(str(partial), str(target))
    return target


def band_energy_share(audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> float:
    """Share of the signal's energy between low_hz and high_hz."""
    spectrum = np.abs(np.fft.rfft(np.asarray(audio, np.float64))) ** 2
    frequencies = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    inside = (frequencies >= low_hz) & (frequencies <= high_hz)
    total = spectrum.sum()
    return float(spectrum[inside].sum() / total) if total > 0 else 0.0
