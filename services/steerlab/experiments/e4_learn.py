"""E4: simulated users with a hidden extreme preference chat through the session service's LEARN loop.

Each user has one dimension and a hidden target of 75..100 points toward a random pole. Every
turn the user sends a request (a held-out prompt of their dimension), the model answers it
steered by the session's current strengths, and the user replies after *reading* the answer:
the effect metric of the answer, placed on a ruler built from answers at -100%, 0 and +100%, is
how far along the dimension the answer seems; praise, a mild or a strong complaint follows
(``users.reply``). Both user messages go through ``SessionManager.append_turn`` in LEARN mode,
exactly as the session service handles them, and the answer is recorded with its steering.

For comparison, the same users also run with an *oracle* reading: told the session's strength
instead of reading the answer (no generation), which bounds what reading can achieve.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..sessions.catalog import StaticCatalog
from ..sessions.manager import SessionManager
from ..sessions.state import ASSISTANT, LEARN, USER, SteeringUsed
from ..sessions.store import SessionStore
from ..steering import Strengths
from ..storage.database import open_database
from .context import Context, Section
from .plots import figure_grid
from .users import TOLERANCE, reply

TARGET_RANGE = (75.0, 100.0)
RULER_STRENGTHS = (-100.0, 0.0, 100.0)
MAX_PERCEIVED = 150.0
MIN_SPAN = 1e-3  # effect units; below this a ruler side is treated as flat


@dataclass(frozen=True)
class Ruler:
    """Maps an answer's effect to how far along the dimension it reads, in points."""

    negative: float  # mean effect of answers at -100%
    neutral: float  # at 0
    positive: float  # at +100%

    @property
    def spread(self) -> float:
        """How much an answer's effect moves from -100% to +100%: what a reader has to go on."""
        return self.positive - self.negative

    def perceive(self, effect: float) -> float:
        span = self.positive - self.neutral if effect >= self.neutral else self.neutral - self.negative
        if span < MIN_SPAN:  # one side barely moves (or backwards): read it with the half spread
            span = max(self.spread / 2, MIN_SPAN)
        return float(np.clip(100 * (effect - self.neutral) / span, -MAX_PERCEIVED, MAX_PERCEIVED))


@dataclass
class SimulatedUser:
    dimension: str
    target: float
    rng: random.Random
    session_id: str = ""
    trajectory: list[float] = field(default_factory=list)  # the dimension's strength after each turn
    perceived: list[float] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return abs(self.trajectory[-1] - self.target) <= TOLERANCE


def run(ctx: Context) -> Section:
    rulers = _rulers(ctx)
    readers = _users(ctx)
    oracles = _users(ctx)
    with tempfile.TemporaryDirectory() as scratch:
        manager = SessionManager(
            SessionStore(open_database(f"sqlite:///{Path(scratch) / 'sessions.db'}")), StaticCatalog()
        )
        try:
            _chat(ctx, manager, readers, rulers)
            _chat(ctx, manager, oracles, rulers=None)
        finally:
            manager.store.close()
    files = [
        ctx.write_json("e4_rulers.json", {name: vars(r) for name, r in rulers.items()}),
        ctx.write_csv(
            "e4_users.csv",
            [_user_row(u, "reads answers") for u in readers] + [_user_row(u, "oracle") for u in oracles],
        ),
        _plot(ctx, readers, oracles),
    ]
    findings = [
        f"Paper: LEARN brings users with an extreme preference close within about 12 turns. Here "
        f"{_share(readers):.0%} of {len(readers)} users reading the answers end within {TOLERANCE:g} points "
        f"of their target after {ctx.scale.turns} turns ({_share(oracles):.0%} when told the strength).",
        _readable_finding(readers, rulers),
    ]
    return Section(
        "E4: LEARN with simulated users", _markdown(ctx, readers, oracles, rulers), files, findings
    )


def _users(ctx: Context) -> list[SimulatedUser]:
    rng = random.Random(ctx.seed)
    users = []
    for name in ctx.dimensions:
        for _ in range(ctx.scale.users_per_dimension):
            target = rng.choice((-1, 1)) * rng.uniform(*TARGET_RANGE)
            users.append(SimulatedUser(name, target, random.Random(rng.random())))
    return users


