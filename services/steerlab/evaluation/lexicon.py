"""A second effect judge of a different kind than the embedding one: a word lexicon.

Per dimension, every word of the pole reference texts gets a weight: the z-score of its
weighted log-odds ratio between the poles, with an informative Dirichlet prior taken from all
the reference texts of every dimension (Monroe, Colaresi & Quinn 2008, "Fightin' Words",
section 3.5). Words whose |z| stays under ``MIN_Z`` carry no weight. A text's score is the mean
weight of its content words (stop words left out): positive when it uses the positive pole's
words more. It sees only which words an answer uses, not what a sentence means, so it fails
differently from an embedder; a finding both judges agree on in sign is not an artefact of the
embedding geometry.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from ..steering.wordstats import words

MIN_Z = 1.0  # words the poles barely tell apart carry no weight (chosen on the datasets' answer pairs)
PRIOR_SIZE = 500.0  # pseudo-words of the prior (alpha_0): the background's share of each estimate


def content_words(text: str) -> list[str]:
    """Word tokens less English stop words, plurals folded (``dollars`` -> ``dollar``): the
    lexicon judges what an answer talks about, not its function words."""
    return [_singular(word) for word in words(text) if len(word) > 1 and word not in ENGLISH_STOP_WORDS]


def _singular(word: str) -> str:
    word = word.removesuffix("'s").removesuffix("'")
    plural = len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is"))
    return word[:-1] if plural else word


def _counts(texts: Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(content_words(text))
    return counts


class Lexicon:
    """Word weights for one dimension (positive: the positive pole's words)."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights

    @classmethod
    def fit(cls, negative: Sequence[str], positive: Sequence[str], background: Sequence[str]) -> Lexicon:
        """Weighted log-odds z-scores of each word, positive pole against negative."""
        prior_counts = _counts(background)
        prior_total = sum(prior_counts.values())
        low, high = _counts(negative), _counts(positive)
        low_total, high_total = sum(low.values()), sum(high.values())
        weights: dict[str, float] = {}
        for word in low.keys() | high.keys():
            prior = PRIOR_SIZE * (prior_counts[word] + 1) / (prior_total + len(prior_counts))
            y_high, y_low = high[word] + prior, low[word] + prior
            delta = math.log(y_high / (high_total + PRIOR_SIZE - y_high)) - math.log(
                y_low / (low_total + PRIOR_SIZE - y_low)
            )
            z = delta / math.sqrt(1 / y_high + 1 / y_low)
            if abs(z) >= MIN_Z:
                weights[word] = z
        return cls(weights)

    def score(self, text: str) -> float:
        """Mean weight of the content words of ``text`` (0 for a text without any)."""
        tokens = content_words(text)
        return sum(self.weights.get(token, 0.0) for token in tokens) / len(tokens) if tokens else 0.0

    def top(self, count: int = 10) -> tuple[list[str], list[str]]:
        """The ``count`` strongest words of the (negative, positive) poles, for reports."""
        ranked = sorted(self.weights, key=self.weights.__getitem__)
        return ranked[:count], ranked[::-1][:count]
