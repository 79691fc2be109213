"""E3: several dimensions steered at once.

Grid: culture and age are steered together at every pair of strengths of the scale's grid, on a
prompt set drawn from both dimensions' held-out prompts. Each answer's culture and age effects
are regressed on both strengths (least squares, per 100 points): each effect should follow its
own strength (own slope) and not the other's (cross slope).

Cross-talk: each of the five dimensions alone at -100% and +100% on a shared prompt set (a few
held-out prompts from every dimension); entry [i][j] is the change of dimension j's effect when
dimension i goes from -100% to +100%. The diagonal is each dimension's own effect.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.stats import least_squares
from .context import Context, Section
from .plots import figure_grid

PAIR = ("culture", "age")


@dataclass(frozen=True)
class Slopes:
    effect_of: str
    own: float  # effect per 100 points of its own strength
    own_se: float
    cross: float  # effect per 100 points of the other dimension's strength
    cross_se: float


def run(ctx: Context) -> Section:
    grid_rows, means, slopes = _grid(ctx)
    grid = ctx.scale.grid
    matrix = _crosstalk(ctx)
    names = list(ctx.dimensions)
    files = [
        ctx.write_csv("e3_grid_answers.csv", grid_rows),
        ctx.write_csv(
            "e3_grid.csv",
            [
                {f"{PAIR[0]}_strength": a, f"{PAIR[1]}_strength": b}
                | {f"{name}_effect": means[name][j, i] for name in PAIR}
                for i, a in enumerate(grid)
                for j, b in enumerate(grid)
            ],
        ),
        ctx.write_csv("e3_slopes.csv", [vars(s) for s in slopes]),
        ctx.write_csv(
            "e3_crosstalk.csv",
            [
                {"steered": names[i], **{f"effect_{n}": matrix[i, j] for j, n in enumerate(names)}}
                for i in range(len(names))
            ],
        ),
        _plot_grid(ctx, means),
        _plot_crosstalk(ctx, matrix),
    ]
    return Section(
        "E3: culture and age together; cross-talk",
        _markdown(ctx, slopes, matrix),
        files,
        _findings(list(ctx.dimensions), slopes, matrix),
    )


def _grid(ctx: Context) -> tuple[list[dict[str, object]], dict[str, np.ndarray], list[Slopes]]:
    """Answers, each effect's mean per cell ([second strength, first strength]), and the slopes."""
    half = max(1, ctx.scale.prompts // 2)
    prompts = ctx.prompts(PAIR[0], half) + ctx.prompts(PAIR[1], half)
    cells = list(itertools.product(ctx.scale.grid, repeat=2))
    rows = [(cell, prompt) for cell in cells for prompt in prompts]
    with ctx.stage("E3 culture x age", len(rows)):
        answers = ctx.generate(
            [prompt for _, prompt in rows],
            [{PAIR[0]: a, PAIR[1]: b} for (a, b), _ in rows],
            vector_sets=[ctx.vector_set(name) for name in PAIR],
        )
    effects = {name: np.array(ctx.effect(answers, name)) for name in PAIR}
    answer_rows: list[dict[str, object]] = [
        {
            f"{PAIR[0]}_strength": a,
            f"{PAIR[1]}_strength": b,
            "prompt": prompt,
            "answer": answer,
            **{f"{name}_effect": float(effects[name][i]) for name in PAIR},
        }
        for i, (((a, b), prompt), answer) in enumerate(zip(rows, answers, strict=True))
    ]
    grid = list(ctx.scale.grid)
    means = {name: np.zeros((len(grid), len(grid))) for name in PAIR}
    for a, b in cells:
        mine = [i for i, (cell, _) in enumerate(rows) if cell == (a, b)]
        for name in PAIR:
            means[name][grid.index(b), grid.index(a)] = effects[name][mine].mean()
    strengths = np.array([[1.0, a / 100, b / 100] for (a, b), _ in rows])
    slopes = []
    for own_column, name in ((1, PAIR[0]), (2, PAIR[1])):
        fit = least_squares(strengths, effects[name].tolist())
        cross_column = 3 - own_column
        slopes.append(
            Slopes(
                name,
                float(fit.coefficients[own_column]),
                float(fit.standard_errors[own_column]),
                float(fit.coefficients[cross_column]),
                float(fit.standard_errors[cross_column]),
            )
        )
    return answer_rows, means, slopes


def _crosstalk(ctx: Context) -> np.ndarray:
    names = list(ctx.dimensions)
    prompts = [p for name in names for p in ctx.prompts(name, ctx.scale.crosstalk_prompts)]
    conditions = [(name, sign) for name in names for sign in (-100.0, 100.0)]
    rows = [(condition, prompt) for condition in conditions for prompt in prompts]
    with ctx.stage("E3 cross-talk", len(rows)):
        answers = ctx.generate([p for _, p in rows], [{name: sign} for (name, sign), _ in rows])
    effects = {name: np.array(ctx.effect(answers, name)) for name in names}
    matrix = np.zeros((len(names), len(names)))
    for i, steered in enumerate(names):
        low = [k for k, ((name, sign), _) in enumerate(rows) if name == steered and sign < 0]
        high = [k for k, ((name, sign), _) in enumerate(rows) if name == steered and sign > 0]
        for j, measured in enumerate(names):
            matrix[i, j] = effects[measured][high].mean() - effects[measured][low].mean()
    return matrix


def _plot_grid(ctx: Context, means: dict[str, np.ndarray]) -> Path:
    grid = list(ctx.scale.grid)
    figure, axes = figure_grid(2, columns=2, panel_size=(4.6, 3.8))
    for axis, name in zip(axes, PAIR, strict=True):
        image = axis.imshow(means[name], origin="lower", cmap="coolwarm")
        axis.set_xticks(range(len(grid)), [f"{g:+.0f}" for g in grid])
        axis.set_yticks(range(len(grid)), [f"{g:+.0f}" for g in grid])
        axis.set_xlabel(f"{PAIR[0]} strength (%)")
        axis.set_ylabel(f"{PAIR[1]} strength (%)")
        axis.set_title(f"{name} effect")
        figure.colorbar(image, ax=axis)
    figure.suptitle("E3: culture and age steered together")
    figure.tight_layout()
    return ctx.save_figure(figure, "e3_grid.png")


def _plot_crosstalk(ctx: Context, matrix: np.ndarray) -> Path:
    names = list(ctx.dimensions)
    figure, axes = figure_grid(1, panel_size=(5.5, 4.6))
    axis = axes[0]
    bound = float(np.abs(matrix).max()) or 1.0
    image = axis.imshow(matrix, cmap="coolwarm", vmin=-bound, vmax=bound)
    for i, j in itertools.product(range(len(names)), repeat=2):
        axis.text(j, i, f"{matrix[i, j]:+.3f}", ha="center", va="center", fontsize=8)
    axis.set_xticks(range(len(names)), names)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("effect measured on")
    axis.set_ylabel("dimension steered -100% -> +100%")
    axis.set_title("E3: cross-talk")
    figure.colorbar(image, ax=axis)
    return ctx.save_figure(figure, "e3_crosstalk.png")


def _markdown(ctx: Context, slopes: list[Slopes], matrix: np.ndarray) -> str:
    names = list(ctx.dimensions)
    half = max(1, ctx.scale.prompts // 2)
    lines = [
        "Culture and age steered together at every pair of "
        f"{', '.join(f'{g:+.0f}' for g in ctx.scale.grid)}% "
        f"on {2 * half} prompts ({half} from each dimension's held-out set). Slopes are the effect's change "
        "per 100 points of strength, from a least-squares fit on both strengths (+- standard error).",
        "",
        "| effect of | own slope | cross slope | own / cross |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s.effect_of} | {s.own:+.4f} ± {s.own_se:.4f} | {s.cross:+.4f} ± {s.cross_se:.4f} "
        f"| {abs(s.own) / max(abs(s.cross), 1e-9):.1f} |"
        for s in slopes
    ]
    diagonal = np.diag(matrix)
    off = matrix[~np.eye(len(names), dtype=bool)]
    lines += [
        "",
        "![E3 grid](e3_grid.png)",
        "",
        "Cross-talk: each dimension alone at -100% and +100% on "
        f"{ctx.scale.crosstalk_prompts} prompts from each dimension's held-out set; "
        "row = steered, column = effect measured. "
        f"Mean |diagonal| {np.abs(diagonal).mean():.3f}, mean |off-diagonal| {np.abs(off).mean():.3f}; "
        f"{int(sum(abs(matrix[i, i]) >= np.abs(matrix[i]).max() for i in range(len(names))))} of "
        f"{len(names)} steered dimensions move their own effect most.",
        "",
        "| steered \\ measured | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [
        f"| {steered} | " + " | ".join(f"{matrix[i, j]:+.3f}" for j in range(len(names))) + " |"
        for i, steered in enumerate(names)
    ]
    lines += ["", "![E3 cross-talk](e3_crosstalk.png)"]
    return "\n".join(lines)


def _findings(names: list[str], slopes: list[Slopes], matrix: np.ndarray) -> list[str]:
    own = [s.effect_of for s in slopes if s.own > 2 * s.own_se and abs(s.own) > 2 * abs(s.cross)]
    mostly_own = [names[i] for i in range(len(names)) if abs(matrix[i, i]) >= np.abs(matrix[i]).max()]
    return [
        f"Paper: culture and age can be steered at once, each following its own slider. Here "
        f"{len(own)} of {len(slopes)} effects rise significantly with their own strength and more than "
        "twice as fast as with the other's" + (f" ({', '.join(own)})." if own else "."),
        f"Cross-talk: {len(mostly_own)} of {len(names)} dimensions move their own effect more than any other "
        + (f"({', '.join(mostly_own)})." if mostly_own else "."),
    ]
