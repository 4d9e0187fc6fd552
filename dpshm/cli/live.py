"""The live screen of ``dpshm up`` and ``dpshm demo``: output scrolls above a status block.

On a terminal the status block (the stream table) stays at the bottom and is
redrawn in place; every other line (log records, ``print``, liblsl's own
messages, workers' output) scrolls above it, as pip and cargo show progress.

To catch *every* line, :meth:`LiveStatus.capture` points the process's file
descriptors 1 and 2 at a pipe (liblsl writes to fd 2 from C, worker processes
inherit both; fd 2 only when it is the terminal too: a redirected stderr stays
where it goes) and a thread copies what arrives, line by line, to the terminal
through :meth:`LiveStatus.log_line`: clear the block, write the line, draw the
block again, all under one lock. A crash that kills the process (a segfault)
loses what was still in the pipe; Python's own tracebacks print after the
descriptors are back. The block is cut to the terminal's width and
height, since a wrapped or scrolled-off line could not be redrawn in place.
:meth:`LiveStatus.close` puts the descriptors back; the last block stays on screen.

Elsewhere (a pipe, a file) the output is left alone: one summary line every
:data:`PLAIN_EVERY_S` seconds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from dpshm._threads import join_thread
from dpshm.cli.screen import format_table, state_text

PLAIN_EVERY_S = 5.0  # a summary line this often when the output is not a terminal
READER_JOIN_S = 1.0  # longest close() waits for the last captured output
FALLBACK_SIZE = (80, 24)


class LiveStatus:
    """Status block at the bottom of a terminal, output scrolling above; see the module."""

    def __init__(self, stream: TextIO | None = None):
        self.out = stream or sys.stdout
        self.tty = _is_terminal(self.out)
        self.last = 0.0
        self._lock = threading.RLock()
        self._block: list[str] = []
        self._drawn = 0  # lines of the block on the screen; the cursor is just below them
        self._term: TextIO | None = None  # the terminal while fds 1 and 2 are captured
        self._saved: dict[int, int] = {}
        self._reader: threading.Thread | None = None

    # -- the block ----------------------------------------------------------------------
    def __call__(self, status: dict[str, Any], extra: Sequence[str] = ()) -> None:
        """Show ``status`` (and ``extra`` lines under the table)."""
        if self.tty:
            with self._lock:
                self._block = format_table(status).splitlines() + list(extra)
                self._clear()
                self._draw()
                self._flush()
        elif status["streams"] and time.monotonic() - self.last >= PLAIN_EVERY_S:
            self.last = time.monotonic()
            parts = []
            for s in status["streams"].values():
                state = state_text(s)
                parts.append(
                    f"{s['name']}: head {s['head']} {s['measured_rate']:.0f} Hz"
                    + ("" if state == "ok" else f" {state}")
                )
            self.out.write(f"[dpshm] {len(parts)} stream(s): " + "; ".join(parts) + "\n")
            for line in extra:
                self.out.write(f"[dpshm] {line}\n")
            self.out.flush()

    def log_line(self, text: str) -> None:
        """Write ``text`` above the status block (which is drawn again below it)."""
        with self._lock:
            self._clear()
            self._screen().write(text + "\n")
            self._draw()
            self._flush()

    def _screen(self) -> TextIO:
        return self._term or self.out

    def _flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._screen().flush()

    def _clear(self) -> None:
        if self._drawn:
            # to the first line of the block, then erase to the end of the screen
            self._screen().write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        if not self._block:
            return
        cols, rows = _size(self._screen())
        lines = self._block
        if len(lines) > rows - 1:
            keep = max(rows - 2, 1)
            lines = [*lines[:keep], f"... {len(lines) - keep} more lines (`dpshm ls` lists all)"]
        lines = [line[: max(cols - 1, 1)] for line in lines]
        self._screen().write("\n".join(lines) + "\n")
        self._drawn = len(lines)

    # -- capturing the process's output -------------------------------------------------
    def capture(self) -> LiveStatus:
        """On a terminal, send everything written to fds 1 and 2 above the block."""
        if not self.tty or self._term is not None:
            return self
        sys.stdout.flush()
        sys.stderr.flush()
        fd = self.out.fileno()
        self._term = open(os.dup(fd), "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        r, w = os.pipe()
        # stderr too when it is a terminal (liblsl writes there); a redirected one stays so
        for target in (1, 2) if _fd_is_terminal(2) else (1,):
            self._saved[target] = os.dup(target)
            os.dup2(w, target)
        os.close(w)
        self._reader = threading.Thread(
            target=self._copy_lines, args=(r,), name="dpshm-live-output", daemon=True
        )
        self._reader.start()
        return self

    def _copy_lines(self, fd: int) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self.log_line(line.decode("utf-8", "replace").rstrip("\r"))
            if pending:
                self.log_line(pending.decode("utf-8", "replace"))
        finally:
            os.close(fd)

    def close(self) -> None:
        """Put fds 1 and 2 back (idempotent); the last block stays on screen."""
        if self._term is None:
            return
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        for target, saved in self._saved.items():
            os.dup2(saved, target)  # closes our copy of the pipe's write end
            os.close(saved)
        self._saved.clear()
        if self._reader is not None:  # EOF once no process holds the write end any more
            join_thread(self._reader, READER_JOIN_S)
        with self._lock:
            term, self._term = self._term, None
            self._drawn = 0  # what follows is written below the final block
            term.close()

    def __enter__(self) -> LiveStatus:
        return self.capture()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _fd_is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _size(stream: TextIO) -> tuple[int, int]:
    """Columns and lines of the terminal behind ``stream`` (fd 1 may be captured)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return FALLBACK_SIZE
    return size.columns or FALLBACK_SIZE[0], size.lines or FALLBACK_SIZE[1]
