"""Which engine, voice and language each synthetic subject speaks with, by subject index.

A fixed plan (not a random draw) so that the default 24 subjects cover every installable engine
and language once, test-B keeps an English subject next to non-English ones, and a subject's voice
does not change when the number of subjects changes. Subjects past the plan alternate an English
voice and a voice of another language, so any run of test-B subjects at the end of a larger build
again holds both. The subject's variation of the voice (rate, pitch, EQ, gain) is drawn by
voices.draw_engine_voice from the seed `[dataset seed, 0x701CE, index]`.
"""
from __future__ import annotations

import numpy as np

from . import text_languages, voices_festival, voices_piper
from .voices import EngineVoice, VoiceChoice, draw_engine_voice, voice_installed

VOICE_SEED = 0x701CE


def _flite(name: str) -> VoiceChoice:
    return VoiceChoice("flite", name, "en", name == "slt")


def _festival(name: str) -> VoiceChoice:
    spec = voices_festival.FESTIVAL_VOICES[name]
    return VoiceChoice("festival", name, spec.language, spec.female)


def _espeak(language: str, variant: str) -> VoiceChoice:
    return VoiceChoice("espeak", f"{language}+{variant}", language.split("-")[0],
                       variant.startswith("f"))


# The default build: 24 subjects, the last 4 in test-B (builder.BuildConfig.n_test_b).
# Train (S00-S19): flite's 4 English voices, Festival's 3 English voices, one Festival voice for
# each other Festival language, espeak-ng for the languages Festival lacks, espeak variants
# alternating male and female. English stays the largest language (7 of 20) because most real
# recordings users bring are English. Test-B (S20-S23): English (flite, as test-B was before the
# plan), Spanish and French (espeak-ng, other variants than train) and Italian (a Festival voice
# that no training subject uses).
DEFAULT_PLAN = (
    _flite("kal16"), _flite("awb"), _flite("rms"), _flite("slt"),
    _festival("kal_diphone"), _espeak("es", "f3"),
    _festival("cmu_us_slt_arctic_hts"), _espeak("fr", "m2"),
    _festival("pc_diphone"), _espeak("de", "f1"),
    _festival("czech_dita"), _espeak("pt", "m4"),
    _festival("msu_ru_nsh_clunits"), _espeak("ru", "f5"),
    _festival("suo_fi_lj_diphone"), _festival("ked_diphone"),
    _festival("upc_ca_ona_hts"), _festival("hindi_NSK_diphone"),
    _festival("marathi_NSK_diphone"), _festival("telugu_NSK_diphone"),
    # test-B
    _flite("kal16"), _espeak("es", "m3"), _festival("lp_diphone"), _espeak("fr", "f4"),
)

# Past the plan: English and other-language voices alternate (index 24 English, 25 other, ...);
# each list cycles, espeak variants move on at every cycle.
EXTRA_ENGLISH = (("flite", "awb"), ("espeak", "en-us"), ("festival", "ked_diphone"),
                 ("flite", "slt"), ("festival", "cmu_us_slt_arctic_hts"), ("espeak", "en-us"))
EXTRA_OTHER = (("espeak", "es"), ("espeak", "it"), ("festival", "czech_machac"), ("espeak", "fr"),
               ("espeak", "de"), ("festival", "hy_fi_mv_diphone"), ("espeak", "pt"),
               ("espeak", "ru"), ("espeak", "cs"), ("espeak", "ca"), ("espeak", "fi"),
               ("espeak", "hi"), ("espeak", "mr"), ("espeak", "te"))
ESPEAK_VARIANT_CYCLE = ("m2", "f5", "m6", "f1", "m7", "f3", "m5", "f2", "m8", "f4", "m1", "m3", "m4")


def planned_choice(index: int) -> VoiceChoice:
    """The engine voice of subject `index` (stable whatever the number of subjects)."""
    if index < len(DEFAULT_PLAN):
        return DEFAULT_PLAN[index]
    extra = index - len(DEFAULT_PLAN)
    pool = EXTRA_ENGLISH if extra % 2 == 0 else EXTRA_OTHER
    position = extra // 2
    engine, name = pool[position % len(pool)]
    if engine == "flite":
        return _flite(name)
    if engine == "festival":
        return _festival(name)
    variant = ESPEAK_VARIANT_CYCLE[(position + position // len(pool)) % len(ESPEAK_VARIANT_CYCLE)]
    return _espeak(name, variant)


def planned_voice(seed: int, index: int) -> EngineVoice:
    return draw_engine_voice(planned_choice(index), np.random.default_rng([seed, VOICE_SEED, index]))


def package_for(choice: VoiceChoice) -> str:
    """The package that provides a voice (Debian unless it is a Piper voice from PyPI)."""
    if choice.engine == "flite":
        return "flite"
    if choice.engine == "festival":
        package = voices_festival.FESTIVAL_VOICES[choice.voice].package
        # The NSK voices need their language's front end, which they do not depend on.
        front_end = f" festival-{choice.language}" if choice.language in ("hi", "mr", "te") else ""
        return f"festival {package}{front_end}"
    if choice.engine == "espeak":
        return "espeak-ng"
    return f"piper-tts onnx {voices_piper.PIPER_VOICES[choice.voice][0].replace('_', '-')} (pip)"


def missing_requirements(choices: list[VoiceChoice]) -> list[str]:
    """One line per planned voice that cannot speak here, or language without its word list,
    naming what to install; empty when the plan can be built."""
    problems = []
    for choice in sorted(set(choices), key=lambda c: (c.engine, c.voice)):
        if not voice_installed(choice):
            problems.append(f"{choice.engine} voice {choice.voice} ({choice.language}): "
                            f"install {package_for(choice)}")
    for language in sorted({c.language for c in choices} - {"en"}):
        spec = text_languages.WORD_LISTS.get(language)
        if spec is None:
            problems.append(f"language {language}: no word list known (text_languages.WORD_LISTS)")
        elif not text_languages.word_list_installed(language):
            problems.append(f"word list for {language}: install {spec.package}")
    return problems
