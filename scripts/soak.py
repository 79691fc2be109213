"""A bounded soak test of the platform as separate processes, on loopback only (issue 20).

Starts, on a fresh PostgreSQL database (created here, dropped at the end) and a Redis database
of its own as the broker, the registry, session, job and inference services (model smollm2-135m,
auth none) and one Celery extraction worker, each as a child process on a free 127.0.0.1 port.
Then, for ``--minutes``, ``--clients`` threads send mixed traffic through the SDK
(``steerlab_client``): chats in SELECT and LEARN sessions (``Generate`` with a ``session_id``,
some cancelled mid-stream, some resent with the same request id after a failure), LEARN replies
(``AppendTurn``), preference changes (``UpdatePreferences``), calibrations, new sessions and
registry and job reads. Meanwhile, every ``--chaos-interval`` seconds, in turn: the inference
server, the session server and the worker are killed with SIGKILL and restarted on the same port
(the worker while an extraction job is running), and the services' PostgreSQL connections are
terminated.

Every acknowledged write and every error (by operation, status code and phase: during a
restart window, or steady) is recorded. At the end the invariants are printed, one line each
with PASS or FAIL:

- acknowledged sessions exist, once per request (one session per user: every create has its
  own user);
- every acknowledged ``Generate`` answer is in its session at its turn index with its text,
  after its user message; every acknowledged ``AppendTurn`` turn at its index; the last
  acknowledged ``UpdatePreferences`` and every finished calibration hold;
- sessions driven only through ``Generate`` have no orphan or interleaved turns: user,
  assistant, user, assistant ..., each message recorded at most once;
- every extraction job ended exactly once (never seen in another state after ending), one
  vector set per succeeded job and none per failed one, and a resubmitted request id returned
  the same job;
- the RSS of each long-lived server (per incarnation, from ``--warmup`` seconds in to the end
  of the traffic) grew less than 10 % (every sample goes to ``rss.json`` in the log directory);
- outside restart windows only UNAVAILABLE, DEADLINE_EXCEEDED or ABORTED (a session still
  answering an earlier message) occurred;
- no server process died unless the soak killed it.

Run it from the repository root with PostgreSQL and Redis up (``bash scripts/services.sh``)::

    .venv/bin/python scripts/soak.py [--minutes 10] [--clients 8] [--seed 0]

A short check first (``--faults worker,postgres,...`` reorders the faults)::

    .venv/bin/python scripts/soak.py --minutes 2 --clients 4 --first-chaos 15 --chaos-interval 25 --warmup 30

It needs about 5 GB of memory, PostgreSQL at ``STEERLAB_SOAK_POSTGRES_URL`` (default
postgres@127.0.0.1:5432, trust) and Redis on 127.0.0.1:6379, where it takes the first of
databases 10 to 15 that no other soak run holds (or ``--broker-url``) and empties it. The first
run on a machine extracts the five built-in dimensions for the model (a few minutes each on 2
busy cores; cached in ``STEERLAB_HOME`` after, so later runs set up in seconds). The worker
extracts on one thread, so that answers keep flowing on 2 cores. The services' logs stay in the
directory it names. The exit status is 0 only if every invariant holds (2 if PostgreSQL or Redis
is missing); SIGTERM and Ctrl-C stop the services and drop the database too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg

from steerlab_api.v1 import jobs_pb2 as jpb
from steerlab_api.v1 import sessions_pb2 as spb
from steerlab_client import (
    Answer,
    ChatStream,
    ClientError,
    JobClient,
    NotFound,
    RetryPolicy,
    SteerLab,
)

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("STEERLAB_SOAK_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = "redis://127.0.0.1:6379"
# The Redis databases a run may take as its broker (the tests use 9): the first no other run
# holds, so that two soak runs never take each other's jobs.
BROKER_DATABASES = range(10, 16)
BROKER_LOCK = "steerlab-soak-lock"
BROKER_LOCK_S = 60
MODEL = "smollm2-135m"
DIMENSIONS = ("cost", "ambiance", "age", "time", "culture")
SERVICES = ("registry", "sessions", "jobs", "inference", "worker")
CHAOS_ACTIONS = ("inference", "sessions", "worker", "postgres")
# Errors that may happen outside restart windows: a slow or busy server, or (ABORTED) a
# session still answering an earlier message.
STEADY_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED"})
# After which failures a client sends the same request again, with the same request id.
RESENDABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "UNKNOWN", "CANCELLED"})
CLIENT_RETRY = RetryPolicy(attempts=6, initial_backoff_s=0.25, max_backoff_s=3.0)
PATIENT_RETRY = RetryPolicy(attempts=12, initial_backoff_s=0.5, max_backoff_s=5.0)
RSS_LIMIT = 0.10
JOB_LEASE_S = 10
PROMPTS = (
    "Where should we eat tonight?",
    "Plan a weekend in Lisbon.",
    "Any ideas for a birthday dinner?",
    "What should I do on a rainy Sunday?",
    "Suggest a place for lunch near the station.",
    "What is a good day trip from Rome?",
)
FEEDBACK = (
    "That is way too expensive, I am on a tight budget.",
    "Something more upscale please, money is no object.",
    "We have two small kids with us.",
    "Just the two of us, no children.",
    "Somewhere quiet and calm, please.",
    "I want somewhere lively with music.",
    "We only have an hour.",
    "Local food please, nothing touristy.",
)
T = TypeVar("T")


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The command line."""

    minutes: float
    clients: int
    seed: int
    chaos_interval_s: float
    first_chaos_s: float
    warmup_s: float
    grace_s: float
    think_s: float
    max_new_tokens: int
    turns_per_session: int
    job_examples: int
    job_timeout_s: float
    broker_url: str
    log_dir: Path | None
    faults: tuple[str, ...]


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the traffic runs")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--seed", type=int, default=0, help="seeds every client's choices")
    parser.add_argument("--chaos-interval", type=float, default=75.0, help="seconds between faults")
    parser.add_argument("--first-chaos", type=float, default=60.0, help="seconds before the first fault")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS is a baseline")
    parser.add_argument("--grace", type=float, default=5.0, help="restart window after a restart (s)")
    parser.add_argument("--think", type=float, default=0.3, help="most seconds between a client's calls")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--turns-per-session", type=int, default=6, help="exchanges before a new session")
    parser.add_argument("--job-examples", type=int, default=12, help="examples per pole of a soak job")
    parser.add_argument(
        "--job-timeout", type=float, default=300.0, help="seconds to wait for jobs at the end"
    )
    parser.add_argument(
        "--broker-url",
        default="",
        help=f"a Redis database the soak may empty (default: the first free of {REDIS_URL}/10 to /15)",
    )
    parser.add_argument(
        "--faults",
        default=",".join(CHAOS_ACTIONS),
        help=f"the faults, in the order they take turns (default {','.join(CHAOS_ACTIONS)})",
    )
    parser.add_argument("--log-dir", type=Path, help="where the services' logs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1 or args.chaos_interval <= 0:
        parser.error("--minutes and --chaos-interval must be positive, --clients at least 1")
    faults = tuple(fault for fault in args.faults.split(",") if fault)
    if not faults or not set(faults) <= set(CHAOS_ACTIONS):
        parser.error(f"--faults: a comma-separated list of {', '.join(CHAOS_ACTIONS)}")
    return Options(
        args.minutes,
        args.clients,
        args.seed,
        args.chaos_interval,
        args.first_chaos,
        args.warmup,
        args.grace,
        args.think,
        args.max_new_tokens,
        args.turns_per_session,
        args.job_examples,
        args.job_timeout,
        args.broker_url,
        args.log_dir,
        faults,
    )


def say(message: str) -> None:
    print(f"soak: {message}", flush=True)


# -- PostgreSQL and Redis --------------------------------------------------------------------


@contextmanager
def fresh_database() -> Iterator[tuple[str, str]]:
    """Create an empty database and drop it afterwards; yields its name and URL."""
    name = f"steerlab_soak_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate_connections(database: str) -> int:
    """End every PostgreSQL connection to ``database`` (the services'); returns how many."""
    query = (
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()) AS ended"
    )
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        row = admin.execute(query, (database,)).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def broker_database(broker_url: str, run_id: str) -> Iterator[str]:
    """A Redis database for this run alone (``broker_url``, or the first free candidate), held
    by a key that expires unless renewed, emptied of what an earlier run left; yields its URL."""
    import redis

    candidates = [broker_url] if broker_url else [f"{REDIS_URL}/{n}" for n in BROKER_DATABASES]
    for url in candidates:
        client = redis.Redis.from_url(url)
        if client.set(BROKER_LOCK, run_id, nx=True, ex=BROKER_LOCK_S):
            break
    else:
        raise RuntimeError(f"another soak run holds each of {', '.join(candidates)}; pass --broker-url")
    for key in client.scan_iter():
        if key != BROKER_LOCK.encode():
            client.delete(key)
    done = threading.Event()

    def renew() -> None:
        while not done.wait(BROKER_LOCK_S / 3):
            client.set(BROKER_LOCK, run_id, xx=True, ex=BROKER_LOCK_S)

    renewer = threading.Thread(target=renew, name="broker-lock", daemon=True)
    renewer.start()
    try:
        yield url
    finally:
        done.set()
        renewer.join()
        if client.get(BROKER_LOCK) == run_id.encode():
            client.delete(BROKER_LOCK)


