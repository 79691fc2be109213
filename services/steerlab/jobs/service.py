"""The gRPC face of the job service: specs are checked and queued; records are read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

import grpc

from steerlab.auth import current_principal, tenant_view
from steerlab.serving.messages import enum_choice, timestamp
from steerlab.steering.config import ExtractionConfig
from steerlab.steering.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnavailableError
from steerlab_api.v1 import jobs_pb2 as pb
from steerlab_api.v1 import jobs_pb2_grpc

from .spec import ExtractionJobSpec
from .store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobRecord, JobStore

SERVICE_NAME = "steerlab.v1.JobService"
# With --auth keys: jobs are for operators.
ROLES = {method: "operator" for method in ("SubmitExtraction", "GetJob", "WatchJob", "CancelJob", "ListJobs")}
AUDITED = frozenset({"SubmitExtraction", "CancelJob"})  # the calls that change something

STATE_VALUES = {
    QUEUED: pb.JOB_STATE_QUEUED,
    RUNNING: pb.JOB_STATE_RUNNING,
    SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    FAILED: pb.JOB_STATE_FAILED,
    CANCELLED: pb.JOB_STATE_CANCELLED,
}
STATES = {value: name for name, value in STATE_VALUES.items()}


def spec_from_proto(message: pb.ExtractionSpec) -> ExtractionJobSpec:
    """Unset fields take the core's defaults."""
    defaults = ExtractionConfig()
    try:
        dataset = message.dataset.decode() if message.WhichOneof("source") == "dataset" else ""
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"the dataset is not UTF-8 text: {exc}") from None
    config = ExtractionConfig(
        method=message.method or defaults.method,
        site=message.site or defaults.site,
        token_selection=message.token_selection or defaults.token_selection,
        num_tokens=message.num_tokens or defaults.num_tokens,
        top_k=message.top_k or None,
        perplexity_bound=message.perplexity_bound or defaults.perplexity_bound,
        repetition_bound=message.repetition_bound or defaults.repetition_bound,
        seed=message.seed if message.HasField("seed") else defaults.seed,
    )
    if message.top_k < 0 or message.num_tokens < 0:
        raise InvalidArgumentError("top_k and num_tokens must not be negative")
    return ExtractionJobSpec(
        model=message.model,
        dimension=message.dimension if message.WhichOneof("source") == "dimension" else "",
        dataset=dataset,
        config=config,
        alias=message.alias,
        labels=dict(message.labels),
        author=message.author,
    )


def spec_to_proto(spec: ExtractionJobSpec) -> pb.ExtractionSpec:
    """The spec as submitted, without the dataset's bytes."""
    config = spec.config
    return pb.ExtractionSpec(
        model=spec.model,
        dimension=spec.dimension,
        method=config.method,
        top_k=config.top_k or 0,
        site=config.site,
        token_selection=config.token_selection,
        num_tokens=config.num_tokens,
        perplexity_bound=config.perplexity_bound,
        repetition_bound=config.repetition_bound,
        seed=config.seed,
        alias=spec.alias,
        labels=spec.labels,
        author=spec.author,
    )


def job_to_proto(record: JobRecord) -> pb.Job:
    message = pb.Job(
        id=record.job_id,
        state=STATE_VALUES[record.state],
        spec=spec_to_proto(record.spec),
        dimension=record.dimension,
        progress=pb.JobProgress(stage=record.stage, percent=record.percent, message=record.message),
        error=record.error,
        attempts=record.attempts,
        create_time=timestamp(record.created_at),
    )
    if record.result is not None:
        message.result.CopyFrom(pb.JobResult(**asdict(record.result)))
    if record.started_at is not None:
        message.start_time.CopyFrom(timestamp(record.started_at))
    if record.finished_at is not None:
        message.end_time.CopyFrom(timestamp(record.finished_at))
    return message


def _visible(record: JobRecord) -> bool:
    """Whether the caller may see a job: an admin (or any caller without API keys) sees every
    job; a key of a tenant sees its tenant's (jobs are never shared)."""
    view = tenant_view()
    return view is None or record.tenant == view


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """``dispatch(job_id)`` hands a queued job to the broker."""

    def __init__(self, store: JobStore, dispatch: Callable[[str], None], watch_poll_s: float = 0.5) -> None:
        self.store = store
        self.dispatch = dispatch
        self.watch_poll_s = watch_poll_s

    async def SubmitExtraction(
        self, request: pb.SubmitExtractionRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitExtractionResponse:
        spec = spec_from_proto(request.spec)
        record = await asyncio.to_thread(self.submit, spec, request.request_id)
        return pb.SubmitExtractionResponse(job=job_to_proto(record))

    def submit(self, spec: ExtractionJobSpec, request_id: str = "") -> JobRecord:
        """Check ``spec``, record the job (the caller's tenant's) and queue it; returns the
        queued record. A repeated ``request_id`` returns the job the first call submitted, as it is now."""
        tenant = current_principal().tenant
        if request_id and (submitted := self.store.submitted(request_id)) is not None:
            if not _visible(submitted):
                raise AlreadyExistsError(f"request_id {request_id!r} was used by another tenant's job")
            return submitted
        checked, _dataset = spec.checked()
        record = self.store.create(checked, request_id, tenant)
        try:
            self.dispatch(record.job_id)
        except Exception as exc:
            reason = f"could not queue the job: the broker said {exc}"
            self.store.fail_queued(record.job_id, reason)
            raise UnavailableError(reason) from exc
        return record

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        record = await asyncio.to_thread(self._get, request.id)
        return pb.GetJobResponse(job=job_to_proto(record))

    def _get(self, job_id: str) -> JobRecord:
        """The job, if the caller's tenant may see it; NOT_FOUND otherwise, as for no job at all."""
        record = self.store.get(job_id)
        if not _visible(record):
            raise NotFoundError(f"no job {job_id!r}")
        return record

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchJobResponse]:
        last = None
        while True:
            record = await asyncio.to_thread(self._get, request.id)
            if record.progress_key() != last:
                last = record.progress_key()
                yield pb.WatchJobResponse(job=job_to_proto(record))
            if record.ended:
                return
            await asyncio.sleep(self.watch_poll_s)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobResponse:
        await asyncio.to_thread(self._get, request.id)
        record = await asyncio.to_thread(self.store.cancel, request.id)
        return pb.CancelJobResponse(job=job_to_proto(record))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        state = ""
        if request.state != pb.JOB_STATE_UNSPECIFIED:
            state = enum_choice(STATES, request.state, "state")
        records, next_token = await asyncio.to_thread(
            self.store.list_jobs, state, request.page_size, request.page_token, tenant_view()
        )
        return pb.ListJobsResponse(jobs=[job_to_proto(r) for r in records], next_page_token=next_token)
