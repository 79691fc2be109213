"""The continuous-batching engine: a scheduler thread around one :class:`ModelRunner`.

Requests are plain data. ``submit`` validates one and queues it, or refuses at once when the
queue is full. Between decode steps the scheduler drops cancelled and expired rows, admits
queued requests while the batch and token budget allow (one prefill forward for all that
join), then runs one decode forward for every row. Each row carries its own steering,
sampling parameters and stop strings, so a request's output does not depend on who shares
its batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..batching import AppliedStrength, RowSteering
from ..config import Sampling
from ..errors import (
    InvalidArgumentError,
    ResourceExhaustedError,
    SteerLabError,
    UnavailableError,
)
from ..models import LoadedModel
from .memory import MemoryTrimmer
from .runner import ModelRunner
from .sampler import SamplerRows, sample
from .text import IncrementalDecoder, RowText

log = logging.getLogger(__name__)

MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 64
IDLE_WAKE_S = 1.0


@dataclass(frozen=True)
class EngineSettings:
    """Capacity limits. The KV cache never holds more than ``max_batch_tokens`` token slots."""

    max_batch: int = 32
    max_batch_tokens: int = 65536
    max_queue: int = 256
    max_new_tokens: int = 1024

    def validate(self) -> None:
        for name in ("max_batch", "max_batch_tokens", "max_queue", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue: token ids, steering folded for it, and how to sample and stop."""

    prompt: Sequence[int]
    steering: RowSteering = field(default_factory=RowSteering.none)
    sampling: Sampling = field(default_factory=Sampling)
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() after which the request is dropped
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    """The last event of a request: why it ended, its text, token counts and timings."""

    reason: str  # "stop", "length", "cancelled", "deadline"
    text: str
    prompt_tokens: int
    completion_tokens: int
    queued_s: float
    time_to_first_token_s: float
    total_s: float
    applied: tuple[AppliedStrength, ...]


@dataclass(frozen=True)
class Failed:
    """The engine could not finish the request (the error says why)."""

    error: SteerLabError


Event = TextDelta | Finished | Failed


class EngineMetrics(Protocol):
    def queued(self, depth: int) -> None: ...
    def stepped(self, rows: int, tokens: int) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def finished(self, reason: str) -> None: ...


class _NoMetrics:
    def queued(self, depth: int) -> None:
        pass

    def stepped(self, rows: int, tokens: int) -> None:
        pass

    def first_token(self, seconds: float) -> None:
        pass

    def finished(self, reason: str) -> None:
        pass


class RequestHandle:
    """A submitted request: events go to ``sink``; ``cancel()`` frees its slot within one step."""

    def __init__(self, engine: InferenceEngine, request: GenerationRequest, sink: Callable[[Event], None]):
        self.request = request
        self.submitted_at = time.monotonic()
        self._engine = engine
        self._sink = sink
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self._engine.wake()

    def emit(self, event: Event) -> None:
        try:
            self._sink(event)
        except Exception:  # a caller that went away must not stop the engine
            log.warning("dropping a request whose caller is gone", exc_info=True)
            self.cancelled = True


@dataclass(eq=False)
class _Row:
    """A request while it runs: its handle, decoding state and timestamps."""

    handle: RequestHandle
    text: RowText
    admitted_at: float
    first_token_at: float | None = None
    seed: int = 0

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request


