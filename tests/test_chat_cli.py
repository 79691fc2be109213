"""`steerlab chat` driven through a pseudo-terminal against `steerlab up`: messages stream back,
and /set, /show, /calibrate, /mode, feedback and LEARN's report work as a user types them."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import Any

from conftest import PLATFORM_TOKEN

from steerlab_client import SteerLab
from steerlab_client.chat import Chat, ChatSettings


class Terminal:
    """A child process on a pseudo-terminal: type lines, wait for output."""

    def __init__(self, *command: str) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "STEERLAB_TOKEN": PLATFORM_TOKEN, "TERM": "dumb"}
        self.process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.master = master
        self.seen = ""  # everything read so far
        self.position = 0  # where the next expect starts looking

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def expect(self, pattern: str, timeout_s: float = 120) -> re.Match[str]:
        """Wait until ``pattern`` appears after the previous match; return the match."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            match = compiled.search(self.seen, self.position)
            if match:
                self.position = match.end()
                return match
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.master], [], [], max(0.0, remaining))
            if not readable:
                raise AssertionError(f"no {pattern!r} in:\n{self.seen[self.position :]}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the chat ended without {pattern!r}:\n{self.seen[self.position :]}")
            self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.master)


def test_a_chat_with_commands_in_a_terminal(steerlab_up: Any) -> None:
    chat = [sys.executable, "-m", "steerlab.cli", "chat", "--server", steerlab_up.address]
    terminal = Terminal(*chat, "--steer", "cost=+40", "--user", "pat", "--max-new-tokens", "6")
    try:
        terminal.expect(r"session \S+ on .*, mode select, strengths cost \+40%")
        terminal.expect(r"you> ")
        terminal.type("Plan a dinner in Rome.")
        reply = terminal.expect(r"bot> (.+)\nyou> ")
        assert reply[1].strip()

        terminal.type("/show")
        terminal.expect(r"mode select; strengths cost \+40%")
        terminal.expect(r"vector sets of the last answer: cost v1 at \+40%")

        terminal.type("/set age=-20 culture=+100")
        terminal.expect(r"strengths: age -20%, cost \+40%, culture \+100%")
        terminal.type("/set cost=500")
        terminal.expect(r"error: INVALID_ARGUMENT: .*500")
        terminal.type("/set cost")
        terminal.expect(r"error: 'cost' is not NAME=PCT")

        terminal.type("/calibrate cost")
        terminal.expect(r"calibrating cost on: Plan a dinner in Rome\.")
        for _ in range(3):
            terminal.expect(r"which do you prefer\? \[1/2\] ")
            terminal.type("2")
        terminal.expect(r"calibrated cost: \+\d+%")

        terminal.type("/mode learn")
        terminal.expect(r"mode learn")
        terminal.type("That is way too expensive for me, cheaper please.")
        terminal.expect(r"bot> .*\n")
        terminal.expect(r"learned: .*cost")

        terminal.type("/bad too long")
        terminal.expect(r"feedback recorded: ")
        terminal.type("/teleport")
        terminal.expect(r"unknown command /teleport; /help lists them")
        terminal.type("/quit")
        assert terminal.close() == 0
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()


class CtrlCAtFirstWords(io.StringIO):
    """A terminal whose user presses Ctrl-C as soon as the answer's first words appear."""

    def __init__(self) -> None:
        super().__init__()
        self.answering = False

    def write(self, text: str) -> int:
        if self.answering and text:
            self.answering = False
            raise KeyboardInterrupt
        self.answering = self.answering or text == "bot> "
        return super().write(text)


def test_ctrl_c_during_an_answer_stops_it_and_the_chat_goes_on(steerlab_up: Any) -> None:
    """In-process (a signal's timing against this small, fast model would be a race): the
    interrupt lands inside the stream loop exactly as Ctrl-C would."""
    out = CtrlCAtFirstWords()
    lines = iter(["Tell me a very long story.", "/show", "/quit"])
    with SteerLab(steerlab_up.address, token=PLATFORM_TOKEN) as steerlab:
        chat = Chat(steerlab, ChatSettings(user="quinn", max_new_tokens=400), out)
        chat.run(lambda _prompt: next(lines))
    text = out.getvalue()
    assert "bot> \n(stopped)" in text, text
    assert "vector sets: none used yet" in text  # the stopped answer is not taken as the last one


def test_chat_without_a_server_says_so_in_one_line(steerlab_up: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "steerlab.cli", "chat", "--server", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.startswith("steerlab: error: UNAVAILABLE"), result.stderr
