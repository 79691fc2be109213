"""The gRPC face of the registry: proto messages in, store calls (in worker threads) out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import grpc

from steerlab.auth import current_principal, may_see, tenant_view
from steerlab.serving.messages import enum_choice, timestamp
from steerlab.steering.datasets import Dimension
from steerlab.steering.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from steerlab.steering.vectorset import VectorSet
from steerlab_api.v1 import registry_pb2 as pb
from steerlab_api.v1 import registry_pb2_grpc
from steerlab_api.v1 import vectors_pb2 as vpb

from .store import DELETED, AliasRecord, DimensionRecord, RegistryStore, VectorSetRecord

SERVICE_NAME = "steerlab.v1.RegistryService"
VIEWS = {
    pb.VECTOR_SET_VIEW_UNSPECIFIED: "basic",
    pb.VECTOR_SET_VIEW_BASIC: "basic",
    pb.VECTOR_SET_VIEW_FULL: "full",
}
# With --auth keys: reading is for every user; changing the registry is for operators.
ROLES = {
    "CreateDimension": "operator",
    "CreateVectorSet": "operator",
    "DeleteVectorSet": "operator",
    "SetAlias": "operator",
}
# The calls that change the registry, each written to the audit log: those an operator may make.
AUDITED = frozenset(ROLES)


def dimension_to_proto(record: DimensionRecord) -> vpb.Dimension:
    d = record.dimension
    return vpb.Dimension(
        name=d.name,
        negative_pole=d.negative_pole,
        positive_pole=d.positive_pole,
        description=d.description,
        create_time=timestamp(record.created_at),
        tenant=record.tenant,
    )


def vector_set_to_proto(record: VectorSetRecord, with_file: bool = False) -> vpb.VectorSet:
    meta = record.metadata
    message = vpb.VectorSet(
        dimension=record.dimension,
        version=record.version,
        model=vpb.ModelFingerprint(**meta["model"]),
        model_name=record.model_name,
        method=meta["method"],
        site=meta["site"],
        parameters_json=json.dumps(meta["parameters"], sort_keys=True),
        selected_layers=meta["selected_layers"],
        layer_scores=[vpb.LayerScore(**score) for score in meta["layer_scores"]],
        alpha_max=meta["alpha_max"],
        dataset_hash=meta["dataset_hash"],
        labels=record.labels,
        author=record.author,
        create_time=timestamp(record.created_at),
        status=vpb.VECTOR_SET_STATUS_DELETED if record.status == DELETED else vpb.VECTOR_SET_STATUS_ACTIVE,
        aliases=record.aliases,
        vectors_sha256=record.vectors_sha256,
    )
    if with_file:
        message.file = record.vector_set().to_bytes()
    return message


def alias_to_proto(record: AliasRecord) -> vpb.Alias:
    return vpb.Alias(
        name=record.name,
        dimension=record.dimension,
        model_digest=record.model_digest,
        version=record.version,
        update_time=timestamp(record.updated_at),
        updated_by=record.updated_by,
    )


def owner(requested: str) -> str:
    """The tenant a new dimension belongs to: an admin names it (empty: shared); any other key's
    is its own tenant."""
    principal = current_principal()
    if principal.is_admin:
        return requested
    if requested and requested != principal.tenant:
        raise PermissionDeniedError(f"this key creates dimensions for tenant {principal.tenant!r} only")
    return principal.tenant


def _positive_version(version: int) -> int:
    if version < 1:
        raise InvalidArgumentError(f"version must be 1 or more, got {version}")
    return version


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Implements ``steerlab.v1.RegistryService`` over a :class:`RegistryStore`.

    Store calls block on the database, so each runs in a worker thread; the event loop keeps
    serving other calls meanwhile.
    """

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    # -- tenants: a custom dimension, its vector sets and aliases are its tenant's alone ------

    def _visible_dimensions(self) -> list[DimensionRecord]:
        return [r for r in self.store.list_dimensions() if may_see(r.tenant)]

    def _visible(self) -> Callable[[str], bool]:
        """Whether the caller may see a dimension, by name (an admin, or no keys: all)."""
        if tenant_view() is None:
            return lambda _name: True
        return {r.dimension.name for r in self._visible_dimensions()}.__contains__

    def _check_visible(self, dimension: str) -> None:
        """NOT_FOUND for another tenant's dimension, exactly as for one that does not exist."""
        if tenant_view() is None:
            return
        names = [r.dimension.name for r in self._visible_dimensions()]
        if dimension not in names:
            raise NotFoundError(f"unknown dimension {dimension!r}; registered dimensions: {', '.join(names)}")

    async def CreateDimension(
        self, request: pb.CreateDimensionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDimensionResponse:
        d = request.dimension
        dimension = Dimension(d.name, d.negative_pole, d.positive_pole, d.description)
        record = await asyncio.to_thread(self.store.create_dimension, dimension, owner(request.tenant))
        return pb.CreateDimensionResponse(dimension=dimension_to_proto(record))

    async def ListDimensions(
        self, request: pb.ListDimensionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDimensionsResponse:
        records = await asyncio.to_thread(self._visible_dimensions)
        return pb.ListDimensionsResponse(dimensions=[dimension_to_proto(r) for r in records])

    async def CreateVectorSet(
        self, request: pb.CreateVectorSetRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateVectorSetResponse:
        if not request.file:
            raise InvalidArgumentError("no vector set file given")
        record = await asyncio.to_thread(self._create, request)
        return pb.CreateVectorSetResponse(vector_set=vector_set_to_proto(record))

    def _create(self, request: pb.CreateVectorSetRequest) -> VectorSetRecord:
        vector_set = VectorSet.from_bytes(request.file, source="the uploaded file")
        self._check_visible(vector_set.name)
        return self.store.create_vector_set(
            vector_set, author=request.author, labels=dict(request.labels), request_id=request.request_id
        )

    async def GetVectorSet(
        self, request: pb.GetVectorSetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetVectorSetResponse:
        full = enum_choice(VIEWS, request.view, "view") == "full"
        message = await asyncio.to_thread(self._get, request.selector, full)
        return pb.GetVectorSetResponse(vector_set=message)

    def _get(self, selector: pb.VectorSetSelector, full: bool) -> vpb.VectorSet:
        target = selector.WhichOneof("target")
        self._check_visible(selector.dimension)
        record = self.store.get_vector_set(
            selector.dimension,
            selector.model,
            version=_positive_version(selector.version) if target == "version" else None,
            alias=selector.alias if target == "alias" else None,
            with_vectors=full,
        )
        return vector_set_to_proto(record, with_file=full)

    async def ListVectorSets(
        self, request: pb.ListVectorSetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVectorSetsResponse:
        def listed() -> tuple[list[VectorSetRecord], str]:
            if request.dimension:
                self._check_visible(request.dimension)
            page = self.store.list_vector_sets(
                request.dimension,
                request.model,
                request.include_deleted,
                request.page_size,
                request.page_token,
            )
            visible = self._visible()  # without a dimension: a page may come back short
            return [r for r in page.records if visible(r.dimension)], page.next_page_token

        records, token = await asyncio.to_thread(listed)
        return pb.ListVectorSetsResponse(
            vector_sets=[vector_set_to_proto(r) for r in records], next_page_token=token
        )

    async def DeleteVectorSet(
        self, request: pb.DeleteVectorSetRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteVectorSetResponse:
        await asyncio.to_thread(self._check_visible, request.dimension)
        record = await asyncio.to_thread(
            self.store.delete_vector_set, request.dimension, request.model, _positive_version(request.version)
        )
        return pb.DeleteVectorSetResponse(vector_set=vector_set_to_proto(record))

    async def SetAlias(
        self, request: pb.SetAliasRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetAliasResponse:
        await asyncio.to_thread(self._check_visible, request.dimension)
        alias, previous = await asyncio.to_thread(
            self.store.set_alias,
            request.dimension,
            request.model,
            request.alias,
            _positive_version(request.version),
            request.updated_by,
        )
        return pb.SetAliasResponse(alias=alias_to_proto(alias), previous_version=previous)

    async def ListAliases(
        self, request: pb.ListAliasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAliasesResponse:
        def listed() -> list[AliasRecord]:
            if request.dimension:
                self._check_visible(request.dimension)
            visible = self._visible()
            return [
                r for r in self.store.list_aliases(request.dimension, request.model) if visible(r.dimension)
            ]

        return pb.ListAliasesResponse(aliases=[alias_to_proto(r) for r in await asyncio.to_thread(listed)])
