"""The gRPC face of the inference service: requests become engine requests, events become messages."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from steerlab.auth import current_principal
from steerlab.serving.relay import relayed
from steerlab.steering.batching import AppliedStrength, fold_mix
from steerlab.steering.chat import Message, encode_prompt
from steerlab.steering.config import Sampling, check_strength
from steerlab.steering.engine import Failed, Finished, GenerationRequest, InferenceEngine, TextDelta
from steerlab.steering.errors import (
    AbortedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from steerlab.storage.requests import MAX_PARENT_REQUEST_ID_LENGTH, check_request_id
from steerlab_api.v1 import inference_pb2 as pb
from steerlab_api.v1 import inference_pb2_grpc
from steerlab_api.v1 import sessions_pb2 as spb
from steerlab_api.v1 import vectors_pb2 as vpb

from .vectors import Pin, VectorSetCache

if TYPE_CHECKING:
    from steerlab_client import SessionClient

SERVICE_NAME = "steerlab.v1.InferenceService"
ROLES = ("system", "user", "assistant")
# A request's messages, before they are tokenized (the context length bounds them after).
MAX_MESSAGES = 1024
MAX_PROMPT_CHARACTERS = 1_000_000
# How long a message to a session waits for the answer to an earlier one (within its deadline).
MAX_TURN_WAIT_S = 60.0
FINISH_REASONS = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}


@dataclass(frozen=True)
class Conversation:
    """What to answer and with which strengths, after the session (if any) has been read."""

    messages: list[Message]
    strengths: dict[str, float]
    session_id: str = ""
    request_id: str = ""  # the turns it records derive their request ids from this one
    user_texts: tuple[str, ...] = ()  # the new message(s), recorded with the answer
    turn_count: int = 0  # the session's turns the answer is generated from


class SessionLink:
    """Reads a session as it would be with the user's new message(s), and records them with the
    complete answer as one unit, over gRPC: a request refused, failed or cancelled on the way
    records nothing."""

    def __init__(self, client: SessionClient, model_name: str) -> None:
        self.client = client
        self.model_name = model_name

    def _client(self) -> SessionClient:
        """With API keys, the session service is called with the caller's own key, so that it
        serves only the caller's sessions; otherwise with this service's credential."""
        principal = current_principal()
        return self.client.with_token(principal.credential) if principal.keyed else self.client

    def begin(self, session_id: str, user_texts: Sequence[str], request_id: str = "") -> Conversation:
        """The conversation to answer: the session's history and the new message(s), with the
        strengths LEARN would leave after them. Nothing is written yet."""
        with relayed("session service"):
            session = self._client().preview_exchange(session_id, list(user_texts)).session
        if session.model and session.model != self.model_name:
            raise FailedPreconditionError(
                f"session {session_id} answers with model {session.model!r}; "
                f"this server runs {self.model_name!r}"
            )
        history = [(ROLE_NAMES[turn.role], turn.text) for turn in session.turns]
        messages = alternating([*history, *(("user", text) for text in user_texts)])
        return Conversation(
            messages, dict(session.strengths), session_id, request_id, tuple(user_texts), session.turn_count
        )

    def record(
        self,
        conversation: Conversation,
        text: str,
        applied: Sequence[AppliedStrength],
        model_digest: str,
    ) -> int:
        """Record the exchange; the answer's turn index. ABORTED if the session gained other
        turns meanwhile (the answer did not see them)."""
        used = [
            spb.SteeringUsed(
                dimension=a.dimension,
                vector_set_version=a.version,
                model_digest=model_digest,
                strength=a.percent,
            )
            for a in applied
        ]
        with relayed("session service"):
            recorded = self._client().record_exchange(
                conversation.session_id,
                list(conversation.user_texts),
                text,
                used,
                expected_turn_count=conversation.turn_count,
                request_id=conversation.request_id,
            )
        return int(recorded.turns[-1].index)


ROLE_NAMES = {spb.ROLE_USER: "user", spb.ROLE_ASSISTANT: "assistant"}


def alternating(turns: Sequence[tuple[str, str]]) -> list[Message]:
    """Chat messages from ``(role, text)`` turns, consecutive turns of one role joined: many chat
    templates refuse two user messages in a row, which a session may hold (messages recorded
    with AppendTurn, or a user sending two at once)."""
    messages: list[Message] = []
    for role, text in turns:
        if messages and messages[-1]["role"] == role:
            messages[-1] = {"role": role, "content": f"{messages[-1]['content']}\n\n{text}"}
        else:
            messages.append({"role": role, "content": text})
    return messages


def generated_tokens(response: pb.GenerateResponse) -> int:
    """The tokens a Generate response accounts for: the answer's, on its last message."""
    return int(response.done.completion_tokens) if response.HasField("done") else 0