def check_prerequisites(broker_url: str) -> str | None:
    """None if PostgreSQL and Redis answer, else what is missing."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {ADMIN_URL} is not reachable ({exc}); run bash scripts/services.sh"
    try:
        import redis

        redis.Redis.from_url(broker_url or REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        return f"Redis at {broker_url or REDIS_URL} is not reachable ({exc}); run bash scripts/services.sh"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the services' processes -----------------------------------------------------------------


@dataclass
class Incarnation:
    """One run of a service's process: when it started, was ready and ended, and its RSS."""

    number: int
    pid: int
    started: float
    ready: float = 0.0
    ended: float = 0.0
    killed: bool = False  # ended by the soak
    died: bool = False  # exited before the soak ended it
    rss: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, bytes)


def tree_rss(pid: int) -> int:
    """The resident memory of ``pid`` and its descendants (the worker's pool), in bytes."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class ServiceProcess:
    """A ``steerlab`` command in a process group of its own, started again on demand."""

    def __init__(self, name: str, argv: list[str], ready_marker: str, log_dir: Path) -> None:
        self.name, self.argv, self.ready_marker, self.log_dir = name, argv, ready_marker, log_dir
        self.lock = threading.RLock()
        self.incarnations: list[Incarnation] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False  # stopped for good: a restart racing the end of the run must not start it

    @property
    def current(self) -> Incarnation | None:
        return self.incarnations[-1] if self.incarnations else None

    def launch(self) -> None:
        """Start a new incarnation (returns at once; :meth:`wait_ready` waits for it)."""
        with self.lock:
            if self._closed:
                raise RuntimeError(f"{self.name} was stopped for good")
            number = len(self.incarnations) + 1
            log = (self.log_dir / f"{self.name}-{number}.log").open("wb")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
            env.update(TRANSFORMERS_VERBOSITY="error", STEERLAB_JOB_LEASE_S=str(JOB_LEASE_S))
            if self.name == "worker":  # one core for extraction, so that answers keep flowing
                env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            for variable in ("STEERLAB_TOKEN", "STEERLAB_AUTH", "STEERLAB_DATABASE_URL"):
                env.pop(variable, None)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "steerlab.cli", *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
            log.close()
            self.incarnations.append(Incarnation(number, self._process.pid, time.monotonic()))

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        """Until the log says it is ready; raises if it exits or takes longer than ``timeout_s``."""
        incarnation, process = self.current, self._process
        assert incarnation is not None and process is not None
        log = self.log_dir / f"{self.name}-{incarnation.number}.log"
        deadline = time.monotonic() + timeout_s
        while self.ready_marker not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} did not start (log {log}):\n{tail}")
            time.sleep(0.2)
        incarnation.ready = time.monotonic()

    def start(self, timeout_s: float = 600.0) -> None:
        with self.lock:
            self.launch()
            self.wait_ready(timeout_s)

    def kill(self) -> None:
        """SIGKILL the process group: nothing gets to clean up."""
        self._signal(signal.SIGKILL, wait_s=30.0)

    def stop(self) -> None:
        """SIGTERM, as an operator would; SIGKILL after 30 s. It is not started again."""
        with self.lock:
            self._closed = True
            if not self._signal(signal.SIGTERM, wait_s=30.0):
                self.kill()

    def restart(self) -> tuple[float, float]:
        """Kill and start again on the same port; returns (killed at, ready at)."""
        with self.lock:
            killed_at = time.monotonic()
            self.kill()
            self.start()
            return killed_at, self.current.ready if self.current else time.monotonic()

    def died_unexpectedly(self) -> bool:
        """True (once) if the current incarnation exited without the soak ending it."""
        with self.lock:
            incarnation, process = self.current, self._process
            if incarnation is None or process is None or incarnation.ended or process.poll() is None:
                return False
            incarnation.ended, incarnation.died = time.monotonic(), True
            return True

    def sample_rss(self) -> None:
        """Note the RSS now, unless the process is being restarted (then no sample)."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            incarnation = self.current
            if incarnation and incarnation.ready and not incarnation.ended:
                incarnation.rss.append((time.monotonic(), tree_rss(incarnation.pid)))
        finally:
            self.lock.release()

    def _signal(self, signum: int, wait_s: float) -> bool:
        """Send ``signum`` to the group; True if the process has exited within ``wait_s``."""
        with self.lock:
            process, incarnation = self._process, self.current
            if process is None or incarnation is None:
                return True
            if process.poll() is None:
                incarnation.killed = True
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)
            elif not incarnation.killed:
                incarnation.died = True
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                return False
            if signum == signal.SIGKILL:
                with suppress(ProcessLookupError):  # the worker's pool, if it outlived its parent
                    os.killpg(process.pid, signal.SIGKILL)
            incarnation.ended = incarnation.ended or time.monotonic()
            return True


