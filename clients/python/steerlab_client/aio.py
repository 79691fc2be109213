"""The asyncio flavour of :class:`~steerlab_client.SteerLab`, on ``grpc.aio``.

    from steerlab_client.aio import AsyncSteerLab

    async with AsyncSteerLab("localhost:50050") as steerlab:
        session = await steerlab.create_session("ana", strengths={"cost": -60})
        async for delta in steerlab.chat("Plan a dinner in Rome.", session=session.id):
            print(delta, end="", flush=True)

It offers the user-facing calls: sessions (create, get, strengths), chat and generate, LEARN and
CALIBRATE. Errors, retries, deadlines and the token work as in the synchronous client.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc

from steerlab_api.v1 import inference_pb2 as ipb
from steerlab_api.v1 import inference_pb2_grpc, sessions_pb2_grpc
from steerlab_api.v1 import sessions_pb2 as spb

from .channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RETRY,
    RetryPolicy,
    Tls,
    auth_metadata,
    connect_services,
    open_channel,
    remaining_s,
)
from .errors import ClientError
from .inference import Answer, GenerateOptions, Message, SamplingOptions, _AnswerStream, generate_request
from .platform import DEFAULT_ADDRESS, CalibrationResult, CalibrationRun, LearnResult, learn_result
from .sessions import choose_request, create_request, user_turn_request

_Response = TypeVar("_Response")
# Like platform.Chooser; may also be a coroutine function (e.g. one that asks a web client).
AsyncChooser = Callable[[spb.Comparison, str, str], "str | Awaitable[str]"]


class AsyncConnection:
    """One ``grpc.aio`` channel and the defaults of its calls (as ``steerlab_client.Connection``)."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: Tls | None = None,
    ) -> None:
        self.target = target
        self.retry = retry
        self.metadata = auth_metadata(token)
        self.channel = open_channel(target, max_message_bytes, tls, aio=True)

    async def close(self) -> None:
        await self.channel.close()

    async def unary(
        self, method: Callable[..., Awaitable[_Response]], request: Any, timeout_s: float
    ) -> _Response:
        deadline = time.monotonic() + timeout_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await method(request, timeout=remaining_s(deadline), metadata=self.metadata)
            except grpc.RpcError as error:
                await asyncio.sleep(self.retry.wait_or_raise(error, attempt, deadline))
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(self, method: Callable[..., Any], request: Any, timeout_s: float) -> AsyncIterator[Any]:
        """A server stream, retried on UNAVAILABLE until its first message; closing it cancels."""
        deadline = time.monotonic() + timeout_s
        for attempt in range(1, self.retry.attempts + 1):
            call = method(request, timeout=remaining_s(deadline), metadata=self.metadata)
            received = False
            try:
                async for message in call:
                    received = True
                    yield message
                return
            except grpc.RpcError as error:
                if received:
                    raise ClientError.from_rpc_error(error) from None
                await asyncio.sleep(self.retry.wait_or_raise(error, attempt, deadline))
            finally:
                call.cancel()


class AsyncChatStream(_AnswerStream):
    """An answer being streamed: ``async for`` its text deltas; then :attr:`answer`."""

    def __init__(self, responses: AsyncIterator[ipb.GenerateResponse]) -> None:
        super().__init__()
        self._responses = responses

    async def __aiter__(self) -> AsyncIterator[str]:
        async for response in self._responses:
            delta = self._take(response)
            if delta is None:
                return
            yield delta
        self._finished()

    async def result(self) -> Answer:
        """The finished answer (reads the rest of the stream first)."""
        if self._answer is None:
            async for _ in self:
                pass
        return self._finished()


