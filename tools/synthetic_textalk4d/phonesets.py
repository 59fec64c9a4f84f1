"""One phone inventory for every voice: each synthesiser's phones -> labels that visemes.py knows.

The shared inventory is flite's US phone set (the labels of `visemes.PHONEME_TO_VISEME`, which the
motion, statistics and preview code already understand) plus a few labels in
`visemes.EXTENSION_PHONEMES` for sounds whose nearest US phone would give the wrong mouth:
English /r/ is lip-rounded, Spanish or Russian /r/ is not ("rr"); German /y/ and French /ø/ are
rounded front vowels ("uy", "oe"); a pure Spanish or Italian /o/ is neither the open "ao" nor the
diphthong "ow" ("oh"); velar/uvular fricatives and the French/German r are made at the back of
the mouth ("x", "rx").

Every articulatory decision lives in ONE table, `IPA_TO_SHARED` (IPA symbol -> shared labels).
espeak-ng reports IPA directly; each Festival phone set is first written as IPA
(`FESTIVAL_TO_IPA`, a transcription that can be checked against the phone set's own feature
table) and then goes through the same table, so a Spanish /p/, a Czech /p/ and an English /p/ all
become "p" and close the lips alike. A phone that stands for two sounds (an affricate such as
/ts/, /pf/, an r-coloured vowel, a diphthong outside the US set) becomes several labels that share
its duration.
"""
from __future__ import annotations

import re
import unicodedata

from .speech import Phoneme
from .visemes import PHONEME_TO_VISEME

SILENCE = "pau"

# IPA -> shared labels. Multi-character keys are matched first (longest match).
IPA_TO_SHARED: dict[str, tuple[str, ...]] = {
    # affricates and the English diphthongs the US set has as single phones
    "tʃ": ("ch",), "dʒ": ("jh",), "tɕ": ("ch",), "dʑ": ("jh",), "ʈʂ": ("ch",), "ɖʐ": ("jh",),
    # /ts/ /dz/ /pf/: the stop and the fricative are both visible (German "Pfanne" closes the lips)
    "ts": ("t", "s"), "dz": ("d", "z"), "pf": ("p", "f"),
    "aɪ": ("ay",), "aʊ": ("aw",), "ɔɪ": ("oy",), "eɪ": ("ey",), "oʊ": ("ow",), "əʊ": ("ow",),
    # bilabial and labiodental
    "p": ("p",), "b": ("b",), "m": ("m",),
    # Spanish/Catalan intervocalic /b/ is the approximant [β]: the lips nearly touch; it is the
    # phoneme /b/, and animators (and the real-speech check) expect the closure there.
    "β": ("b",), "ɸ": ("f",), "f": ("f",), "v": ("v",), "ʋ": ("v",),
    "ɱ": ("v",),              # labiodental nasal (Italian "anfora"): lower lip to teeth, not closed
    # dental / alveolar
    "θ": ("th",), "ð": ("dh",),
    "t": ("t",), "d": ("d",), "n": ("n",), "l": ("l",), "ɫ": ("l",), "ɬ": ("l",),
    "s": ("s",), "z": ("z",),
    "ɾ": ("rr",), "r": ("rr",), "ɽ": ("rr",), "ɺ": ("rr",),   # taps and trills: not rounded
    "ɹ": ("r",), "ɻ": ("r",),                                  # English-like approximant r
    # post-alveolar, retroflex, palatal
    "ʃ": ("sh",), "ʒ": ("zh",), "ɕ": ("sh",), "ʑ": ("zh",), "ʂ": ("sh",), "ʐ": ("zh",),
    "ʈ": ("t",), "ɖ": ("d",), "ɳ": ("n",), "ɭ": ("l",),
    "c": ("k",), "ɟ": ("g",), "ɲ": ("n",), "ʎ": ("l",), "ç": ("x",), "ʝ": ("y",), "j": ("y",),
    # velar, uvular, pharyngeal, glottal
    "k": ("k",), "g": ("g",), "ɡ": ("g",), "ŋ": ("ng",), "q": ("k",), "ɢ": ("g",),
    "x": ("x",), "ɣ": ("x",), "χ": ("x",), "ɰ": ("x",),
    "ʁ": ("rx",), "ʀ": ("rx",),
    "h": ("hh",), "ɦ": ("hh",), "ħ": ("hh",), "ʕ": ("hh",), "ʔ": ("hh",),
    "?": ("hh",),             # espeak-ng 1.51 writes the German glottal stop as "?" (or "??")
    "w": ("w",), "ɥ": ("w",), "ʍ": ("w",),
    # vowels: close
    "i": ("iy",), "y": ("uy",), "ɨ": ("ih",), "ʉ": ("uw",), "ɯ": ("ih",), "u": ("uw",),
    "ɪ": ("ih",), "ʏ": ("uy",), "ʊ": ("uh",), "ᵻ": ("ih",),
    # close-mid / mid
    "e": ("eh",), "ø": ("oe",), "ɘ": ("ax",), "ɵ": ("oe",), "ɤ": ("ax",), "o": ("oh",),
    "ə": ("ax",), "ɚ": ("er",), "ɝ": ("er",),
    # open-mid / open
    "ɛ": ("eh",), "œ": ("oe",), "ɜ": ("er",), "ɞ": ("oe",), "ʌ": ("ah",), "ɔ": ("ao",),
    "æ": ("ae",), "ɐ": ("ah",), "a": ("aa",), "ɶ": ("oe",), "ɑ": ("aa",), "ɒ": ("ao",),
}
_MAX_KEY = max(len(key) for key in IPA_TO_SHARED)

