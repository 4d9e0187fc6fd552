"""A real headless Chromium driven over the DevTools protocol on a pipe (tests only).

``chromium --remote-debugging-pipe`` reads NUL-terminated JSON commands on
fd 3 and writes replies and events on fd 4: no websocket client needed. Use
as a context manager; every call is bounded by a timeout::

    with Chromium(tmp_path) as browser:
        browser.open("http://127.0.0.1:7091/")
        browser.wait_for("document.querySelectorAll('#streams tbody tr').length > 0")
        png = browser.screenshot(tmp_path / "page.png")

Debian's package is ``chromium`` (``apt-get install -y chromium``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL_HINT = "install it with `apt-get update && apt-get install -y chromium` (see README)"


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """The pipe's ends moved to fds >= 10 (so they never clash with 3 and 4)."""
    out = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return out  # type: ignore[return-value]


class Chromium:
    """One headless browser with one page (tab)."""

    def __init__(self, profile: Path, width: int = 1500, height: int = 1000):
        if CHROMIUM is None:
            raise RuntimeError(f"no chromium on PATH; {INSTALL_HINT}")
        to_r, self._to_w = _high(os.pipe())  # we write commands, chromium reads them on fd 3
        self._from_r, from_w = _high(os.pipe())  # chromium writes on fd 4, we read
        args = [
            CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
            "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--mute-audio",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        # bash moves the pipe ends to fds 3 and 4, then becomes chromium
        script = f'exec "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-'
        err = os.environ.get("CDP_STDERR")  # a file for chromium's stderr when debugging
        self.proc = subprocess.Popen(
            ["bash", "-c", script, "chromium", *args],
            pass_fds=(to_r, from_w),
            stdout=subprocess.DEVNULL,
            stderr=open(err, "wb") if err else subprocess.DEVNULL,  # noqa: SIM115
            start_new_session=True,  # its helpers (zygote, renderer) share the group
        )
        os.close(to_r)
        os.close(from_w)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.size = (width, height)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_r, 1 << 20)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
        with self._cond:
            self._replies[-1] = {"error": {"message": "chromium closed its pipe"}}
            self._cond.notify_all()

    def call(
        self, method: str, params: dict | None = None, session: bool = False, timeout: float = 20
    ) -> dict[str, Any]:
        """Send one command, wait for its reply; raise on an error reply or timeout."""
        mid = next(self._ids)
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies and -1 not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid, None) or self._replies[-1]
        if "error" in reply:
            raise RuntimeError(f"chromium: {method} failed: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str) -> None:
        """Navigate the page to ``url`` and wait for its load."""
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for("document.readyState === 'complete'", timeout=20)

    def eval(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page; its JSON value."""
        res = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=True,
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Wait until ``expression`` is truthy in the page; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied {expression!r} within {timeout} s")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page to ``path``."""
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser and every helper process (idempotent)."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("Browser.close", timeout=5)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):  # helpers outliving the browser
            os.killpg(self.proc.pid, signal.SIGKILL)
        for fd in (self._to_w, self._from_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._reader.join(5)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