class Platform:
    """The five processes, their ports, and where each service is reached."""

    def __init__(self, database_url: str, broker_url: str, log_dir: Path) -> None:
        self.ports = {name: free_port() for name in SERVICES if name != "worker"}
        self.model = MODEL  # the inference service's name for it, asked once it runs
        registry = self.address("registry")
        serve = ["--port", "{port}", "--metrics-port", "0", "--auth", "none"]
        database = ["--database-url", database_url]
        sessions = ["--sessions", self.address("sessions")]
        worker = ["--concurrency", "1", "--loglevel", "INFO"]
        commands = {
            "registry": ["registry", "serve", *database, *serve],
            "sessions": ["sessions", "serve", *database, *serve, "--registry", registry],
            "jobs": ["jobs", "serve", *database, *serve, "--broker-url", broker_url, "--registry", registry],
            "inference": ["inference", "serve", *serve, "--model", MODEL, "--registry", registry, *sessions],
            "worker": ["worker", "--broker-url", broker_url, *database, "--registry", registry, *worker],
        }
        self.processes = {
            name: ServiceProcess(
                name,
                [part.replace("{port}", str(self.ports.get(name, 0))) for part in argv],
                "ready." if name == "worker" else "serving on",
                log_dir,
            )
            for name, argv in commands.items()
        }

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def start(self) -> None:
        """The registry first (the others read it at start), then the rest at once."""
        self.processes["registry"].start()
        others = [process for name, process in self.processes.items() if name != "registry"]
        for process in others:
            process.launch()
        for process in others:
            process.wait_ready()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def client(self, retry: RetryPolicy = CLIENT_RETRY) -> SteerLab:
        return SteerLab(
            None,
            registry=self.address("registry"),
            sessions=self.address("sessions"),
            inference=self.address("inference"),
            jobs=self.address("jobs"),
            token="",
            timeout_s=30.0,
            generation_timeout_s=120.0,
            retry=retry,
        )


# -- what happened: acknowledged writes, errors, restart windows ----------------------------


@dataclass(frozen=True)
class Failure:
    """One failed call: its operation, status code, when it ran and the server's message."""

    op: str
    code: str
    start: float
    end: float
    message: str


@dataclass(frozen=True)
class Exchange:
    """An acknowledged Generate in a session: the user's message and the answer's turn."""

    user_text: str
    answer_text: str
    turn_index: int
    resent: bool


@dataclass(frozen=True)
class AppendedTurn:
    """An acknowledged AppendTurn: the user's text and its turn index."""

    text: str
    turn_index: int


@dataclass
class SessionRecord:
    """What the soak did to one session whose creation was acknowledged."""

    session_id: str
    kind: str  # chat, learn-chat, learn-append, calibrate, plain
    user_id: str
    mode: str
    sent: list[str] = field(default_factory=list)  # every user text sent, acknowledged or not
    exchanges: list[Exchange] = field(default_factory=list)
    appended: list[AppendedTurn] = field(default_factory=list)
    preferences: dict[str, float] | None = None  # the last acknowledged UpdatePreferences
    preferences_revision: int = 0
    preferences_ambiguous: bool = False  # an UpdatePreferences failed after the last acknowledged one
    calibrated: dict[str, float] | None = None

    @property
    def generate_only(self) -> bool:
        return self.kind in ("chat", "learn-chat")


@dataclass
class Window:
    """A fault and the time until the platform was whole again (plus the grace period)."""

    action: str
    start: float
    end: float
    detail: str


class Ledger:
    """Everything the clients, the chaos and the watchdog record; safe across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.successes: Counter[str] = Counter()
        self.durations: dict[str, list[float]] = {}  # op -> seconds of each successful call
        self.failures: list[Failure] = []
        self.sessions: dict[str, SessionRecord] = {}
        self.users: dict[str, bool] = {}  # user id -> whether its one CreateSession was acknowledged
        self.windows: list[Window] = []

    def attempt(self, op: str, call: Callable[[], T]) -> tuple[T | None, Failure | None]:
        """Run ``call``; record its success or its failure (any exception) under ``op``."""
        start = time.monotonic()
        try:
            result = call()
        except ClientError as exc:
            return None, self.fail(op, exc.code.name, start, exc.message)
        except Exception as exc:
            return None, self.fail(op, f"EXCEPTION:{type(exc).__name__}", start, str(exc))
        with self.lock:
            self.successes[op] += 1
            self.durations.setdefault(op, []).append(time.monotonic() - start)
        return result, None

    def fail(self, op: str, code: str, start: float, message: str) -> Failure:
        failure = Failure(op, code, start, time.monotonic(), message[:300])
        with self.lock:
            self.failures.append(failure)
        return failure

    def count(self, op: str) -> None:
        with self.lock:
            self.successes[op] += 1

    def session(self, session_id: str) -> SessionRecord:
        with self.lock:
            return self.sessions[session_id]

    def add_session(self, record: SessionRecord) -> None:
        with self.lock:
            self.sessions[record.session_id] = record
            self.users[record.user_id] = True

    def add_window(self, window: Window) -> None:
        with self.lock:
            self.windows.append(window)

    def in_window(self, failure: Failure) -> bool:
        return any(w.start <= failure.end and failure.start <= w.end for w in self.windows)


# -- extraction jobs -------------------------------------------------------------------------


@dataclass
class JobRecord:
    """A submitted job, every state the soak saw it in, and whether a resubmit matched."""

    job_id: str
    label: str
    dimension: str
    observed: list[tuple[str, float]] = field(default_factory=list)  # (state, end time in s)
    resubmit_matched: bool | None = None
    final: jpb.Job | None = None


def soak_dataset(run_id: str, per_pole: int) -> bytes:
    """A custom dimension: the first prompt pairs of the built-in cost dataset under another name,
    described with this run's id so that no worker's cache holds its extraction (one description
    per run: the registry refuses a second description of a registered dimension)."""
    lines = (ROOT / "services/steerlab/data/dimensions/cost.jsonl").read_text().splitlines()
    header = {**json.loads(lines[0]), "dimension": "soakthrift", "description": f"soak run {run_id}"}
    kept: Counter[str] = Counter()
    examples = []
    for line in lines[1:]:
        example = json.loads(line)
        if kept[example["label"]] < per_pole:
            kept[example["label"]] += 1
            examples.append({key: example[key] for key in ("prompt", "completion", "label")})
    return "\n".join(json.dumps(line) for line in [header, *examples]).encode()


class JobTracker:
    """Submits extraction jobs (each twice with one request id) and watches every state they take."""

    def __init__(self, ledger: Ledger, run_id: str, per_pole: int) -> None:
        self.ledger, self.run_id, self.per_pole = ledger, run_id, per_pole
        self.jobs: dict[str, JobRecord] = {}
        self.lock = threading.Lock()
        self._numbers = itertools.count(1)

    def submit(self, client: JobClient, dimension: str = "") -> JobRecord | None:
        """A built-in ``dimension`` (registered under "production"), or the soak's own dataset."""
        request_id = uuid.uuid4().hex
        number = next(self._numbers)
        label = dimension or f"soak-{number}"
        dataset = None if dimension else soak_dataset(self.run_id, self.per_pole)
        # The soak's own jobs: a few tokens per example, and a seed of their own (so that each
        # really extracts, whatever the cache holds); the built-in ones as `steerlab up` has them.
        num_tokens, seed = (0, None) if dimension else (8, number)

        def submit_once() -> jpb.Job:
            return client.submit_extraction(
                MODEL,
                dimension=dimension,
                dataset=dataset,
                alias="production" if dimension else "",
                labels={"soak": label},
                request_id=request_id,
                num_tokens=num_tokens,
                seed=seed,
            )

        job, _ = self.ledger.attempt("submit-extraction", submit_once)
        if job is None:
            return None
        record = JobRecord(job.id, label, job.dimension)
        again, _ = self.ledger.attempt("resubmit-extraction", submit_once)
        record.resubmit_matched = None if again is None else again.id == job.id
        with self.lock:
            self.jobs[job.id] = record
        return record

    def poll(self, client: JobClient) -> None:
        """Note each job's state now (the invariant: once ended, it never changes)."""
        with self.lock:
            records = list(self.jobs.values())
        for record in records:
            self.observe(client, record)

    def observe(self, client: JobClient, record: JobRecord) -> jpb.Job | None:
        job, _ = self.ledger.attempt("get-job", lambda: client.get(record.job_id))
        if job is not None:
            record.observed.append((jpb.JobState.Name(job.state), job.end_time.ToSeconds()))
            record.final = job
        return job

    def all_ended(self) -> bool:
        with self.lock:
            return all(r.final is not None and ended(r.final) for r in self.jobs.values())

    def in_flight(self) -> list[JobRecord]:
        with self.lock:
            return [r for r in self.jobs.values() if r.final is None or not ended(r.final)]

    def wait_running(self, client: JobClient, timeout_s: float, stop: threading.Event) -> str | None:
        """Until a job computes (its stage is past loading), or none is left to; says which.
        None if ``stop`` is set meanwhile."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (records := self.in_flight()):
            for record in records:
                job = self.observe(client, record)
                if job and job.state == jpb.JOB_STATE_RUNNING and job.progress.stage not in ("", "loading"):
                    return f"job {record.label} at stage {job.progress.stage!r}"
            if stop.wait(0.3):
                return None
        return "no job computing"


def state_name(job: jpb.Job) -> str:
    return jpb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()


def ended(job: jpb.Job) -> bool:
    return job.state in (jpb.JOB_STATE_SUCCEEDED, jpb.JOB_STATE_FAILED, jpb.JOB_STATE_CANCELLED)


def ensure_builtin_dimensions(platform: Platform, tracker: JobTracker) -> None:
    """Extract the five built-in dimensions for the model through jobs (seconds when the
    worker's cache has them) so that steering, calibration and LEARN have vector sets."""
    with JobClient(platform.address("jobs"), token="", retry=PATIENT_RETRY) as client:
        records = [tracker.submit(client, name) for name in DIMENSIONS]
        started = time.monotonic()
        for record in records:
            if record is None:
                raise RuntimeError("could not submit the built-in dimensions' extraction jobs")
            final = client.wait(record.job_id, timeout_s=1800)
            if final.state != jpb.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"extracting {record.dimension} failed: {final.error}")
        say(f"built-in dimensions registered for {MODEL} in {time.monotonic() - started:.0f} s")


