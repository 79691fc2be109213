"""A synchronous client for the vector registry."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from steerlab_api.v1 import registry_pb2 as pb
from steerlab_api.v1 import registry_pb2_grpc
from steerlab_api.v1 import vectors_pb2 as vpb

from .channel import ServiceClient, new_request_id

_REF = re.compile(r"^(?P<dimension>[^@\s]+)(?:@(?P<target>[^@\s]+))?$")


@dataclass(frozen=True)
class VectorSetRef:
    """``cost``, ``cost@3`` or ``cost@production``: a dimension and an optional version or alias."""

    dimension: str
    version: int | None = None
    alias: str | None = None


def parse_vector_set_ref(text: str) -> VectorSetRef:
    """Parse ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS``."""
    match = _REF.match(text)
    if match is None:
        raise ValueError(f"expected NAME, NAME@VERSION or NAME@ALIAS, got {text!r}")
    target = match["target"]
    if target is None:
        return VectorSetRef(match["dimension"])
    if target.isdigit():
        return VectorSetRef(match["dimension"], version=int(target))
    return VectorSetRef(match["dimension"], alias=target)


class RegistryClient(ServiceClient):
    """Calls ``steerlab.v1.RegistryService`` at ``target`` (``host:port``).

    Every method raises :class:`ClientError` with the server's status code on failure.
    """

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)

    # -- dimensions -------------------------------------------------------------------------

    def create_dimension(
        self, name: str, negative_pole: str, positive_pole: str, description: str = "", tenant: str = ""
    ) -> vpb.Dimension:
        """A custom dimension, of the caller's tenant (with an API key) or shared (without);
        an admin names the ``tenant`` it is for (empty: shared)."""
        dimension = vpb.Dimension(
            name=name, negative_pole=negative_pole, positive_pole=positive_pole, description=description
        )
        request = pb.CreateDimensionRequest(dimension=dimension, tenant=tenant)
        return self._call(self._stub.CreateDimension, request).dimension

    def list_dimensions(self) -> list[vpb.Dimension]:
        return list(self._call(self._stub.ListDimensions, pb.ListDimensionsRequest()).dimensions)

    # -- vector sets ------------------------------------------------------------------------

    def push(
        self,
        file: str | Path | bytes,
        labels: dict[str, str] | None = None,
        author: str | None = None,
        request_id: str = "",
    ) -> vpb.VectorSet:
        """Register a vector set file as the next version of its dimension on its model.

        A repeated ``request_id`` (default: a new one) returns the first push's version.
        """
        data = file if isinstance(file, bytes) else Path(file).read_bytes()
        request = pb.CreateVectorSetRequest(
            file=data,
            labels=labels or {},
            author=getpass.getuser() if author is None else author,
            request_id=new_request_id(request_id),
        )
        return self._call(self._stub.CreateVectorSet, request).vector_set

    def get(
        self,
        dimension: str,
        version: int | None = None,
        alias: str | None = None,
        model: str = "",
        with_file: bool = False,
    ) -> vpb.VectorSet:
        """One version (by number, by alias, or the latest); ``with_file`` includes the vectors."""
        selector = pb.VectorSetSelector(dimension=dimension, model=model)
        if version is not None:
            selector.version = version
        if alias is not None:
            selector.alias = alias
        view = pb.VECTOR_SET_VIEW_FULL if with_file else pb.VECTOR_SET_VIEW_BASIC
        return self._call(
            self._stub.GetVectorSet, pb.GetVectorSetRequest(selector=selector, view=view)
        ).vector_set

    def pull(
        self,
        dimension: str,
        out: str | Path,
        version: int | None = None,
        alias: str | None = None,
        model: str = "",
    ) -> vpb.VectorSet:
        """Download a version into ``out``, a file ``steerlab generate --vectors`` reads."""
        vector_set = self.get(dimension, version=version, alias=alias, model=model, with_file=True)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(vector_set.file)
        temporary.replace(path)
        return vector_set

    def list_vector_sets_page(
        self,
        dimension: str = "",
        model: str = "",
        include_deleted: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListVectorSetsResponse:
        """One page of versions, oldest first; pass ``next_page_token`` back for the next."""
        request = pb.ListVectorSetsRequest(
            dimension=dimension,
            model=model,
            include_deleted=include_deleted,
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self._stub.ListVectorSets, request)

    def list_vector_sets(
        self, dimension: str = "", model: str = "", include_deleted: bool = False, page_size: int = 0
    ) -> Iterator[vpb.VectorSet]:
        """Every matching version, oldest first, fetched a page at a time."""
        token = ""
        while True:
            page = self.list_vector_sets_page(dimension, model, include_deleted, page_size, token)
            yield from page.vector_sets
            token = page.next_page_token
            if not token:
                return

    def delete(self, dimension: str, version: int, model: str = "") -> vpb.VectorSet:
        request = pb.DeleteVectorSetRequest(dimension=dimension, model=model, version=version)
        return self._call(self._stub.DeleteVectorSet, request).vector_set

    # -- aliases ----------------------------------------------------------------------------

    def set_alias(
        self, dimension: str, version: int, alias: str, model: str = "", updated_by: str | None = None
    ) -> pb.SetAliasResponse:
        """Point ``alias`` at ``version`` (promote or roll back); the response holds the old target."""
        request = pb.SetAliasRequest(
            dimension=dimension,
            model=model,
            alias=alias,
            version=version,
            updated_by=getpass.getuser() if updated_by is None else updated_by,
        )
        return self._call(self._stub.SetAlias, request)

    def list_aliases(self, dimension: str = "", model: str = "") -> list[vpb.Alias]:
        return list(
            self._call(
                self._stub.ListAliases, pb.ListAliasesRequest(dimension=dimension, model=model)
            ).aliases
        )
