"""Reproducible sentences in languages other than English, from word lists that Debian ships.

English keeps text.py (a hand-made vocabulary and templates). For the other languages there is no
grammar here: a sentence is 4-9 words drawn from the language's word list, with an occasional
comma, a capital and a full stop. A lip-sync model learns mouth shapes from phonemes and their
timing; the phonemes of real words (spelled as the synthesiser's lexicon and letter-to-sound
rules expect) matter, the syntax much less. The synthesisers still phrase each sentence (pauses
at commas, final lengthening).

Word lists: the plain /usr/share/dict lists of the w* packages where Debian has one (wspanish,
witalian, wfrench, wngerman, wportuguese), otherwise the stems of the hunspell-* dictionary
(hunspell-ru, hunspell-cs, hunspell-ca, hunspell-hi, hunspell-te). Debian has neither for Finnish
or Marathi (voikko-fi ships a compiled automaton): Finnish takes the headwords of the FreeDict
Finnish-English dictionary (dict-freedict-fin-eng), Marathi the word list of aspell-mr.

Same seed, same sentences as long as the word list file is the same: `wordlist_fingerprint`
gives its sha256, for the dataset's meta.json.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import subprocess
import unicodedata
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class WordList:
    path: str                 # file, or "aspell:<dictionary>" for `aspell -d <dictionary> dump master`
    package: str
    format: str               # "plain": one word a line; "hunspell": "word/FLAGS" after a count
                              # line; "dictd": dictd index "headword<TAB>offset<TAB>length"
    keep_capitals: bool       # German nouns are capitalised; elsewhere capitals mark names


WORD_LISTS = {
    "es": WordList("/usr/share/dict/spanish", "wspanish", "plain", False),
    "it": WordList("/usr/share/dict/italian", "witalian", "plain", False),
    "fr": WordList("/usr/share/dict/french", "wfrench", "plain", False),
    "de": WordList("/usr/share/dict/ngerman", "wngerman", "plain", True),
    "pt": WordList("/usr/share/dict/portuguese", "wportuguese", "plain", False),
    "ru": WordList("/usr/share/hunspell/ru_RU.dic", "hunspell-ru", "hunspell", False),
    "cs": WordList("/usr/share/hunspell/cs_CZ.dic", "hunspell-cs", "hunspell", False),
    "ca": WordList("/usr/share/hunspell/ca.dic", "hunspell-ca", "hunspell", False),
    "hi": WordList("/usr/share/hunspell/hi_IN.dic", "hunspell-hi", "hunspell", False),
    "te": WordList("/usr/share/hunspell/te_IN.dic", "hunspell-te", "hunspell", False),
    # Debian has no Finnish word list or hunspell dictionary: the headwords of the FreeDict
    # Finnish-English dictionary; no Marathi one either: the aspell dictionary's word list.
    "fi": WordList("/usr/share/dictd/freedict-fin-eng.index", "dict-freedict-fin-eng", "dictd", False),
    "mr": WordList("aspell:mr", "aspell-mr", "aspell", False),
}
# Scripts whose letters are accepted in a word (besides combining marks): a stray Latin
# abbreviation in a Cyrillic list would be spelled letter by letter.
_SCRIPT = {"ru": "CYRILLIC", "hi": "DEVANAGARI", "mr": "DEVANAGARI", "te": "TELUGU"}
# Festival's front ends for these languages read bytes in this encoding (voices_festival): a word
# it cannot encode (Finnish loan words with š, ž) is left out so any voice of the language can
# speak every sentence.
_FESTIVAL_ENCODING = {"fi": "latin-1", "it": "latin-1", "ca": "latin-1", "cs": "iso-8859-2"}
# Sentence-final punctuation: the Devanagari danda for Hindi (Festival's Hindi front end knows it).
_FULL_STOP = {"hi": "\u0964"}
MIN_WORD_CHARS, MAX_WORD_CHARS = 2, 12
MIN_WORDS, MAX_WORDS = 4, 9
COMMA_PROBABILITY = 0.25


class WordListMissing(RuntimeError):
    pass


def word_chars(ch: str) -> bool:
    """Letters and combining marks (Devanagari/Telugu vowel signs are marks, not letters)."""
    return ch.isalpha() or unicodedata.category(ch).startswith("M")


def words_of_any(sentence: str) -> list[str]:
    """Lower-case words of a sentence in any script (text.words_of splits at vowel signs)."""
    cleaned = "".join(ch.lower() if word_chars(ch) else " " for ch in sentence)
    return cleaned.split()


def _acceptable(word: str, language: str, spec: WordList) -> bool:
    if not MIN_WORD_CHARS <= len(word) <= MAX_WORD_CHARS:
        return False
    if not all(word_chars(ch) for ch in word) or not word[0].isalpha():
        return False
    if not spec.keep_capitals and word != word.lower():
        return False
    if spec.keep_capitals and sum(ch.isupper() for ch in word) > 1:
        return False                     # abbreviations such as "ABC"
    encoding = _FESTIVAL_ENCODING.get(language)
    if encoding:
        try:
            word.encode(encoding)
        except UnicodeEncodeError:
            return False
    script = _SCRIPT.get(language)
    if script and not all(unicodedata.category(ch).startswith("M")
                          or unicodedata.name(ch, "").startswith(script) for ch in word):
        return False
    return True


def parse_word_list(text: str, language: str, spec: WordList) -> list[str]:
    """Text of a word list file -> sorted distinct acceptable words (file order does not matter)."""
    words = set()
    for number, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if spec.format == "hunspell":
            if number == 0 and line.isdigit():
                continue                  # first line: approximate word count
            line = line.split("/", 1)[0].split("\t", 1)[0].strip()
        elif spec.format == "dictd":
            line = line.split("\t", 1)[0].strip()    # "00database..." entries fail the filter
        line = unicodedata.normalize("NFC", line)
        if _acceptable(line, language, spec):
            words.add(line)
    return sorted(words)


@functools.lru_cache(maxsize=None)
def load_words(language: str) -> tuple[str, ...]:
    spec = WORD_LISTS.get(language)
    if spec is None:
        raise KeyError(f"no word list for language {language!r}; have {sorted(WORD_LISTS)}")
    return tuple(parse_word_list(_read_word_list(spec), language, spec))


def _read_word_list(spec: WordList) -> str:
    if spec.format == "aspell":
        dictionary = spec.path.split(":", 1)[1]
        try:
            result = subprocess.run(["aspell", "-d", dictionary, "dump", "master"],
                                    capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            raise WordListMissing(f"aspell {dictionary} dictionary missing ({error}): "
                                  f"apt-get install {spec.package}") from error
        return result.stdout.decode("utf-8", errors="strict")
    path = Path(spec.path)
    if not path.exists():
        raise WordListMissing(f"{path} missing: apt-get install {spec.package}")
    return path.read_text(encoding="utf-8", errors="strict")


def word_list_installed(language: str) -> bool:
    try:
        _read_word_list(WORD_LISTS[language])
    except WordListMissing:
        return False
    return True


def wordlist_fingerprint(language: str) -> str:
    """sha256 of the word list's text (for meta.json: same seed, same sentences, same list)."""
    return hashlib.sha256(_read_word_list(WORD_LISTS[language]).encode("utf-8")).hexdigest()


def make_sentence_from(words: tuple[str, ...] | list[str], rng: np.random.Generator,
                       language: str = "") -> str:
    count = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
    picked = [words[int(i)] for i in rng.integers(0, len(words), size=count)]
    comma_at = int(rng.integers(2, count - 1)) if rng.uniform() < COMMA_PROBABILITY else -1
    parts = [word + ("," if i == comma_at else "") for i, word in enumerate(picked)]
    sentence = " ".join(parts)
    return sentence[0].upper() + sentence[1:] + _FULL_STOP.get(language, ".")


def make_sentences(language: str, count: int, seed: int) -> list[str]:
    """`count` distinct sentences in `language`, reproducible from (seed, language, word list)."""
    words = load_words(language)
    language_key = int.from_bytes(hashlib.sha256(language.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, 0x7E47, language_key])
    seen: set[str] = set()
    sentences: list[str] = []
    while len(sentences) < count:
        sentence = make_sentence_from(words, rng, language)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences
