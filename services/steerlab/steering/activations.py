"""Read a model's activations on the completion tokens of contrastive examples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .chat import encode_completion, encode_prompt, pad_token_ids
from .datasets import Example
from .models import LoadedModel
from .sites import Transform, hooked

MAX_COMPLETION_TOKENS = 128


@dataclass(frozen=True)
class EncodedExample:
    """Prompt (through the chat template) followed by the completion, as token ids."""

    ids: tuple[int, ...]
    completion_start: int

    @property
    def completion_length(self) -> int:
        return len(self.ids) - self.completion_start


def encode_examples(
    tokenizer: object, examples: Sequence[Example], max_completion_tokens: int
) -> list[EncodedExample]:
    encoded = []
    for example in examples:
        prompt = encode_prompt(tokenizer, example.prompt)
        completion = encode_completion(tokenizer, example.completion)[:max_completion_tokens]
        encoded.append(EncodedExample(tuple(prompt + completion), len(prompt)))
    return encoded


@dataclass(frozen=True)
class Activations:
    """Samples of one activation site across all layers.

    ``values[layer, sample]`` is one sample's activation; ``example_index[sample]`` says which
    example it came from and ``position[sample]`` which completion token it is (several samples
    per example with the ``first`` selection, position 0 for ``last`` and ``mean``).
    """

    values: torch.Tensor  # [num_layers, num_samples, hidden], float32
    example_index: torch.Tensor  # [num_samples], long
    position: torch.Tensor  # [num_samples], long

    def mean_norm(self, layer: int) -> float:
        return float(self.values[layer].norm(dim=-1).mean())


def _select(
    activation: torch.Tensor, example: EncodedExample, token_selection: str, num_tokens: int
) -> torch.Tensor:
    """Samples [n, hidden] of one row's completion tokens."""
    completion = activation[example.completion_start : len(example.ids)]
    if token_selection == "first":
        return completion[:num_tokens]
    if token_selection == "last":
        return completion[-1:]
    return completion.mean(dim=0, keepdim=True)


def collect_activations(
    lm: LoadedModel,
    examples: Sequence[EncodedExample],
    *,
    site: str,
    token_selection: str = "first",
    num_tokens: int = 16,
    batch_size: int = 16,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> Activations:
    """Run the model over ``examples`` and keep the site's activations on completion tokens.

    ``on_batch(done, total)`` is called after each batch of examples.
    """
    if token_selection == "first":
        # A causal model's activations at a position ignore later tokens: stop at the last used.
        examples = [
            EncodedExample(e.ids[: e.completion_start + num_tokens], e.completion_start) for e in examples
        ]
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int) -> Transform:
        def store(activation: torch.Tensor) -> None:
            captured[layer] = activation.detach().float()

        return store

    per_layer: list[list[torch.Tensor]] = [[] for _ in range(lm.num_layers)]
    owners: list[int] = []
    positions: list[torch.Tensor] = []
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    transforms = {layer: capture(layer) for layer in range(lm.num_layers)}
    with torch.no_grad(), hooked(lm.adapter, site, transforms):
        for done, batch_ids in enumerate(
            tqdm(batches, desc="activations", disable=not progress, leave=False)
        ):
            batch = [examples[i] for i in batch_ids]
            input_ids, attention_mask = pad_token_ids(
                [e.ids for e in batch], lm.tokenizer.pad_token_id, "right"
            )
            lm.model(
                input_ids=input_ids.to(lm.device),
                attention_mask=attention_mask.to(lm.device),
                use_cache=False,
                logits_to_keep=1,
            )
            for row, example_id in enumerate(batch_ids):
                samples = None
                for layer in range(lm.num_layers):
                    samples = _select(captured[layer][row], batch[row], token_selection, num_tokens)
                    per_layer[layer].append(samples.cpu())
                assert samples is not None
                owners.extend([example_id] * samples.shape[0])
                positions.append(torch.arange(samples.shape[0]))
            if on_batch is not None:
                on_batch(done + 1, len(batches))
    values = torch.stack([torch.cat(chunks) for chunks in per_layer])
    return Activations(
        values=values,
        example_index=torch.tensor(owners, dtype=torch.long),
        position=torch.cat(positions),
    )
