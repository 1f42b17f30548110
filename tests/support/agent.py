"""Start a real netsentry agent as a subprocess on a loopback port and talk to it over HTTP."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


class Agent:
    def __init__(self, config: Path | None, *args: str, listen: str = "127.0.0.1:0",
                 env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "exporter", "--web.listen-address", listen, *args]
        if config is not None:
            cmd += ["--config.file", str(config)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                     env=None if env is None else {**os.environ, **env})
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(15):
            self.stop()
            raise RuntimeError("agent did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = re.search(r"msg=listening address=127\.0\.0\.1:(\d+)", line)
            if match and not self.port:
                self.port = int(match[1])
                self._listening.set()

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float = 10) -> tuple[int, str]:
        status, _, data = self.fetch(method, path, body, timeout=timeout)
        return status, data.decode()

    def fetch(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None,
              timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, text = self.request("GET", "/metrics")
        assert status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def checks(self) -> set[str]:
        """The names of the checks the agent has loaded (its netsentry_check_info series)."""
        return {dict(labels)["check"] for name, labels in self.metrics()
                if name == "netsentry_check_info"}

    def wait_for(self, predicate: object, timeout: float = 20, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; agent log:\n" + "\n".join(self.lines))

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])  # type: ignore[index]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> float:
        """SIGTERM; return the seconds the agent took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        return time.monotonic() - started

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tcp_checks(names: list[str], target: str) -> str:
    """A config of one tcp check of `target` per name, every second with a 500 ms timeout."""
    text = '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n'
    for name in names:
        text += f'\n[[checks]]\nname = "{name}"\nkind = "tcp"\ntarget = "{target}"\n'
    return text
