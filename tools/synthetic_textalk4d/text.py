"""Sentence generator: a small word list and a simple grammar.

The vocabulary is chosen so that every English phoneme of flite's US phone set occurs, with
bilabials (p, b, m) and open vowels (aa, ae, ah, ao) over-represented: they are the visemes whose
shapes (closed lips, open jaw) a lip-sync model is judged on.
"""
from __future__ import annotations

import numpy as np

# Word classes. Spelling matters only through flite's lexicon; words are plain US English.
NAMES = [
    "Bob", "Pam", "Maggie", "Barbara", "Paul", "Mabel", "Tom", "Jean", "Zoe", "Hugo", "Roy",
    "Joy", "Bobby", "Martha", "Pablo", "Molly", "George", "Ava", "Judy", "Theo", "Ruth",
]
ADJECTIVES = [
    "big", "bad", "happy", "hot", "calm", "black", "blue", "pale", "brave", "bright", "smooth",
    "young", "odd", "warm", "soft", "thick", "thin", "lazy", "round", "proud", "tall", "cheap",
    "rough", "loyal", "amazing", "usual", "pleasant", "massive", "tiny", "bumpy", "shiny",
    "hungry", "sharp", "awful", "golden", "cool", "wet", "ancient", "bold", "vivid",
]
NOUNS = [
    "apple", "bottle", "pepper", "basket", "mop", "map", "pump", "puppy", "box", "book", "boat",
    "ball", "bath", "bench", "bomb", "palm", "path", "pot", "father", "mother", "cat", "dog",
    "fox", "hat", "jacket", "lamp", "orange", "garage", "treasure", "measure", "vision", "toy",
    "coin", "house", "mouth", "cloud", "owl", "shoe", "moon", "juice", "cheese", "wheel", "yard",
    "hammer", "machine", "banana", "piano", "camera", "window", "thumb", "feather", "wagon",
    "market", "pocket", "problem", "bubble", "marble", "pumpkin", "balloon", "harbor", "garden",
]
VERBS_PAST = [
    "bought", "brought", "grabbed", "dropped", "opened", "moved", "watched", "pushed", "pulled",
    "caught", "found", "painted", "played", "made", "saw", "thought", "measured", "mapped",
    "shipped", "chopped", "swapped", "wrapped", "bumped", "loved", "judged", "enjoyed", "hugged",
    "washed", "kept", "passed", "popped", "stopped", "borrowed", "carried", "touched", "threw",
]
VERBS_BASE = [
    "buy", "bring", "grab", "drop", "open", "move", "watch", "push", "pull", "catch", "find",
    "paint", "play", "make", "see", "measure", "map", "ship", "chop", "swap", "wrap", "bump",
    "love", "judge", "enjoy", "hug", "wash", "keep", "pass", "pop", "stop", "borrow", "carry",
]
ADVERBS = [
    "happily", "badly", "calmly", "boldly", "quickly", "barely", "probably", "almost",
    "often", "really", "maybe", "perhaps", "always", "gently", "proudly", "smoothly",
]
PLACES = [
    "at the park", "in the bath", "by the harbor", "at the market", "on the boat", "in the garage",
    "by the pond", "at the bank", "in the yard", "on the path", "at the palace", "in the barn",
    "near the bay", "at the mall", "under the bridge", "behind the pub", "in the museum",
]
TIMES = [
    "on Monday", "in March", "at about nine", "every morning", "at midnight", "in the autumn",
    "last summer", "by the evening", "before the bell", "after the movie", "in a moment",
]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "a hundred"]

# Sentence templates; {X} slots are filled from the classes above.
TEMPLATES = [
    "{name} {verb_past} the {adj} {noun} {place}.",
    "{name} and {name2} {verb_past} a {adj} {noun} {time}.",
    "The {adj} {noun} was {adverb} {verb_past_pass} {place}.",
    "Did {name} {verb_base} the {noun} {place}?",
    "Please {verb_base} the {adj} {noun} before {name} {verb_past2} the {noun2}.",
    "{name} {adverb} {verb_past} {number} {adj} {noun_pl} {time}.",
    "My {noun} is {adj}, but your {noun2} is {adj2}.",
    "Why would {name} {verb_base} a {noun} {place}?",
    "{time_cap}, {name} {verb_past} the {noun} and the {noun2}.",
    "We {adverb} {verb_base} {adj} {noun_pl} {place}.",
    "Maybe {name} {verb_past} the {adj} {noun}, or maybe {name2} did.",
    "I {verb_past} {number} {noun_pl} {place} {time}.",
    "Nobody {verb_past} the {noun} {time}, but {name} {verb_past2} the {noun2}.",
    "The {noun} and the {noun2} are both {adj} {place}.",
]

# Words whose syllables carry little stress in running speech; emphasis (brow raises) goes to
# content words.
FUNCTION_WORDS = frozenset(
    "a an the and or but of in on at by to for from with is are was were be been am i my your we "
    "you he she it they did do does would could should will can please before after under behind "
    "near about every last both nobody why maybe".split()
)

_IRREGULAR_PLURALS = {"mouse": "mice", "foot": "feet", "tooth": "teeth", "shoe": "shoes"}


def plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence from a random template; all choices come from `rng` (deterministic)."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]

    def pick(words):
        return words[int(rng.integers(len(words)))]

    name, name2 = rng.choice(len(NAMES), size=2, replace=False)
    noun, noun2 = rng.choice(len(NOUNS), size=2, replace=False)
    adj, adj2 = rng.choice(len(ADJECTIVES), size=2, replace=False)
    time = pick(TIMES)
    fields = {
        "name": NAMES[name], "name2": NAMES[name2],
        "noun": NOUNS[noun], "noun2": NOUNS[noun2], "noun_pl": plural(NOUNS[noun]),
        "adj": ADJECTIVES[adj], "adj2": ADJECTIVES[adj2],
        "verb_past": pick(VERBS_PAST), "verb_past2": pick(VERBS_PAST), "verb_past_pass": pick(VERBS_PAST),
        "verb_base": pick(VERBS_BASE), "adverb": pick(ADVERBS), "place": pick(PLACES),
        "time": time, "time_cap": time[0].upper() + time[1:], "number": pick(NUMBERS),
    }
    sentence = template.format(**fields)
    return sentence[0].upper() + sentence[1:]


def make_sentences(count: int, seed: int) -> list[str]:
    """`count` distinct sentences, reproducible from `seed`."""
    rng = np.random.default_rng([seed, 0x7E47])
    seen: set[str] = set()
    sentences: list[str] = []
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError(f"could not generate {count} distinct sentences")
        sentence = make_sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


def words_of(sentence: str) -> list[str]:
    """Lower-case words as flite tokenises simple text (punctuation dropped)."""
    cleaned = "".join(ch.lower() if ch.isalpha() or ch in " '" else " " for ch in sentence)
    return [word for word in cleaned.split() if word]
