"""Benchmark: how long the ``steerlab`` commands that need no model take to start and finish.

Each command runs as a fresh process ``--repeats`` times; the table gives the minimum and the
median wall time, and whether the median is under the goal (0.5 s on a 2-core machine).
``vectors list`` and ``jobs list`` run against a real registry and job service (the script
starts ``steerlab registry serve`` and ``steerlab jobs serve`` on free ports, SQLite in a
temporary folder); ``jobs list (server down)`` names an address where nothing listens: it times
the error a user sees when the service is down, which includes the SDK's retries (4 tries
with backoff), not start-up.

    .venv/bin/python scripts/bench_cli.py [--repeats 7] [--goal 0.5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STEERLAB = str(Path(sys.executable).with_name("steerlab"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(service: str, database_url: str) -> Iterator[str]:
    """``steerlab <service> serve`` on a free port until the block ends; yields its address."""
    port = free_port()
    command = [STEERLAB, service, "serve", "--port", str(port), "--metrics-port", "0"]
    process = subprocess.Popen(
        [*command, "--database-url", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the one line a service prints when it is ready
        if "serving on" not in line:
            raise SystemExit(f"{service} did not start: {line!r}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def timed(command: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--goal", type=float, default=0.5, help="seconds (default 0.5)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STEERLAB_HOME": home, "HF_HUB_OFFLINE": "1"}
        database_url = f"sqlite:///{home}/bench.db"
        with serving("registry", database_url) as registry, serving("jobs", database_url) as jobs:
            commands = {
                "--help": ["--help"],
                "dimensions": ["dimensions"],
                "models": ["models"],
                "vectors list": ["vectors", "list", "--registry", registry],
                "sessions --help": ["sessions", "--help"],
                "jobs list": ["jobs", "list", "--server", jobs],
                "jobs list (server down)": ["jobs", "list", "--server", f"127.0.0.1:{free_port()}"],
                "chat --help": ["chat", "--help"],
                "up --help": ["up", "--help"],
            }
            print(f"{'command':<24} {'min s':>7} {'median s':>9}  under {args.goal} s")
            for name, command in commands.items():
                seconds = timed([STEERLAB, *command], args.repeats, env)
                median = statistics.median(seconds)
                verdict = "yes" if median < args.goal else "NO"
                print(f"{name:<24} {min(seconds):>7.3f} {median:>9.3f}  {verdict}")


if __name__ == "__main__":
    main()
