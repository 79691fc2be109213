"""A synchronous client for the steered inference service."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from steerlab.v1 import inference_pb2 as pb
from steerlab.v1 import inference_pb2_grpc

from .channel import DEFAULT_MAX_MESSAGE_BYTES, ServiceClient
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


class InferenceClient(ServiceClient):
    """Calls ``steerlab.v1.InferenceService``. Strengths are percent of each dimension's range.

    Pins choose a vector set version per dimension: an ``int`` version or a ``str`` alias.
    """

    def __init__(
        self, target: str, timeout_s: float = 120.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ):
        super().__init__(target, timeout_s, max_message_bytes)
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)

    def get_model(self) -> pb.GetModelResponse:
        return self._call(self._stub.GetModel, pb.GetModelRequest())

    def stream(
        self,
        messages: str | Sequence[Message] = (),
        *,
        strengths: Mapping[str, float] | None = None,
        pins: Mapping[str, int | str] | None = None,
        session_id: str = "",
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        top_p: float = 0.0,
        top_k: int = 0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[pb.GenerateResponse]:
        """Yield text deltas, then the final ``done`` message; closing the iterator cancels the call."""
        request = pb.GenerateRequest(
            messages=_messages(messages),
            session_id=session_id,
            steering=pb.Steering(strengths=dict(strengths or {}), pins=_pins(pins or {})),
            sampling=pb.SamplingParams(
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                max_new_tokens=max_new_tokens,
                stop=list(stop),
                seed=seed,
            ),
        )
        call = self._stub.Generate(request, timeout=timeout_s or self.timeout_s)
        try:
            yield from call
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def generate(self, messages: str | Sequence[Message] = (), **options: object) -> Answer:
        """The whole answer at once (same options as :meth:`stream`)."""
        text = ""
        for response in self.stream(messages, **options):  # type: ignore[arg-type]
            if response.HasField("done"):
                return Answer(text, response.done)
            text += response.text_delta
        raise ClientError(grpc.StatusCode.UNKNOWN, "the stream ended without a final message")


def _messages(messages: str | Sequence[Message]) -> list[pb.ChatMessage]:
    if isinstance(messages, str):
        return [pb.ChatMessage(role="user", content=messages)]
    return [pb.ChatMessage(role=m.get("role", "user"), content=m["content"]) for m in messages]


def _pins(pins: Mapping[str, int | str]) -> dict[str, pb.VectorSetPin]:
    return {
        name: pb.VectorSetPin(version=pin) if isinstance(pin, int) else pb.VectorSetPin(alias=pin)
        for name, pin in pins.items()
    }
