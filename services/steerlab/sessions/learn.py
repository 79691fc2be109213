"""LEARN: update a session's strengths from what the user says.

After each user turn, for every dimension::

    d <- clip(d + eta * dissatisfaction * direction, -100, 100)

- ``direction`` (+1, -1 or 0): whether the user asks for more of the positive or the negative
  pole. A small classifier per dimension, fitted on sentence embeddings (all-MiniLM-L6-v2) of
  example requests for each pole (``data/feedback/<dimension>.json``, or requests built from
  the pole names for a custom dimension) against requests about other dimensions and neutral
  replies (``data/feedback/neutral.json``), reads each clause of the message; the clause it
  is surest of decides, and it must be at least ``CONFIDENCE`` sure of a pole, else the
  direction is 0.
- ``dissatisfaction`` (0..1): from the VADER sentiment of the message. A clearly happy message
  (compound >= 0.5) is 0, so praise never moves anything; otherwise (1 - compound) / 2, so a
  neutral request counts 0.5 and an angry one up to 1. A thumbs down counts 1.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from steerlab.evaluation.embedding import SentenceEmbedder
from steerlab.steering.datasets import Dimension, builtin_dimensions, package_data_file

from .state import PreferenceUpdate, StrengthChange, clip_strength

HAPPY = 0.5  # VADER compound at or above which a message is content
CONFIDENCE = 0.6  # classifier probability needed for a direction
REGULARISATION = 4.0  # logistic regression C; see docs/method-notes.md (LEARN)
_CLAUSE_END = re.compile(
    r"(?<=[.!?;])\s+|\n+|,?\s+(?:and|but)\s+(?=we|i|my|our|can|could|would|please)\b", re.I
)


@dataclass(frozen=True)
class Signal:
    """What one user message says about one dimension."""

    dimension: str
    direction: int  # +1 toward the positive pole, -1 toward the negative, 0 neither
    dissatisfaction: float  # 0..1
    quote: str  # the sentence that decided


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _CLAUSE_END.split(text) if part and part.strip()]


def _feedback_file(name: str) -> dict[str, Any] | None:
    path = package_data_file("feedback", f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def pole_requests(dimension: Dimension) -> dict[str, list[str]]:
    """Example user requests for more of each pole: the shipped bank, or built from the pole names."""
    shipped = _feedback_file(dimension.name)
    if shipped is not None and set(shipped["requests"]) == {dimension.negative_pole, dimension.positive_pole}:
        return {pole: list(texts) for pole, texts in shipped["requests"].items()}
    negative, positive = dimension.negative_pole, dimension.positive_pole
    return {negative: _templates(negative, positive), positive: _templates(positive, negative)}


def _templates(wanted: str, other: str) -> list[str]:
    return [
        f"I'd like something more {wanted}.",
        f"Can you make it more {wanted}?",
        f"I prefer {wanted} options.",
        f"Something {wanted} would suit me better.",
        f"That is too {other} for me.",
        f"Less {other}, please.",
        f"Not {wanted} enough.",
        f"Way too {other}.",
    ]


class Sentiment:
    """VADER's compound score, -1 (negative) .. +1 (positive)."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def compound(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])


