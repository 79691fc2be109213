"""The platform demo (README command one): start ``steerlab up``, use it through the SDK, stop it.

Everything after the start goes through :mod:`steerlab_client` over a real socket, as any user's
program would: the same request under different preference mixes side by side, a simulated
CALIBRATE run and a simulated LEARN run, a session's history with the vector set versions used,
and the server's metrics. The server is a child process, stopped on the way out whatever happens.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from steerlab_api.v1 import sessions_pb2 as spb
from steerlab_client import SteerLab
from steerlab_client.sessions import MODE_NAMES

from .settings import embedded_database_url, steerlab_home
from .steering.errors import UnavailableError

DEFAULT_PROMPT = "Help me plan a weekend in Edinburgh."
READY = re.compile(r"serving on (?P<address>\S+) .*metrics (?P<metrics>http://\S+/metrics)")
MIXES = [
    ("unsteered", {}),
    ("cost -100% (budget)", {"cost": -100}),
    ("cost +100% (luxury)", {"cost": 100}),
    ("age -100%, culture +100%", {"age": -100, "culture": 100}),
]
# The simulated CALIBRATE user reads both answers and prefers the thriftier one.
BUDGET_WORDS = ("budget", "cheap", "free", "affordable", "save", "hostel", "low-cost", "inexpensive")
LUXURY_WORDS = ("luxury", "exclusive", "premium", "gourmet", "five-star", "upscale", "fine dining", "spa")
LEARN_REPLIES = [
    "That sounds far too expensive, I'm a student on a tight budget.",
    "Still pricey. Cheaper options please, I really can't spend much.",
]


def run_demo(
    model: str = "smollm2-135m", prompt: str | None = None, max_new_tokens: int = 60, auth: str = "none"
) -> None:
    """Start the platform on ``model``, show it working through the SDK, then stop it.

    With ``auth="keys"`` the platform requires API keys, and the demo makes one for its user."""
    prompt = prompt or DEFAULT_PROMPT
    started = time.perf_counter()
    with (
        running_platform(model, auth) as (address, metrics_url),
        demo_key(auth) as key,
        SteerLab(address, token=key) as steerlab,
    ):
        users = ("", "") if key else ("demo-calibrate", "demo-learn")  # a key names its user
        show_platform(steerlab, address, metrics_url)
        show_mixes(steerlab, prompt, max_new_tokens)
        show_calibrate(steerlab, prompt, max_new_tokens, users[0])
        session = show_learn(steerlab, max_new_tokens, users[1])
        show_history(steerlab, session)
        show_metrics(metrics_url)
    print(f"\nDone in {time.perf_counter() - started:.0f} s; the platform has been stopped.")


def demo_data_dir() -> Path:
    return steerlab_home() / "demo-platform"


@contextmanager
def demo_key(auth: str) -> Iterator[str]:
    """With API keys, a user key for the demo (revoked at the end); else "" (no credential)."""
    if auth != "keys":
        yield ""
        return
    from .auth.store import KeyStore
    from .storage import open_database

    store = KeyStore(open_database(embedded_database_url(demo_data_dir())))
    record, key = store.create("demo", "demo-user", "user")
    print(f"  made API key {record.key_id} (role user, user 'demo-user' of tenant 'demo')", flush=True)
    try:
        yield key
    finally:
        store.revoke(record.key_id)
        store.close()


@contextmanager
def running_platform(model: str, auth: str = "none") -> Iterator[tuple[str, str]]:
    """``steerlab up`` as a child process on free ports; yields (address, metrics URL)."""
    data_dir = demo_data_dir()
    command = [sys.executable, "-m", "steerlab.cli", "up", "--model", model, "--port", "0"]
    command += ["--metrics-port", "0", "--data-dir", str(data_dir), "--auth", auth]
    print(
        f"Starting the platform: steerlab up --model {model} --auth {auth} (data in {data_dir})", flush=True
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("STEERLAB_DATABASE_URL", None)  # the demo keeps to its own embedded database
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        yield _wait_until_serving(server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_until_serving(server: subprocess.Popen[str]) -> tuple[str, str]:
    assert server.stdout is not None
    for line in server.stdout:
        print(f"  | {line.rstrip()}", flush=True)
        ready = READY.search(line)
        if ready:
            # Keep draining the server's output so that it never blocks on a full pipe.
            threading.Thread(target=server.stdout.read, daemon=True).start()
            return ready["address"], ready["metrics"]
    raise UnavailableError(f"steerlab up exited with status {server.wait()} before serving (output above)")


def heading(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def show_text(label: str, text: str, width: int = 110) -> None:
    prefix = f"  {label:<26} "
    print(
        textwrap.fill(
            " ".join(text.split()), width, initial_indent=prefix, subsequent_indent=" " * len(prefix)
        )
    )


def show_platform(steerlab: SteerLab, address: str, metrics_url: str) -> None:
    heading(f"The platform at {address}")
    model = steerlab.inference.get_model()
    print(f"  model {model.name} on {model.device} ({model.dtype}), batch up to {model.max_batch}")
    for dimension in steerlab.registry.list_dimensions():
        aliases = steerlab.registry.list_aliases(dimension=dimension.name)
        versions = ", ".join(f"{a.name} -> v{a.version}" for a in aliases) or "no alias"
        print(f"  {dimension.name:<9} {dimension.negative_pole} <-> {dimension.positive_pole}  ({versions})")


def show_mixes(steerlab: SteerLab, prompt: str, max_new_tokens: int) -> None:
    heading("One request, four preference mixes (sent together; they share the server's batch)")
    print(f"  prompt: {prompt}")
    with ThreadPoolExecutor(len(MIXES)) as pool:
        answers = list(
            pool.map(
                lambda mix: steerlab.inference.generate(
                    prompt, strengths=mix[1], max_new_tokens=max_new_tokens
                ),
                MIXES,
            )
        )
    for (label, _), answer in zip(MIXES, answers, strict=True):
        show_text(label, answer.text)


def prefers_thrift(left: str, right: str) -> str:
    """The simulated user's choice: the answer with more budget words and fewer luxury ones."""

    def thrift(text: str) -> int:
        lowered = text.lower()
        return sum(lowered.count(w) for w in BUDGET_WORDS) - sum(lowered.count(w) for w in LUXURY_WORDS)

    return "right" if thrift(right) > thrift(left) else "left"


