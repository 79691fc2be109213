"""``steerlab chat``: an interactive terminal chat with a steered model, through the SDK only.

Lines are messages; lines starting with ``/`` are commands (``/help`` lists them). Answers are
streamed as they are generated. In LEARN mode a line after each answer says what the message
changed in the strengths, and why.
"""

from __future__ import annotations

import getpass
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from steerlab_api.v1 import sessions_pb2 as spb

from .errors import ClientError
from .inference import Answer
from .platform import SteerLab
from .sessions import MODE_NAMES

DEFAULT_CALIBRATION_PROMPT = "Suggest a plan for this weekend."
HELP = """commands:
  /set NAME=PCT ...      change strengths, e.g. /set cost=+40 age=-20 (percent, -100..100)
  /show                  current strengths, and the vector set versions of the last answer
  /calibrate NAME ...    A/B comparisons on your last message; answer 1 or 2 to each
  /good, /bad [COMMENT]  feedback on the last answer (moves strengths in LEARN mode)
  /mode select|calibrate|learn
  /help, /quit"""


STRENGTH_PATTERN = re.compile(r"^(?P<name>[a-z][a-z0-9_-]*)=(?P<pct>[+-]?\d+(\.\d+)?)%?$")


def parse_strengths(items: Iterable[str]) -> dict[str, float]:
    """``["cost=+40", "age=-20%"]`` -> ``{"cost": 40.0, "age": -20.0}``; ValueError says what is wrong.

    The range is the server's to check (it refuses anything outside -100..100).
    """
    strengths: dict[str, float] = {}
    for item in items:
        match = STRENGTH_PATTERN.match(item.strip())
        if not match:
            raise ValueError(f"{item!r} is not NAME=PCT, e.g. cost=+40")
        if match["name"] in strengths:
            raise ValueError(f"{match['name']!r} is named twice")
        strengths[match["name"]] = float(match["pct"])
    return strengths


@dataclass
class ChatSettings:
    mode: str = "select"
    strengths: dict[str, float] = field(default_factory=dict)
    user: str = field(default_factory=getpass.getuser)
    session: str = ""  # resume this session instead of creating one
    max_new_tokens: int = 160


