"""What the measuring tools (tools/bench.py, tools/measure_long_audio.py) share: the speech they
feed the model, this process's memory and CPU readings, and keeping bpy's user files out of $HOME.

Each tool runs every clip length in its own worker process, so these readings belong to that
length alone.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SPEECH = REPO_ROOT / "textalker_blender" / "assets" / "sample_speech.wav"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (`ru_maxrss`)."""
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports kilobytes, macOS bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss_bytes() -> int:
    """Resident memory of this process now (/proc/self/statm; the peak where there is none)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads): the cost without the waiting a
    loaded machine adds to the wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def speech_samples(seconds: float):
    """(float32 samples, rate): the bundled sample speech repeated (cut) to `seconds`."""
    import numpy as np
    import soundfile

    speech, rate = soundfile.read(str(SAMPLE_SPEECH), dtype="float32")
    return np.resize(speech, int(round(seconds * rate))), rate


def speech_file(seconds: float, folder: Path) -> Path:
    """`speech_samples(seconds)` written into `folder` as a 16-bit WAV."""
    import soundfile

    samples, rate = speech_samples(seconds)
    path = Path(folder) / f"speech_{seconds:g}s.wav"
    soundfile.write(str(path), samples, rate, subtype="PCM_16")
    return path


def keep_blender_user_files_out_of_home(prefix: str) -> None:
    """Points BLENDER_USER_RESOURCES at a temporary folder (removed at exit) unless it is set:
    bpy reads it when first imported, so call this before `import bpy`."""
    if "BLENDER_USER_RESOURCES" in os.environ:
        return
    import atexit
    import shutil

    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["BLENDER_USER_RESOURCES"] = folder
