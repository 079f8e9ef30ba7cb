"""A small headless-Chromium driver for tests: the DevTools protocol over a pipe.

Chromium started with ``--remote-debugging-pipe`` reads protocol messages (JSON, each
ended by a NUL byte) on its file descriptor 3 and writes answers and events on 4, so no
port is opened and no package beyond the standard library is needed. ``Page`` collects
console errors and uncaught exceptions from the moment it is opened.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, executable: str, user_data_dir: Path) -> None:
        cmd_read, self._cmd = os.pipe()  # we write commands; Chromium reads fd 3
        self._res, res_write = os.pipe()  # Chromium writes fd 4; we read

        def child() -> None:  # in the child, before exec: put the pipe ends on 3 and 4
            high = max(cmd_read, res_write, 4) + 1  # via free numbers: neither end is lost
            os.dup2(cmd_read, high)
            os.dup2(res_write, high + 1)
            os.dup2(high, 3)
            os.dup2(high + 1, 4)

        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            preexec_fn=child,
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        os.close(cmd_read)
        os.close(res_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Send one command and wait for its answer (events meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))
            self._events.append(answer)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._res, 1 << 20)
            if not chunk:
                self._log.seek(0)
                raise BrowserError(
                    "Chromium closed the pipe: " + self._log.read().decode(errors="replace")[-2000:]
                )
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def events(self, method: str, session: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self._events
            if e.get("method") == method and (session is None or e.get("sessionId") == session)
        ]

    def wait_event(self, method: str, session: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self._events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._receive(deadline))

    def close(self) -> None:
        with suppress(BrowserError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._cmd, self._res):
            with suppress(OSError):
                os.close(fd)
        self._log.close()

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        for domain in ("Runtime", "Page", "Log"):
            page.send(f"{domain}.enable")
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def set_viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def goto(self, url: str, timeout: float = 60.0) -> None:
        self.send("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", self.session, timeout)

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, width: int, height: int, *, mobile: bool = False) -> Path:
        """A PNG of the whole page at ``width``: the viewport is made as tall as the page
        (and put back to ``height`` afterwards), so nothing is laid out twice mid-capture."""
        full = int(self.evaluate("document.documentElement.scrollHeight"))
        self.set_viewport(width, full, mobile=mobile)
        self.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 300)))")
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        self.set_viewport(width, height, mobile=mobile)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        found = []
        for e in self.browser.events("Runtime.exceptionThrown", self.session):
            details = e["params"]["exceptionDetails"]
            found.append(
                f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}"
            )
        for e in self.browser.events("Runtime.consoleAPICalled", self.session):
            if e["params"]["type"] in ("error", "assert"):
                args = e["params"].get("args", [])
                found.append(
                    "console.error: "
                    + " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                )
        for e in self.browser.events("Log.entryAdded", self.session):
            entry = e["params"]["entry"]
            if entry.get("level") == "error":
                found.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        return found


@contextmanager
def chromium(executable: str) -> Iterator[Browser]:
    """A fresh headless Chromium (its own profile folder, removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="xpkit-chromium-") as profile:
        browser = Browser(executable, Path(profile))
        try:
            yield browser
        finally:
            browser.close()