# Marks that change no mouth shape worth modelling at 30 fps: length, stress, aspiration,
# palatalisation, nasalisation, syllabicity, tie bars, espeak's joiners and boundary marks.
# espeak-ng 1.51 also writes marks that are no IPA: "^" after some Russian vowels ("ɪ^"), '"'
# after some Russian stressed vowels ('u"').
_IGNORED_MARKS = frozenset("ːˑˈˌʰʱʲʷˠˤʼ‿͜͡-‍.|‖'^\"")
# espeak-ng announces a switch of language inside a sentence (an English word in French text) with
# an event such as "(en)"; it is no sound.
_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(-[a-z0-9]+)?\)")
# Per-language corrections of espeak-ng 1.51's IPA where it writes a symbol that is not the IPA
# value: Russian "ы" comes out as "y" (rounded in IPA) but is the unrounded [ɨ].
ESPEAK_IPA_OVERRIDES: dict[str, dict[str, str]] = {"ru": {"y": "ɨ"}}


class UnknownPhone(ValueError):
    pass


def _strip_marks(ipa: str) -> str:
    decomposed = unicodedata.normalize("NFD", ipa)
    return "".join(ch for ch in decomposed
                   if ch not in _IGNORED_MARKS and not unicodedata.combining(ch) and not ch.isspace())


def ipa_to_shared(ipa: str, strict: bool = True) -> tuple[str, ...]:
    """IPA string of one phone (or a short cluster) -> shared labels, longest match first.

    "" -> () (a pause has no IPA). With strict=False unknown symbols are skipped instead of
    raising UnknownPhone, so a rare loan-word sound cannot stop a dataset build.
    """
    text = _strip_marks(ipa)
    labels: list[str] = []
    i = 0
    while i < len(text):
        for size in range(min(_MAX_KEY, len(text) - i), 0, -1):
            piece = text[i:i + size]
            if piece in IPA_TO_SHARED:
                labels.extend(IPA_TO_SHARED[piece])
                i += size
                break
        else:
            if strict:
                raise UnknownPhone(f"no shared label for {text[i]!r} (U+{ord(text[i]):04X}) in {ipa!r}")
            i += 1
    return tuple(labels)


