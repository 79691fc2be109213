"""E2: a preference stated in the prompt, steering toward it, and both together.

For each dimension and each pole, every held-out prompt is answered four ways: plain; with a
sentence stating the preference put before the request (``data/experiments/stated_preferences.json``);
steered at 100% toward the pole; and both. Effects are signed toward the pole, so bigger is
always "more of what was asked for". Per prompt, the interaction is

    (both - plain) - (stated - plain) - (steered - plain)

and the effects add when its mean's 95% bootstrap interval (over prompts and poles) holds 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..evaluation.stats import Estimate, bootstrap_mean
from ..steering.datasets import package_data_file
from .context import Context, Section
from .plots import figure_grid

CONDITIONS = ("plain", "stated", "steered", "both")


def stated_preferences() -> dict[str, dict[str, str]]:
    """dimension -> pole -> a sentence stating that preference."""
    data = json.loads(package_data_file("experiments", "stated_preferences.json").read_text(encoding="utf-8"))
    return {name: poles for name, poles in data.items() if not name.startswith("_")}


@dataclass(frozen=True)
class Additivity:
    dimension: str
    stated: Estimate  # stated - plain
    steered: Estimate  # steered - plain
    both: Estimate  # both - plain
    interaction: Estimate

    @property
    def additive(self) -> bool:
        return self.interaction.contains(0.0)


def run(ctx: Context) -> Section:
    answers, results = _measure(ctx)
    files = [
        ctx.write_csv("e2_answers.csv", answers),
        ctx.write_csv("e2_additivity.csv", [_row(r) for r in results]),
        _plot(ctx, results),
    ]
    return Section(
        "E2: stated preference, steering, and both", _markdown(ctx, results), files, _findings(results)
    )


def _measure(ctx: Context) -> tuple[list[dict[str, object]], list[Additivity]]:
    statements = stated_preferences()
    rows: list[dict[str, object]] = []
    results: list[Additivity] = []
    with ctx.stage("E2 prompt x steering", len(ctx.dimensions) * 2 * len(CONDITIONS) * ctx.scale.prompts):
        for name in ctx.dimensions:
            dimension = ctx.vector_set(name).dimension
            gains: dict[str, list[float]] = {c: [] for c in CONDITIONS[1:]}
            for sign, pole in ((-1, dimension.negative_pole), (1, dimension.positive_pole)):
                prompts = ctx.prompts(name)
                stated = [f"{statements[name][pole]} {prompt}" for prompt in prompts]
                steer = {name: 100.0 * sign}
                texts = prompts + stated + prompts + stated
                mixes = [None] * (2 * len(prompts)) + [steer] * (2 * len(prompts))
                answers = ctx.generate(texts, mixes, vector_sets=[ctx.vector_set(name)])
                effects = [sign * e for e in ctx.effect(answers, name)]
                n = len(prompts)
                by_condition = {c: effects[i * n : (i + 1) * n] for i, c in enumerate(CONDITIONS)}
                for condition in CONDITIONS[1:]:
                    gains[condition] += [
                        value - plain
                        for value, plain in zip(by_condition[condition], by_condition["plain"], strict=True)
                    ]
                rows += [
                    {
                        "dimension": name,
                        "pole": pole,
                        "condition": CONDITIONS[i // n],
                        "prompt": texts[i],
                        "answer": answers[i],
                        "signed_effect": effects[i],
                    }
                    for i in range(len(texts))
                ]
            interaction = [
                both - stated - steered
                for both, stated, steered in zip(
                    gains["both"], gains["stated"], gains["steered"], strict=True
                )
            ]
            results.append(
                Additivity(
                    name,
                    stated=bootstrap_mean(gains["stated"], seed=ctx.seed),
                    steered=bootstrap_mean(gains["steered"], seed=ctx.seed),
                    both=bootstrap_mean(gains["both"], seed=ctx.seed),
                    interaction=bootstrap_mean(interaction, seed=ctx.seed),
                )
            )
    return rows, results


def _row(result: Additivity) -> dict[str, object]:
    row: dict[str, object] = {"dimension": result.dimension}
    for label in ("stated", "steered", "both", "interaction"):
        estimate: Estimate = getattr(result, label)
        row |= {label: estimate.mean, f"{label}_low": estimate.low, f"{label}_high": estimate.high}
    return row | {"additive": result.additive}


def _plot(ctx: Context, results: list[Additivity]) -> Path:
    figure, axes = figure_grid(1, panel_size=(8.0, 4.0))
    axis = axes[0]
    bars = (("stated", "stated only"), ("steered", "steered only"), ("both", "both (measured)"))
    width = 0.2
    for offset, (label, legend) in enumerate(bars):
        estimates: list[Estimate] = [getattr(r, label) for r in results]
        xs = [i + (offset - 1.5) * width for i in range(len(results))]
        axis.bar(
            xs,
            [e.mean for e in estimates],
            width,
            yerr=[[e.mean - e.low for e in estimates], [e.high - e.mean for e in estimates]],
            capsize=2,
            label=legend,
        )
    sums = [r.stated.mean + r.steered.mean for r in results]
    axis.bar(
        [i + 1.5 * width for i in range(len(results))],
        sums,
        width,
        color="lightgrey",
        edgecolor="grey",
        label="stated + steered (if additive)",
    )
    axis.set_xticks(range(len(results)), [r.dimension for r in results])
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set_ylabel("gain in effect toward the pole")
    axis.set_title("E2: does steering add to a stated preference?")
    axis.legend(fontsize=8)
    return ctx.save_figure(figure, "e2_additivity.png")


def _markdown(ctx: Context, results: list[Additivity]) -> str:
    lines = [
        f"Each dimension's {ctx.scale.prompts} held-out prompts, for each pole: plain, with the preference "
        "stated before the request, steered at 100% toward the pole, and both. Gains are effect (signed "
        "toward the pole) minus the plain answer's, per prompt; intervals are 95% bootstrap over the "
        f"{2 * ctx.scale.prompts} prompt-pole pairs. *Interaction* = both - stated - steered; the effects "
        "add when its interval holds 0.",
        "",
        "| dimension | stated | steered | both | interaction | additive? |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.dimension} | {r.stated} | {r.steered} | {r.both} | {r.interaction} | "
        f"{'yes' if r.additive else 'no'} |"
        for r in results
    ]
    lines += ["", "![E2 additivity](e2_additivity.png)"]
    return "\n".join(lines)


def _findings(results: list[Additivity]) -> list[str]:
    additive = [r.dimension for r in results if r.additive]
    helps = [r.dimension for r in results if r.both.low > r.stated.mean]
    return [
        f"Paper: steering adds to a preference stated in the prompt. The interaction's interval holds 0 "
        f"(the effects add) for {len(additive)} of {len(results)} dimensions"
        + (f" ({', '.join(additive)})" if additive else "")
        + f"; steering on top of the stated preference beats the stated preference alone (interval above "
        f"its mean) for {len(helps)} of {len(results)}.",
    ]
