"""What the session service does, independent of gRPC: SELECT, CALIBRATE, LEARN and the log."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from steerlab.auth import may_see
from steerlab.steering.config import check_strength
from steerlab.steering.datasets import Dimension
from steerlab.steering.errors import FailedPreconditionError, InvalidArgumentError
from steerlab.storage.requests import MAX_PARENT_REQUEST_ID_LENGTH, check_request_id

from . import calibrate
from .catalog import DimensionCatalog
from .learn import FeedbackInterpreter, Reading, apply_signals, make_interpreter
from .state import (
    ASSISTANT,
    DEFAULT_LEARNING_RATE,
    LEARN,
    MODES,
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
from .store import NewTurn, SessionStore

MIN_LEARNING_RATE = 5.0
MAX_MESSAGES_PER_EXCHANGE = 16
READINGS_KEPT = 256


def _derived(request_id: str, part: str) -> str:
    """The request id of one of the turns an exchange records ("" without one)."""
    return f"{request_id}:{part}" if request_id else ""


class SessionManager:
    """Sessions over a :class:`SessionStore`; dimensions come from a :class:`DimensionCatalog`.

    The LEARN interpreter (a sentence-embedding model) loads on first use.
    """

    def __init__(
        self,
        store: SessionStore,
        catalog: DimensionCatalog,
        interpreter: FeedbackInterpreter | None = None,
        default_learning_rate: float = DEFAULT_LEARNING_RATE,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self._interpreter = interpreter
        self._interpreter_lock = threading.Lock()
        self._readings: OrderedDict[tuple[str, str, tuple[Dimension, ...]], Reading] = OrderedDict()
        self._readings_lock = threading.Lock()
        self.default_learning_rate = default_learning_rate

    @property
    def interpreter(self) -> FeedbackInterpreter:
        with self._interpreter_lock:
            if self._interpreter is None:
                self._interpreter = make_interpreter()
            return self._interpreter

    # -- validation -------------------------------------------------------------------------

    def _known(self, names: Sequence[str]) -> dict[str, Dimension]:
        """The dimensions the caller may use (shared ones and its tenant's), if ``names`` are among them."""
        known = self._visible(self.catalog.dimensions())
        if any(name not in known for name in names):
            known = self._visible(self.catalog.dimensions(refresh=True))
        unknown = [name for name in names if name not in known]
        if unknown:
            raise InvalidArgumentError(
                f"unknown dimension {unknown[0]!r}; known dimensions: {', '.join(sorted(known)) or 'none'}"
            )
        return known

    def _visible(self, dimensions: dict[str, Dimension]) -> dict[str, Dimension]:
        return {name: d for name, d in dimensions.items() if may_see(self.catalog.tenant_of(name))}

    def _checked(self, strengths: dict[str, float]) -> dict[str, float]:
        self._known(list(strengths))
        return {name: check_strength(name, value) for name, value in strengths.items()}

    @staticmethod
    def _checked_mode(mode: str) -> str:
        if mode not in MODES:
            raise InvalidArgumentError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        return mode

    # -- sessions and SELECT ----------------------------------------------------------------

    def create(
        self,
        tenant: str,
        user_id: str,
        model: str,
        mode: str = "select",
        strengths: dict[str, float] | None = None,
        learning_rate: float = 0.0,
        request_id: str = "",
    ) -> Session:
        return self.store.create(
            tenant or "default",
            user_id,
            model,
            self._checked_mode(mode),
            self._checked(strengths or {}),
            learning_rate or self.default_learning_rate,
            request_id,
        )

    def select(
        self,
        session_id: str,
        strengths: dict[str, float],
        mode: str | None = None,
        expected_revision: int = 0,
    ) -> Session:
        """SELECT: set any subset of strengths (the others keep theirs), and optionally the mode."""
        checked = self._checked(strengths)
        new_mode = self._checked_mode(mode) if mode else None

        def change(session: Session) -> tuple[Session, None]:
            updated = session.with_strengths(checked)
            return (replace(updated, mode=new_mode) if new_mode else updated), None

        session, _ = self.store.update(session_id, change, expected_revision)
        return session

    # -- turns and LEARN --------------------------------------------------------------------

    def append_turn(
        self,
        session_id: str,
        role: str,
        text: str,
        steering: Sequence[SteeringUsed] = (),
        request_id: str = "",
    ) -> tuple[Turn, Session]:
        """Record a turn. A user turn in LEARN mode also updates the strengths (with reasons).

        A repeated ``request_id`` returns the turn recorded the first time (LEARN does not step
        twice)."""
        if role == ASSISTANT:
            self._check_steering(steering)
            return self.store.append_turn(session_id, role, text, steering, request_id=request_id)
        if role != USER:
            raise InvalidArgumentError("a turn's role must be user or assistant")
        session = self.store.get(session_id)
        turn = self._user_turn(session, text, self.store.answer_text(session_id), request_id)
        turns, session = self.store.append_turns(session_id, [turn])
        return turns[0], session

    def preview_exchange(
        self, session_id: str, user_texts: Sequence[str]
    ) -> tuple[Session, list[Turn], PreferenceUpdate]:
        """The session, its turns, and its strengths as LEARN would leave them after
        ``user_texts``, with what LEARN would change; nothing is written."""
        self._check_exchange_texts(user_texts)
        session, turns = self.store.get(session_id), self.store.turns(session_id)
        answer = next((t.text for t in reversed(turns) if t.role == ASSISTANT), "")
        changes: list[StrengthChange] = []
        summaries: list[str] = []
        for text in user_texts:
            change = self._user_turn(session, text, answer).change
            if change is None:
                continue
            session, update = change(session)
            if update is not None:
                changes.extend(update.changes)
                summaries.append(update.summary)
        return session, turns, PreferenceUpdate(tuple(changes), " ".join(summaries))

    def record_exchange(
        self,
        session_id: str,
        user_texts: Sequence[str],
        answer: str,
        steering: Sequence[SteeringUsed],
        expected_turn_count: int | None = None,
        request_id: str = "",
    ) -> tuple[tuple[Turn, ...], Session]:
        """Record the user's message(s) and the complete answer as one unit (LEARN's update with
        them), or nothing; ABORTED if the session gained turns since ``expected_turn_count``."""
        self._check_exchange_texts(user_texts)
        check_request_id(request_id, MAX_PARENT_REQUEST_ID_LENGTH)
        self._check_steering(steering)
        session = self.store.get(session_id)
        last_answer = self.store.answer_text(session_id)
        new = [
            self._user_turn(session, text, last_answer, _derived(request_id, f"user:{number}"))
            for number, text in enumerate(user_texts)
        ]
        new.append(NewTurn(ASSISTANT, answer, tuple(steering), request_id=_derived(request_id, "assistant")))
        return self.store.append_turns(session_id, new, expected_turn_count)

    @staticmethod
    def _check_exchange_texts(user_texts: Sequence[str]) -> None:
        if not user_texts:
            raise InvalidArgumentError("an exchange needs the user's message (user_texts)")
        if len(user_texts) > MAX_MESSAGES_PER_EXCHANGE:
            raise InvalidArgumentError(
                f"{len(user_texts)} user messages in one exchange; the limit is {MAX_MESSAGES_PER_EXCHANGE}"
            )
        for text in user_texts:
            SessionStore.check_turn(NewTurn(USER, text))

    def _user_turn(self, session: Session, text: str, answer: str, request_id: str = "") -> NewTurn:
        """A user turn, with LEARN's change when the session learns. Reading is slow (an
        embedding model), so it runs here, before the session is locked; a reply is read
        against the answer it replies to ("the second one is more like it")."""
        if session.mode != LEARN or not text.strip():
            return NewTurn(USER, text, request_id=request_id)
        reading = self._reading(text, answer)

        def learn(current: Session) -> tuple[Session, PreferenceUpdate | None]:
            if current.mode != LEARN:
                return current, None
            strengths, update = apply_signals(current.strengths, reading, current.learning_rate)
            return replace(current, strengths=strengths), update

        return NewTurn(USER, text, change=learn, request_id=request_id)

    def _reading(self, text: str, answer: str) -> Reading:
        """LEARN's reading of ``text``; a preview and the record of the same message read once."""
        dimensions = tuple(self.catalog.dimensions().values())
        key = (text, answer, dimensions)
        with self._readings_lock:
            if key in self._readings:
                self._readings.move_to_end(key)
                return self._readings[key]
        reading = self.interpreter.interpret(text, list(dimensions), answer)
        with self._readings_lock:
            self._readings[key] = reading
            while len(self._readings) > READINGS_KEPT:
                self._readings.popitem(last=False)
        return reading

    def _check_steering(self, steering: Sequence[SteeringUsed]) -> None:
        names = [s.dimension for s in steering]
        if len(set(names)) != len(names):
            raise InvalidArgumentError("a turn records each dimension's steering once; the list repeats one")
        self._known(names)
        for used in steering:
            check_strength(used.dimension, used.strength)
            if used.vector_set_version < 1:
                raise InvalidArgumentError(f"vector set version for {used.dimension!r} must be 1 or more")

    def feedback(
        self, session_id: str, turn_index: int, rating: str, comment: str = ""
    ) -> tuple[Session, PreferenceUpdate]:
        """Thumbs up or down on an assistant turn; in LEARN mode it moves strengths too."""
        if rating not in (THUMBS_UP, THUMBS_DOWN):
            raise InvalidArgumentError("rate a turn thumbs up or thumbs down")
        reading: Reading | None = None
        if rating == THUMBS_DOWN and comment.strip():
            dimensions = list(self.catalog.dimensions().values())
            answer = self.store.answer_text(session_id, turn_index)
            reading = self.interpreter.interpret(comment, dimensions, answer, dissatisfaction=1.0)

        def change(session: Session, _turn: Turn) -> tuple[Session, PreferenceUpdate]:
            if session.mode != LEARN:
                return session, PreferenceUpdate(
                    (), "feedback recorded; strengths learn from it in LEARN mode only"
                )
            if rating == THUMBS_UP:
                rate = max(MIN_LEARNING_RATE, session.learning_rate / 2)
                summary = f"thumbs up: strengths kept; later steps are smaller ({rate:g}% at most)"
                return replace(session, learning_rate=rate), PreferenceUpdate((), summary)
            if reading is None:
                return session, PreferenceUpdate((), "thumbs down: say what to change, e.g. 'too expensive'")
            strengths, update = apply_signals(session.strengths, reading, session.learning_rate)
            return replace(session, strengths=strengths), update

        return self.store.rate_turn(session_id, turn_index, rating, change)

    # -- CALIBRATE --------------------------------------------------------------------------

    def start_calibration(
        self, session_id: str, dimensions: list[str], rounds: int = 0, restart: bool = False
    ) -> Session:
        self._known(dimensions)
        fresh = calibrate.start(dimensions, rounds or calibrate.DEFAULT_ROUNDS)

        def change(session: Session) -> tuple[Session, None]:
            current = session.calibration
            if current is not None and not current.done and not restart:
                comparison = calibrate.pending(current)
                assert comparison is not None
                raise FailedPreconditionError(
                    f"a calibration is in progress ({comparison.dimension} round {comparison.round} of "
                    f"{comparison.rounds}); resume it, or start again with restart"
                )
            return replace(session, calibration=fresh), None

        session, _ = self.store.update(session_id, change)
        return session

    def choose(
        self, session_id: str, dimension: str, round_number: int, side: str, request_id: str = ""
    ) -> Session:
        """Apply the user's pick in the pending comparison; fixes the strength after the last round.

        A repeated ``request_id`` (a retry whose first reply was lost) changes nothing and returns
        the session as it is."""
        check_request_id(request_id)

        def change(session: Session) -> tuple[Session, None]:
            if request_id and session.last_request_id == request_id:
                return session, None
            if session.calibration is None:
                raise FailedPreconditionError("no calibration has been started for this session")
            before = session.strengths.get(dimension, 0.0)
            calibration, fixed = calibrate.choose(session.calibration, dimension, round_number, side, before)
            updated = replace(session, calibration=calibration, last_request_id=request_id)
            if fixed is not None:
                updated = updated.with_strengths({fixed.dimension: fixed.after})
            return updated, None

        session, _ = self.store.update(session_id, change)
        return session

    def calibration(self, session_id: str) -> Calibration | None:
        return self.store.get(session_id).calibration
