"""Run experiments E1-E4 and write their data, plots and report into one directory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..steering import load_model
from . import e1_strength, e2_prompting, e3_composition, e4_learn
from .context import FULL, QUICK, Context, Section
from .report import write_report

EXPERIMENTS: dict[str, Callable[[Context], Section]] = {
    "e1": e1_strength.run,
    "e2": e2_prompting.run,
    "e3": e3_composition.run,
    "e4": e4_learn.run,
}


def run_experiments(
    names: Sequence[str],
    *,
    model: str,
    out: Path,
    quick: bool = False,
    seed: int = 0,
    command: str = "",
    progress: bool = True,
) -> Path:
    """Run ``names`` (a subset of e1..e4, in order) on ``model``; returns the report's path."""
    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)} or all")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the results")
    started, clock = datetime.now(UTC), time.monotonic()
    ctx = Context(load_model(model), out, QUICK if quick else FULL, seed=seed, progress=progress)
    ctx.prepare()
    sections = []
    for name in names:
        ctx.note(f"running {name}")
        sections.append(EXPERIMENTS[name](ctx))
    return write_report(ctx, sections, command, started, time.monotonic() - clock)
