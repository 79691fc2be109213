"""``steerlab registry serve`` and ``steerlab vectors push|list|pull|alias|delete``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from steerlab.cli_options import add_address_option, add_serve_command, client_tls, parse_labels, server_flags
from steerlab.settings import default_address

DEFAULT_REGISTRY = default_address("registry")


def add_commands(commands: Any) -> None:
    """Register the ``registry`` and ``vectors`` command groups on the top-level subparsers."""
    serve = add_serve_command(commands, "registry", "run the vector registry service")
    serve.set_defaults(run=_serve)

    vectors = commands.add_parser("vectors", help="push, list, pull and alias vector sets in a registry")
    vector_commands = vectors.add_subparsers(
        dest="vectors_command", required=True, parser_class=type(vectors)
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = vector_commands.add_parser(name, help=help_text)
        add_address_option(parser, "--registry", "STEERLAB_REGISTRY", DEFAULT_REGISTRY, "registry")
        return parser

    push = command("push", "register a vector set file as a new version")
    push.add_argument("file")
    push.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    push.add_argument("--author", help="default: your user name")
    push.add_argument("--alias", help="also point this alias at the new version")
    push.add_argument(
        "--create-dimension",
        action="store_true",
        help="register the file's dimension if the registry lacks it",
    )
    push.set_defaults(run=_push)

    listing = command("list", "list vector set versions")
    listing.add_argument("--dimension", default="")
    listing.add_argument("--model", default="", help="model name or weights digest prefix")
    listing.add_argument("--all", action="store_true", help="include deleted versions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)

    pull = command("pull", "download a version as a vector set file")
    pull.add_argument("ref", metavar="NAME[@VERSION|@ALIAS]")
    pull.add_argument("--model", default="", help="needed when several models have this dimension")
    pull.add_argument("--out", required=True, help="output .safetensors file")
    pull.set_defaults(run=_pull)

    alias = command("alias", "point an alias at a version (promote or roll back)")
    alias.add_argument("ref", metavar="NAME@VERSION")
    alias.add_argument("alias")
    alias.add_argument("--model", default="")
    alias.set_defaults(run=_alias)

    delete = command("delete", "delete a version that no alias points to")
    delete.add_argument("ref", metavar="NAME@VERSION")
    delete.add_argument("--model", default="")
    delete.set_defaults(run=_delete)


def _serve(args: argparse.Namespace) -> None:
    from steerlab.registry.server import RegistrySettings, build_registry_server
    from steerlab.serving.server import serve_from_command_line

    settings = RegistrySettings.from_env(
        database_url=args.database_url,
        **server_flags(args),
    )
    server, store = build_registry_server(settings)
    try:
        serve_from_command_line(server, "registry", f"database {store.database.description}")
    finally:
        store.close()


def _client(args: argparse.Namespace) -> Any:
    from steerlab_client import RegistryClient

    return RegistryClient(args.registry, tls=client_tls(args))


def _ref(text: str, need_version: bool = False) -> Any:
    from steerlab_client import parse_vector_set_ref

    ref = parse_vector_set_ref(text)
    if need_version and ref.version is None:
        raise ValueError(f"expected NAME@VERSION with a version number, got {text!r}")
    return ref


def _model_label(vector_set: Any) -> str:
    from steerlab.steering.catalog import describe_model

    return describe_model(vector_set.model_name, vector_set.model.weights_digest)


def describe(vector_set: Any) -> str:
    """``cost v3 (smollm2-135m 1a2b3c4d5e6f)``."""
    return f"{vector_set.dimension} v{vector_set.version} ({_model_label(vector_set)})"


def _push(args: argparse.Namespace) -> None:
    from pathlib import Path

    import grpc

    from steerlab.steering.vectorset import VectorSet
    from steerlab_client import ClientError

    data = Path(args.file).read_bytes()
    vector_set = VectorSet.from_bytes(data, source=args.file)  # fail here, before any upload
    labels = parse_labels(args.label)
    with _client(args) as client:
        if args.create_dimension:
            dim = vector_set.dimension
            try:
                client.create_dimension(dim.name, dim.negative_pole, dim.positive_pole, dim.description)
                print(f"registered dimension {dim.name} ({dim.negative_pole} <-> {dim.positive_pole})")
            except ClientError as exc:
                if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                    raise
        pushed = client.push(data, labels=labels, author=args.author)
        print(
            f"pushed {describe(pushed)}: {len(pushed.selected_layers)} layers, "
            f"alpha_max {pushed.alpha_max:.3g}, sha256 {pushed.vectors_sha256[:12]}"
        )
        if args.alias:
            moved = client.set_alias(
                pushed.dimension, pushed.version, args.alias, model=pushed.model.weights_digest
            )
            print(_alias_line(moved, pushed))


def _alias_line(response: Any, vector_set: Any) -> str:
    before = f"v{response.previous_version}" if response.previous_version else "(new)"
    return f"{response.alias.name}: {vector_set.dimension} {before} -> v{response.alias.version}"


def _list(args: argparse.Namespace) -> None:
    from google.protobuf.json_format import MessageToDict

    from steerlab_api.v1.vectors_pb2 import VECTOR_SET_STATUS_DELETED

    with _client(args) as client:
        rows = list(
            client.list_vector_sets(dimension=args.dimension, model=args.model, include_deleted=args.all)
        )
    if args.json:
        print(json.dumps([MessageToDict(row, preserving_proto_field_name=True) for row in rows], indent=2))
        return
    if not rows:
        print("no vector sets")
        return
    header = f"{'dimension':<12} {'ver':>4} {'model':<28} {'layers':>6} {'acc':>5} {'alpha_max':>9} "
    print(header + f"{'created (UTC)':<16} {'author':<10} aliases")
    for row in rows:
        model = _model_label(row)
        selected = [s for s in row.layer_scores if s.layer in set(row.selected_layers)]
        accuracy = sum(s.heldout_accuracy for s in selected) / max(1, len(selected))
        created = row.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M")
        aliases = ",".join(row.aliases) + (" [deleted]" if row.status == VECTOR_SET_STATUS_DELETED else "")
        print(
            f"{row.dimension:<12} {row.version:>4} {model[:28]:<28} {len(row.selected_layers):>6} "
            f"{accuracy:>5.3f} {row.alpha_max:>9.3g} {created:<16} {row.author[:10]:<10} {aliases}"
        )


def _pull(args: argparse.Namespace) -> None:
    ref = _ref(args.ref)
    with _client(args) as client:
        pulled = client.pull(ref.dimension, args.out, version=ref.version, alias=ref.alias, model=args.model)
    print(f"pulled {describe(pulled)} to {args.out}")


def _alias(args: argparse.Namespace) -> None:
    ref = _ref(args.ref, need_version=True)
    with _client(args) as client:
        moved = client.set_alias(ref.dimension, ref.version, args.alias, model=args.model)
        target = client.get(ref.dimension, version=ref.version, model=args.model)
    print(_alias_line(moved, target) + f" ({_model_label(target)})")


def _delete(args: argparse.Namespace) -> None:
    ref = _ref(args.ref, need_version=True)
    with _client(args) as client:
        deleted = client.delete(ref.dimension, ref.version, model=args.model)
    print(f"deleted {describe(deleted)}")
