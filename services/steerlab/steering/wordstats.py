"""Word-level statistics of text: the word tokens every judge and fluency measure share, and
how much of an answer repeats itself."""

from __future__ import annotations

import re

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-case word tokens (a typographic apostrophe counts as one)."""
    return WORD.findall(text.lower().replace("\u2019", "'"))


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """The share of the answer's word ``n``-grams that already occurred earlier in it (0 for an
    answer shorter than ``n`` words): 0 for text that never repeats, near 1 for a loop.

    Perplexity can miss this kind of degeneration: a phrase said over and over is easy to predict.
    """
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0
