"""LEARN's training bank: example requests for each pole, and replies that ask for nothing.

Built-in dimensions ship a bank (``data/feedback/<dimension>.json``); a custom dimension gets
requests built from its pole names. ``data/feedback/neutral.json`` holds the replies that ask
for nothing. Only these are fitted on; the development and test sets live in ``data/learn/``.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from steerlab.steering.datasets import Dimension, package_data_file


def _feedback_file(name: str) -> dict[str, Any] | None:
    path = package_data_file("feedback", f"{name}.json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _shipped(dimension: Dimension) -> dict[str, list[str]] | None:
    shipped = _feedback_file(dimension.name)
    if shipped is not None and set(shipped["requests"]) == {dimension.negative_pole, dimension.positive_pole}:
        return {pole: list(texts) for pole, texts in shipped["requests"].items()}
    return None


def has_bank(dimension: Dimension) -> bool:
    """Whether the dimension ships example requests (the built-in ones do; custom ones do not)."""
    return _shipped(dimension) is not None


def pole_requests(dimension: Dimension) -> dict[str, list[str]]:
    """Example user requests for more of each pole: the shipped bank, or built from the pole names."""
    shipped = _shipped(dimension)
    if shipped is not None:
        return shipped
    negative, positive = dimension.negative_pole, dimension.positive_pole
    return {negative: _templates(negative, positive), positive: _templates(positive, negative)}


def _templates(wanted: str, other: str) -> list[str]:
    """Requests for ``wanted`` in the forms people use: asking, rejecting the other pole, complaining."""
    return [
        f"I'd like something more {wanted}.",
        f"Can you make it more {wanted}?",
        f"I prefer {wanted} options.",
        f"Something {wanted} would suit me better.",
        f"somewhere {wanted} pls",
        f"We're looking for a {wanted} place.",
        f"{wanted.capitalize()} is more our thing.",
        f"Anything a bit more {wanted}?",
        f"That is too {other} for me.",
        f"Less {other}, please.",
        f"Not {wanted} enough.",
        f"Way too {other}.",
        f"Nothing too {other}, please.",
        f"We don't want anything {other}.",
        f"Still too {other}.",
        f"ugh, that sounds way too {other} for us",
    ]


@cache
def neutral_replies() -> tuple[str, ...]:
    """Replies that ask for no change: thanks, follow-up questions, off-topic chat."""
    neutral = _feedback_file("neutral")
    assert neutral is not None, "data/feedback/neutral.json is missing from the package"
    return tuple(neutral["sentences"])