class InferenceEngine:
    """Serves many generation requests at once on one model; call :meth:`start` first."""

    def __init__(
        self,
        runner: ModelRunner,
        settings: EngineSettings | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.runner = runner
        self.settings = settings or EngineSettings()
        self.settings.validate()
        self.metrics = metrics or _NoMetrics()
        tokenizer = runner.lm.tokenizer
        self.context_length = _context_length(runner)
        self.eos_ids = _eos_ids(runner)
        self._decoder = IncrementalDecoder(tokenizer)
        self._waiting: deque[RequestHandle] = deque()
        self._rows: list[_Row] = []
        self._sampler: SamplerRows | None = None
        self._next_tokens = torch.zeros(0, dtype=torch.long)
        self._generated = torch.zeros(0, dtype=torch.long)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self.ready = threading.Event()  # set once the scheduler loop runs
        self._stopped = threading.Event()
        self._stopping = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        """The model this engine serves (on rank 0, with tensor parallelism)."""
        return self.runner.lm

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def dtype(self) -> torch.dtype:
        return self.runner.dtype

    def start(self) -> InferenceEngine:
        """Run the scheduler on a background thread."""
        self._running = True
        self._thread = threading.Thread(target=self._run, name="steerlab-engine", daemon=True)
        self._thread.start()
        return self

    def run_forever(self) -> None:
        """Run the scheduler on the calling thread until :meth:`stop`.

        A server calls this from its main thread: here forwards ran about a quarter faster on
        the thread that loaded the model than on a second one, most likely because libgomp
        stops spin-waiting once two OpenMP pools hold more threads than there are cores.
        """
        self._running = True
        self._run()

    def run_to_completion(self, requests: Sequence[GenerationRequest]) -> list[Finished | Failed]:
        """Run ``requests`` to their end on the calling thread and return how each ended, in order.

        The in-process way to use the engine (the core's ``generate``, the experiments): no
        scheduler thread, so the forwards run on the thread that loaded the model. Not for an
        engine that was started; the queue must hold all of ``requests``.
        """
        if self._running:
            raise RuntimeError("run_to_completion is for an engine that was not started")
        ended: dict[int, Finished | Failed] = {}

        def keep_end(index: int) -> Callable[[Event], None]:
            def sink(event: Event) -> None:
                if not isinstance(event, TextDelta):
                    ended[index] = event

            return sink

        self._running = True
        self._loop_thread = threading.current_thread()
        try:
            for index, request in enumerate(requests):
                self.submit(request, keep_end(index))
            while self._rows or self._waiting:
                self._iterate()
        finally:
            self._running = False
            self._shut_down()
        return [ended[index] for index in range(len(requests))]

    def stop(self) -> None:
        """Finish nothing more: queued and running requests fail with UNAVAILABLE."""
        with self._work:
            self._stopping = True
            self._work.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        elif self._running and threading.current_thread() is not self._loop_thread:
            self._stopped.wait()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._rows)

    def submit(self, request: GenerationRequest, sink: Callable[[Event], None]) -> RequestHandle:
        """Queue ``request``; its events go to ``sink`` (called from the engine thread).

        Raises :class:`InvalidArgumentError` for a request that can never run and
        :class:`ResourceExhaustedError` when the queue is full.
        """
        self._check(request)
        handle = RequestHandle(self, request, sink)
        with self._work:
            if self._stopping or not self._running:
                raise UnavailableError("the inference engine is not running")
            if self._full():
                raise self._queue_full()
            self._waiting.append(handle)
            self.metrics.queued(len(self._waiting))
            self._work.notify()
        return handle

    def generate(self, request: GenerationRequest) -> Iterator[Event]:
        """Submit and yield events until the last; closing the iterator cancels the request."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        handle = self.submit(request, events.put)
        try:
            while True:
                event = events.get()
                yield event
                if not isinstance(event, TextDelta):
                    return
        finally:
            handle.cancel()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Like :meth:`generate`, for asyncio callers; cancelling the task cancels the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def deliver(event: Event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        handle = self.submit(request, deliver)
        try:
            while True:
                event = await events.get()
                yield event
                if not isinstance(event, TextDelta):
                    return
        finally:
            handle.cancel()

    def wake(self) -> None:
        with self._work:
            self._work.notify()

    # -- validation -----------------------------------------------------------------------------

    def check_options(self, max_new_tokens: int, stop: Sequence[str]) -> None:
        """Refuse options no prompt could make valid, and a full queue (before any other work)."""
        limit = self.settings.max_new_tokens
        if not 1 <= max_new_tokens <= limit:
            raise InvalidArgumentError(f"max_new_tokens must be between 1 and {limit}, got {max_new_tokens}")
        if len(stop) > MAX_STOP_STRINGS or any(not 0 < len(s) <= MAX_STOP_LENGTH for s in stop):
            raise InvalidArgumentError(
                f"at most {MAX_STOP_STRINGS} stop strings, each 1 to {MAX_STOP_LENGTH} characters"
            )
        if self._full():
            raise self._queue_full()

    def _full(self) -> bool:
        """Whether ``max_queue`` requests wait beyond the free batch slots: a burst that arrives
        before the loop admits its first rows fills the batch, then the queue."""
        free_slots = max(0, self.settings.max_batch - len(self._rows))
        return len(self._waiting) >= self.settings.max_queue + free_slots

    def _queue_full(self) -> ResourceExhaustedError:
        return ResourceExhaustedError(
            f"the inference queue is full ({self.settings.max_queue} requests waiting); retry later"
        )

    def _check(self, request: GenerationRequest) -> None:
        request.sampling.validate()
        self.check_options(request.max_new_tokens, request.stop)
        prompt_tokens = len(request.prompt)
        if prompt_tokens == 0:
            raise InvalidArgumentError("the prompt is empty")
        if prompt_tokens + request.max_new_tokens > self.context_length:
            raise InvalidArgumentError(
                f"the prompt has {prompt_tokens} tokens and max_new_tokens is {request.max_new_tokens}; "
                f"together they exceed the model's context of {self.context_length} tokens"
            )
        if prompt_tokens + request.max_new_tokens > self.settings.max_batch_tokens:
            raise InvalidArgumentError(
                f"the request needs {prompt_tokens + request.max_new_tokens} token slots, more than the "
                f"server's batch budget of {self.settings.max_batch_tokens}"
            )

    # -- the scheduler loop ---------------------------------------------------------------------

    def _run(self) -> None:
        self._loop_thread = threading.current_thread()
        trimmer = MemoryTrimmer()
        self.ready.set()
        while True:
            trimmer.maybe_trim()
            with self._work:
                if self._stopping:
                    break
                if not self._rows and not self._waiting:
                    self._work.wait(IDLE_WAKE_S)
                    idle = not self._waiting and not self._stopping
                else:
                    idle = False
            if idle:
                self.runner.idle()
                continue
            try:
                self._iterate()
            except Exception as exc:  # a failed forward must not take the service down
                log.exception("engine step failed; failing the running requests")
                self._fail_running(UnavailableError(f"the model failed while generating: {exc}"))
        self._shut_down()

    def _iterate(self) -> None:
        self._drop_abandoned()
        self._admit()
        if self._rows:
            self._decode_step()

    def _drop_abandoned(self) -> None:
        """Cancelled or expired requests leave the queue and the batch."""
        now = time.monotonic()
        with self._work:
            for handle in [h for h in self._waiting if _abandoned(h, now)]:
                self._waiting.remove(handle)
                self._finish_queued(handle, "cancelled" if handle.cancelled else "deadline")
        gone = [i for i, row in enumerate(self._rows) if _abandoned(row.handle, now)]
        if gone:
            for i in gone:
                row = self._rows[i]
                self._finish(row, "cancelled" if row.handle.cancelled else "deadline")
            leaving = set(gone)
            self._retain([i for i in range(len(self._rows)) if i not in leaving])

    def _admit(self) -> None:
        joining = self._take_admissible()
        if not joining:
            return
        now = time.monotonic()
        rows = [_Row(h, RowText(stop=h.request.stop), now, seed=_seed(h.request)) for h in joining]
        try:
            logits = self.runner.prefill([r.request.prompt for r in rows], [r.request.steering for r in rows])
        except Exception:
            self._rows.extend(rows)  # so that the failure reaches them too
            raise
        sampler = SamplerRows.build([(r.request.sampling, r.seed) for r in rows], logits.device)
        first = sample(logits, sampler, torch.zeros(len(rows), dtype=torch.long, device=logits.device))
        self._rows.extend(rows)
        self._sampler = sampler if self._sampler is None else self._sampler.concat(sampler)
        self._next_tokens = torch.cat([self._next_tokens.to(first.device), first])
        self._generated = torch.cat([self._generated.to(first.device), torch.ones_like(first)])
        self._deliver(rows, first.tolist(), first_index=len(self._rows) - len(rows))

    def _take_admissible(self) -> list[RequestHandle]:
        """Queued requests that fit the batch size and the KV token budget, in arrival order."""
        widest = max((_final_length(row.request) for row in self._rows), default=0)
        joining: list[RequestHandle] = []
        with self._work:
            while self._waiting and len(self._rows) + len(joining) < self.settings.max_batch:
                candidate = self._waiting[0]
                width = max(widest, _final_length(candidate.request))
                if (len(self._rows) + len(joining) + 1) * width > self.settings.max_batch_tokens:
                    break
                joining.append(self._waiting.popleft())
                widest = width
            self.metrics.queued(len(self._waiting))
        return joining

    def _decode_step(self) -> None:
        assert self._sampler is not None
        logits = self.runner.decode(self._next_tokens)
        tokens = sample(logits, self._sampler, self._generated)
        self._next_tokens = tokens
        self._generated = self._generated + 1
        self.metrics.stepped(len(self._rows), len(self._rows))
        self._deliver(list(self._rows), tokens.tolist(), first_index=0)

    def _deliver(self, rows: Sequence[_Row], tokens: Sequence[int], first_index: int) -> None:
        """Send each row its new text; finish rows that hit EOS, a stop string or their length."""
        now = time.monotonic()
        deltas = self._decoder.advance([row.text for row in rows], tokens)
        done: set[int] = set()
        for offset, (row, token, delta) in enumerate(zip(rows, tokens, deltas, strict=True)):
            if row.first_token_at is None:
                row.first_token_at = now
                self.metrics.first_token(now - row.handle.submitted_at)
            if delta:
                row.handle.emit(TextDelta(delta))
            reason = self._finish_reason(row, token)
            if reason:
                self._finish(row, reason)
                done.add(first_index + offset)
        if done:
            self._retain([i for i in range(len(self._rows)) if i not in done])

    def _finish_reason(self, row: _Row, token: int) -> str | None:
        if row.text.stopped or (token in self.eos_ids and not row.request.ignore_eos):
            return "stop"
        if len(row.text.tokens) >= row.request.max_new_tokens:
            return "length"
        return None

    def _retain(self, keep: list[int]) -> None:
        self.runner.retain(keep)
        index = torch.tensor(keep, dtype=torch.long, device=self._next_tokens.device)
        self._rows = [self._rows[i] for i in keep]
        self._next_tokens = self._next_tokens[index]
        self._generated = self._generated[index]
        self._sampler = self._sampler.select(index) if keep and self._sampler is not None else None

    # -- finishing ------------------------------------------------------------------------------

    def _finish(self, row: _Row, reason: str) -> None:
        rest = self._decoder.finish(row.text)
        if rest and reason in ("stop", "length"):
            row.handle.emit(TextDelta(rest))
        now = time.monotonic()
        submitted = row.handle.submitted_at
        completion = len(row.text.tokens)  # an EOS token counts as generated
        row.handle.emit(
            Finished(
                reason=reason,
                text=row.text.text,
                prompt_tokens=len(row.request.prompt),
                completion_tokens=completion,
                queued_s=row.admitted_at - submitted,
                time_to_first_token_s=(row.first_token_at or now) - submitted,
                total_s=now - submitted,
                applied=row.request.steering.applied,
            )
        )
        self.metrics.finished(reason)

    def _finish_queued(self, handle: RequestHandle, reason: str) -> None:
        waited = time.monotonic() - handle.submitted_at
        handle.emit(
            Finished(
                reason,
                "",
                len(handle.request.prompt),
                0,
                waited,
                waited,
                waited,
                handle.request.steering.applied,
            )
        )
        self.metrics.finished(reason)

    def _fail_running(self, error: SteerLabError) -> None:
        for row in self._rows:
            row.handle.emit(Failed(error))
        try:
            self.runner.retain([])
        except Exception:
            log.exception("could not reset the batch")
        self._rows = []
        self._sampler = None
        self._next_tokens = torch.zeros(0, dtype=torch.long)
        self._generated = torch.zeros(0, dtype=torch.long)

    def _shut_down(self) -> None:
        error = UnavailableError("the inference server is shutting down")
        with self._work:
            waiting, self._waiting = list(self._waiting), deque()
        for handle in waiting:
            handle.emit(Failed(error))
        self._fail_running(error)
        self.runner.close()
        self._stopped.set()


def _abandoned(handle: RequestHandle, now: float) -> bool:
    deadline = handle.request.deadline
    return handle.cancelled or (deadline is not None and now >= deadline)


def _final_length(request: GenerationRequest) -> int:
    return len(request.prompt) + request.max_new_tokens


def _seed(request: GenerationRequest) -> int:
    seed = request.sampling.seed
    return seed if seed is not None else secrets.randbits(63)


def _context_length(runner: ModelRunner) -> int:
    config = runner.lm.model.config.get_text_config()
    return int(getattr(config, "max_position_embeddings", 0) or 2048)


def _eos_ids(runner: ModelRunner) -> frozenset[int]:
    ids: set[int] = set()
    candidates = [runner.lm.tokenizer.eos_token_id]
    generation_config = getattr(runner.lm.model, "generation_config", None)
    if generation_config is not None:
        candidates.append(generation_config.eos_token_id)
    for candidate in candidates:
        if isinstance(candidate, int):
            ids.add(candidate)
        elif isinstance(candidate, list):
            ids.update(int(c) for c in candidate)
    return frozenset(ids)
