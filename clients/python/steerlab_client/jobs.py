"""A synchronous client for the extraction job service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc

from steerlab_api.v1 import jobs_pb2 as pb
from steerlab_api.v1 import jobs_pb2_grpc

from .channel import ServiceClient, new_request_id

STATES = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}
STATE_NAMES = {value: name for name, value in STATES.items()}
ENDED = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def state_name(job: pb.Job) -> str:
    return STATE_NAMES.get(job.state, "unknown")


class JobClient(ServiceClient):
    """Calls ``steerlab.v1.JobService``; every method raises :class:`ClientError` on failure.

    >>> with JobClient("localhost:50054") as jobs:
    ...     job = jobs.submit_extraction("smollm2-135m", dimension="cost", alias="production")
    ...     for update in jobs.watch(job.id):
    ...         print(update.progress.stage, update.progress.percent)
    """

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = jobs_pb2_grpc.JobServiceStub(channel)

    def submit_extraction(
        self,
        model: str,
        dimension: str = "",
        dataset: str | Path | bytes | None = None,
        *,
        alias: str = "",
        labels: dict[str, str] | None = None,
        author: str = "",
        method: str = "",
        top_k: int = 0,
        site: str = "",
        token_selection: str = "",
        num_tokens: int = 0,
        perplexity_bound: float = 0.0,
        repetition_bound: float = 0.0,
        seed: int | None = None,
        request_id: str = "",
    ) -> pb.Job:
        """Queue an extraction of a built-in ``dimension`` or a custom ``dataset`` (a JSON Lines
        file's path or bytes). Unset parameters take the core's defaults. A repeated
        ``request_id`` (default: a new one) returns the job the first call queued."""
        spec = pb.ExtractionSpec(
            model=model,
            alias=alias,
            labels=labels or {},
            author=author,
            method=method,
            top_k=top_k,
            site=site,
            token_selection=token_selection,
            num_tokens=num_tokens,
            perplexity_bound=perplexity_bound,
            repetition_bound=repetition_bound,
            seed=seed,
        )
        if dataset is not None:
            spec.dataset = dataset if isinstance(dataset, bytes) else Path(dataset).read_bytes()
        else:
            spec.dimension = dimension
        request = pb.SubmitExtractionRequest(spec=spec, request_id=new_request_id(request_id))
        return self._call(self._stub.SubmitExtraction, request).job

    def get(self, job_id: str) -> pb.Job:
        return self._call(self._stub.GetJob, pb.GetJobRequest(id=job_id)).job

    def watch(self, job_id: str, timeout_s: float | None = None) -> Iterator[pb.Job]:
        """The job now, then at every change of state or progress, until it ends (no deadline
        unless ``timeout_s``)."""
        for response in self._stream(self._stub.WatchJob, pb.WatchJobRequest(id=job_id), timeout_s):
            yield response.job

    def wait(self, job_id: str, timeout_s: float | None = None) -> pb.Job:
        """Block until the job ends; returns its final record."""
        last = self.get(job_id)
        for update in self.watch(job_id, timeout_s):
            last = update
        return last

    def cancel(self, job_id: str) -> pb.Job:
        return self._call(self._stub.CancelJob, pb.CancelJobRequest(id=job_id)).job

    def list(self, state: str = "", page_size: int = 0) -> list[pb.Job]:
        """Every job (newest first), or those in ``state``."""
        jobs: list[pb.Job] = []
        token = ""
        while True:
            request = pb.ListJobsRequest(
                state=STATES[state] if state else pb.JOB_STATE_UNSPECIFIED,
                page_size=page_size,
                page_token=token,
            )
            response = self._call(self._stub.ListJobs, request)
            jobs.extend(response.jobs)
            token = response.next_page_token
            if not token:
                return jobs
