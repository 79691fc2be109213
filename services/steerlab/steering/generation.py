"""Batched, steered text generation in-process, through the same engine the inference service
runs (greedy by default)."""

from __future__ import annotations

from collections.abc import Sequence

from .apply import prepare_vector_sets
from .batching import Strengths, fold_strengths
from .chat import Message, encode_prompt
from .config import MAX_PERCENT, Sampling
from .engine import EngineSettings, Failed, GenerationRequest, InferenceEngine, ModelRunner
from .errors import SteeringError
from .models import LoadedModel
from .vectorset import VectorSet

MAX_ROWS_AT_ONCE = 64


def generate(
    lm: LoadedModel,
    prompts: Sequence[str | Sequence[Message]],
    *,
    vector_sets: Sequence[VectorSet] = (),
    strengths: Sequence[Strengths | None] | None = None,
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
    max_percent: float = MAX_PERCENT,
) -> list[str]:
    """Answer each prompt, steering prompt ``i`` by ``strengths[i]``, all in one batch.

    Strengths are percent of each set's functional range, at most ``max_percent`` (100 unless a
    research sweep raises it to see where fluency breaks). With a seed, row ``i`` samples with
    seed ``seed + i``: reproducible, and equal prompts still get different samples.
    """
    sampling = sampling or Sampling()
    sampling.validate()
    rows = list(strengths) if strengths is not None else [None] * len(prompts)
    if len(rows) != len(prompts):
        raise SteeringError(f"{len(prompts)} prompts but {len(rows)} strength mixes")
    if max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prepared = prepare_vector_sets(lm, vector_sets)
    requests = [
        GenerationRequest(
            prompt=encode_prompt(lm.tokenizer, prompt),
            steering=fold_strengths(prepared, row, max_percent),
            sampling=_row_sampling(sampling, index),
            max_new_tokens=max_new_tokens,
        )
        for index, (prompt, row) in enumerate(zip(prompts, rows, strict=True))
    ]
    return [text.strip() for text in run_to_completion(lm, requests)]


def run_to_completion(lm: LoadedModel, requests: Sequence[GenerationRequest]) -> list[str]:
    """Run ``requests`` through an engine of their own over ``lm`` (no copy of the model), on
    this thread; their texts, in order."""
    if not requests:
        return []
    settings = EngineSettings(
        max_batch=min(len(requests), MAX_ROWS_AT_ONCE),
        max_queue=len(requests),
        max_new_tokens=max(request.max_new_tokens for request in requests),
    )
    texts = []
    for end in InferenceEngine(ModelRunner(lm), settings).run_to_completion(requests):
        if isinstance(end, Failed):
            raise end.error
        texts.append(end.text)
    return texts


def _row_sampling(sampling: Sampling, index: int) -> Sampling:
    if sampling.seed is None:
        return sampling
    return Sampling(sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed + index)
