"""How well a LEARN reader reads people: single replies, content replies, and oracle users.

The sets live in ``data/learn/``: ``dev.json`` (to choose methods and numbers) and
``test.json`` (written separately, by another author in another voice, reported once). Each
holds replies labelled with the one dimension and pole they ask for (some with the assistant
answer they reply to), replies that ask for nothing, and a custom dimension (noise:
quiet <-> lively) that has no training bank, only its pole names.

Reproduce with ``steerlab experiments learn --split test [--method intent|paper]``.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from steerlab.steering.datasets import Dimension, builtin_dimensions, package_data_file

from ..state import DEFAULT_LEARNING_RATE
from .update import FeedbackInterpreter, apply_signals

SPLITS = ("dev", "test")
TURNS = 12
TOLERANCE = 25.0  # points: an oracle user this close to their target is content
TARGET_RANGE = (40.0, 100.0)  # points from zero, either side


@dataclass(frozen=True)
class LabelledReply:
    text: str
    dimension: str | None  # None: asks for nothing
    direction: int  # +1 positive pole, -1 negative, 0 nothing
    kind: str
    previous: str = ""


@dataclass(frozen=True)
class EvaluationSet:
    about: str
    custom: tuple[Dimension, ...]
    replies: tuple[LabelledReply, ...]
    neutral: tuple[LabelledReply, ...]

    def asking(self, dimension: str, direction: int | None = None) -> list[LabelledReply]:
        return [r for r in self.replies if r.dimension == dimension and direction in (None, r.direction)]


def load_set(split: str) -> EvaluationSet:
    """The development or test set (``split`` is ``dev`` or ``test``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    data = json.loads(package_data_file("learn", f"{split}.json").read_text(encoding="utf-8"))
    custom = tuple(Dimension.from_dict(d) for d in data["dimensions"].values())
    dimensions = {d.name: d for d in (*builtin_dimensions(), *custom)}
    replies = tuple(
        LabelledReply(
            r["text"],
            r["dimension"],
            dimensions[r["dimension"]].sign(r["pole"]),
            r["kind"],
            r.get("previous", ""),
        )
        for r in data["replies"]
    )
    neutral = tuple(
        LabelledReply(r["text"], None, 0, r["kind"], r.get("previous", "")) for r in data["neutral"]
    )
    return EvaluationSet(data["about"], custom, replies, neutral)


@dataclass
class ReplyScores:
    """Single replies: read right, read the wrong way, moved another dimension (shares of total)."""

    total: int = 0
    right: int = 0
    wrong_direction: int = 0
    other_dimension: int = 0
    right_by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [right, total]
    misread: list[dict[str, Any]] = field(default_factory=list)

    def shares(self) -> dict[str, float]:
        n = max(self.total, 1)
        return {
            "right": self.right / n,
            "wrong_direction": self.wrong_direction / n,
            "other_dimension": self.other_dimension / n,
        }


def score_replies(
    reader: FeedbackInterpreter, replies: Sequence[LabelledReply], dimensions: Sequence[Dimension]
) -> ReplyScores:
    scores = ReplyScores()
    for reply in replies:
        moved = reader.interpret(reply.text, dimensions, reply.previous).moved()
        assert reply.dimension is not None
        right = moved.get(reply.dimension) == reply.direction
        scores.total += 1
        scores.right += right
        scores.wrong_direction += moved.get(reply.dimension) == -reply.direction
        scores.other_dimension += bool(moved.keys() - {reply.dimension})
        tally = scores.right_by_kind.setdefault(reply.kind, [0, 0])
        tally[0] += right
        tally[1] += 1
        if not right or len(moved) > 1:
            scores.misread.append(
                {"text": reply.text, "wanted": f"{reply.dimension} {reply.direction:+d}", "moved": moved}
            )
    return scores


def score_neutral(
    reader: FeedbackInterpreter, replies: Sequence[LabelledReply], dimensions: Sequence[Dimension]
) -> tuple[int, list[dict[str, Any]]]:
    """How many replies that ask for nothing moved something, and which."""
    moved = []
    for reply in replies:
        reading = reader.interpret(reply.text, dimensions, reply.previous).moved()
        if reading:
            moved.append({"text": reply.text, "kind": reply.kind, "moved": reading})
    return len(moved), moved


@dataclass(frozen=True)
class OracleUser:
    dimension: str
    target: float
    final: float

    @property
    def converged(self) -> bool:
        return abs(self.final - self.target) <= TOLERANCE

    @property
    def wrong_side(self) -> bool:
        return self.final * self.target < 0


def oracle_users(
    reader: FeedbackInterpreter,
    evaluation: EvaluationSet,
    dimensions: Sequence[Dimension],
    users: Sequence[tuple[str, float]],
    seed: int,
) -> list[OracleUser]:
    """Users told how far their strength is from a hidden target, who reply from the set: a reply
    asking for their side when more than :data:`TOLERANCE` points off, a neutral one otherwise."""
    rng = random.Random(seed)
    outcomes = []
    for name, target in users:
        strengths: dict[str, float] = {}
        for _ in range(TURNS):
            gap = target - strengths.get(name, 0.0)
            pool = (
                evaluation.neutral if abs(gap) <= TOLERANCE else evaluation.asking(name, 1 if gap > 0 else -1)
            )
            reply = rng.choice(pool)
            reading = reader.interpret(reply.text, dimensions, reply.previous)
            strengths, _ = apply_signals(strengths, reading, DEFAULT_LEARNING_RATE)
        outcomes.append(OracleUser(name, round(target, 1), strengths.get(name, 0.0)))
    return outcomes


def draw_targets(names: Sequence[str], per_dimension: int, seed: int) -> list[tuple[str, float]]:
    """Hidden targets 40..100 points from zero, half on each side, per dimension."""
    rng = random.Random(seed)
    return [
        (name, (1 if i % 2 else -1) * rng.uniform(*TARGET_RANGE))
        for name in names
        for i in range(per_dimension)
    ]


def latency_ms(
    reader: FeedbackInterpreter, texts: Sequence[str], dimensions: Sequence[Dimension]
) -> dict[str, float]:
    """Time to read one reply, median and 95th percentile, after a warm-up."""
    reader.interpret(texts[0], dimensions)
    times = []
    for text in texts:
        start = time.perf_counter()
        reader.interpret(text, dimensions)
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return {"p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}


def evaluate(
    reader: FeedbackInterpreter, split: str, users_per_dimension: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Every figure for one reader on one split, as plain data."""
    evaluation = load_set(split)
    builtin = builtin_dimensions()
    builtin_names = {d.name for d in builtin}
    result: dict[str, Any] = {"split": split, "about": evaluation.about}
    own = [r for r in evaluation.replies if r.dimension in builtin_names]
    scores = score_replies(reader, own, builtin)
    moved, moved_texts = score_neutral(reader, evaluation.neutral, builtin)
    users = oracle_users(
        reader, evaluation, builtin, draw_targets([d.name for d in builtin], users_per_dimension, seed), seed
    )
    result["builtin"] = _section(scores, moved, moved_texts, len(evaluation.neutral), users)
    for custom in evaluation.custom:
        dimensions = [*builtin, custom]
        custom_scores = score_replies(reader, evaluation.asking(custom.name), dimensions)
        custom_moved, custom_texts = score_neutral(reader, evaluation.neutral, dimensions)
        custom_users = oracle_users(
            reader, evaluation, dimensions, draw_targets([custom.name], users_per_dimension, seed), seed
        )
        result[custom.name] = _section(
            custom_scores, custom_moved, custom_texts, len(evaluation.neutral), custom_users
        )
    texts = [r.text for r in (*evaluation.replies, *evaluation.neutral)]
    result["latency_ms"] = latency_ms(reader, texts, builtin)
    return result


def _section(
    scores: ReplyScores, moved: int, moved_texts: list[dict[str, Any]], neutral: int, users: list[OracleUser]
) -> dict[str, Any]:
    return {
        "replies": {"total": scores.total, **scores.shares(), "right_by_kind": scores.right_by_kind},
        "neutral": {"total": neutral, "moved": moved, "moved_share": moved / max(neutral, 1)},
        "oracle_users": {
            "total": len(users),
            "converged": sum(u.converged for u in users) / max(len(users), 1),
            "wrong_side": sum(u.wrong_side for u in users),
            "users": [asdict(u) for u in users],
        },
        "misread": scores.misread,
        "neutral_moved": moved_texts,
    }


def format_report(result: dict[str, Any], method: str) -> str:
    """The figures as a short table a person can read."""
    lines = [f"LEARN ({method}) on the {result['split']} set"]
    for name, section in result.items():
        if not isinstance(section, dict) or "replies" not in section:
            continue
        replies, neutral, users = section["replies"], section["neutral"], section["oracle_users"]
        kinds = ", ".join(f"{k} {r}/{t}" for k, (r, t) in sorted(replies["right_by_kind"].items()))
        lines += [
            f"  {name} dimensions:",
            f"    single replies ({replies['total']}): right {replies['right']:.1%}, wrong direction "
            f"{replies['wrong_direction']:.1%}, moved another dimension {replies['other_dimension']:.1%}",
            f"    right by kind: {kinds}",
            f"    neutral, happy and off-topic replies that moved anything: "
            f"{neutral['moved']}/{neutral['total']} ({neutral['moved_share']:.1%})",
            f"    oracle users within {TOLERANCE:g} points after {TURNS} turns: {users['converged']:.1%} of "
            f"{users['total']}, on the wrong side of zero: {users['wrong_side']}",
        ]
    kinds_moved = Counter(m["kind"] for m in result["builtin"]["neutral_moved"])
    if kinds_moved:
        lines.append(f"  neutral replies that moved, by kind: {dict(kinds_moved)}")
    latency = result["latency_ms"]
    lines.append(f"  time to read one reply: median {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms")
    return "\n".join(lines)
