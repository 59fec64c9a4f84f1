"""Festival voices (Debian festival + festvox-* packages) with aligned segment timings.

Festival builds the waveform from the utterance's Segment relation, whose items carry their end
times; a Scheme script saves the WAV and prints every segment's name, end time and the id of the
word it belongs to (through the syllable structure), so the timings come from the same structure
as the audio (checked by tests/test_dataset_voices.py: pauses are silent, vowels loud).
`festival --batch` runs one script per sentence: 0.2-0.6 s per sentence, start-up included.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .phonesets import SILENCE, expand_segments, festival_to_shared
from .speech import Phoneme
from .text import words_of
from .text_languages import words_of_any


@dataclasses.dataclass(frozen=True)
class FestivalVoice:
    name: str            # Festival voice name, selected with (voice_<name>)
    language: str        # ISO 639-1 code of the text it reads
    phoneset: str        # Festival phone set (phonesets.FESTIVAL_TO_IPA key or "radio")
    encoding: str        # byte encoding Festival's text front end expects for this language
    package: str         # Debian package that ships the voice
    female: bool
    speed: str = "stretch"   # how duration_stretch acts: "stretch" (Duration_Stretch, diphone
                             # voices), "hts" (HTS engine "-r" rate), "none" (clunits: recorded
                             # units keep their durations; measured: no change)
    approximate_timing: bool = False   # clunits: segment ends are the target times, the joined
                                       # units move them (measured lag of the vowel labels against
                                       # the loudness -30..+5 ms over 8 sentences, diphone and HTS
                                       # voices -10..+25 ms with a constant offset); use with care


# Measured with festival 2.5.0 (Debian 12): phone set printed by (Param.get 'PhoneSet) after
# selecting the voice; encodings are what makes the lexicon find the words (Czech wants
# ISO-8859-2, Finnish/Italian/Catalan Latin-1, Russian and the Indian languages UTF-8).
FESTIVAL_VOICES = {
    v.name: v for v in (
        FestivalVoice("kal_diphone", "en", "radio", "latin-1", "festvox-kallpc16k", False),
        FestivalVoice("ked_diphone", "en", "radio", "latin-1", "festvox-kdlpc16k", False),
        FestivalVoice("cmu_us_slt_arctic_hts", "en", "radio", "latin-1", "festvox-us-slt-hts", True, "hts"),
        FestivalVoice("pc_diphone", "it", "italian", "latin-1", "festvox-itapc16k", False),
        FestivalVoice("lp_diphone", "it", "italian", "latin-1", "festvox-italp16k", True),
        FestivalVoice("czech_dita", "cs", "czech", "iso-8859-2", "festvox-czech-dita", True),
        FestivalVoice("czech_machac", "cs", "czech", "iso-8859-2", "festvox-czech-machac", False),
        FestivalVoice("suo_fi_lj_diphone", "fi", "finnish", "latin-1", "festvox-suopuhe-lj", True),
        FestivalVoice("hy_fi_mv_diphone", "fi", "finnish", "latin-1", "festvox-suopuhe-mv", False),
        FestivalVoice("msu_ru_nsh_clunits", "ru", "msu_ru", "utf-8", "festvox-ru", False, "none", True),
        FestivalVoice("upc_ca_ona_hts", "ca", "upc_catalan-central", "latin-1", "festvox-ca-ona-hts", True, "hts"),
        FestivalVoice("hindi_NSK_diphone", "hi", "hindi", "utf-8", "festvox-hi-nsk", False),
        FestivalVoice("marathi_NSK_diphone", "mr", "marathi", "utf-8", "festvox-mr-nsk", False),
        FestivalVoice("telugu_NSK_diphone", "te", "telugu", "utf-8", "festvox-te-nsk", False),
    )
}

SEGMENT_TAG = "TT_SEG"
WORD_TAG = "TT_WORD"


class FestivalMissing(RuntimeError):
    pass


def festival_available(voice: str | None = None) -> bool:
    """True when `festival` is on PATH (and, if given, the voice's folder is installed)."""
    if shutil.which("festival") is None:
        return False
    if voice is None:
        return True
    return any(Path("/usr/share/festival/voices").glob(f"*/{voice}"))


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _speed_commands(voice: str, duration_stretch: float) -> list[str]:
    speed = FESTIVAL_VOICES[voice].speed if voice in FESTIVAL_VOICES else "stretch"
    if speed == "hts":
        # HTS engine's speech-rate option; Festival writes the HTS durations back to the segments
        # (measured: -r 0.77 makes slt's sentence 2.34 s -> 3.045 s, last segment end likewise).
        return [f"(set! hts_engine_params (append hts_engine_params (list (list \"-r\" "
                f"{1.0 / duration_stretch:.4f}))))"]
    if speed == "stretch":
        # Relative to the voice's own stretch (kal sets 1.1), which (voice_...) has just set.
        return ["(set! tt_stretch (Parameter.get 'Duration_Stretch))",
                f"(Parameter.set 'Duration_Stretch (* (if tt_stretch tt_stretch 1.0) "
                f"{duration_stretch:.4f}))"]
    return []


def festival_script(voice: str, sentence: str, wav_path: str, duration_stretch: float = 1.0) -> str:
    """Scheme for `festival --batch`: speak, save a RIFF WAV, print segments and words.

    Output lines: "TT_SEG <name> <end seconds> <word id or 0>" per segment, then
    "TT_WORD <id>" per word in order.
    """
    return "\n".join([
        f"(voice_{voice})",
        *_speed_commands(voice, duration_stretch),
        f"(set! utt (SynthText {_scheme_string(sentence)}))",
        f"(utt.save.wave utt {_scheme_string(wav_path)} 'riff)",
        "(mapcar (lambda (seg) (format t \"%s %s %f %s\\n\" "
        f"\"{SEGMENT_TAG}\" (item.name seg) (item.feat seg \"end\") "
        "(item.feat seg \"R:SylStructure.parent.parent.id\"))) (utt.relation.items utt 'Segment))",
        f"(mapcar (lambda (w) (format t \"%s %s\\n\" \"{WORD_TAG}\" (item.feat w \"id\"))) "
        "(utt.relation.items utt 'Word))",
        "",
    ])


def parse_festival_output(text: str) -> tuple[list[tuple[str, float, str]], list[str]]:
    """Script output -> ([(segment name, end s, word id), ...], [word id, ...]).

    Other lines (Festival's warnings such as "UniSyn: using default diphone") are ignored.
    Segments outside a word have word id "0".
    """
    segments, words = [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == SEGMENT_TAG:
            segments.append((parts[1], float(parts[2]), parts[3]))
        elif len(parts) == 2 and parts[0] == WORD_TAG:
            words.append(parts[1])
    if not segments:
        raise ValueError(f"no segment timings in festival output: {text[:300]!r}")
    return segments, words


def festival_phonemes(segments: list[tuple[str, float, str]], word_ids: list[str], phoneset: str,
                      duration: float, n_text_words: int | None = None) -> list[Phoneme]:
    """Parsed segments -> shared-inventory Phonemes tiling [0, duration].

    Word indices follow Festival's Word relation (words without segments skipped); when its word
    count differs from the sentence's (`n_text_words`; Festival may split or expand tokens), all words are -1, as
    speech.assign_words does for flite.
    """
    # Only words that own segments count: the Hindi front end makes Word items for the danda and
    # other tokens that are not spoken (measured: 11 Word items, 9 with segments, 9 text words).
    with_segments = {word_id for _, _, word_id in segments}
    spoken = [word_id for word_id in word_ids if word_id in with_segments]
    index_of = {word_id: i for i, word_id in enumerate(spoken)}
    use_words = n_text_words is None or n_text_words == len(spoken)
    raw = []
    start = 0.0
    for name, end, word_id in segments:
        end = min(end, duration)
        labels = festival_to_shared(phoneset, name)
        word = index_of.get(word_id, -1) if (use_words and labels) else -1
        if end > start:
            raw.append((labels, start, end, word))
        start = max(start, end)
    if start < duration:  # Festival's last segment can stop a little before the audio does
        raw.append(((), start, duration, -1))
    return expand_segments(raw)


def synthesize_raw(sentence: str, voice: str, wav_path: str | os.PathLike,
                   duration_stretch: float = 1.0) -> tuple[list[tuple[str, float, str]], list[str]]:
    """Run Festival: write the voice's native WAV to `wav_path`, return the parsed timings."""
    if voice not in FESTIVAL_VOICES:
        raise KeyError(f"unknown Festival voice {voice!r}; known: {sorted(FESTIVAL_VOICES)}")
    if not festival_available(voice):
        raise FestivalMissing(f"Festival voice {voice} is not installed: "
                              f"apt-get install festival {FESTIVAL_VOICES[voice].package}")
    spec = FESTIVAL_VOICES[voice]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "speak.scm"
        # The whole script goes in the language's encoding: Festival reads bytes.
        script.write_bytes(festival_script(voice, sentence, str(wav_path), duration_stretch)
                           .encode(spec.encoding))
        result = subprocess.run(["festival", "--batch", str(script)], capture_output=True,
                                check=True)
    return parse_festival_output(result.stdout.decode(spec.encoding, errors="replace"))


def phonemes_for(sentence: str, voice: str, segments, word_ids, duration: float) -> list[Phoneme]:
    spec = FESTIVAL_VOICES[voice]
    # English keeps flite's tokenisation ("don't" is one word); other scripts have vowel signs
    # that are marks, not letters.
    words = words_of(sentence) if spec.language == "en" else words_of_any(sentence)
    return festival_phonemes(segments, word_ids, spec.phoneset, duration, len(words))


__all__ = ["FESTIVAL_VOICES", "FestivalVoice", "FestivalMissing", "festival_available",
           "festival_script", "parse_festival_output", "festival_phonemes", "synthesize_raw",
           "phonemes_for", "SILENCE"]
