"""LEARN: update a session's strengths from what the user says.

- :mod:`.update`: the update rule ``d <- clip(d + eta * dissatisfaction * direction)`` and the
  :class:`FeedbackInterpreter` protocol that readers of replies implement;
- :mod:`.intent`: the default reader (``intent``), a classifier over sentence embeddings that
  reads each clause, in the context of the previous answer;
- :mod:`.paper`: the paper's own formulation (``paper``), for comparison;
- :mod:`.evaluate`: the held-out evaluation (``steerlab experiments learn``).
"""

from __future__ import annotations

from typing import Literal, get_args

from steerlab.evaluation.embedding import Embedder
from steerlab.steering.errors import SteerLabError

from .banks import pole_requests
from .intent import IntentReader
from .paper import PaperReader
from .text import MAX_READ_CHARACTERS, split_clauses
from .update import FeedbackInterpreter, Reading, Signal, apply_signals

# How LEARN reads replies: the default reader, or the paper's formulation.
LearnMethod = Literal["intent", "paper"]
LEARN_METHODS: tuple[str, ...] = get_args(LearnMethod)


def make_interpreter(method: str = "intent", embedder: Embedder | None = None) -> FeedbackInterpreter:
    """A LEARN reader by name: ``intent`` (the default) or ``paper`` (the paper's formulation)."""
    if method == "intent":
        return IntentReader(embedder)
    if method == "paper":
        return PaperReader(embedder)
    raise SteerLabError(f"unknown LEARN method {method!r}; choose one of {', '.join(LEARN_METHODS)}")


__all__ = [
    "LEARN_METHODS",
    "MAX_READ_CHARACTERS",
    "FeedbackInterpreter",
    "IntentReader",
    "LearnMethod",
    "PaperReader",
    "Reading",
    "Signal",
    "apply_signals",
    "make_interpreter",
    "pole_requests",
    "split_clauses",
]