def _rulers(ctx: Context) -> dict[str, Ruler]:
    rulers = {}
    count = len(ctx.dimensions) * len(RULER_STRENGTHS) * ctx.scale.prompts
    with ctx.stage("E4 rulers", count):
        for name in ctx.dimensions:
            prompts = ctx.prompts(name)
            answers = ctx.generate(
                prompts * len(RULER_STRENGTHS),
                [{name: s} for s in RULER_STRENGTHS for _ in prompts],
                vector_sets=[ctx.vector_set(name)],
            )
            effects = np.array(ctx.effect(answers, name)).reshape(len(RULER_STRENGTHS), len(prompts))
            rulers[name] = Ruler(*(float(v) for v in effects.mean(axis=1)))
    return rulers


def _chat(
    ctx: Context, manager: SessionManager, users: list[SimulatedUser], rulers: dict[str, Ruler] | None
) -> None:
    """Run every user's conversation, one turn for all users at a time (one batch per turn)."""
    for user in users:
        session = manager.create("experiments", f"e4-{user.dimension}", ctx.lm.name, mode=LEARN)
        user.session_id = session.id
    label = "E4 users reading answers" if rulers else "E4 oracle users"
    with ctx.stage(label, ctx.scale.turns * len(users) if rulers else 0):
        for _ in range(ctx.scale.turns):
            requests = [_request(ctx, user) for user in users]
            mixes = [_send(manager, user, request) for user, request in zip(users, requests, strict=True)]
            if rulers:
                answers = ctx.generate(requests, mixes)
                readings = _readings(ctx, rulers, users, answers)
                for user, mix, answer in zip(users, mixes, answers, strict=True):
                    manager.append_turn(
                        user.session_id, ASSISTANT, answer or "(no answer)", _steering(ctx, mix)
                    )
            else:
                readings = [mix.get(user.dimension, 0.0) for user, mix in zip(users, mixes, strict=True)]
            for user, perceived in zip(users, readings, strict=True):
                user.perceived.append(perceived)
                text = reply(user.dimension, user.target - perceived, user.rng)
                _, session = manager.append_turn(user.session_id, USER, text)
                user.trajectory.append(session.strengths.get(user.dimension, 0.0))


def _request(ctx: Context, user: SimulatedUser) -> str:
    return user.rng.choice(ctx.evaluation(user.dimension).prompts)


def _send(manager: SessionManager, user: SimulatedUser, request: str) -> Strengths:
    """The user's request as a LEARN turn; returns the strengths the answer is steered by."""
    _, session = manager.append_turn(user.session_id, USER, request)
    return dict(session.strengths)


def _readings(
    ctx: Context, rulers: dict[str, Ruler], users: list[SimulatedUser], answers: list[str]
) -> list[float]:
    """How far along their own dimension each user reads their answer (one embedding pass per dimension)."""
    readings = [0.0] * len(users)
    for name in {user.dimension for user in users}:
        mine = [i for i, user in enumerate(users) if user.dimension == name]
        for i, effect in zip(mine, ctx.effect([answers[i] for i in mine], name), strict=True):
            readings[i] = rulers[name].perceive(effect)
    return readings


def _steering(ctx: Context, mix: Strengths) -> list[SteeringUsed]:
    return [
        SteeringUsed(name, 1, ctx.lm.fingerprint.weights_digest, strength)
        for name, strength in mix.items()
        if strength
    ]


def _user_row(user: SimulatedUser, reading: str) -> dict[str, object]:
    return {
        "reading": reading,
        "dimension": user.dimension,
        "target": user.target,
        "final_strength": user.trajectory[-1],
        "converged": user.converged,
        "trajectory": " ".join(f"{s:.0f}" for s in user.trajectory),
        "perceived": " ".join(f"{p:.0f}" for p in user.perceived),
    }


