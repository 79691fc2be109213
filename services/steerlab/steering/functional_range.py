"""Estimate a vector set's functional range: the largest strength the model stays fluent at.

``alpha_max`` is the largest |alpha| at which the perplexity of held-out completions, steered
toward either pole, stays within ``bound`` times the unsteered perplexity. The search grows
alpha geometrically (in units of the site's mean activation norm) until the bound breaks, then
bisects. If even ``MAX_NORM_MULTIPLE`` times the mean norm stays fluent, that cap is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .activations import EncodedExample
from .apply import apply_plan
from .batching import LayerDelta, SteeringPlan
from .chat import pad_token_ids
from .models import LoadedModel

START_NORM_MULTIPLE = 0.125
MAX_NORM_MULTIPLE = 4.0
BISECTION_STEPS = 4
# Perplexity is compute-bound on CPU; a bounded sample of held-out text keeps the search cheap.
MAX_EXAMPLES = 24
MAX_COMPLETION_TOKENS = 48


@dataclass
class RangeEstimate:
    alpha_max: float
    baseline_perplexity: float
    bound: float
    capped: bool
    # alpha -> worst perplexity of the two signs
    evaluations: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "alpha_max": self.alpha_max,
            "baseline_perplexity": self.baseline_perplexity,
            "perplexity_bound": self.bound,
            "capped": self.capped,
            "evaluations": [[alpha, ppl] for alpha, ppl in sorted(self.evaluations.items())],
        }


def completion_nll(
    lm: LoadedModel, examples: Sequence[EncodedExample], plan: SteeringPlan, batch_size: int = 16
) -> list[tuple[float, int]]:
    """Per example: (summed negative log-likelihood, token count) of its completion tokens."""
    results: list[tuple[float, int]] = []
    with torch.no_grad(), apply_plan(lm, plan):
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            input_ids, attention_mask = pad_token_ids(
                [e.ids for e in batch], lm.tokenizer.pad_token_id, "right"
            )
            logits = lm.model(
                input_ids=input_ids.to(lm.device), attention_mask=attention_mask.to(lm.device)
            ).logits.float()
            targets = torch.full_like(input_ids, -100)
            for row, example in enumerate(batch):
                targets[row, example.completion_start : len(example.ids)] = torch.tensor(
                    example.ids[example.completion_start :]
                )
            shifted = targets[:, 1:].to(logits.device)
            nll = F.cross_entropy(
                logits[:, :-1].transpose(1, 2), shifted, ignore_index=-100, reduction="none"
            ).sum(dim=1)
            counts = (shifted != -100).sum(dim=1)
            results.extend(zip(nll.tolist(), counts.tolist(), strict=True))
    return results


def completion_perplexity(
    lm: LoadedModel, examples: Sequence[EncodedExample], plan: SteeringPlan, batch_size: int = 16
) -> float:
    """Perplexity of the completion tokens of ``examples`` (pooled) with ``plan`` applied."""
    per_example = completion_nll(lm, examples, plan, batch_size)
    total_nll = sum(nll for nll, _ in per_example)
    total_tokens = sum(count for _, count in per_example)
    return math.exp(total_nll / max(total_tokens, 1))


def uniform_plan(
    lm: LoadedModel, site: str, directions: dict[int, torch.Tensor], alpha: float
) -> SteeringPlan:
    """The same delta ``alpha * direction`` on every row, at each layer of ``directions``."""
    steered = torch.ones(1, dtype=torch.bool, device=lm.device)
    return {
        site: {
            layer: LayerDelta((alpha * vector)[None].to(lm.device, lm.dtype), steered)
            for layer, vector in directions.items()
        }
    }


def estimate_alpha_max(
    lm: LoadedModel,
    examples: Sequence[EncodedExample],
    *,
    site: str,
    directions: dict[int, torch.Tensor],
    activation_norm: float,
    bound: float = 1.5,
    progress: bool = False,
) -> RangeEstimate:
    """Search the largest alpha whose steered perplexity stays within ``bound`` x unsteered."""
    examples = [
        EncodedExample(e.ids[: e.completion_start + MAX_COMPLETION_TOKENS], e.completion_start)
        for e in examples[:MAX_EXAMPLES]
    ]
    bar = tqdm(desc="range", unit="alpha", disable=not progress, leave=False)
    baseline = completion_perplexity(lm, examples, {})
    estimate = RangeEstimate(0.0, baseline, bound, capped=False)

    def fluent(alpha: float) -> bool:
        worst = max(
            completion_perplexity(lm, examples, uniform_plan(lm, site, directions, sign * alpha))
            for sign in (1.0, -1.0)
        )
        estimate.evaluations[alpha] = worst
        bar.update()
        return worst <= bound * baseline

    with bar:
        estimate.alpha_max, estimate.capped = _search(fluent, activation_norm)
    return estimate


def _search(fluent: Callable[[float], bool], activation_norm: float) -> tuple[float, bool]:
    """(alpha_max, capped): grow alpha geometrically until fluency breaks, then bisect."""
    low, high = 0.0, START_NORM_MULTIPLE * activation_norm
    cap = MAX_NORM_MULTIPLE * activation_norm
    while fluent(high):
        low = high
        if high >= cap:
            return cap, True
        high = min(2 * high, cap)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if fluent(middle) else (low, middle)
    # A set whose smallest step already breaks fluency still gets a small usable range.
    return (low if low > 0 else high / 2**BISECTION_STEPS), False
