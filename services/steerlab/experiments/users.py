"""Simulated users for LEARN (the paper's E4 setting).

A simulated user has a hidden target strength on one dimension. After each answer they reply in
words: praise when the answer seemed close enough to what they want, a mild complaint toward
their side when it was somewhat off, a strong one when it was far off. The replies come from
``data/experiments/simulated_users.json``, written separately from (and by a different author
than) the request banks LEARN is fitted on, and never used to fit anything.

How the user decides how far off the answer was is up to the caller: E4's users read the
answer; the tests' users are told the strength (an upper bound on what reading can achieve).
"""

from __future__ import annotations

import json
import random
from functools import cache
from typing import Any

from ..steering.datasets import package_data_file

TOLERANCE = 25.0  # points: a user this close to their target is content
STRONG_GAP = 60.0  # points: further off than this, the complaint is a strong one
TURNS = 12


@cache
def replies() -> dict[str, Any]:
    """dimension -> toward_negative|toward_positive -> mild|strong -> [text]; "praise" -> [text]."""
    text = package_data_file("experiments", "simulated_users.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def reply(dimension: str, gap: float, rng: random.Random) -> str:
    """What a user says when the answer fell ``gap`` points short of their target (negative: past it)."""
    if abs(gap) <= TOLERANCE:
        return str(rng.choice(replies()["praise"]))
    toward = "toward_positive" if gap > 0 else "toward_negative"
    return str(rng.choice(replies()[dimension][toward]["strong" if abs(gap) > STRONG_GAP else "mild"]))
