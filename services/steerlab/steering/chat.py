"""Turn a user prompt (or a whole conversation) into the token ids the model continues from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

Message = Mapping[str, str]


def encode_prompt(tokenizer: Any, prompt: str | Sequence[Message]) -> list[int]:
    """Token ids of ``prompt`` ready for the assistant's answer.

    Uses the tokenizer's chat template when it has one; a base model without a template
    gets the plain text followed by a newline.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])
    text = "\n".join(message["content"] for message in messages) + "\n"
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_completion(tokenizer: Any, completion: str) -> list[int]:
    """Token ids of an assistant answer, without special tokens."""
    return list(tokenizer(completion, add_special_tokens=False)["input_ids"])


def pad_token_ids(
    rows: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad rows of token ids to one width; returns (input_ids, attention_mask).

    Generation pads on the left so every row's next token sits in the last column; scoring
    pads on the right so completion positions keep their indices.
    """
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        columns = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        input_ids[i, columns] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, columns] = 1
    return input_ids, attention_mask