# -- traffic ---------------------------------------------------------------------------------


class TrafficClient(threading.Thread):
    """One user of the platform: a loop of weighted random actions, each on its own sessions."""

    def __init__(
        self, number: int, platform: Platform, ledger: Ledger, options: Options, stop: threading.Event
    ) -> None:
        super().__init__(name=f"client-{number}", daemon=True)
        self.number, self.platform, self.ledger, self.options, self.stop = (
            number,
            platform,
            ledger,
            options,
            stop,
        )
        self.rng = random.Random(options.seed * 1000 + number)
        self.current: dict[str, tuple[str, int]] = {}  # kind -> (session id, exchanges so far)
        self._tags = itertools.count(1)
        self.model = platform.model

    def run(self) -> None:
        actions: list[tuple[Callable[[SteerLab], None], int]] = [
            (lambda s: self.chat(s, "chat"), 30),
            (lambda s: self.chat(s, "learn-chat"), 15),
            (self.learn_reply, 15),
            (self.update_preferences, 10),
            (self.registry_read, 15),
            (self.calibrate, 5),
            (self.new_session, 5),
        ]
        with self.platform.client() as steerlab:
            while not self.stop.is_set():
                action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
                start = time.monotonic()
                try:
                    action(steerlab)
                except Exception as exc:  # a bug in the soak or an unmapped error: record, go on
                    self.ledger.fail("client", f"EXCEPTION:{type(exc).__name__}", start, str(exc))
                self.stop.wait(self.rng.uniform(0, self.options.think_s))

    def tag(self) -> str:
        return f"[c{self.number}-{next(self._tags)}]"

    def create_session(self, steerlab: SteerLab, kind: str, mode: str) -> str | None:
        """A new session for a new user (so each user has at most one), resent once on failure."""
        user = f"soak-c{self.number}-{next(self._tags)}"
        strengths = {self.rng.choice(DIMENSIONS): float(self.rng.choice((-60, -30, 30, 60)))}
        request_id = uuid.uuid4().hex
        with self.ledger.lock:
            self.ledger.users[user] = False

        def create() -> spb.Session:
            return steerlab.sessions.create(user, self.model, mode, strengths, request_id=request_id)

        session, failure = self.ledger.attempt("create-session", create)
        if session is None and failure is not None and failure.code in RESENDABLE:
            self.stop.wait(self.rng.uniform(0.5, 2.0))
            session, _ = self.ledger.attempt("create-session-resend", create)
        if session is None:
            return None
        self.ledger.add_session(SessionRecord(session.id, kind, user, mode))
        return str(session.id)

    def session_for(self, steerlab: SteerLab, kind: str, mode: str) -> str | None:
        """This client's session of ``kind``, a new one after ``--turns-per-session`` uses."""
        session_id, uses = self.current.get(kind, ("", 0))
        if not session_id or uses >= self.options.turns_per_session:
            session_id = self.create_session(steerlab, kind, mode) or ""
            uses = 0
        if session_id:
            self.current[kind] = (session_id, uses + 1)
        return session_id or None

    def chat(self, steerlab: SteerLab, kind: str) -> None:
        """Generate in a session; now and then cancelled mid-stream, or resent after a failure."""
        session_id = self.session_for(steerlab, kind, "learn" if kind == "learn-chat" else "select")
        if session_id is None:
            return
        pool = FEEDBACK if kind == "learn-chat" else PROMPTS
        text = f"{self.rng.choice(pool)} {self.tag()}"
        record = self.ledger.session(session_id)
        record.sent.append(text)
        request_id = uuid.uuid4().hex
        cancel_after = self.rng.randint(1, 3) if self.rng.random() < 0.05 else 0
        answer, failure = self.generate(steerlab, session_id, text, request_id, cancel_after, "generate")
        resent = False
        if answer is None and failure is not None and failure.code in RESENDABLE and self.rng.random() < 0.5:
            self.stop.wait(self.rng.uniform(0.5, 3.0))
            answer, _ = self.generate(steerlab, session_id, text, request_id, 0, "generate-resend")
            resent = True
        if answer is not None:
            with self.ledger.lock:
                record.exchanges.append(Exchange(text, answer.text, answer.turn_index, resent))

    def generate(
        self, steerlab: SteerLab, session_id: str, text: str, request_id: str, cancel_after: int, op: str
    ) -> tuple[Answer | None, Failure | None]:
        """One streamed Generate; with ``cancel_after``, closed after that many text deltas."""

        def call() -> Answer | None:
            stream = ChatStream(
                steerlab.inference.stream(
                    text,
                    session_id=session_id,
                    request_id=request_id,
                    max_new_tokens=self.options.max_new_tokens,
                )
            )
            if cancel_after:
                for received, _ in enumerate(stream, 1):
                    if received >= cancel_after:
                        stream.cancel()
                        self.ledger.count("generate-cancelled")
                        return None
            return stream.answer

        answer, failure = self.ledger.attempt(op, call)
        return answer, failure

    def learn_reply(self, steerlab: SteerLab) -> None:
        """LEARN: a user turn recorded with AppendTurn; resent once with its request id on failure."""
        session_id = self.session_for(steerlab, "learn-append", "learn")
        if session_id is None:
            return
        text = f"{self.rng.choice(FEEDBACK)} {self.tag()}"
        record = self.ledger.session(session_id)
        record.sent.append(text)
        request_id = uuid.uuid4().hex

        def append() -> spb.AppendTurnResponse:
            return steerlab.sessions.add_user_turn(session_id, text, request_id=request_id)

        response, failure = self.ledger.attempt("append-turn", append)
        if response is None and failure is not None and failure.code in RESENDABLE:
            self.stop.wait(self.rng.uniform(0.5, 2.0))
            response, _ = self.ledger.attempt("append-turn-resend", append)
        if response is not None:
            with self.ledger.lock:
                record.appended.append(AppendedTurn(text, int(response.turn.index)))

    def update_preferences(self, steerlab: SteerLab) -> None:
        """SELECT: change two strengths of this client's chat session."""
        session_id = self.session_for(steerlab, "chat", "select")
        if session_id is None:
            return
        strengths = {d: float(self.rng.choice((-80, -40, 0, 40, 80))) for d in self.rng.sample(DIMENSIONS, 2)}
        session, _ = self.ledger.attempt(
            "update-preferences", lambda: steerlab.sessions.set_strengths(session_id, strengths)
        )
        record = self.ledger.session(session_id)
        with self.ledger.lock:
            if session is None:
                record.preferences_ambiguous = True
            else:
                record.preferences = dict(session.strengths)
                record.preferences_revision = int(session.revision)
                record.preferences_ambiguous = False

    def calibrate(self, steerlab: SteerLab) -> None:
        """CALIBRATE one dimension for two rounds in a new session."""
        session_id = self.create_session(steerlab, "calibrate", "calibrate")
        if session_id is None:
            return
        dimension = self.rng.choice(DIMENSIONS)

        def choose(comparison: spb.Comparison, left: str, right: str) -> str:
            return self.rng.choice(("left", "right"))

        def run() -> dict[str, float]:
            result = steerlab.calibrate(
                session_id,
                [dimension],
                self.rng.choice(PROMPTS),
                choose,
                rounds=2,
                max_new_tokens=self.options.max_new_tokens // 2 or 1,
            )
            return {dimension: result.strengths.get(dimension, 0.0)}

        calibrated, _ = self.ledger.attempt("calibrate", run)
        if calibrated is not None:
            with self.ledger.lock:
                self.ledger.sessions[session_id].calibrated = calibrated

    def registry_read(self, steerlab: SteerLab) -> None:
        reads: dict[str, Callable[[], object]] = {
            "list-dimensions": steerlab.registry.list_dimensions,
            "list-vector-sets": lambda: list(steerlab.registry.list_vector_sets()),
            "get-vector-set": lambda: steerlab.registry.get(self.rng.choice(DIMENSIONS), alias="production"),
            "list-aliases": steerlab.registry.list_aliases,
            "list-jobs": steerlab.jobs.list,
        }
        op = self.rng.choice(sorted(reads))
        self.ledger.attempt(op, reads[op])

    def new_session(self, steerlab: SteerLab) -> None:
        """A session created and read back, then left alone."""
        session_id = self.create_session(steerlab, "plain", self.rng.choice(("select", "learn")))
        if session_id is not None:
            self.ledger.attempt("get-session", lambda: steerlab.sessions.get(session_id))


