"""The text side of LEARN: what is read of a reply, its clauses, its sentiment, and which option
of the previous answer it points at."""

from __future__ import annotations

import re
from collections.abc import Sequence

from steerlab.steering.datasets import Dimension

MAX_READ_CHARACTERS = 2000  # LEARN reads the first 2,000 characters of a reply
CAP_NOTE = f"LEARN read the first {MAX_READ_CHARACTERS:,} characters"

# Clause ends: sentence punctuation, line breaks, dashes and ellipses between words, and
# "and"/"but"/"though" when a new subject or request follows ("..., but we want brunch").
_CLAUSE_END = re.compile(
    r"(?<=[.!?;])\s+|\n+|\s+[-–—]+\s+|\.{2,}|…"
    r"|,?\s+(?:and|but|though|although|plus)\s+(?=(?:we|we're|we'd|i|i'm|i'd|my|our|can|could|would"
    r"|please|pls|maybe|it|it's|that|this|they|the|something|somewhere|anything)\b)",
    re.I,
)
_OPTION_LINE = re.compile(r"^\s*(?:\d+[.):]|[-*•])\s+(.+)$", re.M)
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3}
_REFERENCE = re.compile(
    r"\b(?:the\s+)?(first|1st|second|2nd|third|3rd|fourth|4th|last)\b(?!\s+(?:time|thing|day|night))"
    r"|(?:\boption|\bnumber|\bno\.?|#)\s*(\d)\b",
    re.I,
)


NO_WORDS = "no change: LEARN reads words, and this reply has none"


def read_part(text: str) -> tuple[str, str]:
    """The part of a reply LEARN reads (its first :data:`MAX_READ_CHARACTERS` characters), and a
    note to show with the update when that is not all of it."""
    read = text[:MAX_READ_CHARACTERS]
    return read, CAP_NOTE if len(read) < len(text) else ""


def split_clauses(text: str) -> list[str]:
    """A reply's clauses, in order; empty pieces dropped."""
    return [part.strip(" ,") for part in _CLAUSE_END.split(text) if part and part.strip(" ,")]


def has_words(text: str) -> bool:
    """Whether a reply has anything LEARN can read: at least one run of two letters."""
    return re.search(r"[^\W\d_]{2}", text) is not None


def options(previous: str) -> list[str]:
    """The numbered or bulleted options of an assistant answer, in order."""
    return [match.group(1).strip() for match in _OPTION_LINE.finditer(previous)]


def pointed_option(reply: str, choices: Sequence[str]) -> int | None:
    """The index of the previous answer's option the reply picks: by position ("the second one",
    "option 3", "the last one"), else the one sharing the most words with it ("the homemade
    candle"), if exactly one does. A question picks nothing."""
    if len(choices) < 2 or "?" in reply:  # "is the second one open late?" asks, it does not pick
        return None
    match = _REFERENCE.search(reply)
    if match is not None:
        word = (match.group(1) or "").lower()
        index = len(choices) - 1 if word == "last" else _ORDINALS[word] if word else int(match.group(2)) - 1
        return index if 0 <= index < len(choices) else None
    said = _content_words(reply)
    shared = [len(said & _content_words(choice)) for choice in choices]
    best = max(shared)
    return shared.index(best) if best > 0 and shared.count(best) == 1 else None


_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "one",
        "ones",
        "sounds",
        "sound",
        "please",
        "pls",
        "like",
        "more",
        "love",
        "sure",
        "yes",
        "yeah",
        "ooh",
        "perfect",
        "great",
        "good",
        "nice",
        "want",
        "would",
        "could",
        "can",
        "let's",
        "lets",
        "its",
        "it's",
        "they",
        "them",
        "you",
        "your",
        "our",
        "from",
        "place",
        "spot",
        "idea",
        "option",
        "pick",
        "some",
        "any",
        "all",
        "just",
        "really",
    ]
)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in _STOPWORDS}


_NEGATION = re.compile(
    r"\b(?:no|not|nothing|none|nowhere|without|skip|avoid|less|too|don't|dont|isn't|aren't|never)\b", re.I
)


def named_pole(dimension: Dimension, clauses: Sequence[str]) -> dict[str, tuple[int, str]]:
    """A custom dimension's reading from its pole names: "somewhere quiet" asks for quiet,
    "nothing too quiet" and "too quiet" for the other pole. The first clause naming a pole decides."""
    for clause in clauses:
        for pole in (dimension.negative_pole, dimension.positive_pole):
            found = re.search(rf"\b{re.escape(pole)}", clause, re.I)
            if found is None:
                continue
            negated = _NEGATION.search(clause[: found.start()]) is not None
            return {dimension.name: (-dimension.sign(pole) if negated else dimension.sign(pole), clause)}
    return {}


class Sentiment:
    """VADER sentiment: ``compound`` -1 (negative) .. +1 (positive), and the proportions of
    negative, neutral and positive words."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def scores(self, text: str) -> dict[str, float]:
        return {key: float(value) for key, value in self._analyzer.polarity_scores(text).items()}

    def compound(self, text: str) -> float:
        return self.scores(text)["compound"]