def show_calibrate(steerlab: SteerLab, prompt: str, max_new_tokens: int, user: str) -> None:
    heading("CALIBRATE: a simulated user picks the thriftier of two answers, three rounds")
    session = steerlab.create_session(user, mode="calibrate")

    def choose(comparison: spb.Comparison, left: str, right: str) -> str:
        side = prefers_thrift(left, right)
        print(
            f"  round {comparison.round}: cost {comparison.left:+.0f}% or {comparison.right:+.0f}%?",
            f"picks {side}",
        )
        return side

    result = steerlab.calibrate(session.id, ["cost"], prompt, choose, max_new_tokens=max_new_tokens)
    print(f"  calibrated strengths: {result.strengths}")


def show_learn(steerlab: SteerLab, max_new_tokens: int, user: str) -> str:
    heading("LEARN: the user's replies move the strengths")
    session = steerlab.create_session(user, mode="learn")
    stream = steerlab.chat(
        "Where should we go for dinner on Friday?", session=session.id, max_new_tokens=max_new_tokens
    )
    show_text("bot", "".join(stream))
    for reply in LEARN_REPLIES:
        show_text("user", reply)
        stream = steerlab.chat(reply, session=session.id, max_new_tokens=max_new_tokens)
        show_text("bot", "".join(stream))
        update = steerlab.preference_update(session.id, stream.answer)
        print(f"  learned: {update.summary if update else 'no change'}")
    return session.id


def show_history(steerlab: SteerLab, session_id: str) -> None:
    heading("The LEARN session's history, with the vector set versions each answer used")
    session = steerlab.sessions.get(session_id, include_turns=True)
    print(
        f"  session {session.id} ({MODE_NAMES.get(session.mode, '?')}), strengths {dict(session.strengths)}"
    )
    for turn in session.turns:
        used = ", ".join(f"{s.dimension} v{s.vector_set_version} {s.strength:+.0f}%" for s in turn.steering)
        role = "user" if turn.role == spb.ROLE_USER else "bot"
        print(f"  #{turn.index} {role:<4} {turn.text[:70]!r}{'  [' + used + ']' if used else ''}")


def show_metrics(metrics_url: str) -> None:
    heading(f"Metrics ({metrics_url}; Prometheus scrapes the same)")
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    wanted = (
        "steerlab_inference_generated_tokens_total",
        "steerlab_inference_finished_requests_total",
        "steerlab_inference_steering_cache",
        "steerlab_job_jobs",
    )
    for line in lines:
        if line.startswith(wanted) and "_created" not in line:
            print(f"  {line}")
    print("  Vector versions: `steerlab vectors list --registry HOST:PORT` while `steerlab up` runs;")
    print("  run it yourself with `.venv/bin/steerlab up`, then `.venv/bin/steerlab chat` beside it.")