class Chat:
    """The REPL's state and commands; reads lines from ``read`` and writes to ``out``."""

    def __init__(self, steerlab: SteerLab, settings: ChatSettings, out: TextIO) -> None:
        self.steerlab = steerlab
        self.settings = settings
        self.out = out
        self.last_message = ""
        self.last_answer: Answer | None = None
        self._read: Callable[[str], str] = input
        if settings.session:
            self.session = steerlab.sessions.get(settings.session)
        else:
            self.session = steerlab.create_session(
                settings.user, mode=settings.mode, strengths=settings.strengths
            )
        self.commands: dict[str, Callable[[list[str]], None]] = {
            "set": self.set_strengths,
            "show": self.show,
            "calibrate": self.calibrate,
            "good": lambda args: self.feedback("up", args),
            "bad": lambda args: self.feedback("down", args),
            "mode": self.change_mode,
            "help": lambda _args: self.say(HELP),
        }

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self, read: Callable[[str], str] = input) -> None:
        """Read and handle lines until /quit or end of input."""
        self._read = read
        self.say(
            f"steerlab chat: session {self.session.id} on {self.session.model}, "
            f"mode {MODE_NAMES.get(self.session.mode, '?')}, strengths {_strengths(self.session.strengths)}"
        )
        self.say("type a message, /help for commands, /quit to leave")
        if self.session.mode == spb.INTERFACE_MODE_CALIBRATE:
            self.say(
                "CALIBRATE: send a message, then /calibrate NAME ... to set strengths by A/B comparisons"
            )
        while True:
            try:
                line = self._read("you> ").strip()
            except EOFError:
                break
            except KeyboardInterrupt:  # at the prompt: a fresh line, as in a shell
                self.say()
                continue
            if line in ("/quit", "/exit"):
                break
            if line:
                self.handle(line)

    def handle(self, line: str) -> None:
        """One line: a command or a message. A failed call is reported and the chat goes on;
        Ctrl-C stops an answer or a calibration and returns to the prompt."""
        try:
            if line.startswith("/"):
                name, *args = shlex.split(line[1:]) or [""]
                command = self.commands.get(name)
                if command is None:
                    self.say(f"unknown command /{name}; /help lists them")
                    return
                command(args)
            else:
                self.send(line)
        except (ClientError, ValueError) as exc:
            self.say(f"error: {exc}")
        except (KeyboardInterrupt, EOFError):
            self.say("\n(stopped)")

    def send(self, message: str) -> None:
        stream = self.steerlab.chat(
            message, session=self.session.id, max_new_tokens=self.settings.max_new_tokens
        )
        print("bot> ", end="", file=self.out, flush=True)
        try:
            for delta in stream:
                print(delta, end="", file=self.out, flush=True)
        except KeyboardInterrupt:
            stream.cancel()  # frees the request's batch slot on the server at once
            raise
        self.say()
        self.last_message, self.last_answer = message, stream.answer
        if self.session.mode == spb.INTERFACE_MODE_LEARN:
            update = self.steerlab.preference_update(self.session.id, stream.answer)
            self.say(f"learned: {update.summary if update else 'no change'}")
        self.session = self.steerlab.sessions.get(self.session.id)

    def set_strengths(self, args: list[str]) -> None:
        if not args:
            raise ValueError("usage: /set NAME=PCT ...")
        self.session = self.steerlab.sessions.set_strengths(self.session.id, parse_strengths(args))
        self.say(f"strengths: {_strengths(self.session.strengths)}")

    def show(self, _args: list[str]) -> None:
        self.session = self.steerlab.sessions.get(self.session.id)
        self.say(
            f"mode {MODE_NAMES.get(self.session.mode, '?')}; strengths {_strengths(self.session.strengths)}"
        )
        if self.last_answer is None:
            self.say("vector sets: none used yet (each dimension's 'production' alias applies)")
            return
        applied = self.last_answer.applied
        used = ", ".join(
            f"{name} v{version} at {strength:+g}%" for name, (version, strength) in applied.items()
        )
        self.say(f"vector sets of the last answer: {used or 'none (no steering)'}")

    def calibrate(self, args: list[str]) -> None:
        if not args:
            raise ValueError("usage: /calibrate NAME ...")
        prompt = self.last_message or DEFAULT_CALIBRATION_PROMPT
        self.say(f"calibrating {', '.join(args)} on: {prompt}")
        result = self.steerlab.calibrate(
            self.session.id, args, prompt, self._ask_preference, max_new_tokens=self.settings.max_new_tokens
        )
        self.session = result.session
        for change in result.results:
            self.say(f"calibrated {change.dimension}: {change.after:+.0f}%")

    def _ask_preference(self, comparison: spb.Comparison, left: str, right: str) -> str:
        self.say(f"[{comparison.dimension} {comparison.round}/{comparison.rounds}]")
        self.say(f"  1) {' '.join(left.split())}")
        self.say(f"  2) {' '.join(right.split())}")
        while True:
            choice = self._read("which do you prefer? [1/2] ").strip()
            if choice in ("1", "2"):
                return "left" if choice == "1" else "right"

    def feedback(self, rating: str, args: list[str]) -> None:
        if self.last_answer is None:
            raise ValueError("no answer to rate yet")
        response = self.steerlab.sessions.feedback(
            self.session.id, self.last_answer.turn_index, rating, " ".join(args)
        )
        self.session = response.session
        self.say(f"feedback recorded: {response.update.summary or 'no change'}")

    def change_mode(self, args: list[str]) -> None:
        if len(args) != 1:
            raise ValueError("usage: /mode select|calibrate|learn")
        self.session = self.steerlab.sessions.set_strengths(self.session.id, {}, mode=args[0])
        self.say(f"mode {MODE_NAMES.get(self.session.mode, '?')}")


def _strengths(strengths: Mapping[str, float]) -> str:
    items = sorted(strengths.items())
    return ", ".join(f"{name} {value:+.0f}%" for name, value in items) or "none (unsteered)"
