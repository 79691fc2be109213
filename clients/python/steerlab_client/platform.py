"""One client for the whole platform, and the paper's three interfaces as calls.

    from steerlab_client import SteerLab

    with SteerLab("localhost:50050") as steerlab:          # `steerlab up` serves everything there
        session = steerlab.create_session("ana", strengths={"cost": -60})
        for delta in steerlab.chat("Plan a dinner in Rome.", session=session.id):   # SELECT
            print(delta, end="", flush=True)

Services that run apart are named one by one: ``SteerLab(registry=..., sessions=...,
inference=..., jobs=...)``. Every call raises a :class:`~steerlab_client.errors.ClientError`
subclass on failure and retries UNAVAILABLE with backoff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Unpack

from steerlab_api.v1 import sessions_pb2 as spb

from .channel import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_RETRY, Connection, RetryPolicy, Tls, connect_services
from .inference import Answer, ChatStream, InferenceClient, Message, SamplingOptions
from .jobs import JobClient
from .registry import RegistryClient
from .sessions import SessionClient

DEFAULT_ADDRESS = "localhost:50050"

# Given a pending comparison and its two answers (left, right), return "left" or "right".
Chooser = Callable[[spb.Comparison, str, str], str]


@dataclass(frozen=True)
class LearnResult:
    """What a user's turn changed in LEARN mode: the session's strengths now, each change, and why."""

    strengths: dict[str, float]
    changes: tuple[spb.StrengthChange, ...]
    summary: str
    turn_index: int


@dataclass(frozen=True)
class CalibrationResult:
    """A finished calibration: the strengths it fixed, one result per dimension, and the session."""

    strengths: dict[str, float]
    results: tuple[spb.StrengthChange, ...]
    session: spb.Session


class SteerLab:
    """The platform: ``.registry``, ``.sessions``, ``.inference`` and ``.jobs`` clients, and helpers.

    ``address`` serves every service (the all-in-one server); a per-service address overrides
    it for that service. ``token`` is sent with every call (None: the ``STEERLAB_TOKEN``
    variable, if set); ``tls`` reaches TLS servers (None: ``STEERLAB_TLS_CA`` and the client
    certificate variables, see :class:`Tls`); ``timeout_s`` is the deadline of each call (generation:
    ``generation_timeout_s``).
    """

    def __init__(
        self,
        address: str | None = DEFAULT_ADDRESS,
        *,
        registry: str | None = None,
        sessions: str | None = None,
        inference: str | None = None,
        jobs: str | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
        generation_timeout_s: float = 300.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: Tls | None = None,
    ) -> None:
        connections = connect_services(
            address,
            {"registry": registry, "sessions": sessions, "inference": inference, "jobs": jobs},
            lambda target: Connection(
                target,
                token=token,
                timeout_s=timeout_s,
                retry=retry,
                max_message_bytes=max_message_bytes,
                tls=tls,
            ),
        )
        self.registry = RegistryClient(connections["registry"], timeout_s)
        self.sessions = SessionClient(connections["sessions"], timeout_s)
        self.inference = InferenceClient(connections["inference"], generation_timeout_s)
        self.jobs = JobClient(connections["jobs"], timeout_s)
        self._connections = list(dict.fromkeys(connections.values()))
        self._model: str | None = None

    def close(self) -> None:
        for connection in self._connections:
            connection.close()

    def __enter__(self) -> SteerLab:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    @property
    def model(self) -> str:
        """The name of the model the inference service runs (asked once)."""
        if self._model is None:
            self._model = self.inference.get_model().name
        return self._model

    def create_session(
        self,
        user_id: str,
        *,
        mode: str = "select",
        strengths: Mapping[str, float] | None = None,
        model: str | None = None,
        learning_rate: float = 0.0,
        tenant: str = "",
    ) -> spb.Session:
        """A new session for ``user_id`` on the inference service's model (unless ``model``)."""
        return self.sessions.create(
            user_id, model or self.model, mode, dict(strengths or {}), tenant, learning_rate
        )

    def chat(
        self,
        message: str | Sequence[Message],
        *,
        session: str | None = None,
        strengths: Mapping[str, float] | None = None,
        **options: Unpack[SamplingOptions],
    ) -> ChatStream:
        """SELECT: strengths in, streamed answer out.

        With ``session``, ``strengths`` are first saved to the session (only the dimensions
        given change), then the session answers ``message`` with its history and its strengths,
        and records both turns. Without a session, ``strengths`` apply to this request only.
        """
        if session:
            if strengths:
                self.sessions.set_strengths(session, dict(strengths))
            return ChatStream(self.inference.stream(message, session_id=session, **options))
        return ChatStream(self.inference.stream(message, strengths=strengths or {}, **options))

    def learn(self, session: str, text: str) -> LearnResult:
        """LEARN: record the user's turn; returns how it moved the strengths, and why."""
        response = self.sessions.add_user_turn(session, text)
        return learn_result(response)

    def preference_update(self, session: str, answer: Answer) -> spb.PreferenceUpdate | None:
        """What the user turn that ``answer`` replied to changed (LEARN mode); None if nothing."""
        turns = self.sessions.get(session, include_turns=True).turns
        asked = [t for t in turns if t.index == answer.turn_index - 1 and t.role == spb.ROLE_USER]
        if asked and asked[0].HasField("update"):
            return asked[0].update
        return None

    def calibrate(
        self,
        session: str,
        dimensions: Sequence[str],
        prompt: str,
        choose: Chooser,
        *,
        rounds: int = 0,
        **options: Unpack[SamplingOptions],
    ) -> CalibrationResult:
        """CALIBRATE: for each comparison, generate both answers to ``prompt`` and ask ``choose``.

        Both answers of a comparison are generated at once (they share the server's batch),
        with the session's other strengths and the comparison's two strengths for its dimension.
        ``choose(comparison, left_text, right_text)`` returns "left" or "right".
        """
        calibration = self.sessions.start_calibration(session, list(dimensions), rounds, restart=True)
        run = CalibrationRun(calibration, self.sessions.get(session))
        with ThreadPoolExecutor(max_workers=2) as pool:
            while (comparison := run.comparison) is not None:
                left, right = pool.map(
                    lambda mix: self.inference.generate(prompt, strengths=mix, **options).text, run.mixes()
                )
                run.record(self.sessions.choose(session, comparison, choose(comparison, left, right)))
        return run.result()


class CalibrationRun:
    """CALIBRATE without I/O, shared by the synchronous and asyncio clients: the comparison
    pending, the two strength mixes to answer it with, and the result once none is pending."""

    def __init__(self, calibration: spb.Calibration, session: spb.Session) -> None:
        self.calibration, self.session = calibration, session

    @property
    def comparison(self) -> spb.Comparison | None:
        return self.calibration.pending if self.calibration.HasField("pending") else None

    def mixes(self) -> tuple[dict[str, float], dict[str, float]]:
        """The session's strengths with the comparison's left, then right, strength for its dimension."""
        comparison = self.calibration.pending
        strengths = dict(self.session.strengths)
        return (
            {**strengths, comparison.dimension: comparison.left},
            {**strengths, comparison.dimension: comparison.right},
        )

    def record(self, chosen: spb.ChooseComparisonResponse) -> None:
        self.calibration, self.session = chosen.calibration, chosen.session

    def result(self) -> CalibrationResult:
        return CalibrationResult(dict(self.session.strengths), tuple(self.calibration.results), self.session)


def learn_result(response: spb.AppendTurnResponse) -> LearnResult:
    update = response.turn.update
    return LearnResult(
        dict(response.session.strengths), tuple(update.changes), update.summary, response.turn.index
    )
