"""The progress line of ``discover --once`` on a terminal: scopes done of total, failures so far.

One line on stderr, redrawn in place (``\\r`` and erase-line), at most ten times a second. It is
shown only when stderr is a terminal and the report is text (see :func:`wanted`), so a pipe, a
log collector or ``--output json`` never sees it. Log records go through :attr:`ProgressLine.log_stream`,
which erases the line before a record and redraws it after, so no log line ever carries progress.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO, cast

from mlsvc_discover.discoverers.base import Progress

__all__ = ["ProgressLine", "wanted"]

_ERASE = "\r\x1b[K"


def wanted(stream: TextIO, output: str) -> bool:
    """Progress only for people: a terminal on ``stream``, a text report, and not ``TERM=dumb``."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and output == "text" and os.environ.get("TERM") != "dumb"


@dataclass
class _State:
    done: int = 0
    total: int = 0
    failed: int = 0
    unit: str = "scopes"
    counted: bool = False
    finished: bool = False


class ProgressLine:
    """A :data:`~mlsvc_discover.discoverers.base.ProgressCallback` drawing one status line."""

    def __init__(
        self,
        stream: TextIO,
        names: Sequence[str],
        *,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._states = {name: _State() for name in names}
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._shown = False
        self._closed = False
        self._last = float("-inf")
        self.log_stream: TextIO = cast(TextIO, _LogStream(self))

    def __call__(self, event: Progress) -> None:
        with self._lock:
            if self._closed:
                return
            state = self._states.setdefault(event.source, _State())
            if event.finished:
                state.finished = True
                state.failed = max(state.failed, event.failed)
            else:
                state.done, state.total, state.failed, state.unit = event.done, event.total, event.failed, event.unit
                state.counted = True
            if all(s.finished for s in self._states.values()):
                self.close()
                return
            now = self._clock()
            if now - self._last >= self._min_interval:
                self._draw()
                self._last = now

    def text(self) -> str:
        parts = []
        for name, s in self._states.items():
            waiting = name if s.finished else f"{name} …"
            part = f"{name} {s.done}/{s.total} {s.unit}" if s.counted else waiting
            if s.failed:
                part += f", {s.failed} failed"
            if s.finished:
                part += ", done"
            parts.append(part)
        return "discovering: " + " | ".join(parts)

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 24)).columns - 1
        line = self.text()
        if len(line) > width > 1:
            line = line[: width - 1] + "…"
        self._stream.write(_ERASE + line)
        self._stream.flush()
        self._shown = True

    def _erase(self) -> None:
        if self._shown:
            self._stream.write(_ERASE)
            self._shown = False

    def close(self) -> None:
        """Draw the final state once and end the line; later events and redraws are ignored."""
        with self._lock:
            if self._closed:
                return
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
            self._shown = False
            self._closed = True


class _LogStream(io.TextIOBase):
    """What the log handler writes to while the line is up: erase, write the record, redraw."""

    def __init__(self, line: ProgressLine) -> None:
        super().__init__()
        self._line = line

    def write(self, text: str) -> int:
        line = self._line
        with line._lock:
            line._erase()
            line._stream.write(text)
            if text.endswith("\n") and not line._closed and line._last > float("-inf"):
                line._draw()
        return len(text)

    def flush(self) -> None:
        self._line._stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return True