# -- faults ----------------------------------------------------------------------------------


class Chaos(threading.Thread):
    """On a schedule, in turn: kill -9 and restart inference, sessions, the worker (mid-job),
    and terminate the services' PostgreSQL connections."""

    def __init__(
        self,
        platform: Platform,
        ledger: Ledger,
        tracker: JobTracker,
        options: Options,
        database: str,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.platform, self.ledger, self.tracker, self.options = platform, ledger, tracker, options
        self.database, self.stop = database, stop
        self.rng = random.Random(options.seed - 1)
        self.started = time.monotonic()

    def run(self) -> None:
        self.started = time.monotonic()
        with JobClient(self.platform.address("jobs"), token="", retry=PATIENT_RETRY) as jobs:
            self.tracker.submit(jobs)  # one soak job from the start, whatever the schedule
            next_at = self.started + self.options.first_chaos_s
            for action in itertools.cycle(self.options.faults):
                if self.stop.wait(max(0.0, next_at - time.monotonic())):
                    return
                self.perform(action, jobs)
                spread = self.options.chaos_interval_s * 0.15
                next_at += self.options.chaos_interval_s + self.rng.uniform(-spread, spread)

    def perform(self, action: str, jobs: JobClient) -> None:
        detail = ""
        if action == "worker":  # mid-job: a new one unless one is under way
            self.tracker.poll(jobs)
            if not self.tracker.in_flight():
                self.tracker.submit(jobs)
            running = self.tracker.wait_running(jobs, 120.0, self.stop)
            if running is None:
                return  # the run is over
            detail = f"with {running}; "
        if action == "postgres":
            start = time.monotonic()
            ended_connections = terminate_connections(self.database)
            end = time.monotonic() + self.options.grace_s
            detail = f"terminated {ended_connections} connections"
        else:
            pid = self.platform.processes[action].current
            start, ready = self.platform.processes[action].restart()
            end = ready + self.options.grace_s
            detail += f"killed pid {pid.pid if pid else '?'}, ready again after {ready - start:.1f} s"
        self.ledger.add_window(Window(action, start, end, detail))
        say(f"t={start - self.started:+.0f}s {action}: {detail}")


class Watchdog(threading.Thread):
    """Every few seconds: samples each process's RSS (until ``traffic_over``), notes job states,
    and restarts (and reports) a process that died without being killed."""

    def __init__(
        self,
        platform: Platform,
        ledger: Ledger,
        tracker: JobTracker,
        traffic_over: threading.Event,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.platform, self.ledger, self.tracker = platform, ledger, tracker
        self.traffic_over, self.stop = traffic_over, stop

    def run(self) -> None:
        with JobClient(self.platform.address("jobs"), token="", retry=PATIENT_RETRY) as jobs:
            while not self.stop.wait(5.0):
                self.tick(jobs)

    def tick(self, jobs: JobClient) -> None:
        for name, process in self.platform.processes.items():
            if process.died_unexpectedly():
                say(f"{name} exited on its own; restarting it")
                start, ready = process.restart()
                self.ledger.add_window(Window(f"{name}-died", start, ready + 5.0, "exited on its own"))
            if not self.traffic_over.is_set():
                process.sample_rss()
        self.tracker.poll(jobs)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Evidence:
    """What the checks read: the ledger, the jobs, the sessions as stored at the end."""

    ledger: Ledger
    tracker: JobTracker
    platform: Platform
    traffic_start: float
    warmup_s: float
    stored: dict[str, spb.Session | None] = field(default_factory=dict)  # None: NOT_FOUND
    users: dict[str, list[str]] = field(default_factory=dict)  # user -> their session ids
    job_vector_sets: dict[str, list[int]] = field(default_factory=dict)  # job id -> versions
    unreadable: list[str] = field(default_factory=list)


def run_traffic(
    platform: Platform, ledger: Ledger, tracker: JobTracker, options: Options, database: str
) -> float:
    """Clients, chaos and watchdog for ``--minutes``; returns when the traffic started."""
    stop_clients, stop_chaos, stop_watchdog = threading.Event(), threading.Event(), threading.Event()
    clients = [TrafficClient(n, platform, ledger, options, stop_clients) for n in range(options.clients)]
    chaos = Chaos(platform, ledger, tracker, options, database, stop_chaos)
    watchdog = Watchdog(platform, ledger, tracker, stop_clients, stop_watchdog)
    traffic_start = time.monotonic()
    for thread in [*clients, chaos, watchdog]:
        thread.start()
    deadline = traffic_start + options.minutes * 60
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(60.0, left))
        if time.monotonic() < deadline:
            say(f"t={time.monotonic() - traffic_start:+.0f}s {progress(ledger)}")
    stop_chaos.set()
    stop_clients.set()
    chaos.join()
    for client in clients:
        client.join(timeout=180)
    say(f"traffic stopped after {time.monotonic() - traffic_start:.0f} s: {progress(ledger)}")
    wait_for_jobs(platform, tracker, options.job_timeout_s)
    stop_watchdog.set()
    watchdog.join()
    return traffic_start


def progress(ledger: Ledger) -> str:
    with ledger.lock:
        done, failed = sum(ledger.successes.values()), len(ledger.failures)
        exchanges = sum(len(r.exchanges) for r in ledger.sessions.values())
    return f"{done} calls ok, {failed} failed, {len(ledger.sessions)} sessions, {exchanges} exchanges"


def wait_for_jobs(platform: Platform, tracker: JobTracker, timeout_s: float) -> None:
    """Until every job has ended (the worker is up again by now)."""
    deadline = time.monotonic() + timeout_s
    with JobClient(platform.address("jobs"), token="", retry=PATIENT_RETRY) as jobs:
        while True:
            tracker.poll(jobs)
            if tracker.all_ended() or time.monotonic() > deadline:
                return
            time.sleep(2.0)


def collect(evidence: Evidence) -> None:
    """Read back every acknowledged session, each user's sessions, and each job's vector sets."""
    with evidence.platform.client(PATIENT_RETRY) as steerlab:
        for session_id in list(evidence.ledger.sessions):
            evidence.stored[session_id] = read_session(steerlab, session_id, evidence.unreadable)
        for user in list(evidence.ledger.users):
            try:
                evidence.users[user] = [s.id for s in steerlab.sessions.list_sessions(user)]
            except ClientError as exc:
                evidence.unreadable.append(f"sessions of {user}: {exc}")
        for record in evidence.tracker.jobs.values():
            try:
                versions = steerlab.registry.list_vector_sets(
                    dimension=record.dimension, include_deleted=True
                )
                evidence.job_vector_sets[record.job_id] = [
                    v.version for v in versions if v.labels.get("job") == record.job_id
                ]
            except ClientError as exc:
                evidence.unreadable.append(f"vector sets of job {record.job_id}: {exc}")


def read_session(steerlab: SteerLab, session_id: str, unreadable: list[str]) -> spb.Session | None:
    try:
        return steerlab.sessions.get(session_id, include_turns=True)
    except NotFound:
        return None
    except ClientError as exc:
        unreadable.append(f"session {session_id}: {exc}")
        return None


def write_rss_series(platform: Platform, traffic_start: float, path: Path) -> None:
    """Every RSS sample, per process and incarnation (seconds into the traffic, MiB), to study."""
    series = {
        f"{name}#{incarnation.number}": [
            [round(t - traffic_start, 1), rss >> 20] for t, rss in incarnation.rss
        ]
        for name, process in platform.processes.items()
        for incarnation in process.incarnations
    }
    path.write_text(json.dumps(series))


# -- the invariants --------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def listed(problems: list[str], limit: int = 5) -> str:
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def check_sessions_exist(evidence: Evidence) -> Check:
    """Every acknowledged CreateSession is stored, and each user (one create each) has one session."""
    problems = [f"session {sid} is missing" for sid, s in evidence.stored.items() if s is None]
    for user, acknowledged in evidence.ledger.users.items():
        count = len(evidence.users.get(user, []))
        if count > 1 or (acknowledged and count != 1):
            problems.append(f"user {user} has {count} sessions (create acknowledged: {acknowledged})")
    acknowledged_count = sum(evidence.ledger.users.values())
    detail = listed(problems) or (
        f"{len(evidence.stored)} acknowledged sessions found; {len(evidence.ledger.users)} creates, "
        f"none made two sessions"
    )
    return Check(
        "acknowledged sessions exist, once per request", not problems and acknowledged_count > 0, detail
    )


def turns_by_index(session: spb.Session) -> dict[int, spb.Turn]:
    return {int(turn.index): turn for turn in session.turns}


def check_exchanges(evidence: Evidence) -> Check:
    """Every acknowledged Generate answer is at its index with its text, after its user message."""
    problems, checked, resent = [], 0, 0
    for sid, record in evidence.ledger.sessions.items():
        stored = evidence.stored.get(sid)
        turns = turns_by_index(stored) if stored else {}
        for exchange in record.exchanges:
            checked += 1
            resent += exchange.resent
            problem = exchange_problem(turns, exchange)
            if problem:
                problems.append(f"session {sid} turn {exchange.turn_index}: {problem}")
    detail = listed(problems) or f"{checked} acknowledged answers in place ({resent} after a resend)"
    return Check("acknowledged Generate answers present", not problems and checked > 0, detail)


def exchange_problem(turns: dict[int, spb.Turn], exchange: Exchange) -> str:
    answer, asked = turns.get(exchange.turn_index), turns.get(exchange.turn_index - 1)
    if answer is None or answer.role != spb.ROLE_ASSISTANT:
        return "no assistant turn there"
    if answer.text != exchange.answer_text:
        return f"stored answer {answer.text[:40]!r} is not the one streamed {exchange.answer_text[:40]!r}"
    if asked is None or asked.role != spb.ROLE_USER or asked.text != exchange.user_text:
        return f"the turn before is not the user's message {exchange.user_text[:40]!r}"
    return ""


def check_appended_turns(evidence: Evidence) -> Check:
    """Every acknowledged AppendTurn is at its index, with its text, as a user turn."""
    problems, checked = [], 0
    for sid, record in evidence.ledger.sessions.items():
        stored = evidence.stored.get(sid)
        turns = turns_by_index(stored) if stored else {}
        for appended in record.appended:
            checked += 1
            turn = turns.get(appended.turn_index)
            if turn is None or turn.role != spb.ROLE_USER or turn.text != appended.text:
                problems.append(f"session {sid} turn {appended.turn_index}: {appended.text[:40]!r} missing")
        if stored:
            texts = Counter(t.text for t in stored.turns if t.role == spb.ROLE_USER)
            problems += [
                f"session {sid}: {text[:40]!r} recorded {n} times" for text, n in texts.items() if n > 1
            ]
    detail = listed(problems) or f"{checked} acknowledged LEARN turns in place, none twice"
    return Check("acknowledged AppendTurn (LEARN) turns present", not problems and checked > 0, detail)


def check_preferences(evidence: Evidence) -> Check:
    """The last acknowledged UpdatePreferences of a session holds (unless a later one failed)."""
    problems, checked, skipped = [], 0, 0
    for sid, record in evidence.ledger.sessions.items():
        stored = evidence.stored.get(sid)
        if record.preferences is None or stored is None:
            continue
        if record.preferences_ambiguous:
            skipped += 1
            continue
        checked += 1
        if dict(stored.strengths) != record.preferences or stored.revision < record.preferences_revision:
            problems.append(f"session {sid}: strengths {dict(stored.strengths)} != {record.preferences}")
    for sid, record in evidence.ledger.sessions.items():
        stored = evidence.stored.get(sid)
        if record.calibrated and stored is not None:
            checked += 1
            now = {d: stored.strengths.get(d, 0.0) for d in record.calibrated}
            if now != record.calibrated:
                problems.append(f"calibrated session {sid}: {now} != {record.calibrated}")
    detail = listed(problems) or (
        f"{checked} sessions' strengths as last acknowledged (UpdatePreferences, calibrations); "
        f"{skipped} skipped (a later update failed, its outcome unknown)"
    )
    return Check("acknowledged preferences and calibrations hold", not problems and checked > 0, detail)


def check_alternation(evidence: Evidence) -> Check:
    """Sessions driven only through Generate: user, assistant, user, assistant ..., each message once."""
    problems, sessions, turns = [], 0, 0
    for sid, record in evidence.ledger.sessions.items():
        stored = evidence.stored.get(sid)
        if not record.generate_only or stored is None:
            continue
        sessions += 1
        turns += len(stored.turns)
        problem = alternation_problem(stored, set(record.sent))
        if problem:
            problems.append(f"session {sid}: {problem}")
    detail = (
        listed(problems) or f"{sessions} Generate-only sessions, {turns} turns, all in user/assistant pairs"
    )
    return Check("no orphan or interleaved turns", not problems and sessions > 0, detail)


def alternation_problem(session: spb.Session, sent: set[str]) -> str:
    roles = [turn.role for turn in session.turns]
    if [int(t.index) for t in session.turns] != sorted(int(t.index) for t in session.turns):
        return "turns out of order"
    if session.turn_count != len(roles):
        return f"turn_count {session.turn_count} but {len(roles)} turns"
    for position, role in enumerate(roles):
        expected = spb.ROLE_USER if position % 2 == 0 else spb.ROLE_ASSISTANT
        if role != expected:
            return f"turn {position} is {spb.Role.Name(role)}, expected {spb.Role.Name(expected)}"
    if len(roles) % 2:
        return "the last user message has no answer (an orphan turn)"
    users = [t.text for t in session.turns if t.role == spb.ROLE_USER]
    if len(users) != len(set(users)):
        return "a user message was recorded twice"
    if not set(users) <= sent:
        return "holds a user message the soak never sent"
    return ""


def check_jobs(evidence: Evidence) -> Check:
    """Each job ended exactly once, registered once if it succeeded, never if it failed."""
    problems, reasons, outcomes = [], [], Counter[str]()
    for record in evidence.tracker.jobs.values():
        problem = job_problem(record, evidence.job_vector_sets.get(record.job_id))
        if problem:
            problems.append(f"job {record.label} ({record.job_id}): {problem}")
        final = record.final
        outcomes[state_name(final) if final else "unseen"] += 1
        if final is not None and final.attempts > 1:
            outcomes["retried after a lost worker"] += 1
        if final is not None and final.state == jpb.JOB_STATE_FAILED:
            reasons.append(f"{record.label} failed: {final.error[:160]}")
    jobs = len(evidence.tracker.jobs)
    summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
    detail = listed(problems) or f"{jobs} jobs: {summary}; one vector set each that succeeded"
    detail += "".join(f"; {reason}" for reason in reasons)
    return Check("every job reached a final state exactly once", not problems and jobs > 0, detail)


def job_problem(record: JobRecord, versions: list[int] | None) -> str:
    final = record.final
    if final is None or not ended(final):
        return f"never ended (last seen {jpb.JobState.Name(final.state) if final else 'never'})"
    if final.state == jpb.JOB_STATE_CANCELLED:
        return "cancelled, though nobody cancelled it"
    first_end = next((i for i, (state, _) in enumerate(record.observed) if state in ENDED_NAMES), None)
    after = record.observed[first_end:] if first_end is not None else []
    if len(set(after)) > 1:
        return f"changed after it ended: {sorted(set(after))}"
    if record.resubmit_matched is False:
        return "a resubmit with its request id made another job"
    if versions is None:
        return "its vector sets could not be read"
    wanted = [final.result.version] if final.state == jpb.JOB_STATE_SUCCEEDED else []
    if versions != wanted:
        return f"registered versions {versions}, expected {wanted}"
    return ""


ENDED_NAMES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"})


def rss_growth(incarnation: Incarnation, traffic_start: float, warmup_s: float) -> tuple[float, str] | None:
    """The RSS growth from the end of warm-up to the end of this incarnation, or None if it did
    not live at least a minute past its warm-up."""
    baseline_at = max(incarnation.ready, traffic_start) + warmup_s
    after = [(t, rss) for t, rss in incarnation.rss if t >= baseline_at]
    if len(after) < 6 or after[-1][0] - after[0][0] < 60:
        return None
    start = statistics.median(rss for _, rss in after[:3])
    end = statistics.median(rss for _, rss in after[-3:])
    span = after[-1][0] - after[0][0]
    return (end - start) / start, f"{start / 2**20:.0f}->{end / 2**20:.0f} MiB over {span:.0f} s"


def check_rss(evidence: Evidence) -> Check:
    """Per incarnation of each server, RSS after warm-up grew under 10 % (the worker, which loads
    a model per job on demand, is reported but not judged)."""
    parts, problems, measured = [], [], set()
    for name, process in evidence.platform.processes.items():
        for incarnation in process.incarnations:
            growth = rss_growth(incarnation, evidence.traffic_start, evidence.warmup_s)
            if growth is None:
                continue
            ratio, span = growth
            parts.append(f"{name}#{incarnation.number} {ratio:+.1%} ({span})")
            if name != "worker":
                measured.add(name)
                if ratio >= RSS_LIMIT:
                    problems.append(f"{name}#{incarnation.number} grew {ratio:+.1%}")
    unmeasured = [n for n in SERVICES if n != "worker" and n not in measured]
    if unmeasured:
        parts.append(f"not measured (no incarnation lived a minute past warm-up): {', '.join(unmeasured)}")
    passed = not problems and {"registry", "jobs"} <= measured
    return Check(f"RSS growth under {RSS_LIMIT:.0%} after warm-up", passed, "; ".join(parts))


def check_errors(evidence: Evidence) -> Check:
    """Outside restart windows only UNAVAILABLE, DEADLINE_EXCEEDED or ABORTED."""
    steady = [f for f in evidence.ledger.failures if not evidence.ledger.in_window(f)]
    exceptions = [f for f in evidence.ledger.failures if f.code.startswith("EXCEPTION:")]
    unexpected = [f for f in steady if f.code not in STEADY_CODES]
    unexpected += [f for f in exceptions if f not in steady]
    examples = [f"{f.op} {f.code}: {f.message[:120]}" for f in unexpected]
    counts = Counter(f.code for f in steady)
    summary = ", ".join(f"{code} {n}" for code, n in counts.most_common()) or "none"
    detail = listed(examples, 3) or f"steady-state errors: {summary}"
    return Check("outside restart windows only UNAVAILABLE/DEADLINE_EXCEEDED/ABORTED", not unexpected, detail)


def check_deaths(evidence: Evidence) -> Check:
    deaths = [
        f"{name}#{incarnation.number} (pid {incarnation.pid})"
        for name, process in evidence.platform.processes.items()
        for incarnation in process.incarnations
        if incarnation.died
    ]
    return Check("no server process died unless killed", not deaths, listed(deaths) or "none did")


def check_readable(evidence: Evidence) -> Check:
    unreadable = evidence.unreadable
    detail = listed(unreadable) or "every session, user and job read back after the run"
    return Check("the platform answered the final read-back", not unreadable, detail)


CHECKS: tuple[Callable[[Evidence], Check], ...] = (
    check_readable,
    check_sessions_exist,
    check_exchanges,
    check_appended_turns,
    check_preferences,
    check_alternation,
    check_jobs,
    check_rss,
    check_errors,
    check_deaths,
)


# -- the report ------------------------------------------------------------------------------


def print_summary(evidence: Evidence) -> None:
    """The faults, the calls by operation, and the errors by status, operation and phase."""
    ledger = evidence.ledger
    print("\n== faults")
    for window in sorted(ledger.windows, key=lambda w: w.start):
        start, length = window.start - evidence.traffic_start, window.end - window.start
        print(f"  t={start:+6.0f}s {window.action:<10} window {length:5.1f} s  {window.detail}")
    print("\n== calls: ok / failed in restart windows / failed steady; seconds of the ok ones (p50, p95)")
    failed: Counter[tuple[str, bool]] = Counter((f.op, ledger.in_window(f)) for f in ledger.failures)
    for op in sorted(set(ledger.successes) | {op for op, _ in failed}):
        counts = f"{ledger.successes[op]:6d} / {failed[op, True]:5d} / {failed[op, False]:5d}"
        print(f"  {op:<24} {counts}   {percentiles(ledger.durations.get(op, []))}")
    print("\n== errors by status code: in restart windows / steady")
    codes: Counter[tuple[str, bool]] = Counter((f.code, ledger.in_window(f)) for f in ledger.failures)
    for code in sorted({code for code, _ in codes}):
        print(f"  {code:<24} {codes[code, True]:6d} / {codes[code, False]:6d}")
    print_error_examples(ledger)


def percentiles(durations: list[float]) -> str:
    if not durations:
        return ""
    ordered = sorted(durations)
    return f"{ordered[len(ordered) // 2]:6.2f} {ordered[int(len(ordered) * 0.95)]:6.2f}"


def print_error_examples(ledger: Ledger) -> None:
    """One message per operation and status code, to tell what each error was."""
    seen: dict[tuple[str, str, bool], Failure] = {}
    for failure in ledger.failures:
        seen.setdefault((failure.op, failure.code, ledger.in_window(failure)), failure)
    if seen:
        print("\n== an example of each error (operation, status, phase)")
    for (op, code, windowed), failure in sorted(seen.items()):
        phase = "restart" if windowed else "steady"
        print(f"  {op} {code} [{phase}]: {failure.message[:160]}")


def print_checks(checks: list[Check]) -> None:
    print("\n== invariants")
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'} {check.name}: {check.detail}")


# -- main ------------------------------------------------------------------------------------


def soak(options: Options, log_dir: Path) -> list[Check]:
    """Everything between creating the database and the broker's and giving them back."""
    run_id = uuid.uuid4().hex[:8]
    with fresh_database() as (database, url), broker_database(options.broker_url, run_id) as broker:
        say(f"database {database}, broker {broker}, logs in {log_dir}")
        platform = Platform(url, broker, log_dir)
        try:
            evidence = run_platform(platform, options, run_id, database)
            write_rss_series(platform, evidence.traffic_start, log_dir / "rss.json")
        finally:
            platform.stop()
    print_summary(evidence)
    return [check(evidence) for check in CHECKS]


def run_platform(platform: Platform, options: Options, run_id: str, database: str) -> Evidence:
    """Start the services, register the built-in dimensions, run the traffic, read back."""
    ledger = Ledger()
    tracker = JobTracker(ledger, run_id, options.job_examples)
    started = time.monotonic()
    platform.start()
    say(f"services up in {time.monotonic() - started:.0f} s: {platform.ports}")
    with platform.client(PATIENT_RETRY) as steerlab:
        platform.model = steerlab.model
    ensure_builtin_dimensions(platform, tracker)
    say(f"traffic: {options.clients} clients for {options.minutes:g} min, seed {options.seed}")
    traffic_start = run_traffic(platform, ledger, tracker, options, database)
    evidence = Evidence(ledger, tracker, platform, traffic_start, options.warmup_s)
    collect(evidence)
    return evidence


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the run as Ctrl-C does: the services are stopped, the database dropped."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    options = parse_args(argv)
    missing = check_prerequisites(options.broker_url)
    if missing:
        say(missing)
        return 2
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="steerlab-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    checks = soak(options, log_dir)
    print_checks(checks)
    passed = all(check.passed for check in checks)
    verdict = "PASSED" if passed else "FAILED"
    print(f"\nsoak: {verdict} ({sum(c.passed for c in checks)}/{len(checks)} invariants); logs in {log_dir}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
