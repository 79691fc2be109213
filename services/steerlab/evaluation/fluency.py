"""Fluency: what steering costs in language quality.

- :func:`steered_perplexity`: the steered model's perplexity on held-out assistant answers
  (``data/eval/heldout_answers.json``, lifestyle answers that lean to no pole, never used for
  extraction), one value per steering coefficient.
- :class:`ReferenceModel`: the perplexity of *generated* answers under a second, independent
  model (``gemma3-270m`` by default), so a steered model cannot grade its own output.
- :func:`~steerlab.steering.wordstats.repeated_ngram_rate` (in the steering core, since the
  functional range bounds it too): how much of an answer repeats itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from ..steering import Example, LoadedModel, VectorSet, load_model
from ..steering.activations import EncodedExample, encode_examples
from ..steering.chat import encode_completion, encode_prompt
from ..steering.datasets import package_data_file
from ..steering.functional_range import completion_nll, completion_perplexity, uniform_plan

REFERENCE_MODEL = "gemma3-270m"
# Answers are scored on at most this many tokens, enough for a paragraph.
MAX_SCORED_TOKENS = 96


def heldout_answers() -> list[Example]:
    """The held-out assistant answers (prompt, completion) used for the fluency metric."""
    data = json.loads(package_data_file("eval", "heldout_answers.json").read_text(encoding="utf-8"))
    return [Example(item["prompt"], item["completion"], "heldout") for item in data["examples"]]


def steered_perplexity(
    lm: LoadedModel,
    vector_set: VectorSet,
    alphas: Sequence[float],
    examples: Sequence[Example] | None = None,
) -> list[float]:
    """Perplexity of held-out answers with ``alpha * direction`` added at the set's selected layers.

    ``alpha`` is the raw coefficient (``vector_set.alpha(percent)``); 0 is the unsteered model.
    """
    encoded = encode_examples(lm.tokenizer, examples or heldout_answers(), MAX_SCORED_TOKENS)
    directions = {layer: vector_set.directions[layer] for layer in vector_set.selected_layers}
    return [
        completion_perplexity(lm, encoded, uniform_plan(lm, vector_set.site, directions, alpha))
        for alpha in alphas
    ]


class ReferenceModel:
    """Scores text with an independent language model (the prompt as context, the answer scored)."""

    def __init__(self, lm: LoadedModel, batch_size: int = 8) -> None:
        self.lm = lm
        self.batch_size = batch_size

    @classmethod
    def load(cls, name: str = REFERENCE_MODEL) -> ReferenceModel:
        return cls(load_model(name))

    @property
    def name(self) -> str:
        return self.lm.name

    def perplexities(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Per answer, its perplexity given its prompt; NaN for an empty answer."""
        tokenizer = self.lm.tokenizer
        encoded = []
        for prompt, answer in zip(prompts, answers, strict=True):
            context = encode_prompt(tokenizer, prompt)
            completion = encode_completion(tokenizer, answer)[:MAX_SCORED_TOKENS]
            encoded.append(EncodedExample(tuple(context + completion), len(context)))
        scored = completion_nll(self.lm, encoded, {}, self.batch_size)
        return [math.exp(nll / count) if count else math.nan for nll, count in scored]
