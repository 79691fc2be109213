"""LEARN's default reader: which pole of which dimension a reply asks for, clause by clause.

- **Direction**: one multinomial logistic regression over sentence embeddings from the tuned
  encoder (:mod:`.encoder`), whose classes are "asks for nothing" and each pole of each
  dimension, fitted on the training bank (:mod:`.banks`). Each clause of the reply is
  classified; a clause whose most likely class is a pole, at :data:`CONFIDENCE` or more and
  :data:`DIRECTION_MARGIN` times likelier than the opposite pole, asks for that pole; per
  dimension the surest clause decides. One model for all dimensions, so that a wish for one
  dimension is evidence against the others.
- **The previous answer**: a reply that picks one of its options, by position ("the second one")
  or by the words it shares with it ("the homemade candle"), moves toward the pole that option
  leans to more than the others do (the same classifier, read on the options).
- **Custom dimensions** (no bank) are also read from their pole names (:func:`.text.named_pole`).
- **Dissatisfaction**: 0.5 for a plain request, rising to 1 with VADER's negative sentiment.

The numbers were chosen on the development set (``data/learn/dev.json``); see
``docs/method-notes.md`` (LEARN).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from steerlab.evaluation.embedding import Embedder
from steerlab.steering.datasets import Dimension, builtin_dimensions

from .banks import has_bank, neutral_replies, pole_requests
from .encoder import TunedEncoder, learn_cache
from .text import (
    NO_WORDS,
    Sentiment,
    has_words,
    named_pole,
    options,
    pointed_option,
    read_part,
    split_clauses,
)
from .update import Reading, Signal, still

CONFIDENCE = 0.6  # probability of a pole needed for a clause to move its dimension
DIRECTION_MARGIN = 3.0  # ... and how many times likelier than the opposite pole it must be
REGULARISATION = 4.0  # logistic regression C
REFERENCE_MARGIN = 0.15  # how much more the pointed-at option must lean to a pole than the rest
BASE_DISSATISFACTION = 0.5  # a request with no feeling in it; anger adds up to another 0.5
CONTENT = 0.5  # VADER compound at or above which a reply with no clear wish is content


@dataclass(frozen=True)
class Wish:
    """A class of the intent model: more of one pole of one dimension."""

    dimension: str
    direction: int


class IntentModel:
    """Probabilities of "asks for nothing" (``None``) and of each :class:`Wish`, per text."""

    def __init__(self, wishes: list[Wish | None], classifier: LogisticRegression) -> None:
        self.wishes = wishes
        self._classifier = classifier
        # Column of each wish's opposite pole (0, "nothing", for itself).
        self.opposite = [0 if w is None else wishes.index(Wish(w.dimension, -w.direction)) for w in wishes]

    def probabilities(self, embedded: np.ndarray) -> np.ndarray:
        """[texts, len(wishes)], columns in the order of :attr:`wishes`."""
        return np.asarray(self._classifier.predict_proba(embedded))


class IntentReader:
    """The default LEARN reader (``method="intent"``). Safe to share between threads."""

    def __init__(
        self,
        embedder: Embedder | None = None,
        sentiment: Sentiment | None = None,
        *,
        confidence: float = CONFIDENCE,
        regularisation: float = REGULARISATION,
    ) -> None:
        self._embedder = embedder or TunedEncoder()
        self._sentiment = sentiment or Sentiment()
        self.confidence = confidence
        self.regularisation = regularisation
        self._lock = threading.Lock()
        self._models: dict[tuple[Dimension, ...], IntentModel] = {}
        self._bank_cache: dict[str, np.ndarray] = {}

    # -- the model --------------------------------------------------------------------------

    def warm_up(self, dimensions: Sequence[Dimension]) -> None:
        self._model(dimensions)

    def _model(self, dimensions: Sequence[Dimension]) -> IntentModel:
        key = tuple(sorted(set(dimensions), key=lambda d: d.name))
        with self._lock:
            if key not in self._models:
                self._models[key] = self._fit(key)
            return self._models[key]

    def _fit(self, dimensions: tuple[Dimension, ...]) -> IntentModel:
        texts: list[str] = list(neutral_replies())
        labels: list[int] = [0] * len(texts)
        wishes: list[Wish | None] = [None]
        for dimension in dimensions:
            for pole, requests in pole_requests(dimension).items():
                wishes.append(Wish(dimension.name, dimension.sign(pole)))
                texts += requests
                labels += [len(wishes) - 1] * len(requests)
        # A built-in dimension outside this set is something these sessions cannot ask for.
        chosen = {d.name for d in dimensions}
        for other in builtin_dimensions():
            if other.name not in chosen:
                requests = [t for pole in pole_requests(other).values() for t in pole]
                texts += requests
                labels += [0] * len(requests)
        classifier = LogisticRegression(C=self.regularisation, max_iter=3000, class_weight="balanced")
        classifier.fit(self._embed_bank(texts), np.array(labels))
        order = [int(c) for c in classifier.classes_]
        return IntentModel([wishes[c] for c in order], classifier)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._embedder.embed(texts).numpy())

    def _embed_bank(self, texts: list[str]) -> np.ndarray:
        """The bank's embeddings, cached on disk: the bank is the same every start."""
        digest = hashlib.sha256("\n".join([self._embedder.name, *texts]).encode()).hexdigest()[:20]
        if digest in self._bank_cache:
            return self._bank_cache[digest]
        path = learn_cache() / f"bank-{self._embedder.name}-{digest}.npy"
        if path.is_file():
            embedded = np.asarray(np.load(path), dtype=np.float32)
        else:
            embedded = self._embed(texts)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                scratch = path.with_suffix(f".{threading.get_ident()}.tmp.npy")
                np.save(scratch, embedded)
                scratch.replace(path)
            except OSError:  # a read-only image: keep it in memory only
                pass
        self._bank_cache[digest] = embedded
        return embedded

    # -- reading a reply --------------------------------------------------------------------

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
        model = self._model(dimensions)
        clauses = split_clauses(read) or [read]
        probabilities = model.probabilities(self._embed(clauses))
        compound = self._sentiment.compound(read)
        # A pick among the previous answer's options says more than its own few words do.
        wishes = self._pointed_wish(model, read, previous, compound) if previous else {}
        if not wishes:
            wishes = self._clause_wishes(model, clauses, probabilities)
        for dimension in dimensions:
            if dimension.name not in wishes and not has_bank(dimension):
                wishes.update(named_pole(dimension, clauses))
        if not wishes:
            return still(dimensions, self._why_not(model, dimensions, clauses, probabilities, compound), note)
        if dissatisfaction is None:
            dissatisfaction = BASE_DISSATISFACTION + (1 - BASE_DISSATISFACTION) * max(0.0, -compound)
        signals = tuple(
            Signal(d.name, wishes[d.name][0], dissatisfaction, wishes[d.name][1])
            if d.name in wishes
            else Signal(d.name, 0, 0.0, "")
            for d in dimensions
        )
        return Reading(signals, note=note)

    def _clause_wishes(
        self, model: IntentModel, clauses: list[str], probabilities: np.ndarray
    ) -> dict[str, tuple[int, str]]:
        """Dimension -> (direction, clause): per dimension the surest clause that asks for a pole."""
        surest: dict[str, tuple[float, int, str]] = {}
        for clause, row in zip(clauses, probabilities, strict=True):
            column = int(np.argmax(row))
            wish = model.wishes[column]
            if wish is None or row[column] < self.confidence:
                continue
            if row[column] < DIRECTION_MARGIN * row[model.opposite[column]]:
                continue  # sure it is about this dimension, not which way: a wrong move costs more
            if wish.dimension not in surest or row[column] > surest[wish.dimension][0]:
                surest[wish.dimension] = (float(row[column]), wish.direction, clause)
        return {name: (direction, clause) for name, (_, direction, clause) in surest.items()}

    def _pointed_wish(
        self, model: IntentModel, read: str, previous: str, compound: float
    ) -> dict[str, tuple[int, str]]:
        """A pick of one option of the previous answer: toward what sets it apart (away, if disliked)."""
        choices = options(previous)
        picked = pointed_option(read, choices)
        if picked is None:
            return {}
        leaning = model.probabilities(self._embed(choices))
        others = np.delete(leaning, picked, axis=0).mean(axis=0)
        contrast = leaning[picked] - others
        for column, wish in enumerate(model.wishes):
            if wish is None:
                contrast[column] = -np.inf
        column = int(np.argmax(contrast))
        wish = model.wishes[column]
        if wish is None or contrast[column] < REFERENCE_MARGIN:
            return {}
        direction = -wish.direction if compound <= -CONTENT else wish.direction
        return {
            wish.dimension: (
                direction,
                f"{_shorten(read.strip(), 40)} [{_shorten(choices[picked], 40)}]",
            )
        }

    def _why_not(
        self,
        model: IntentModel,
        dimensions: Sequence[Dimension],
        clauses: list[str],
        probabilities: np.ndarray,
        compound: float,
    ) -> str:
        """Why a reply moved nothing: the nearest wish, and how sure LEARN was of it."""
        masked = np.where([w is None for w in model.wishes], -1.0, probabilities)
        row, column = (int(i) for i in np.unravel_index(int(np.argmax(masked)), masked.shape))
        wish = model.wishes[column]
        assert wish is not None
        dimension = next(d for d in dimensions if d.name == wish.dimension)
        pole = dimension.positive_pole if wish.direction > 0 else dimension.negative_pole
        other = dimension.negative_pole if wish.direction > 0 else dimension.positive_pole
        sure, against = probabilities[row, column], probabilities[row, model.opposite[column]]
        said = f"'{_shorten(clauses[row])}'"
        if sure >= self.confidence:
            return (
                f"no change: {said} seems to be about {wish.dimension}, but not clearly which way "
                f"({pole} {sure:.0%}, {other} {against:.0%}; LEARN moves at {DIRECTION_MARGIN:g} to 1)"
            )
        mood = ", and the reply reads as content" if compound >= CONTENT else ""
        return (
            f"no change: nothing said asks for more or less of any dimension{mood} (nearest: "
            f"{wish.dimension} toward {pole} in {said}, {sure:.0%} sure; "
            f"LEARN moves at {self.confidence:.0%})"
        )


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
