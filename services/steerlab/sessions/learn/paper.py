"""LEARN as the paper formulates it (``method="paper"``), for comparison.

- **Dissatisfaction** = 0.75 p(negative) + 0.25 p(neutral). The paper takes the probabilities
  from the TweetEval RoBERTa sentiment classifier, which no offline package ships; VADER's
  proportions of negative and neutral words stand in for them.
- **Direction**: the reference phrase ("I want more luxury", "I want lower cost", one per pole)
  nearest to the whole reply by sentence-embedding cosine; its dimension moves toward its pole.
  Every reply moves the nearest dimension unless it is fully content.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from steerlab.evaluation.embedding import Embedder, SentenceEmbedder
from steerlab.steering.datasets import Dimension

from .text import NO_WORDS, Sentiment, has_words, read_part
from .update import Reading, Signal, still

# The paper's own phrases for cost; the other dimensions follow the same pattern.
_PHRASES = {
    "budget": "I want lower cost",
    "luxury": "I want more luxury",
}


def reference_phrase(pole: str) -> str:
    return _PHRASES.get(pole, f"I want more {pole}")


class PaperReader:
    """The paper's LEARN reader. Safe to share between threads."""

    def __init__(self, embedder: Embedder | None = None, sentiment: Sentiment | None = None) -> None:
        self._embedder = embedder or SentenceEmbedder()
        self._sentiment = sentiment or Sentiment()
        self._lock = threading.Lock()
        self._phrases: dict[tuple[Dimension, ...], np.ndarray] = {}

    def warm_up(self, dimensions: Sequence[Dimension]) -> None:
        self._phrase_embeddings(dimensions)

    def _phrase_embeddings(self, dimensions: Sequence[Dimension]) -> np.ndarray:
        """[2 * dimensions, dim]: each dimension's negative then positive reference phrase."""
        key = tuple(dimensions)
        with self._lock:
            if key not in self._phrases:
                phrases = [reference_phrase(p) for d in key for p in (d.negative_pole, d.positive_pole)]
                self._phrases[key] = self._embedder.embed(phrases).numpy()
            return self._phrases[key]

    def interpret(
        self,
        text: str,
        dimensions: Sequence[Dimension],
        previous: str = "",
        dissatisfaction: float | None = None,
    ) -> Reading:
        read, note = read_part(text)
        if not has_words(read):
            return still(dimensions, NO_WORDS, note)
        if dissatisfaction is None:
            scores = self._sentiment.scores(read)
            dissatisfaction = 0.75 * scores["neg"] + 0.25 * scores["neu"]
        similarity = self._phrase_embeddings(dimensions) @ self._embedder.embed([read]).numpy()[0]
        nearest = int(np.argmax(similarity))
        chosen, direction = dimensions[nearest // 2], (1 if nearest % 2 else -1)
        signals = tuple(
            Signal(d.name, direction, dissatisfaction, read) if d is chosen else Signal(d.name, 0, 0.0, "")
            for d in dimensions
        )
        return Reading(signals, "no change: the reply reads as fully content", note)