class FeedbackInterpreter:
    """Turns a user's message into one :class:`Signal` per dimension. Safe to share between threads."""

    def __init__(self, embedder: SentenceEmbedder | None = None, sentiment: Sentiment | None = None) -> None:
        self._embedder = embedder or SentenceEmbedder()
        self._sentiment = sentiment or Sentiment()
        self._lock = threading.Lock()
        self._classifiers: dict[Dimension, LogisticRegression] = {}
        neutral = _feedback_file("neutral")
        assert neutral is not None, "data/feedback/neutral.json is missing from the package"
        self._neutral = self._embed(neutral["sentences"])
        self._builtin = builtin_dimensions()

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._embedder.embed(texts).numpy()

    def _classifier(self, dimension: Dimension, others: Sequence[Dimension]) -> LogisticRegression:
        """Per dimension: -1 / +1 for requests toward each pole, 0 for anything else."""
        with self._lock:
            if dimension not in self._classifiers:
                requests = pole_requests(dimension)
                negative = self._embed(requests[dimension.negative_pole])
                positive = self._embed(requests[dimension.positive_pole])
                # Fitted once per dimension, against the built-in dimensions and those known at
                # the first call; a dimension registered later is not among its negatives.
                unrelated = [self._neutral]
                candidates = {d.name: d for d in [*self._builtin, *others] if d.name != dimension.name}
                for name in sorted(candidates):
                    unrelated += [self._embed(texts) for texts in pole_requests(candidates[name]).values()]
                features = np.concatenate([negative, positive, *unrelated])
                labels = np.concatenate(
                    [
                        np.full(len(negative), -1),
                        np.full(len(positive), 1),
                        np.zeros(len(features) - len(negative) - len(positive)),
                    ]
                )
                classifier = LogisticRegression(C=REGULARISATION, max_iter=2000, class_weight="balanced")
                self._classifiers[dimension] = classifier.fit(features, labels)
            return self._classifiers[dimension]

    def warm_up(self, dimensions: Sequence[Dimension]) -> None:
        """Fit the classifiers of ``dimensions`` now, so that the first user turn is not slow."""
        for dimension in dimensions:
            self._classifier(dimension, dimensions)

    def interpret(
        self, text: str, dimensions: Sequence[Dimension], dissatisfaction: float | None = None
    ) -> list[Signal]:
        """One signal per dimension; ``dissatisfaction`` overrides the sentiment (thumbs down: 1)."""
        sentences = split_sentences(text)
        if not sentences:
            return [Signal(d.name, 0, 0.0, "") for d in dimensions]
        embedded = self._embed(sentences)
        if dissatisfaction is None:
            dissatisfaction = self._dissatisfaction(text)
        return [self._signal(d, dimensions, sentences, embedded, dissatisfaction) for d in dimensions]

    def _signal(
        self,
        dimension: Dimension,
        dimensions: Sequence[Dimension],
        sentences: list[str],
        embedded: np.ndarray,
        dissatisfaction: float,
    ) -> Signal:
        classifier = self._classifier(dimension, dimensions)
        classes = [int(c) for c in classifier.classes_]
        poles = [i for i, c in enumerate(classes) if c != 0]
        # One row per clause; the clause most sure of a pole decides, so that "My kids are
        # coming, and we'd rather go in the morning." moves age and time, each the right way.
        probabilities = classifier.predict_proba(embedded)[:, poles]
        row, column = np.unravel_index(int(np.argmax(probabilities)), probabilities.shape)
        if probabilities[row, column] < CONFIDENCE or dissatisfaction == 0:
            return Signal(dimension.name, 0, 0.0, "")
        direction = classes[poles[column]]
        return Signal(dimension.name, direction, dissatisfaction, sentences[int(row)])

    def _dissatisfaction(self, text: str) -> float:
        compound = self._sentiment.compound(text)
        return 0.0 if compound >= HAPPY else (1.0 - compound) / 2


def apply_signals(
    strengths: dict[str, float], signals: Sequence[Signal], learning_rate: float
) -> tuple[dict[str, float], PreferenceUpdate]:
    """The new strengths after ``signals``, and what changed and why."""
    updated = dict(strengths)
    changes = []
    for signal in signals:
        step = learning_rate * signal.dissatisfaction * signal.direction
        if step == 0:
            continue
        before = strengths.get(signal.dimension, 0.0)
        after = round(clip_strength(before + step), 2)
        if after == before:
            continue
        updated[signal.dimension] = after
        changes.append(
            StrengthChange(
                signal.dimension, before, after, _reason(signal.dimension, before, after, signal.quote)
            )
        )
    if changes:
        summary = "; ".join(change.reason for change in changes)
    else:
        summary = "no change: nothing said asks for more or less of any dimension"
    return updated, PreferenceUpdate(tuple(changes), summary)


def _reason(dimension: str, before: float, after: float, quote: str) -> str:
    shown = quote if len(quote) <= 80 else quote[:77] + "..."
    return f"{dimension} {after - before:+.0f}%: '{shown}'"
