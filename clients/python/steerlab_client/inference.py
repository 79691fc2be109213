"""A synchronous client for the steered inference service."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import grpc

from steerlab_api.v1 import inference_pb2 as pb
from steerlab_api.v1 import inference_pb2_grpc

from .channel import ServiceClient, new_request_id
from .errors import ClientError

Message = Mapping[str, str]


@dataclass
class Answer:
    """A finished generation: the text and the server's final report (versions, tokens, timings)."""

    text: str
    done: pb.GenerationDone = field(repr=False)

    @property
    def applied(self) -> dict[str, tuple[int, float]]:
        """dimension -> (vector set version, strength) as applied."""
        return {a.dimension: (a.vector_set_version, a.strength) for a in self.done.applied}

    @property
    def turn_index(self) -> int:
        """In a session: the index of the assistant turn this answer was recorded as."""
        return int(self.done.session_turn_index)


class InferenceClient(ServiceClient):
    """Calls ``steerlab.v1.InferenceService``. Strengths are percent of each dimension's range.

    Pins choose a vector set version per dimension: an ``int`` version or a ``str`` alias.
    """

    default_timeout_s = 120.0  # a whole generation

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = inference_pb2_grpc.InferenceServiceStub(channel)

    def get_model(self) -> pb.GetModelResponse:
        return self._call(self._stub.GetModel, pb.GetModelRequest())

    def stream(
        self,
        messages: str | Sequence[Message] = (),
        *,
        timeout_s: float | None = None,
        **options: Unpack[GenerateOptions],
    ) -> Iterator[pb.GenerateResponse]:
        """Yield text deltas, then the final ``done`` message; closing the iterator cancels the call.

        ``options`` are those of :class:`GenerateOptions`.
        """
        request = generate_request(messages, **options)
        yield from self._stream(self._stub.Generate, request, timeout_s or self.timeout_s)

    def generate(
        self,
        messages: str | Sequence[Message] = (),
        *,
        timeout_s: float | None = None,
        **options: Unpack[GenerateOptions],
    ) -> Answer:
        """The whole answer at once (same options as :meth:`stream`)."""
        return ChatStream(self.stream(messages, timeout_s=timeout_s, **options)).answer


class SamplingOptions(TypedDict, total=False):
    """How to generate: greedy unless ``temperature`` > 0; ``top_p``, ``top_k``, ``seed``;
    ``max_new_tokens`` (0: the server's default); ``stop`` strings. ``pins``: a vector set version
    (int) or alias (str) per dimension; default the alias "production", else the latest version.
    """

    pins: Mapping[str, int | str]
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: Sequence[str]
    seed: int | None


class GenerateOptions(SamplingOptions, total=False):
    """:class:`SamplingOptions`, and either ``strengths`` (percent of each dimension's range,
    -100..100) or ``session_id``: answer within that session, with its history and strengths,
    recording the turns there. With a session, ``request_id`` (default: a new one) keeps a
    retried request from recording the user's message twice."""

    strengths: Mapping[str, float]
    session_id: str
    request_id: str


def generate_request(
    messages: str | Sequence[Message] = (), **options: Unpack[GenerateOptions]
) -> pb.GenerateRequest:
    """The ``GenerateRequest`` for ``messages`` (a string is one user message) and ``options``."""
    session_id = options.get("session_id", "")
    return pb.GenerateRequest(
        messages=_messages(messages),
        session_id=session_id,
        request_id=new_request_id(options.get("request_id", "")) if session_id else "",
        steering=pb.Steering(
            strengths=dict(options.get("strengths") or {}), pins=_pins(options.get("pins") or {})
        ),
        sampling=pb.SamplingParams(
            temperature=options.get("temperature", 0.0),
            top_p=options.get("top_p", 0.0),
            top_k=options.get("top_k", 0),
            max_new_tokens=options.get("max_new_tokens", 0),
            stop=list(options.get("stop", ())),
            seed=options.get("seed"),
        ),
    )


class _AnswerStream:
    """What the sync and asyncio answer streams share: joining the deltas, the final report."""

    def __init__(self) -> None:
        self._answer: Answer | None = None
        self.text = ""

    def _take(self, response: pb.GenerateResponse) -> str | None:
        """The text delta ``response`` carries, or None when it is the final message."""
        if response.HasField("done"):
            self._answer = Answer(self.text, response.done)
            return None
        self.text += response.text_delta
        return response.text_delta

    def _finished(self) -> Answer:
        if self._answer is None:
            raise ClientError(grpc.StatusCode.UNKNOWN, "the stream ended without a final message")
        return self._answer


class ChatStream(_AnswerStream):
    """A streamed answer: iterate for text deltas; then :attr:`answer` has the final report.

    Leaving the loop early cancels the generation on the server.
    """

    def __init__(self, responses: Iterator[pb.GenerateResponse]) -> None:
        super().__init__()
        self._responses = responses

    def __iter__(self) -> Iterator[str]:
        for response in self._responses:
            delta = self._take(response)
            if delta is None:
                return
            yield delta
        self._finished()

    def cancel(self) -> None:
        """Stop the generation on the server (nothing more will be read)."""
        close = getattr(self._responses, "close", None)
        if close is not None:
            close()

    @property
    def answer(self) -> Answer:
        """The finished answer (reads the rest of the stream if it was not iterated to the end)."""
        if self._answer is None:
            for _ in self:
                pass
        return self._finished()


def _messages(messages: str | Sequence[Message]) -> list[pb.ChatMessage]:
    if isinstance(messages, str):
        return [pb.ChatMessage(role="user", content=messages)]
    return [pb.ChatMessage(role=m.get("role", "user"), content=m["content"]) for m in messages]


def _pins(pins: Mapping[str, int | str]) -> dict[str, pb.VectorSetPin]:
    return {
        name: pb.VectorSetPin(version=pin) if isinstance(pin, int) else pb.VectorSetPin(alias=pin)
        for name, pin in pins.items()
    }
