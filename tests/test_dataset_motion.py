"""Synthetic TexTalk4D motion: phonemes -> visemes -> face-unit weights (real flite speech)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest


from tools.synthetic_textalk4d import text as text_module  # noqa: E402
from tools.synthetic_textalk4d.geometry import lip_closure_model, lip_gap  # noqa: E402
from tools.synthetic_textalk4d.motion import FPS, face_unit_weights  # noqa: E402
from tools.synthetic_textalk4d.speech import FLITE_VOICES, parse_psdur  # noqa: E402
from tools.synthetic_textalk4d.styles import make_subject  # noqa: E402
from tools.synthetic_textalk4d.voices import synthesize  # noqa: E402
from tools.synthetic_textalk4d.visemes import ALL_PHONEMES, ARKIT_UNITS, BILABIALS, OPEN_VOWELS, UNIT_INDEX  # noqa: E402
from textalker_blender.core.template import load_template  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                reason="needs the Debian packages flite and sox")

SENTENCE = "Bob and Pam bought a big map at the palm market by the harbor."


@pytest.fixture(scope="module")
def template():
    return load_template()


def _frames_of(phonemes, labels, lead, n_frames):
    """Frame indices whose centre (shifted by the subject's lead) falls in the middle third of a
    phoneme of `labels`."""
    frames = []
    for p in phonemes:
        if p.label in labels:
            third = (p.end - p.start) / 3
            for k in range(n_frames):
                t = (k + 0.5) / FPS + lead
                if p.start + third <= t <= p.end - third:
                    frames.append(k)
    return sorted(set(frames))


def test_parse_psdur():
    assert parse_psdur("pau:0.220 b:0.309 aa:0.449\n") == [("pau", 0.22), ("b", 0.309), ("aa", 0.449)]
    with pytest.raises(ValueError):
        parse_psdur("nothing here")


def test_timings_cover_the_audio_and_are_monotonic():
    subject = make_subject(0, 1, "train")
    audio, phonemes = synthesize(SENTENCE, subject.voice)
    assert audio.dtype == np.float32 and len(audio) > 16000
    assert phonemes[0].start == 0.0
    assert phonemes[-1].end == pytest.approx(len(audio) / 16000, abs=1e-6)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(phonemes, phonemes[1:]))
    assert all(p.end > p.start for p in phonemes)
    # word alignment: every non-pause segment knows its word
    assert all(p.word >= 0 for p in phonemes if p.label != "pau")
    # the audio is silent-ish during the leading pause and loud during the open vowel
    first_vowel = next(p for p in phonemes if p.label in OPEN_VOWELS)
    lead_pause = audio[: int(phonemes[0].end * 16000 * 0.8)]
    vowel = audio[int(first_vowel.start * 16000): int(first_vowel.end * 16000)]
    assert np.sqrt(np.mean(vowel ** 2)) > 10 * np.sqrt(np.mean(lead_pause ** 2) + 1e-12)


@pytest.mark.parametrize("subject_index", [0, 1, 2, 3, 5, 8, 13, 21])
def test_bilabials_close_the_lips_and_open_vowels_open_the_jaw(template, subject_index):
    subject = make_subject(7, subject_index, "train")
    if subject.voice.language != "en":
        # The sentence is English: subjects planned for another language speak it with a flite
        # voice (their speaking style is what this test varies; other languages' closures are
        # tested in test_dataset_voices.py).
        subject.voice = make_subject(7, subject_index % len(FLITE_VOICES), "train").voice
    audio, phonemes = synthesize(SENTENCE, subject.voice)
    model = lip_closure_model(template)
    weights = face_unit_weights(phonemes, SENTENCE, len(audio) / 16000, subject.speaking,
                                np.random.default_rng(0), lip_closure_model=model)
    assert weights.shape == (int(round(len(audio) / 16000 * FPS)), 52)
    assert weights.min() >= 0 and weights.max() <= 1
    lead = subject.speaking.lead_s
    bilabial = _frames_of(phonemes, BILABIALS, lead, len(weights))
    open_vowel = _frames_of(phonemes, OPEN_VOWELS, lead, len(weights))
    assert len(bilabial) >= 5 and len(open_vowel) >= 5
    jaw, close, press = (UNIT_INDEX[n] for n in ("jawOpen", "mouthClose", "mouthPressLeft"))
    # ARKit mouthClose closes the lips against the open jaw: the weights must be consistent with it.
    # the jaw is only partly closed on /b/ between open vowels (as in real speech); the lips shut
    assert weights[bilabial, jaw].max() < 0.35 and weights[bilabial, jaw].mean() < 0.25
    assert weights[bilabial, press].min() > 0.3
    assert np.all(weights[bilabial, close] >= 0.8 * (model[0] + model[1] * weights[bilabial, jaw]))
    assert weights[open_vowel, jaw].mean() > 0.35
    assert weights[open_vowel, jaw].mean() > 2.5 * weights[bilabial, jaw].mean()
    # Geometric check on the template: the midline lip gap is ~closed on p/b/m, open on vowels.
    order = [template.unit_names.index(name) for name in ARKIT_UNITS]
    template_weights = np.zeros_like(weights)
    template_weights[:, order] = weights
    vertices = template.vertices + template.apply_units(template_weights)
    gap_mm = lip_gap(template, vertices) * 1000
    assert np.all(gap_mm[bilabial] < 1.5), gap_mm[bilabial]
    assert np.median(gap_mm[open_vowel]) > 8.0
    # Silence at the start: the face rests (no mouth unit beyond a resting smile).
    assert weights[0, jaw] < 0.1 and weights[0, close] < 0.05


def test_upper_face_moves_brows_and_blinks():
    subject = make_subject(3, 4, "train")
    subject.speaking.brows_per_sentence = 2
    subject.speaking.furrow_prob = 0.0
    subject.speaking.blink_rate_per_min = 40
    audio, phonemes = synthesize(SENTENCE, subject.voice)
    weights = face_unit_weights(phonemes, SENTENCE, len(audio) / 16000, subject.speaking,
                                np.random.default_rng(1))
    brow = weights[:, UNIT_INDEX["browInnerUp"]]
    assert brow.max() > 0.2 and brow[0] == 0.0
    # raised on a content word's stressed vowel, not during the leading silence
    peak_time = (np.argmax(brow) + 0.5) / FPS
    assert peak_time > phonemes[0].end
    blink = weights[:, UNIT_INDEX["eyeBlinkLeft"]]
    assert blink.max() > 0.8
    assert np.mean(blink > 0.5) < 0.3  # blinks are short


def test_subjects_differ_in_speaking_style():
    sentence = "Maybe Bob bought a happy puppy at the market."
    results = []
    for index in range(4):
        subject = make_subject(11, index, "train")
        subject.voice = make_subject(11, 0, "train").voice  # same audio, only the style differs
        audio, phonemes = synthesize(sentence, subject.voice)
        results.append(face_unit_weights(phonemes, sentence, len(audio) / 16000, subject.speaking,
                                         np.random.default_rng(0)))
    jaw = [np.percentile(w[:, UNIT_INDEX["jawOpen"]], 95) for w in results]
    smile = [w[:, UNIT_INDEX["mouthSmileLeft"]].mean() for w in results]
    asym = [(w[:, UNIT_INDEX["mouthSmileLeft"]] - w[:, UNIT_INDEX["mouthSmileRight"]]).mean() for w in results]
    assert max(jaw) - min(jaw) > 0.05
    assert max(smile) - min(smile) > 0.02
    assert max(asym) - min(asym) > 0.005
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(results[a] - results[b]).mean() > 0.005


def test_vocabulary_covers_every_phoneme():
    words = (text_module.NAMES + text_module.ADJECTIVES + text_module.NOUNS + text_module.VERBS_PAST
             + text_module.VERBS_BASE + text_module.ADVERBS + text_module.PLACES + text_module.TIMES
             + text_module.NUMBERS)
    out = subprocess.run(["flite", "-voice", FLITE_VOICES[1], "-ps", "-t", " ".join(words), "none"],
                         capture_output=True, text=True, check=True).stdout
    produced = set(out.split())
    missing = sorted(set(ALL_PHONEMES) - produced)
    assert not missing, missing


def test_sentences_are_reproducible_and_frequent_in_bilabials():
    a = text_module.make_sentences(50, seed=3)
    assert a == text_module.make_sentences(50, seed=3)
    assert a != text_module.make_sentences(50, seed=4)
    assert len(set(a)) == 50
    letters = "".join(a).lower()
    bilabial_letters = sum(letters.count(c) for c in "pbm")
    assert bilabial_letters / len(letters) > 0.05


def test_coarticulation_anticipates_lip_rounding():
    """The /t/ of "two" is already rounded (dominance of the following /uw/); the /t/ of "tea" is not."""
    subject = make_subject(0, 2, "train")
    pucker = UNIT_INDEX["mouthPucker"]
    values = {}
    for word in ("two", "tea"):
        sentence = f"Bob said {word} again."
        audio, phonemes = synthesize(sentence, subject.voice)
        weights = face_unit_weights(phonemes, sentence, len(audio) / 16000, subject.speaking,
                                    np.random.default_rng(0))
        words = text_module.words_of(sentence)
        t_segment = next(p for p in phonemes if p.label == "t" and words[p.word] == word)
        frame = int(((t_segment.start + t_segment.end) / 2 - subject.speaking.lead_s) * FPS)
        values[word] = weights[frame, pucker]
    assert values["two"] > values["tea"] + 0.1, values
