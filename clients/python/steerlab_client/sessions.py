"""A synchronous client for the preference and session service."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from steerlab_api.v1 import sessions_pb2 as pb
from steerlab_api.v1 import sessions_pb2_grpc

from .channel import ServiceClient, new_request_id

MODES = {
    "select": pb.INTERFACE_MODE_SELECT,
    "calibrate": pb.INTERFACE_MODE_CALIBRATE,
    "learn": pb.INTERFACE_MODE_LEARN,
}
MODE_NAMES = {value: name for name, value in MODES.items()}
SIDES = {"left": pb.SIDE_LEFT, "right": pb.SIDE_RIGHT}
RATINGS = {"up": pb.RATING_THUMBS_UP, "down": pb.RATING_THUMBS_DOWN}


class SessionClient(ServiceClient):
    """Calls ``steerlab.v1.SessionService``. Strengths are percent of each dimension's range, -100..100.

    Every method raises :class:`ClientError` with the server's status code on failure.
    """

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = sessions_pb2_grpc.SessionServiceStub(channel)

    def create(
        self,
        user_id: str,
        model: str,
        mode: str = "select",
        strengths: dict[str, float] | None = None,
        tenant: str = "",
        learning_rate: float = 0.0,
        request_id: str = "",
    ) -> pb.Session:
        """A new session. ``request_id`` (default: a new one) makes a retried create return the
        session the first one made."""
        request = create_request(user_id, model, mode, strengths, tenant, learning_rate, request_id)
        return self._call(self._stub.CreateSession, request).session

    def get(self, session_id: str, include_turns: bool = False) -> pb.Session:
        request = pb.GetSessionRequest(session_id=session_id, include_turns=include_turns)
        return self._call(self._stub.GetSession, request).session

    def list_sessions(self, user_id: str, tenant: str = "", page_size: int = 0) -> Iterator[pb.Session]:
        """The user's sessions, newest first, fetched a page at a time."""
        token = ""
        while True:
            request = pb.ListSessionsRequest(
                tenant=tenant, user_id=user_id, page_size=page_size, page_token=token
            )
            page = self._call(self._stub.ListSessions, request)
            yield from page.sessions
            token = page.next_page_token
            if not token:
                return

    def delete(self, session_id: str) -> None:
        self._call(self._stub.DeleteSession, pb.DeleteSessionRequest(session_id=session_id))

    def set_strengths(
        self,
        session_id: str,
        strengths: dict[str, float],
        mode: str | None = None,
        expected_revision: int = 0,
    ) -> pb.Session:
        """SELECT: change these strengths only; with ``expected_revision``, refuse if the session moved on."""
        request = pb.UpdatePreferencesRequest(
            session_id=session_id,
            strengths=strengths,
            mode=mode_value(mode) if mode else pb.INTERFACE_MODE_UNSPECIFIED,
            expected_revision=expected_revision,
        )
        return self._call(self._stub.UpdatePreferences, request).session

    def add_user_turn(self, session_id: str, text: str, request_id: str = "") -> pb.AppendTurnResponse:
        """Record what the user said; in LEARN mode ``response.turn.update`` says what changed and why.

        A repeated ``request_id`` (default: a new one) returns the turn recorded the first time."""
        return self._call(self._stub.AppendTurn, user_turn_request(session_id, text, request_id))

    def add_assistant_turn(
        self,
        session_id: str,
        text: str,
        steering: list[pb.SteeringUsed] | None = None,
        request_id: str = "",
    ) -> pb.AppendTurnResponse:
        request = pb.AppendTurnRequest(
            session_id=session_id,
            role=pb.ROLE_ASSISTANT,
            text=text,
            steering=steering or [],
            request_id=new_request_id(request_id),
        )
        return self._call(self._stub.AppendTurn, request)

    def preview_exchange(self, session_id: str, user_texts: list[str]) -> pb.PreviewExchangeResponse:
        """The session (with its turns) as it would be after the user's new message(s): LEARN's
        update applied, nothing recorded. Answer from it, then :meth:`record_exchange`."""
        request = pb.PreviewExchangeRequest(session_id=session_id, user_texts=user_texts)
        return self._call(self._stub.PreviewExchange, request)

    def record_exchange(
        self,
        session_id: str,
        user_texts: list[str],
        answer: str,
        steering: list[pb.SteeringUsed] | None = None,
        expected_turn_count: int | None = None,
        request_id: str = "",
    ) -> pb.RecordExchangeResponse:
        """Record the user's message(s) and the complete answer together, or nothing: ABORTED
        if the session has turns other than ``expected_turn_count`` (the preview's turn_count).
        A repeated ``request_id`` (default: a new one) returns what the first call recorded."""
        request = pb.RecordExchangeRequest(
            session_id=session_id,
            user_texts=user_texts,
            answer=answer,
            steering=steering or [],
            expected_turn_count=expected_turn_count,
            request_id=new_request_id(request_id),
        )
        return self._call(self._stub.RecordExchange, request)

    def feedback(
        self, session_id: str, turn_index: int, rating: str, comment: str = ""
    ) -> pb.SubmitFeedbackResponse:
        """``rating`` is "up" or "down". Not retried: a rating carries no request id, and applying
        it twice would move the strengths twice."""
        request = pb.SubmitFeedbackRequest(
            session_id=session_id, turn_index=turn_index, rating=RATINGS[rating], comment=comment
        )
        return self._call(self._stub.SubmitFeedback, request, retry=False)

    def start_calibration(
        self, session_id: str, dimensions: list[str], rounds: int = 0, restart: bool = False
    ) -> pb.Calibration:
        request = pb.StartCalibrationRequest(
            session_id=session_id, dimensions=dimensions, rounds=rounds, restart=restart
        )
        return self._call(self._stub.StartCalibration, request).calibration

    def choose(
        self, session_id: str, comparison: pb.Comparison, side: str, request_id: str = ""
    ) -> pb.ChooseComparisonResponse:
        """Answer ``comparison`` with "left" or "right"."""
        request = choose_request(session_id, comparison, side, request_id)
        return self._call(self._stub.ChooseComparison, request)

    def calibration(self, session_id: str) -> pb.Calibration:
        return self._call(
            self._stub.GetCalibration, pb.GetCalibrationRequest(session_id=session_id)
        ).calibration


def mode_value(mode: str) -> pb.InterfaceMode.ValueType:
    """``select``, ``calibrate`` or ``learn`` as the proto enum; anything else is a ValueError."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return MODES[mode]


def create_request(
    user_id: str,
    model: str,
    mode: str = "select",
    strengths: dict[str, float] | None = None,
    tenant: str = "",
    learning_rate: float = 0.0,
    request_id: str = "",
) -> pb.CreateSessionRequest:
    return pb.CreateSessionRequest(
        tenant=tenant,
        user_id=user_id,
        model=model,
        mode=mode_value(mode),
        strengths=strengths or {},
        learning_rate=learning_rate,
        request_id=new_request_id(request_id),
    )


def user_turn_request(session_id: str, text: str, request_id: str = "") -> pb.AppendTurnRequest:
    return pb.AppendTurnRequest(
        session_id=session_id, role=pb.ROLE_USER, text=text, request_id=new_request_id(request_id)
    )


def choose_request(
    session_id: str, comparison: pb.Comparison, side: str, request_id: str = ""
) -> pb.ChooseComparisonRequest:
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return pb.ChooseComparisonRequest(
        session_id=session_id,
        dimension=comparison.dimension,
        round=comparison.round,
        choice=SIDES[side],
        request_id=new_request_id(request_id),
    )
