"""Sessions and their turns on PostgreSQL or SQLite.

Every change to a session runs as read-modify-write inside one write transaction that holds
the session's lock, so two concurrent changes are applied one after the other and neither is
lost; each bumps ``revision``, which callers may pass back to refuse a change made on stale
data (ABORTED).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from steerlab.steering.errors import (
    AbortedError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from steerlab.storage import Cursor, Database, migrate, pages
from steerlab.storage.requests import check_identifier, check_request_id

from .schema import COMPONENT, MIGRATIONS
from .state import (
    ASSISTANT,
    USER,
    Calibration,
    PreferenceUpdate,
    Session,
    SteeringUsed,
    Turn,
    check_learning_rate,
)

MAX_TURN_CHARACTERS = 32_000
DEFAULT_MAX_TURNS = 1_000
DEFAULT_MAX_HISTORY_CHARACTERS = 1_000_000
_Result = TypeVar("_Result")
_SESSION_COLUMNS = (
    "seq, id, tenant, user_id, model, mode, strengths, learning_rate, calibration, revision, turn_count,"
    " created_at, updated_at, last_request_id"
)
_TURN_COLUMNS = "idx, role, text, steering, rating, preference_update, created_at"


@dataclass(frozen=True)
class SessionLimits:
    """How much one session may hold. A session at a limit refuses new turns (FAILED_PRECONDITION,
    naming the limit) rather than forgetting old ones: the user starts a new session. The
    defaults keep a whole session, turns included, well inside one gRPC message."""

    max_turns: int = DEFAULT_MAX_TURNS
    max_history_characters: int = DEFAULT_MAX_HISTORY_CHARACTERS


@dataclass(frozen=True)
class NewTurn:
    """A turn to append: its text, the steering that produced it (assistant turns) and the
    session change it causes (LEARN, for user turns)."""

    role: str
    text: str
    steering: tuple[SteeringUsed, ...] = ()
    change: Callable[[Session], tuple[Session, PreferenceUpdate | None]] | None = None
    request_id: str = ""


class SessionStore:
    def __init__(self, database: Database, limits: SessionLimits | None = None) -> None:
        self.database = database
        self.limits = limits or SessionLimits()
        migrate(database, COMPONENT, MIGRATIONS)

    def close(self) -> None:
        self.database.close()

    def create(
        self,
        tenant: str,
        user_id: str,
        model: str,
        mode: str,
        strengths: dict[str, float],
        learning_rate: float,
        request_id: str = "",
    ) -> Session:
        """A new session; ``mode`` and ``strengths`` must already be validated (the manager does).

        With ``request_id``, creating again with the same key (for the same tenant and user)
        returns the session the first call created."""
        check_request_id(request_id)
        now = datetime.now(UTC)
        session = Session(
            id=uuid.uuid4().hex,
            tenant=check_identifier("tenant", tenant),
            user_id=check_identifier("user_id", user_id),
            model=check_identifier("model", model),
            mode=mode,
            strengths=dict(strengths),
            learning_rate=check_learning_rate(learning_rate),
            revision=1,
            created_at=now,
            updated_at=now,
        )
        with self.database.transaction(write=True) as cursor:
            if request_id:
                self.database.lock(cursor, f"steerlab:session-request:{session.tenant}:{session.user_id}")
                cursor.execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions"
                    " WHERE tenant = %s AND user_id = %s AND request_id = %s",
                    (session.tenant, session.user_id, request_id),
                )
                created = cursor.fetchone()
                if created is not None:
                    return self._session(created)
            cursor.execute(
                "INSERT INTO sessions (id, tenant, user_id, model, mode, strengths, learning_rate,"
                " calibration, revision, turn_count, created_at, updated_at, request_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    session.id,
                    session.tenant,
                    session.user_id,
                    session.model,
                    session.mode,
                    json.dumps(session.strengths),
                    session.learning_rate,
                    None,
                    session.revision,
                    0,
                    self.database.encode_time(now),
                    self.database.encode_time(now),
                    request_id or None,
                ),
            )
        return session

    def get(self, session_id: str) -> Session:
        with self.database.transaction() as cursor:
            return self._read(cursor, session_id)

    def turns(self, session_id: str) -> list[Turn]:
        with self.database.transaction() as cursor:
            self._read(cursor, session_id)
            cursor.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = %s ORDER BY idx", (session_id,)
            )
            return [self._turn(row) for row in cursor.fetchall()]

    def answer_text(self, session_id: str, turn_index: int = 0) -> str:
        """The text of assistant turn ``turn_index``, or of the latest (0); "" if there is none."""
        condition = "AND idx = %s" if turn_index else ""
        with self.database.transaction() as cursor:
            self._read(cursor, session_id)
            cursor.execute(
                f"SELECT text FROM turns WHERE session_id = %s AND role = %s {condition}"
                " ORDER BY idx DESC LIMIT 1",
                (session_id, ASSISTANT, *([turn_index] if turn_index else [])),
            )
            row = cursor.fetchone()
        return str(row[0]) if row else ""

    def list(
        self, tenant: str, user_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Session], str]:
        """A user's sessions, newest first, a page at a time."""
        check_identifier("user_id", user_id)
        size = pages.page_size(page_size)
        before = pages.decode_page_token(page_token)
        conditions = "tenant = %s AND user_id = %s"
        params: list[Any] = [tenant, user_id]
        if before is not None:
            conditions += " AND seq < %s"
            params.append(before)
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {conditions} ORDER BY seq DESC LIMIT %s",
                (*params, size + 1),
            )
            rows = cursor.fetchall()
        sessions = [self._session(row) for row in rows[:size]]
        token = pages.encode_page_token(int(rows[size - 1][0])) if len(rows) > size else ""
        return sessions, token

    def delete(self, session_id: str) -> None:
        with self.database.transaction(write=True) as cursor:
            self._lock(cursor, session_id)
            cursor.execute("DELETE FROM turns WHERE session_id = %s", (session_id,))
            cursor.execute("DELETE FROM sessions WHERE id = %s", (session_id,))

    def update(
        self,
        session_id: str,
        change: Callable[[Session], tuple[Session, _Result]],
        expected_revision: int = 0,
    ) -> tuple[Session, _Result]:
        """Apply ``change`` to the current session under its lock and store the result.

        A change that returns the session itself (a retried request, see ``last_request_id``)
        writes nothing."""
        with self.database.transaction(write=True) as cursor:
            session = self._lock(cursor, session_id, expected_revision)
            changed, result = change(session)
            if changed is session:
                return session, result
            return self._write(cursor, changed, turn_count=session.turn_count), result

    def append_turn(
        self,
        session_id: str,
        role: str,
        text: str,
        steering: Sequence[SteeringUsed] = (),
        change: Callable[[Session], tuple[Session, PreferenceUpdate | None]] | None = None,
        request_id: str = "",
    ) -> tuple[Turn, Session]:
        """Add a turn (index = previous count + 1), with the session change it caused, atomically.

        ``role`` must already be user or assistant (the manager checks). With ``request_id``,
        appending again with the same key returns the turn the first call added, and the session
        as it is now, without adding a turn or applying ``change`` again.
        """
        turns, session = self.append_turns(
            session_id, [NewTurn(role, text, tuple(steering), change, request_id)]
        )
        return turns[-1], session

    def append_turns(
        self, session_id: str, new: Sequence[NewTurn], expected_turn_count: int | None = None
    ) -> tuple[tuple[Turn, ...], Session]:
        """Add ``new`` turns in order, all or none, in one transaction under the session's lock.

        With ``expected_turn_count``, a session that has other turns by now is refused (ABORTED),
        so that an answer is never stored after turns it did not see. If the last new turn's
        request id was recorded before (a retry), the turns recorded then are returned instead.
        """
        for turn in new:
            self.check_turn(turn)
        now = datetime.now(UTC)
        with self.database.transaction(write=True) as cursor:
            session = self._lock(cursor, session_id)
            earlier = self._recorded(cursor, session_id, [t.request_id for t in new])
            if earlier is not None:
                return earlier, session
            if expected_turn_count is not None and session.turn_count != expected_turn_count:
                raise AbortedError(
                    f"session {session_id} has {session.turn_count} turns, not the "
                    f"{expected_turn_count} this answer was generated from (another message came "
                    "in meanwhile); nothing was recorded; ask again"
                )
            self._check_room(cursor, session, new)
            turns: tuple[Turn, ...] = ()
            for turn in new:
                changed, update = turn.change(session) if turn.change else (session, None)
                stored = Turn(session.turn_count + 1, turn.role, turn.text, now, turn.steering, None, update)
                self._insert_turn(cursor, session_id, stored, turn.request_id)
                session = replace(changed, turn_count=stored.index)
                turns = (*turns, stored)
            return turns, self._write(cursor, session, turn_count=session.turn_count)

    @staticmethod
    def check_turn(turn: NewTurn) -> None:
        """A clear error for a turn no session may hold (empty, too long, a bad request id)."""
        check_request_id(turn.request_id)
        if not turn.text.strip():
            raise InvalidArgumentError("a turn needs text")
        if len(turn.text) > MAX_TURN_CHARACTERS:
            raise InvalidArgumentError(
                f"a turn is limited to {MAX_TURN_CHARACTERS} characters, got {len(turn.text)}"
            )
        if turn.role == USER and turn.steering:
            raise InvalidArgumentError("only assistant turns record the steering that produced them")

    def _recorded(
        self, cursor: Cursor, session_id: str, request_ids: Sequence[str]
    ) -> tuple[Turn, ...] | None:
        """The turns recorded earlier under these request ids, if the last one was (a retry)."""
        if not request_ids or not request_ids[-1]:
            return None
        cursor.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = %s AND request_id = %s",
            (session_id, request_ids[-1]),
        )
        last = cursor.fetchone()
        if last is None:
            return None
        turns: tuple[Turn, ...] = ()
        for request_id in request_ids[:-1]:
            cursor.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = %s AND request_id = %s",
                (session_id, request_id),
            )
            row = cursor.fetchone()
            if row is not None:
                turns = (*turns, self._turn(row))
        return (*turns, self._turn(last))

    def _check_room(self, cursor: Cursor, session: Session, new: Sequence[NewTurn]) -> None:
        limits = self.limits
        if session.turn_count + len(new) > limits.max_turns:
            raise FailedPreconditionError(
                f"session {session.id} holds {session.turn_count} turns, the most a session may hold is "
                f"{limits.max_turns} (STEERLAB_SESSION_MAX_TURNS); start a new session"
            )
        cursor.execute(
            "SELECT COALESCE(SUM(LENGTH(text)), 0) FROM turns WHERE session_id = %s", (session.id,)
        )
        held = int(cursor.fetchone()[0]) + sum(len(t.text) for t in new)
        if held > limits.max_history_characters:
            raise FailedPreconditionError(
                f"session {session.id} would hold {held} characters of conversation, the most a session "
                f"may hold is {limits.max_history_characters} (STEERLAB_SESSION_MAX_HISTORY_CHARACTERS); "
                "start a new session"
            )

    def _insert_turn(self, cursor: Cursor, session_id: str, turn: Turn, request_id: str) -> None:
        cursor.execute(
            f"INSERT INTO turns (session_id, {_TURN_COLUMNS}, request_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                session_id,
                turn.index,
                turn.role,
                turn.text,
                json.dumps([vars(s) for s in turn.steering]),
                None,
                json.dumps(turn.update.to_dict()) if turn.update else None,
                self.database.encode_time(turn.created_at),
                request_id or None,
            ),
        )

    def rate_turn(
        self,
        session_id: str,
        turn_index: int,
        rating: str,
        change: Callable[[Session, Turn], tuple[Session, PreferenceUpdate]],
    ) -> tuple[Session, PreferenceUpdate]:
        """Record a rating on an assistant turn and apply the change it causes."""
        with self.database.transaction(write=True) as cursor:
            session = self._lock(cursor, session_id)
            cursor.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = %s AND idx = %s",
                (session_id, turn_index),
            )
            row = cursor.fetchone()
            if row is None:
                raise NotFoundError(
                    f"session {session_id} has no turn {turn_index} (it has {session.turn_count})"
                )
            turn = self._turn(row)
            if turn.role != ASSISTANT:
                raise FailedPreconditionError(f"turn {turn_index} is the user's; rate an assistant turn")
            changed, update = change(session, turn)
            cursor.execute(
                "UPDATE turns SET rating = %s, preference_update = %s WHERE session_id = %s AND idx = %s",
                (rating, json.dumps(update.to_dict()), session_id, turn_index),
            )
            return self._write(cursor, changed, turn_count=session.turn_count), update

    # -- helpers ----------------------------------------------------------------------------

    def _lock(self, cursor: Cursor, session_id: str, expected_revision: int = 0) -> Session:
        self.database.lock(cursor, f"steerlab:session:{session_id}")
        session = self._read(cursor, session_id)
        if expected_revision and expected_revision != session.revision:
            raise AbortedError(
                f"session {session_id} changed since revision {expected_revision} "
                f"(now {session.revision}); read it again and retry"
            )
        return session

    def _read(self, cursor: Cursor, session_id: str) -> Session:
        cursor.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = %s", (session_id,))
        row = cursor.fetchone()
        if row is None:
            raise NotFoundError(f"no session {session_id!r}")
        return self._session(row)

    def _write(self, cursor: Cursor, session: Session, turn_count: int) -> Session:
        stored = replace(
            session, revision=session.revision + 1, updated_at=datetime.now(UTC), turn_count=turn_count
        )
        cursor.execute(
            "UPDATE sessions SET mode = %s, strengths = %s, learning_rate = %s, calibration = %s,"
            " revision = %s, turn_count = %s, updated_at = %s, last_request_id = %s WHERE id = %s",
            (
                stored.mode,
                json.dumps(stored.strengths),
                stored.learning_rate,
                json.dumps(stored.calibration.to_dict()) if stored.calibration else None,
                stored.revision,
                stored.turn_count,
                self.database.encode_time(stored.updated_at),
                stored.last_request_id or None,
                stored.id,
            ),
        )
        return stored

    def _session(self, row: Any) -> Session:
        return Session(
            id=row[1],
            tenant=row[2],
            user_id=row[3],
            model=row[4],
            mode=row[5],
            strengths={k: float(v) for k, v in json.loads(row[6]).items()},
            learning_rate=float(row[7]),
            calibration=Calibration.from_dict(json.loads(row[8])) if row[8] else None,
            revision=int(row[9]),
            turn_count=int(row[10]),
            created_at=self.database.decode_time(row[11]),
            updated_at=self.database.decode_time(row[12]),
            last_request_id=row[13] or "",
        )

    def _turn(self, row: Any) -> Turn:
        return Turn(
            index=int(row[0]),
            role=row[1],
            text=row[2],
            steering=tuple(SteeringUsed(**s) for s in json.loads(row[3])),
            rating=row[4],
            update=PreferenceUpdate.from_dict(json.loads(row[5])) if row[5] else None,
            created_at=self.database.decode_time(row[6]),
        )
