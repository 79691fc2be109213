"""The gRPC face of the session service: proto messages in, manager calls (in threads) out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc

from steerlab.auth import current_principal
from steerlab.serving.messages import enum_choice, timestamp
from steerlab.steering.errors import NotFoundError, PermissionDeniedError
from steerlab_api.v1 import sessions_pb2 as pb
from steerlab_api.v1 import sessions_pb2_grpc

from . import calibrate
from .manager import SessionManager
from .state import (
    ASSISTANT,
    CALIBRATE,
    LEARN,
    SELECT,
    THUMBS_DOWN,
    THUMBS_UP,
    USER,
    Calibration,
    PreferenceUpdate,
    Session,
    SteeringUsed,
    StrengthChange,
    Turn,
)

SERVICE_NAME = "steerlab.v1.SessionService"
# The calls that change a session, each written to the audit log.
AUDITED = frozenset(
    {
        "CreateSession",
        "DeleteSession",
        "UpdatePreferences",
        "AppendTurn",
        "RecordExchange",
        "SubmitFeedback",
        "StartCalibration",
        "ChooseComparison",
    }
)

MODES = {
    pb.INTERFACE_MODE_SELECT: SELECT,
    pb.INTERFACE_MODE_CALIBRATE: CALIBRATE,
    pb.INTERFACE_MODE_LEARN: LEARN,
}
MODE_VALUES = {name: value for value, name in MODES.items()}
ROLES = {pb.ROLE_USER: USER, pb.ROLE_ASSISTANT: ASSISTANT}
ROLE_VALUES = {name: value for value, name in ROLES.items()}
RATINGS = {pb.RATING_THUMBS_UP: THUMBS_UP, pb.RATING_THUMBS_DOWN: THUMBS_DOWN}
RATING_VALUES = {name: value for value, name in RATINGS.items()}
SIDES = {pb.SIDE_LEFT: calibrate.LEFT, pb.SIDE_RIGHT: calibrate.RIGHT}


def _mode(value: int) -> str | None:
    """The mode a request names; None when it leaves it unspecified."""
    return None if value == pb.INTERFACE_MODE_UNSPECIFIED else enum_choice(MODES, value, "mode")


def _steering(steering: Iterable[pb.SteeringUsed]) -> list[SteeringUsed]:
    return [SteeringUsed(s.dimension, s.vector_set_version, s.model_digest, s.strength) for s in steering]


def change_to_proto(change: StrengthChange) -> pb.StrengthChange:
    return pb.StrengthChange(
        dimension=change.dimension, before=change.before, after=change.after, reason=change.reason
    )


def update_to_proto(update: PreferenceUpdate) -> pb.PreferenceUpdate:
    return pb.PreferenceUpdate(changes=[change_to_proto(c) for c in update.changes], summary=update.summary)


def calibration_to_proto(calibration: Calibration | None) -> pb.Calibration:
    if calibration is None:
        return pb.Calibration(done=True)
    message = pb.Calibration(
        remaining=calibration.remaining,
        rounds=calibration.rounds,
        done=calibration.done,
        results=[change_to_proto(r) for r in calibration.results],
    )
    comparison = calibrate.pending(calibration)
    if comparison is not None:
        message.pending.CopyFrom(
            pb.Comparison(
                dimension=comparison.dimension,
                round=comparison.round,
                rounds=comparison.rounds,
                left=comparison.left,
                right=comparison.right,
            )
        )
    return message


def turn_to_proto(turn: Turn) -> pb.Turn:
    message = pb.Turn(
        index=turn.index,
        role=ROLE_VALUES[turn.role],
        text=turn.text,
        create_time=timestamp(turn.created_at),
        steering=[pb.SteeringUsed(**vars(s)) for s in turn.steering],
        rating=RATING_VALUES.get(turn.rating or "", pb.RATING_UNSPECIFIED),
    )
    if turn.update is not None:
        message.update.CopyFrom(update_to_proto(turn.update))
    return message


def session_to_proto(session: Session, turns: list[Turn] | None = None) -> pb.Session:
    message = pb.Session(
        id=session.id,
        tenant=session.tenant,
        user_id=session.user_id,
        model=session.model,
        mode=MODE_VALUES[session.mode],
        strengths=session.strengths,
        revision=session.revision,
        create_time=timestamp(session.created_at),
        update_time=timestamp(session.updated_at),
        learning_rate=session.learning_rate,
        turn_count=session.turn_count,
        turns=[turn_to_proto(t) for t in turns or []],
    )
    if session.calibration is not None:
        message.calibration.CopyFrom(calibration_to_proto(session.calibration))
    return message


def acting_for(tenant: str, user_id: str) -> tuple[str, str]:
    """The tenant and user a call names, checked against its principal: an API key that is not
    an admin's acts for its own user only (the request may repeat them or leave them empty)."""
    principal = current_principal()
    if principal.is_admin:
        return tenant, user_id
    if (tenant and tenant != principal.tenant) or (user_id and user_id != principal.user_id):
        raise PermissionDeniedError(
            f"this key acts for user {principal.user_id!r} of tenant {principal.tenant!r} only"
        )
    return principal.tenant, principal.user_id