# Festival phone sets written as IPA ("" = silence). Checked against each phone set's feature
# table in /usr/share/festival (vowel height/frontness/rounding, place and manner).
_RADIO_TO_SHARED = {  # Festival's US "radio" set is flite's set plus a few allophones
    **{label: (label,) for label in PHONEME_TO_VISEME if label not in ("pau", "h#", "brth")},
    "pau": (), "h#": (), "brth": (),
    "dx": ("d",), "el": ("l",), "em": ("m",), "en": ("n",), "hv": ("hh",), "nx": ("n",),
    "axr": ("er",),
}
FESTIVAL_TO_IPA: dict[str, dict[str, str]] = {
    "italian": {  # festlex-ifd; "1" marks a stressed vowel
        "i": "i", "e": "e", "E": "ɛ", "a": "a", "o": "o", "O": "ɔ", "u": "u",
        "i1": "i", "e1": "e", "E1": "ɛ", "a1": "a", "o1": "o", "O1": "ɔ", "u1": "u",
        "j": "j", "w": "w", "p": "p", "t": "t", "k": "k", "b": "b", "d": "d", "g": "g",
        "f": "f", "s": "s", "S": "ʃ", "v": "v", "z": "z", "Z": "ʒ", "ts": "ts", "tS": "tʃ",
        "dz": "dz", "dZ": "dʒ", "m": "m", "n": "n", "J": "ɲ", "ng": "ŋ", "nf": "ɱ",
        "l": "l", "L": "ʎ", "r": "r", "#": "",
    },
    "czech": {  # festival-czech; ":" long, "~" palatal/post-alveolar, "*" allophone
        "#": "", "_": "", "a": "a", "a:": "a", "e": "ɛ", "e:": "ɛ", "i": "ɪ", "i:": "i",
        "o": "o", "o:": "o", "u": "u", "u:": "u",
        "b": "b", "c": "ts", "c~": "tʃ", "ch": "x", "d": "d", "d~": "ɟ", "dz": "dz",
        "dz~": "dʒ", "f": "f", "g": "g", "h": "ɦ", "j": "j", "k": "k", "l": "l", "m": "m",
        "n": "n", "n*": "ŋ", "n~": "ɲ", "p": "p", "r": "r", "r~": "r", "r~*": "r",
        "s": "s", "s~": "ʃ", "t": "t", "t~": "c", "v": "v", "z": "z", "z~": "ʒ",
    },
    "finnish": {  # suopuhe; ":" long, "@" = ä, "7" = ö, "&" schwa, "##"/"#" pauses
        "a": "ɑ", "e": "e", "i": "i", "o": "o", "u": "u", "y": "y", "@": "æ", "7": "ø",
        # long forms ("a:", "k:") are read as the short ones, see festival_to_shared
        "&": "ə", "p": "p", "t": "t", "k": "k", "b": "b", "d": "d", "g": "g", "f": "f",
        "T": "θ", "D": "ð", "s": "s", "z": "z", "S": "ʃ", "Z": "ʒ", "h": "h", "v": "ʋ",
        "m": "m", "n": "n", "N": "ŋ", "l": "l", "L": "l", "r": "r", "j": "j", "w": "w",
        "##": "", "#": "",
    },
    "msu_ru": {  # festvox-ru; doubled consonants are palatalised (same lips), doubled vowels stressed
        "pau": "", "ii": "i", "yy": "ɨ", "uu": "u", "ee": "e", "oo": "o", "aa": "a",
        "a": "ɐ", "e": "ɪ", "i": "ɪ", "y": "ɨ", "u": "ʊ", "ae": "ə", "ay": "ɪ", "ur": "ʊ",
        "p": "p", "pp": "p", "b": "b", "bb": "b", "t": "t", "tt": "t", "d": "d", "dd": "d",
        "k": "k", "kk": "k", "g": "g", "gg": "g", "c": "ts", "ch": "tɕ", "f": "f", "ff": "f",
        "v": "v", "vv": "v", "s": "s", "ss": "s", "z": "z", "zz": "z", "sh": "ʂ", "sch": "ɕ",
        "zh": "ʐ", "h": "x", "hh": "x", "m": "m", "mm": "m", "n": "n", "nn": "n",
        "l": "l", "ll": "l", "r": "r", "rr": "r", "j": "j",
    },
    "upc_catalan-central": {  # festvox-ca-ona-hts; "1" stressed
        "ax": "ə", "a": "a", "a1": "a", "b": "b", "d": "d", "e": "e", "e1": "e", "E": "ɛ",
        "E1": "ɛ", "f": "f", "g": "g", "i": "i", "i1": "i", "j": "j", "J": "ɲ", "k": "k",
        "l": "l", "L": "ʎ", "m": "m", "n": "n", "o": "o", "o1": "o", "O": "ɔ", "O1": "ɔ",
        "p": "p", "r": "ɾ", "rr": "r", "s": "s", "S": "ʃ", "t": "t", "u": "u", "u1": "u",
        "w": "w", "z": "z", "Z": "ʒ", "pau": "", "_": "", "#": "",
    },
}
# The NSK voices (Hindi, Marathi, Telugu) share one phone set under three names. Aspirated stops
# look like plain ones. "x" and "@" carry no features in the phone set; they are read as [h] and
# [a] (assumption: not produced for the test sentences, so unverified).
_NSK = {
    "a": "ə", "aa": "a", "ih": "ɪ", "iy": "i", "uh": "ʊ", "uw": "u", "eh": "ɛ", "ee": "e",
    "ay": "ɛ", "oh": "ɔ", "oo": "o", "aw": "ɔ", "f": "f", "k": "k", "g": "g", "ch": "tʃ",
    "T": "ʈ", "D": "ɖ", "N": "ɳ", "th": "t", "dh": "d", "n": "n", "p": "p", "b": "b",
    "m": "m", "y": "j", "r": "ɾ", "l": "l", "v": "ʋ", "L": "ɭ", "R": "ɽ", "s": "s",
    "sh": "ʃ", "j": "dʒ", "h": "ɦ", "ksh": "kʃ", "sri": "ʃɾ", "x": "h", "kh": "k", "gh": "g",
    "td": "ʈ", "tth": "t", "ddh": "d", "bh": "b", "zh": "ʒ", "@": "a", "pau": "", "w": "w",
}
for _name in ("hindi", "marathi", "telugu"):
    FESTIVAL_TO_IPA[_name] = _NSK


