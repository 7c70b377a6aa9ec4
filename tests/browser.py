"""Headless Chromium driven over the DevTools protocol on a pipe, for the report's browser test.

No websocket library and no driver download: Chromium's ``--remote-debugging-pipe`` reads
commands from file descriptor 3 and writes answers to 4, one JSON message per NUL byte.
``find_chromium`` looks for Debian's package and installs it with apt when it is missing
(as root, where apt is available); otherwise it says why it cannot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _which() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def find_chromium() -> tuple[str | None, str]:
    """A Chromium executable, installing Debian's ``chromium`` package when it is missing;
    or ``None`` and the reason it cannot be had."""
    found = _which()
    if found:
        return found, ""
    if shutil.which("apt-get") is None:
        return None, "chromium is not installed and apt-get is not available to install it"
    if os.geteuid() != 0:
        return None, "chromium is not installed and installing it with apt needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            return None, f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}"
    found = _which()
    return (found, "") if found else (None, "apt installed chromium but no executable is found")


class Page:
    """One tab: navigate, evaluate JavaScript, take screenshots."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, session=self.session, **params)

    def open(self, url: str, *, width: int = 1280, height: int = 900) -> None:
        """Load ``url`` in a viewport of this size and wait for its load event."""
        self.send("Page.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)
        self.browser.wait_event("Page.loadEventFired", session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises are awaited)."""
        answer = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"JavaScript failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


class Browser:
    """A headless Chromium process and its DevTools pipe."""

    def __init__(self, executable: str, profile: Path, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        commands_r, self._commands = os.pipe()
        self._answers, answers_w = os.pipe()

        def plumb() -> None:  # in the child: the pipe ends where Chromium expects them
            os.dup2(commands_r, 3)
            os.dup2(answers_w, 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=plumb,
            pass_fds=(3, 4),
        )
        os.close(commands_r)
        os.close(answers_w)
        self._next = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            ready, _, _ = select.select([self._answers], [], [], left)
            if ready:
                chunk = os.read(self._answers, 1 << 20)
                assert chunk, "Chromium closed its DevTools pipe"
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        doc: dict[str, Any] = json.loads(message)
        return doc

    def send(self, method: str, *, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events that arrive meanwhile are kept)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            doc = self._read(deadline)
            if doc.get("id") == self._next:
                if "error" in doc:
                    raise AssertionError(f"{method} failed: {doc['error']}")
                result: dict[str, Any] = doc.get("result", {})
                return result
            if "method" in doc:
                self._events.append(doc)

    def wait_event(self, method: str, *, session: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, doc in enumerate(self._events):
                if doc["method"] == method and doc.get("sessionId") == session:
                    return self._events.pop(i)
            doc = self._read(deadline)
            if "method" in doc:
                self._events.append(doc)

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        return Page(self, session)

    def close(self) -> None:
        with suppress(AssertionError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._answers)


@contextmanager
def chromium(executable: str, profile: Path) -> Iterator[Browser]:
    browser = Browser(executable, profile)
    try:
        yield browser
    finally:
        browser.close()
