"""Turn a user prompt (or a whole conversation) into the token ids the model continues from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