def festival_to_shared(phoneset: str, phone: str) -> tuple[str, ...]:
    """One Festival segment name -> shared labels; () for silence. Raises UnknownPhone."""
    if phoneset == "radio":
        if phone not in _RADIO_TO_SHARED:
            raise UnknownPhone(f"{phone!r} is not in Festival's radio phone set")
        return _RADIO_TO_SHARED[phone]
    table = FESTIVAL_TO_IPA.get(phoneset)
    if table is None:
        raise UnknownPhone(f"no IPA table for Festival phone set {phoneset!r}")
    if phone not in table and phone.endswith(":") and phone[:-1] in table:
        phone = phone[:-1]   # long phones (Finnish "k:", "a:"): length does not change the lips
    if phone not in table:
        raise UnknownPhone(f"{phone!r} is not in Festival phone set {phoneset!r}")
    return ipa_to_shared(table[phone])


def espeak_to_shared(ipa: str, language: str = "", strict: bool = True) -> tuple[str, ...]:
    """One espeak-ng phoneme event (IPA) -> shared labels; () for a pause."""
    ipa = _LANGUAGE_SWITCH.sub("", ipa)
    for wrong, right in ESPEAK_IPA_OVERRIDES.get(language.split("-")[0], {}).items():
        ipa = ipa.replace(wrong, right)
    return ipa_to_shared(ipa, strict=strict)


def expand_segments(segments: list[tuple[tuple[str, ...], float, float, int]]) -> list[Phoneme]:
    """(labels, start, end, word) per synthesiser segment -> Phonemes in the shared inventory.

    A segment with several labels is cut into equal parts; () becomes a pause. Consecutive pauses
    are merged, and zero-length pieces dropped, so the result tiles [first start, last end].
    """
    phonemes: list[Phoneme] = []
    for labels, start, end, word in segments:
        if end <= start:
            continue
        if not labels:
            if phonemes and phonemes[-1].label == SILENCE and phonemes[-1].end >= start:
                phonemes[-1] = Phoneme(SILENCE, phonemes[-1].start, end, -1)
            else:
                phonemes.append(Phoneme(SILENCE, start, end, -1))
            continue
        step = (end - start) / len(labels)
        for k, label in enumerate(labels):
            piece_end = end if k == len(labels) - 1 else start + (k + 1) * step
            phonemes.append(Phoneme(label, start + k * step, piece_end, word))
    return phonemes