def _readable_finding(readers: list[SimulatedUser], rulers: dict[str, Ruler]) -> str:
    """Users can only steer toward what they can see: compare dimensions by their ruler's spread."""
    ranked = sorted(rulers, key=lambda name: rulers[name].spread, reverse=True)
    half = len(ranked) // 2 or 1
    clear = [u for u in readers if u.dimension in ranked[:half]]
    faint = [u for u in readers if u.dimension not in ranked[:half]]
    return (
        f"Reading is only as good as the answers' response to steering: on the {half} dimensions whose "
        f"answers move most from -100% to +100% ({', '.join(ranked[:half])}) {_share(clear):.0%} of users "
        f"converge, on the others {_share(faint):.0%}."
        if clear and faint
        else "Too few dimensions to compare readable and faint ones."
    )


def _share(users: list[SimulatedUser], turn: int | None = None) -> float:
    at = -1 if turn is None else turn
    return float(np.mean([abs(u.trajectory[at] - u.target) <= TOLERANCE for u in users]))


def _plot(ctx: Context, readers: list[SimulatedUser], oracles: list[SimulatedUser]) -> Path:
    figure, axes = figure_grid(2, columns=2, panel_size=(5.5, 4.0))
    turns = range(1, ctx.scale.turns + 1)
    colours = {name: f"C{i}" for i, name in enumerate(ctx.dimensions)}
    for user in readers:  # strength toward the user's side: the target band is 75..100
        sign = 1 if user.target > 0 else -1
        axes[0].plot(
            turns,
            [sign * s for s in user.trajectory],
            color=colours[user.dimension],
            alpha=0.5,
            label=user.dimension,
        )
    axes[0].axhspan(TARGET_RANGE[0] - TOLERANCE, 100, color="tab:green", alpha=0.08)
    handles: dict[str, object] = dict(zip(*reversed(axes[0].get_legend_handles_labels()), strict=True))
    axes[0].legend(handles.values(), handles.keys(), fontsize=8)
    axes[0].set_title("strength toward each user's side (reading answers)")
    axes[0].set_xlabel("turn")
    axes[0].set_ylabel("strength (%)")
    for users, marker, label in (
        (readers, "o", "users reading answers"),
        (oracles, "s", "oracle (told the strength)"),
    ):
        axes[1].plot(turns, [_share(users, t) for t in range(len(turns))], marker=marker, label=label)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title(f"share of users within {TOLERANCE:g} points of their target")
    axes[1].set_xlabel("turn")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    return ctx.save_figure(figure, "e4_convergence.png")


def _markdown(
    ctx: Context, readers: list[SimulatedUser], oracles: list[SimulatedUser], rulers: dict[str, Ruler]
) -> str:
    lines = [
        f"{len(readers)} simulated users ({ctx.scale.users_per_dimension} per dimension), hidden targets "
        f"{TARGET_RANGE[0]:g}..{TARGET_RANGE[1]:g} points toward a random pole, "
        f"{ctx.scale.turns} turns each. "
        "Users read each answer: its effect on the user's dimension, placed on the dimension's ruler "
        "(mean effect of answers at -100%, 0 and +100%), is how far along the answer seems.",
        "",
        f"| dimension | ruler effect at -100 / 0 / +100 | spread | within {TOLERANCE:g} points after "
        f"{ctx.scale.turns} turns (reading) | (oracle) |",
        "|---|---|---|---|---|",
    ]
    for name in ctx.dimensions:
        ruler = rulers[name]
        mine = [u for u in readers if u.dimension == name]
        oracle = [u for u in oracles if u.dimension == name]
        lines.append(
            f"| {name} | {ruler.negative:+.3f} / {ruler.neutral:+.3f} / {ruler.positive:+.3f} "
            f"| {ruler.spread:+.3f} | {sum(u.converged for u in mine)}/{len(mine)} "
            f"| {sum(u.converged for u in oracle)}/{len(oracle)} |"
        )
    lines += [
        f"| **all** | | | **{_share(readers):.2f}** | {_share(oracles):.2f} |",
        "",
        "![E4 convergence](e4_convergence.png)",
    ]
    return "\n".join(lines)
