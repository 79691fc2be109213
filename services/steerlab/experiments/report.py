"""The Markdown report of one run: setup, how it differs from the paper, findings, each experiment."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch

from ..evaluation.fluency import heldout_answers
from .context import Context, Section

REPORT_NAME = "README.md"

DIFFERENCES = """\
- **Model size.** The paper steers 1.6B-9B chat models (k = 16-32 steered layers, hand-set
  alpha_max of +-10 or +-30). This run uses the model named above (SmolLM2-135M-Instruct, the
  built-in default, has 30 layers of width 576); SteerLab steers the top three quarters of the
  layers by held-out accuracy, as the paper's k does on its models.
- **Functional range.** The paper set alpha_max by hand per model; SteerLab estimates it at
  extraction as the largest alpha keeping held-out perplexity within 1.5x unsteered
  (`docs/method-notes.md`). E1 sweeps past it to show where fluency breaks.
- **Data.** The contrastive datasets are SteerLab's own (64 prompts per dimension, one answer per
  pole, `services/steerlab/data/dimensions/`), written for this project in the paper's
  lifestyle-planning domain; the paper's data is not public. Training uses the first 32
  completion tokens (the paper: 16; `docs/method-notes.md` says why).
- **Reference corpora.** The effect metric compares answers with per-pole reference texts written
  for this project as reviews, listings and descriptions (`services/steerlab/data/eval/`), a
  different genre from the assistant-style training answers and never used for extraction. The
  paper's reference corpora are not public either, so effect sizes are comparable only within
  this report.
- **Fluency.** Perplexity of the steered model on held-out assistant answers
  (`data/eval/heldout_answers.json`), and of the generated answers under an independent model
  (`gemma3-270m`, a base model, so its perplexities are high in absolute terms; compare ratios).
- **Decoding.** Greedy decoding and short answers (see each experiment), to fit the CPU budget;
  one answer per prompt and condition, so intervals are over prompts.
- **E2 prompts.** The preference is stated by one sentence before the request
  (`data/experiments/stated_preferences.json`).
- **E4 users.** Simulated users pick their replies from a bank written separately from LEARN's
  training requests; they judge each answer with the effect metric, not with a language model.
  Each turn is a new request answered on its own (the session keeps the history, the model does
  not see it), since the small model tends to repeat itself in long conversations.
"""


def write_report(
    ctx: Context, sections: Sequence[Section], command: str, started: datetime, seconds: float
) -> Path:
    path = ctx.out / REPORT_NAME
    parts = [
        f"# SteerLab experiments on {ctx.lm.name}",
        "",
        f"Produced by `{command}` on {started.strftime('%Y-%m-%d %H:%M UTC')} in {seconds / 60:.1f} min "
        f"({ctx.scale.name} scale; {platform.machine()}, {torch.get_num_threads()} threads). Every number "
        "and plot here was written by that run; nothing was edited by hand. Rerun the command to "
        "reproduce it (greedy decoding: the same code, model and data give the same answers).",
        "",
        "## Setup",
        "",
        _setup(ctx),
        "",
        "## How this setup differs from the paper",
        "",
        DIFFERENCES,
        "## Findings, set against the paper's",
        "",
        *[
            f"- **{section.title.split(':')[0]}**: {line}"
            for section in sections
            for line in section.findings
        ],
        "",
    ]
    for section in sections:
        parts += [f"## {section.title}", "", section.markdown, ""]
    parts += ["## Files", ""]
    parts += [
        f"- [{file.name}]({file.name})"
        for section in sections
        for file in section.files
        if file.suffix != ".png"
    ]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _setup(ctx: Context) -> str:
    lines = [
        f"- Model: `{ctx.lm.name}` ({ctx.lm.fingerprint.architecture}, {ctx.lm.num_layers} layers, hidden "
        f"{ctx.lm.hidden_size}); answers greedy, at most {ctx.scale.max_new_tokens} new tokens.",
        f"- Effect: all-MiniLM-L6-v2 cosine to the positive pole's reference centroid minus the negative's. "
        f"Fluency: held-out answers ({len(heldout_answers())}) and reference model `{ctx.reference_name}`.",
        "- Vector sets (logistic probe, default extraction settings):",
        "",
        "| dimension | poles (- / +) | layers steered | held-out accuracy | alpha_max |",
        "|---|---|---|---|---|",
    ]
    for name in ctx.dimensions:
        vector_set = ctx.vector_set(name)
        dimension = vector_set.dimension
        lines.append(
            f"| {name} | {dimension.negative_pole} / {dimension.positive_pole} "
            f"| {len(vector_set.selected_layers)} | {vector_set.heldout_accuracy:.3f} "
            f"| {vector_set.alpha_max:.3f} |"
        )
    return "\n".join(lines)