class SessionTurns:
    """One answer at a time per session in this process: a second message to a session waits
    for the answer in progress (at most ``wait_s``, then ABORTED). Across replicas the session
    service refuses the later of two overlapping exchanges instead (RecordExchange)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # session -> its lock, its waiters

    @contextlib.asynccontextmanager
    async def turn(self, session_id: str, wait_s: float) -> AsyncIterator[None]:
        if not session_id:
            yield
            return
        lock, holders = self._locks.get(session_id, (asyncio.Lock(), 0))
        self._locks[session_id] = (lock, holders + 1)
        try:
            try:
                await asyncio.wait_for(lock.acquire(), wait_s)
            except TimeoutError:
                raise AbortedError(
                    f"session {session_id} is still answering an earlier message after {wait_s:.0f} s; "
                    "send this one when that answer is done"
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, holders = self._locks[session_id]
            if holders == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, holders - 1)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        engine: InferenceEngine,
        vectors: VectorSetCache,
        sessions: SessionLink | None = None,
        default_max_new_tokens: int = 256,
        tensor_parallel: int = 1,
    ) -> None:
        self.engine = engine
        self.vectors = vectors
        self.sessions = sessions
        self.default_max_new_tokens = default_max_new_tokens
        self.tensor_parallel = tensor_parallel
        self.lm = engine.model
        self._turns = SessionTurns()

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        wait_s = MAX_TURN_WAIT_S if remaining is None else min(remaining, MAX_TURN_WAIT_S)
        # The session is read once an earlier message to it has its answer, so that this one
        # is answered from a history that holds that exchange.
        async with self._turns.turn(request.session_id, wait_s):
            conversation, generation = await asyncio.to_thread(self._prepare, request, deadline)
            async for response in self._answer(conversation, generation):
                yield response

    async def _answer(
        self, conversation: Conversation, generation: GenerationRequest
    ) -> AsyncIterator[pb.GenerateResponse]:
        async for event in self.engine.stream(generation):
            if isinstance(event, TextDelta):
                yield pb.GenerateResponse(text_delta=event.text)
            elif isinstance(event, Failed):
                raise event.error
            elif isinstance(event, Finished) and event.reason == "deadline":
                # The engine gave the row up as the deadline passed; say so rather than end the
                # stream as if it were complete (the client's own timer may fire a moment later).
                raise DeadlineExceededError("the deadline passed before the answer was finished")
            elif isinstance(event, Finished) and event.reason in FINISH_REASONS:
                turn_index = 0
                if conversation.session_id and self.sessions is not None:
                    turn_index = await asyncio.to_thread(
                        self.sessions.record,
                        conversation,
                        event.text,
                        event.applied,
                        self.lm.fingerprint.weights_digest,
                    )
                yield pb.GenerateResponse(done=_done(event, turn_index))

    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> Any:
        fingerprint = self.lm.fingerprint
        return pb.GetModelResponse(
            name=self.lm.name,
            fingerprint=vpb.ModelFingerprint(**fingerprint.to_dict()),
            context_length=self.engine.context_length,
            tensor_parallel=self.tensor_parallel,
            max_batch=self.engine.settings.max_batch,
            max_new_tokens=self.engine.settings.max_new_tokens,
            device=str(self.engine.device),
            dtype=str(self.engine.dtype).removeprefix("torch."),
        )

    # -- turning a request into an engine request (runs in a worker thread) -------------------

    def _prepare(
        self, request: pb.GenerateRequest, deadline: float | None
    ) -> tuple[Conversation, GenerationRequest]:
        sampling = _sampling(request.sampling)
        max_new_tokens = request.sampling.max_new_tokens or self.default_max_new_tokens
        # Checked before a session is touched, so a refused request records no turn.
        self.engine.check_options(max_new_tokens, request.sampling.stop)
        for name, percent in request.steering.strengths.items():
            check_strength(name, percent)
        pins = {name: _pin(name, pin) for name, pin in request.steering.pins.items()}
        conversation = self._conversation(request)
        mix = self.vectors.resolve_all(conversation.strengths, pins)
        prompt = encode_prompt(self.lm.tokenizer, conversation.messages)
        if conversation.session_id:
            prompt = self._fit_history(conversation.messages, prompt, max_new_tokens)
        return conversation, GenerationRequest(
            prompt=prompt,
            steering=fold_mix(mix),
            sampling=sampling,
            max_new_tokens=max_new_tokens,
            stop=tuple(request.sampling.stop),
            deadline=deadline,
        )

    def _conversation(self, request: pb.GenerateRequest) -> Conversation:
        _check_size(request.messages)
        messages = [_message(m) for m in request.messages]
        if not request.session_id:
            if not messages:
                raise InvalidArgumentError("send at least one message, or a session_id")
            return Conversation(messages, dict(request.steering.strengths))
        if self.sessions is None:
            raise FailedPreconditionError(
                "this inference server has no session service; start it with --sessions HOST:PORT"
            )
        if request.steering.strengths:
            raise InvalidArgumentError(
                "with a session_id, strengths come from the session; change them there (UpdatePreferences)"
            )
        if not messages or any(m["role"] != "user" for m in messages):
            raise InvalidArgumentError("with a session_id, send the user's new message(s), role 'user'")
        check_request_id(request.request_id, MAX_PARENT_REQUEST_ID_LENGTH)
        contents = [m["content"] for m in messages]
        return self.sessions.begin(request.session_id, contents, request.request_id)

    def _fit_history(self, messages: list[Message], prompt: list[int], max_new_tokens: int) -> list[int]:
        """A long session drops its oldest turns until the prompt fits the context."""
        budget = self.engine.context_length - max_new_tokens
        while len(prompt) > budget and len(messages) > 1:
            messages = messages[1:]
            prompt = encode_prompt(self.lm.tokenizer, messages)
        return prompt


def _check_size(messages: Sequence[pb.ChatMessage]) -> None:
    """Bound the work a request can ask for before any of it is done (tokenizing included)."""
    if len(messages) > MAX_MESSAGES:
        raise InvalidArgumentError(f"{len(messages)} messages in one request; the limit is {MAX_MESSAGES}")
    characters = sum(len(m.content) for m in messages)
    if characters > MAX_PROMPT_CHARACTERS:
        raise InvalidArgumentError(
            f"the messages hold {characters} characters; the limit is {MAX_PROMPT_CHARACTERS}"
        )


def _message(message: pb.ChatMessage) -> Message:
    role = message.role or "user"
    if role not in ROLES:
        raise InvalidArgumentError(f"message role must be one of {', '.join(ROLES)}, got {message.role!r}")
    return {"role": role, "content": message.content}


def _sampling(params: pb.SamplingParams) -> Sampling:
    if not math.isfinite(params.top_p) or params.top_p < 0:
        raise InvalidArgumentError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.max_new_tokens < 0:
        raise InvalidArgumentError(f"max_new_tokens must be >= 0, got {params.max_new_tokens}")
    sampling = Sampling(
        temperature=params.temperature,
        top_p=params.top_p or 1.0,
        top_k=params.top_k,
        seed=params.seed if params.HasField("seed") else None,
    )
    sampling.validate()
    return sampling


def _pin(name: str, pin: pb.VectorSetPin) -> Pin:
    target = pin.WhichOneof("target")
    if target == "version":
        if pin.version < 1:
            raise InvalidArgumentError(f"pinned version of {name!r} must be >= 1, got {pin.version}")
        return Pin(version=pin.version)
    if target == "alias":
        return Pin(alias=pin.alias)
    return Pin()


def _done(event: Finished, turn_index: int) -> pb.GenerationDone:
    return pb.GenerationDone(
        finish_reason=FINISH_REASONS[event.reason],
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        queue_seconds=event.queued_s,
        time_to_first_token_seconds=event.time_to_first_token_s,
        total_seconds=event.total_s,
        applied=[_applied(a) for a in event.applied],
        text=event.text,
        session_turn_index=turn_index,
    )


def _applied(applied: AppliedStrength) -> pb.AppliedSteering:
    return pb.AppliedSteering(
        dimension=applied.dimension,
        vector_set_version=applied.version,
        strength=applied.percent,
        alpha=applied.alpha,
    )