class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    """Implements ``steerlab.v1.SessionService``; blocking work runs in worker threads.

    With API keys, a session belongs to the tenant and user that created it: to anyone else
    (but an admin) it does not exist, so every call that names a session checks that first.
    """

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def _owned(self, session_id: str) -> None:
        """NOT_FOUND, exactly as for a missing session, unless the caller may see this one."""
        principal = current_principal()
        if principal.is_admin:
            return
        session = self.manager.store.get(session_id)
        if (session.tenant, session.user_id) != (principal.tenant, principal.user_id):
            raise NotFoundError(f"no session {session_id!r}")

    async def CreateSession(self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext) -> Any:
        mode = (
            SELECT
            if request.mode == pb.INTERFACE_MODE_UNSPECIFIED
            else enum_choice(MODES, request.mode, "mode")
        )
        tenant, user_id = acting_for(request.tenant, request.user_id)
        session = await asyncio.to_thread(
            self.manager.create,
            tenant,
            user_id,
            request.model,
            mode,
            dict(request.strengths),
            request.learning_rate,
            request.request_id,
        )
        return pb.CreateSessionResponse(session=session_to_proto(session))

    async def GetSession(self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext) -> Any:
        def read() -> pb.Session:
            self._owned(request.session_id)
            session = self.manager.store.get(request.session_id)
            turns = self.manager.store.turns(request.session_id) if request.include_turns else None
            return session_to_proto(session, turns)

        return pb.GetSessionResponse(session=await asyncio.to_thread(read))

    async def ListSessions(self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            tenant, user_id = acting_for(request.tenant, request.user_id)
        except PermissionDeniedError:  # another user's sessions do not exist for this caller
            raise NotFoundError(f"no sessions of user {request.user_id!r}") from None
        sessions, token = await asyncio.to_thread(
            self.manager.store.list,
            tenant or "default",
            user_id,
            request.page_size,
            request.page_token,
        )
        return pb.ListSessionsResponse(
            sessions=[session_to_proto(s) for s in sessions], next_page_token=token
        )

    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext) -> Any:
        await asyncio.to_thread(self._owned, request.session_id)
        await asyncio.to_thread(self.manager.store.delete, request.session_id)
        return pb.DeleteSessionResponse()

    async def UpdatePreferences(
        self, request: pb.UpdatePreferencesRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        mode = (
            None
            if request.mode == pb.INTERFACE_MODE_UNSPECIFIED
            else enum_choice(MODES, request.mode, "mode")
        )
        await asyncio.to_thread(self._owned, request.session_id)
        session = await asyncio.to_thread(
            self.manager.select, request.session_id, dict(request.strengths), mode, request.expected_revision
        )
        return pb.UpdatePreferencesResponse(session=session_to_proto(session))

    async def AppendTurn(self, request: pb.AppendTurnRequest, context: grpc.aio.ServicerContext) -> Any:
        role = enum_choice(ROLES, request.role, "role")
        await asyncio.to_thread(self._owned, request.session_id)
        turn, session = await asyncio.to_thread(
            self.manager.append_turn,
            request.session_id,
            role,
            request.text,
            _steering(request.steering),
            request.request_id,
        )
        return pb.AppendTurnResponse(turn=turn_to_proto(turn), session=session_to_proto(session))

    async def PreviewExchange(
        self, request: pb.PreviewExchangeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        def preview() -> pb.PreviewExchangeResponse:
            self._owned(request.session_id)
            session, turns, update = self.manager.preview_exchange(
                request.session_id, list(request.user_texts)
            )
            return pb.PreviewExchangeResponse(
                session=session_to_proto(session, turns), update=update_to_proto(update)
            )

        return await asyncio.to_thread(preview)

    async def RecordExchange(
        self, request: pb.RecordExchangeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await asyncio.to_thread(self._owned, request.session_id)
        turns, session = await asyncio.to_thread(
            self.manager.record_exchange,
            request.session_id,
            list(request.user_texts),
            request.answer,
            _steering(request.steering),
            request.expected_turn_count if request.HasField("expected_turn_count") else None,
            request.request_id,
        )
        return pb.RecordExchangeResponse(
            turns=[turn_to_proto(t) for t in turns], session=session_to_proto(session)
        )

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        rating = enum_choice(RATINGS, request.rating, "rating")
        await asyncio.to_thread(self._owned, request.session_id)
        session, update = await asyncio.to_thread(
            self.manager.feedback, request.session_id, request.turn_index, rating, request.comment
        )
        return pb.SubmitFeedbackResponse(update=update_to_proto(update), session=session_to_proto(session))

    async def StartCalibration(
        self, request: pb.StartCalibrationRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await asyncio.to_thread(self._owned, request.session_id)
        session = await asyncio.to_thread(
            self.manager.start_calibration,
            request.session_id,
            list(request.dimensions),
            request.rounds,
            request.restart,
        )
        return pb.StartCalibrationResponse(calibration=calibration_to_proto(session.calibration))

    async def ChooseComparison(
        self, request: pb.ChooseComparisonRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        side = enum_choice(SIDES, request.choice, "choice")
        await asyncio.to_thread(self._owned, request.session_id)
        session = await asyncio.to_thread(
            self.manager.choose,
            request.session_id,
            request.dimension,
            request.round,
            side,
            request.request_id,
        )
        return pb.ChooseComparisonResponse(
            calibration=calibration_to_proto(session.calibration), session=session_to_proto(session)
        )

    async def GetCalibration(
        self, request: pb.GetCalibrationRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await asyncio.to_thread(self._owned, request.session_id)
        calibration = await asyncio.to_thread(self.manager.calibration, request.session_id)
        return pb.GetCalibrationResponse(calibration=calibration_to_proto(calibration))