class AsyncSteerLab:
    """Sessions, steered chat, LEARN and CALIBRATE over asyncio; arguments as for ``SteerLab``."""

    def __init__(
        self,
        address: str | None = DEFAULT_ADDRESS,
        *,
        sessions: str | None = None,
        inference: str | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
        generation_timeout_s: float = 300.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: Tls | None = None,
    ) -> None:
        connections = connect_services(
            address,
            {"sessions": sessions, "inference": inference},
            lambda target: AsyncConnection(
                target, token=token, retry=retry, max_message_bytes=max_message_bytes, tls=tls
            ),
        )
        self._sessions, self._inference = connections["sessions"], connections["inference"]
        self._session_stub = sessions_pb2_grpc.SessionServiceStub(self._sessions.channel)
        self._inference_stub = inference_pb2_grpc.InferenceServiceStub(self._inference.channel)
        self._connections = list(dict.fromkeys(connections.values()))
        self.timeout_s = timeout_s
        self.generation_timeout_s = generation_timeout_s
        self._model: str | None = None

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()

    async def __aenter__(self) -> AsyncSteerLab:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def _session_call(self, name: str, request: Any) -> Any:
        return await self._sessions.unary(getattr(self._session_stub, name), request, self.timeout_s)

    async def model(self) -> str:
        """The name of the model the inference service runs (asked once)."""
        if self._model is None:
            stub = self._inference_stub
            response = await self._inference.unary(stub.GetModel, ipb.GetModelRequest(), self.timeout_s)
            self._model = str(response.name)
        return self._model

    async def create_session(
        self,
        user_id: str,
        *,
        mode: str = "select",
        strengths: Mapping[str, float] | None = None,
        model: str | None = None,
        learning_rate: float = 0.0,
        tenant: str = "",
    ) -> spb.Session:
        request = create_request(
            user_id, model or await self.model(), mode, dict(strengths or {}), tenant, learning_rate
        )
        return (await self._session_call("CreateSession", request)).session

    async def get_session(self, session: str, include_turns: bool = False) -> spb.Session:
        request = spb.GetSessionRequest(session_id=session, include_turns=include_turns)
        return (await self._session_call("GetSession", request)).session

    async def set_strengths(self, session: str, strengths: Mapping[str, float]) -> spb.Session:
        """SELECT: change these strengths only."""
        request = spb.UpdatePreferencesRequest(session_id=session, strengths=dict(strengths))
        return (await self._session_call("UpdatePreferences", request)).session

    def stream(self, message: str | Sequence[Message], **options: Unpack[GenerateOptions]) -> AsyncChatStream:
        """One generation, streamed (options as for ``InferenceClient.stream``)."""
        request = generate_request(message, **options)
        stub = self._inference_stub
        return AsyncChatStream(self._inference.stream(stub.Generate, request, self.generation_timeout_s))

    async def generate(self, message: str | Sequence[Message], **options: Unpack[GenerateOptions]) -> Answer:
        return await self.stream(message, **options).result()

    async def chat(
        self,
        message: str | Sequence[Message],
        *,
        session: str | None = None,
        strengths: Mapping[str, float] | None = None,
        **options: Unpack[SamplingOptions],
    ) -> AsyncChatStream:
        """SELECT, as ``SteerLab.chat``: ``async for delta in await steerlab.chat(...)``."""
        if session:
            if strengths:
                await self.set_strengths(session, strengths)
            return self.stream(message, session_id=session, **options)
        return self.stream(message, strengths=strengths or {}, **options)

    async def learn(self, session: str, text: str) -> LearnResult:
        """LEARN: record the user's turn; returns how it moved the strengths, and why."""
        request = user_turn_request(session, text)
        return learn_result(await self._session_call("AppendTurn", request))

    async def calibrate(
        self,
        session: str,
        dimensions: Sequence[str],
        prompt: str,
        choose: AsyncChooser,
        *,
        rounds: int = 0,
        **options: Unpack[SamplingOptions],
    ) -> CalibrationResult:
        """CALIBRATE, as ``SteerLab.calibrate``; both answers of a comparison are generated together."""
        start = spb.StartCalibrationRequest(
            session_id=session, dimensions=list(dimensions), rounds=rounds, restart=True
        )
        calibration = (await self._session_call("StartCalibration", start)).calibration
        run = CalibrationRun(calibration, await self.get_session(session))
        while (comparison := run.comparison) is not None:
            left, right = await asyncio.gather(
                *(self.generate(prompt, strengths=mix, **options) for mix in run.mixes())
            )
            side = choose(comparison, left.text, right.text)
            side = await side if inspect.isawaitable(side) else side
            chosen = choose_request(session, comparison, side)
            run.record(await self._session_call("ChooseComparison", chosen))
        return run.result()
