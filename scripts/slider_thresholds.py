"""Where a smaller run of the sliders protocol can set its bars: draws from a development run.

``tests/test_smollm2.py`` runs `steerlab experiments sliders` on the first N development prompts
with one seed each, far fewer answers than a full run. Its bars come from a full development run
(``--split dev --json FILE``, gzipped or not): this script draws many subsets of N of its prompts
with one seed each, summarises each as the command would, and prints per dimension the lowest,
the 1st and 5th percentiles and the median of the primary judge's shift, how often the rise passed
(p < 0.01, prompt as unit) with the second judge agreeing in sign, and the figures for the
first N prompts at seed 0 (what the test itself answers).

    .venv/bin/python scripts/slider_thresholds.py docs/results/sliders/smollm2-135m-dev-logistic.json.gz \
        [--prompts 24] [--draws 300]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from steerlab.evaluation.judges import JUDGES, PRIMARY_JUDGE, SECOND_JUDGE
from steerlab.experiments.sliders import Answer, SliderResult, summarise


def read_run(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as file:
        data: dict[str, Any] = json.load(file)
    return data


def summarise_subset(run: dict[str, Any], chosen: dict[int, int]) -> list[SliderResult]:
    """The command's summary of the answers to ``chosen`` prompts, each at its one seed."""
    rows = [a for a in run["answers"] if chosen.get(a["prompt"]) == a["seed"]]
    answers = [Answer(a["prompt"], a["seed"], a["steered"], a["strength"], a["text"]) for a in rows]
    measured = list(rows[0]["scores"][PRIMARY_JUDGE])
    scores = {
        judge: {name: [a["scores"][judge][name] for a in rows] for name in measured} for judge in JUDGES
    }
    bounds = {
        r["dimension"]: SimpleNamespace(parameters={"perplexity_bound": r["perplexity_bound"]})
        for r in run["results"]
    }
    perplexity = {r["dimension"]: r["perplexity_ratio"] for r in run["results"]}
    return summarise(answers, scores, bounds, perplexity)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a development run's --json file (.json or .json.gz)")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    run = read_run(args.run)
    if run["settings"]["split"] != "dev":
        raise SystemExit("slider_thresholds: bars come from development runs only")
    if "scores" not in run["answers"][0]:
        raise SystemExit("slider_thresholds: this run's answers carry no scores (it predates them)")
    prompts = sorted({a["prompt"] for a in run["answers"]})
    seeds = sorted({a["seed"] for a in run["answers"]})
    rng = np.random.default_rng(args.seed)
    draws = [
        {int(p): int(rng.choice(seeds)) for p in rng.choice(prompts, args.prompts, replace=False)}
        for _ in range(args.draws)
    ]
    figures: dict[str, list[tuple[float, bool]]] = {}
    for chosen in draws:
        for result in summarise_subset(run, chosen):
            checks = result.checks()
            passed = checks["rises"] and checks["judges agree"]
            figures.setdefault(result.dimension, []).append((result.shift[PRIMARY_JUDGE].mean, passed))
    first = {r.dimension: r for r in summarise_subset(run, dict.fromkeys(prompts[: args.prompts], 0))}
    print(
        f"{args.draws} draws of {args.prompts} prompts x 1 seed from {args.run} "
        f"(shift: {PRIMARY_JUDGE}; rises: p < 0.01 with {SECOND_JUDGE} agreeing)"
    )
    print("| dimension | shift: lowest | p1 | p5 | median | rises in | first prompts, seed 0 |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in figures.items():
        shifts = np.array([shift for shift, _ in rows])
        p1, p5, median = np.percentile(shifts, [1, 5, 50])
        rises = np.mean([passed for _, passed in rows])
        print(
            f"| {name} | {shifts.min():+.3f} | {p1:+.3f} | {p5:+.3f} | {median:+.3f} | {rises:.0%} "
            f"| {first[name].shift[PRIMARY_JUDGE].mean:+.3f} |"
        )


if __name__ == "__main__":
    main()
