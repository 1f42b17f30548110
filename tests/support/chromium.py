"""Headless Chromium (Debian `chromium`) for the tests, driven over the DevTools protocol on a pipe.

With `--remote-debugging-pipe` Chromium reads protocol commands from its fd 3 and writes replies
and events to its fd 4, each a JSON object ended by a NUL byte: no websocket, no driver, no port
to find, nothing but the standard library here. It runs with exactly the flags DESIGN.md lists,
a fresh profile (and HOME, where Debian's build keeps crash reports), and in a session of its
own, so that closing it ends every process it started. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


class ProtocolError(Exception):
    pass


class Browser:
    """One Chromium; `page()` opens a tab and attaches to it."""

    def __init__(self, profile: Path, timeout: float = 30) -> None:
        self.timeout = timeout
        profile.mkdir(parents=True, exist_ok=True)
        to_child, self._to = os.pipe()
        self._from, from_child = os.pipe()
        # Numbers above 9, so that moving them to 3 and 4 in the child cannot clobber them.
        child_in = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
        os.close(to_child)
        os.close(from_child)
        self.log_path = profile / "chromium.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "-c", 'exec "$0" "$@" 3<&"$CDP_IN" 4>&"$CDP_OUT"', "chromium", *FLAGS,
                 f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                env={**os.environ, "HOME": str(profile), "CDP_IN": str(child_in),
                     "CDP_OUT": str(child_out)})
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    # --- the protocol -----------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        """Send a command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline, f"the reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float | None = None, since: int = 0,
                 session: str | None = None, **params: Any) -> dict[str, Any]:
        """The first event `method` (from index `since` of `events`, of `session` if given)
        whose params include `params`, waiting for it at most `timeout` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        index = since
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                got = event.get("params", {})
                if event["method"] == method and session in (None, event.get("sessionId")) and (
                        all(got.get(k) == v for k, v in params.items())):
                    return dict(got)
            event = self._receive(deadline, f"the event {method}")
            if "method" in event:
                self.events.append(event)

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready = select.select([self._from], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                raise TimeoutError(f"chromium: timed out waiting for {what}; {self._log_tail()}")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise ProtocolError(f"chromium exited; {self._log_tail()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def _log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "its log ends:\n" + "\n".join(lines[-15:])

    # --- pages ------------------------------------------------------------------------------

    def page(self, width: int, height: int, mobile: bool = False) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, str(session["sessionId"]), str(target))
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        return page

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(OSError, ProtocolError, TimeoutError):
            self.send("Browser.close")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever it left of its own session
        self.proc.wait()
        os.close(self._to)
        os.close(self._from)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab: commands go to its session; events are the browser's, filtered by session."""

    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def events(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.browser.events
                if e["method"] == method and e.get("sessionId") == self.session]

    def wait_for(self, method: str, timeout: float | None = None, since: int = 0,
                 **params: Any) -> dict[str, Any]:
        return self.browser.wait_for(method, timeout, since, self.session, **params)

    def navigate(self, url: str) -> None:
        since = len(self.browser.events)
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired", since=since)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise ProtocolError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1})

    def type(self, text: str) -> None:
        """Text typed into the focused element, as a keyboard's input method would."""
        self.send("Input.insertText", {"text": text})

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
