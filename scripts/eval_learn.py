"""Measure LEARN on the simulated users of steerlab/data/experiments/simulated_users.json.

    .venv/bin/python scripts/eval_learn.py [--draws 10]

Prints (1) how each single reply is read: the right direction on its dimension, the wrong one,
a move on another dimension, and praise that moved anything; (2) over ``--draws`` random
draws of 50 users (10 per built-in dimension, hidden target 30..100 points from 0, either
side), the share brought within 25 points in 12 turns; (3) how many satisfied users moved.
The replies were written apart from the request banks LEARN is fitted on, but the two
thresholds in steerlab/sessions/learn.py were chosen while looking at these numbers.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_learn import DIMENSIONS, REPLIES, TOLERANCE, run_user

from steerlab.sessions.learn import FeedbackInterpreter
from steerlab.steering.datasets import BUILTIN_DIMENSIONS


def single_replies(interpreter: FeedbackInterpreter) -> None:
    right = wrong = elsewhere = total = 0
    for dimension in BUILTIN_DIMENSIONS:
        for toward, sign in (("toward_negative", -1), ("toward_positive", 1)):
            for level in ("mild", "strong"):
                for reply in REPLIES[dimension][toward][level]:
                    moved = {
                        s.dimension: s.direction
                        for s in interpreter.interpret(reply, DIMENSIONS)
                        if s.direction
                    }
                    total += 1
                    right += moved.get(dimension) == sign
                    wrong += moved.get(dimension) == -sign
                    elsewhere += sum(1 for name in moved if name != dimension)
    praise = sum(
        1 for reply in REPLIES["praise"] for s in interpreter.interpret(reply, DIMENSIONS) if s.direction
    )
    print(
        f"single replies: {right}/{total} right direction, {wrong}/{total} wrong direction, "
        f"{elsewhere}/{total * 4} moves on another dimension, {praise}/{len(REPLIES['praise'])} praise moved"
    )


def simulated_users(interpreter: FeedbackInterpreter, draws: int) -> None:
    shares = []
    for seed in range(draws):
        rng = random.Random(seed)
        converged = 0
        for dimension in BUILTIN_DIMENSIONS:
            for _ in range(10):
                target = rng.choice([-1, 1]) * rng.uniform(30, 100)
                final = run_user(interpreter, dimension, target, rng).get(dimension, 0.0)
                converged += abs(final - target) <= TOLERANCE
        shares.append(converged / 50)
    listed = ", ".join(f"{share:.2f}" for share in shares)
    print(
        f"users within {TOLERANCE:g} points after 12 turns, {draws} draws of 50: "
        f"min {min(shares):.2f}, mean {sum(shares) / len(shares):.2f} ({listed})"
    )
    moved = 0
    for seed in range(draws):
        rng = random.Random(1000 + seed)
        for dimension in BUILTIN_DIMENSIONS:
            moved += run_user(interpreter, dimension, rng.uniform(-20, 20), rng) != {}
    print(f"satisfied users (target within 20 of 0) whose strengths moved: {moved}/{draws * 5}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=10)
    args = parser.parse_args()
    interpreter = FeedbackInterpreter()
    single_replies(interpreter)
    simulated_users(interpreter, args.draws)


if __name__ == "__main__":
    main()
