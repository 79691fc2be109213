"""``steerlab jobs serve|submit|get|watch|list|cancel`` and ``steerlab worker``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from steerlab.cli_options import (
    add_address_option,
    add_extraction_options,
    add_service_commands,
    client_tls,
    extraction_parameters,
    parse_labels,
    server_flags,
)
from steerlab.settings import default_address

DEFAULT_SERVER = default_address("jobs")
DEFAULT_REGISTRY = default_address("registry")
BAR_WIDTH = 30


def add_commands(commands: Any) -> None:
    """Register the ``jobs`` group and ``worker`` on the top-level subparsers."""
    serve, job_commands = add_service_commands(commands, "jobs", "run extraction jobs and follow them")
    serve.add_argument(
        "--broker-url", help="Celery broker, e.g. redis://127.0.0.1:6379/0 (default: in-process worker)"
    )
    _add_registry_option(serve, "the in-process worker registers results with")
    serve.set_defaults(run=_serve)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = job_commands.add_parser(name, help=help_text)
        add_address_option(parser, "--server", "STEERLAB_JOBS", DEFAULT_SERVER, "job service")
        return parser

    submit = command("submit", "queue an extraction job")
    submit.add_argument(
        "--model", required=True, help="built-in model name or model directory on the workers"
    )
    source = submit.add_mutually_exclusive_group(required=True)
    source.add_argument("--dimension", help="a built-in dimension")
    source.add_argument("--dataset", help="a custom dataset file (JSON Lines), uploaded with the job")
    add_extraction_options(submit)
    submit.add_argument("--alias", default="", help="point this alias at the new version when done")
    submit.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    submit.add_argument("--author", default="", help="default: your user name")
    submit.add_argument("--watch", action="store_true", help="follow the job until it ends")
    submit.set_defaults(run=_submit)

    for name, help_text, run in (
        ("get", "show one job", _get),
        ("watch", "follow a job with a live progress bar until it ends", _watch),
        ("cancel", "cancel a queued or running job", _cancel),
    ):
        parser = command(name, help_text)
        parser.add_argument("id")
        parser.set_defaults(run=run)

    listing = command("list", "list jobs, newest first")
    listing.add_argument("--state", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)

    worker = commands.add_parser("worker", help="run a Celery worker for extraction jobs")
    worker.add_argument("--broker-url", help="default: $STEERLAB_BROKER_URL")
    worker.add_argument("--database-url", help="the job service's database (default: $STEERLAB_DATABASE_URL)")
    _add_registry_option(worker, "results are registered with")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (each loads a model)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(run=_worker)


def _add_registry_option(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument(
        "--registry",
        help=f"registry HOST:PORT {purpose} (default: $STEERLAB_REGISTRY or {DEFAULT_REGISTRY})",
    )


def _serve(args: argparse.Namespace) -> None:
    from steerlab.jobs.server import JobServer, JobServiceSettings
    from steerlab.jobs.worker import WorkerSettings
    from steerlab.serving.server import serve_from_command_line

    worker = WorkerSettings.from_env(
        database_url=args.database_url, broker_url=args.broker_url, registry=args.registry
    )
    settings = JobServiceSettings.from_env(worker=worker, **server_flags(args))
    server = JobServer(settings)
    try:
        server.start_background()
        serve_from_command_line(server.server, "jobs", server.describe())
    finally:
        server.close()


def _worker(args: argparse.Namespace) -> None:
    from steerlab.jobs.worker import QUEUE, WorkerSettings, worker_app

    settings = WorkerSettings.from_env(
        database_url=args.database_url, broker_url=args.broker_url, registry=args.registry
    )
    app = worker_app(settings)
    hostname = f"steerlab@{os.uname().nodename}.{os.getpid()}"
    options = ["--queues", QUEUE, "--concurrency", str(args.concurrency), "--loglevel", args.loglevel]
    app.worker_main(["worker", *options, "--without-gossip", "--without-mingle", "--hostname", hostname])


def _client(args: argparse.Namespace) -> Any:
    from steerlab_client import JobClient

    return JobClient(args.server, tls=client_tls(args))


def _submit(args: argparse.Namespace) -> None:
    import getpass

    parameters = extraction_parameters(args)
    with _client(args) as client:
        job = client.submit_extraction(
            args.model,
            dimension=args.dimension or "",
            dataset=args.dataset,
            alias=args.alias,
            labels=parse_labels(args.label),
            author=args.author or getpass.getuser(),
            **{**parameters, "top_k": parameters["top_k"] or 0},
        )
        print(f"job {job.id} queued: {job.dimension} on {job.spec.model}", flush=True)
        if args.watch:
            _follow(client, job.id)


def _get(args: argparse.Namespace) -> None:
    with _client(args) as client:
        print(describe(client.get(args.id)))


def _watch(args: argparse.Namespace) -> None:
    with _client(args) as client:
        _follow(client, args.id)


def _cancel(args: argparse.Namespace) -> None:
    with _client(args) as client:
        print(describe(client.cancel(args.id)))


def _list(args: argparse.Namespace) -> None:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as client:
        jobs = client.list(args.state or "")
    if args.json:
        print(json.dumps([MessageToDict(job) for job in jobs], indent=2))
        return
    print(f"{'id':<32}  {'state':<9}  {'dimension':<12}  {'model':<16}  {'progress':>8}  result")
    for job in jobs:
        print(
            f"{job.id:<32}  {_state(job):<9}  {job.dimension:<12}  {job.spec.model[:16]:<16}  "
            f"{job.progress.percent:7.0f}%  {_outcome(job)}"
        )


def _follow(client: Any, job_id: str) -> None:
    """A live progress bar on a terminal (one line per change otherwise) until the job ends."""
    live = sys.stdout.isatty()
    job = None
    for job in client.watch(job_id):
        line = progress_line(job)
        if live:
            print(f"\r{line:<100}", end="", flush=True)
        else:
            print(line, flush=True)
    if live:
        print()
    if job is not None:
        print(describe(job))
        if _state(job) != "succeeded":
            raise SystemExit(1)


def progress_line(job: Any) -> str:
    """``[#########.....................]  31% activations 3/7 batches``."""
    filled = round(BAR_WIDTH * job.progress.percent / 100)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"[{bar}] {job.progress.percent:3.0f}% {job.progress.stage} {job.progress.message}".rstrip()


def describe(job: Any) -> str:
    return f"job {job.id}: {_state(job)}, {job.dimension} on {job.spec.model}; {_outcome(job)}".rstrip("; ")


def _state(job: Any) -> str:
    from steerlab_client.jobs import state_name

    return state_name(job)


def _outcome(job: Any) -> str:
    if job.HasField("result"):
        alias = f" ({job.result.alias})" if job.result.alias else ""
        return f"{job.result.dimension} v{job.result.version}{alias}, attempt {job.attempts}"
    return str(job.error or job.progress.message)
