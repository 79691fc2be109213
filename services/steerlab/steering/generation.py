"""Batched, steered text generation with Hugging Face ``generate`` (greedy by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .apply import MAX_PERCENT, Strengths, steer
from .chat import Message, encode_prompt, pad_token_ids
from .errors import SteeringError
from .models import LoadedModel
from .vectorset import VectorSet


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters; ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def validate(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise SteeringError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SteeringError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise SteeringError(f"top-k must be >= 0, got {self.top_k}")

    def generate_kwargs(self) -> dict[str, object]:
        if self.temperature == 0:
            return {"do_sample": False}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k or None,
        }


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
    research sweep raises it to see where fluency breaks).
    """
    sampling = sampling or Sampling()
    sampling.validate()
    rows = list(strengths) if strengths is not None else [None] * len(prompts)
    if len(rows) != len(prompts):
        raise SteeringError(f"{len(prompts)} prompts but {len(rows)} strength mixes")
    if max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    encoded = [encode_prompt(lm.tokenizer, prompt) for prompt in prompts]
    input_ids, attention_mask = pad_token_ids(encoded, lm.tokenizer.pad_token_id, "left")
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    with torch.no_grad(), steer(lm, vector_sets, rows, max_percent=max_percent):
        output = lm.model.generate(
            input_ids=input_ids.to(lm.device),
            attention_mask=attention_mask.to(lm.device),
            max_new_tokens=max_new_tokens,
            pad_token_id=lm.tokenizer.pad_token_id,
            **sampling.generate_kwargs(),
        )
    new_tokens = output[:, input_ids.shape[1] :]
    return [lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]
