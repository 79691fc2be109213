"""The second evaluation protocol's data and its two effect judges (issue 21).

- :func:`protocol_prompts`: users' first questions, ``dev`` (tune on it) or ``test`` (report it
  once), written by separate authors (``data/eval/v2/README.md``);
- :func:`pole_references`: 160+ texts per pole in genres other than assistant answers;
- :class:`Judges`: the primary judge (all-mpnet-base-v2 similarity to each pole's references, as
  the paper's Sentence-BERT effect) and the second, of another kind (a word lexicon, :mod:`.lexicon`),
  both scoring every text on every dimension, so cross-talk comes with the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..steering import BUILTIN_DIMENSIONS
from ..steering.datasets import package_data_file
from ..steering.errors import SteerLabError
from .effect import EffectScorer
from .embedding import SentenceEmbedder
from .lexicon import Lexicon

SPLITS = ("dev", "test")
PRIMARY_JUDGE = "mpnet"
SECOND_JUDGE = "lexicon"
JUDGES = (PRIMARY_JUDGE, SECOND_JUDGE)


def _protocol_file(*parts: str) -> Any:
    return json.loads(package_data_file("eval", "v2", *parts).read_text(encoding="utf-8"))


def protocol_prompts(split: str) -> list[str]:
    """The ``dev`` or ``test`` prompts of the second protocol."""
    if split not in SPLITS:
        raise SteerLabError(f"unknown prompt split {split!r}; choose one of {', '.join(SPLITS)}")
    return [item["text"] for item in _protocol_file(f"prompts_{split}.json")["prompts"]]


@dataclass(frozen=True)
class PoleReferences:
    """A built-in dimension's reference texts, per pole."""

    dimension: str
    negative_pole: str
    positive_pole: str
    negative: tuple[str, ...]
    positive: tuple[str, ...]


def pole_references(dimension: str) -> PoleReferences:
    if dimension not in BUILTIN_DIMENSIONS:
        raise SteerLabError(
            f"no reference texts for {dimension!r}; built-in: {', '.join(BUILTIN_DIMENSIONS)}"
        )
    data = _protocol_file("references", f"{dimension}.json")
    return PoleReferences(
        dimension,
        data["negative_pole"],
        data["positive_pole"],
        tuple(data["negative"]),
        tuple(data["positive"]),
    )


class Judges:
    """Both judges over the given dimensions: ``score(texts)[judge][dimension]`` is one effect per
    text, positive when the text leans to the dimension's positive pole."""

    def __init__(
        self, dimensions: Sequence[str] = BUILTIN_DIMENSIONS, embedder: SentenceEmbedder | None = None
    ) -> None:
        self.dimensions = tuple(dimensions)
        references = [pole_references(name) for name in self.dimensions]
        self._poles = {ref.dimension: (ref.negative, ref.positive) for ref in references}
        background = [text for ref in references for text in ref.negative + ref.positive]
        self.lexicons = {
            ref.dimension: Lexicon.fit(ref.negative, ref.positive, background) for ref in references
        }
        self._scorer = EffectScorer(embedder or SentenceEmbedder(PRIMARY_JUDGE))

    def score(self, texts: Sequence[str]) -> dict[str, dict[str, list[float]]]:
        return {
            PRIMARY_JUDGE: self._scorer.effects(texts, self._poles),
            SECOND_JUDGE: {
                name: [lexicon.score(text) for text in texts] for name, lexicon in self.lexicons.items()
            },
        }
