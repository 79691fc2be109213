"""Long fuzzing runs: the harness of tests/test_fuzz.py, with as many examples as you like.

Starts the registry, session, job and inference services on each backend (SQLite, and a fresh
PostgreSQL database when one answers), sends ``--examples`` Hypothesis-drawn requests and as
many undecodable byte strings to every RPC, and prints a table (RPC, backend, examples,
INTERNAL, UNKNOWN, hangs, lost answers, relayed INTERNALs, slowest call, statuses) and every
distinct failure with the smallest request seen for it. Exits 1 when anything failed.

    .venv/bin/python scripts/fuzz.py [--examples 200] [--backend all|sqlite|postgresql]
        [--rpc Session] [--random] [--deadline 15] [--no-bytes] [--reasons] [--save DIR]

``--save DIR`` writes each failing request's bytes (DIR/001.bin, ...; DIR/index.tsv says which
RPC, backend and status), to replay with ``channel.unary_unary(path)(data)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzz_platform import (
    BACKENDS,
    backend_database,
    fuzz_model,
    fuzz_requests,
    fuzz_undecodable,
    start_platform,
)
from fuzz_support import Tally, Violation, all_rpcs, health, reasons, report
from service_support import postgres_available

from steerlab.steering import LoadedModel


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="per RPC, backend and kind of request")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--rpc", default="", help="only RPCs whose Service.Method label contains this")
    parser.add_argument("--random", action="store_true", help="new examples each run (default: derandomized)")
    parser.add_argument("--deadline", type=float, default=15.0, help="seconds before a call is a hang")
    parser.add_argument("--no-bytes", action="store_true", help="skip the undecodable byte strings")
    parser.add_argument("--reasons", action="store_true", help="also print the commonest answers per RPC")
    parser.add_argument("--save", type=Path, help="write each distinct failure's request bytes here")
    return parser.parse_args()


def backends(choice: str) -> tuple[str, ...]:
    """The backends to fuzz: PostgreSQL only when it answers."""
    chosen: tuple[str, ...] = BACKENDS if choice == "all" else (choice,)
    if "postgresql" in chosen and (why := postgres_available()) is not None:
        print(f"fuzz: skipping PostgreSQL: {why}", file=sys.stderr)
        chosen = tuple(b for b in chosen if b != "postgresql")
    return chosen


def fuzz_backend(backend: str, lm: LoadedModel, tally: Tally, args: argparse.Namespace) -> list[str]:
    """Fuzz every chosen RPC on a fresh database of ``backend``; returns the services that
    stopped answering SERVING (and after which RPC)."""
    rpcs = [rpc for rpc in all_rpcs() if args.rpc in rpc.label]
    runs = [fuzz_requests] if args.no_bytes else [fuzz_requests, fuzz_undecodable]
    unhealthy, started = [], time.monotonic()
    with tempfile.TemporaryDirectory() as directory, backend_database(backend, Path(directory)) as url:
        platform = start_platform(backend, url, lm)
        try:
            for rpc in rpcs:
                for run in runs:
                    run(platform, rpc, tally, args.examples, args.deadline, not args.random)
                if (status := health(platform.channels[rpc.service])) != "SERVING":
                    unhealthy.append(f"{rpc.service} on {backend} after {rpc.name}: {status}")
                print(f"fuzz: {backend} {rpc.label} done ({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            platform.close()
    return unhealthy


def save(found: list[Violation], directory: Path) -> None:
    """One file per distinct failure: the request exactly as sent (serialized protobuf, or the
    undecodable bytes), to replay; an index names the RPC, backend and status of each."""
    directory.mkdir(parents=True, exist_ok=True)
    index = []
    for number, violation in enumerate(found, 1):
        (directory / f"{number:03d}.bin").write_bytes(violation.payload)
        fields = (violation.rpc, violation.backend, violation.code, repr(violation.details[:200]))
        index.append("\t".join((f"{number:03d}.bin", *fields)))
    (directory / "index.tsv").write_text("\n".join(index) + "\n")
    print(f"fuzz: {len(found)} failing requests written to {directory}")


def main() -> int:
    args = parse_args()
    tally, lm, unhealthy = Tally(), fuzz_model(), []
    with tempfile.TemporaryDirectory(prefix="steerlab-fuzz-learn-") as learn_cache:
        os.environ["STEERLAB_LEARN_CACHE"] = learn_cache  # LEARN's bank embeddings: not the shared cache
        for backend in backends(args.backend):
            unhealthy += fuzz_backend(backend, lm, tally, args)
    print(tally.table())
    if args.reasons:
        print("\nCommonest answers:\n" + reasons(tally))
    found = tally.found()
    print(f"\n{len(found)} distinct failures" + (":\n" + report(found) if found else ""))
    print("\n".join(["", *unhealthy]) if unhealthy else "every service stayed SERVING")
    if args.save:
        save(found, args.save)
    return 1 if found or unhealthy else 0


if __name__ == "__main__":
    sys.exit(main())
