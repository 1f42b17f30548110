"""A real Prometheus (Debian `prometheus`) on loopback for the tests, and promtool.

    with Prometheus(config, tmp_path) as prom:   # config: prometheus.yml as a dict
        prom.wait_for(lambda: prom.query("up"), "a scrape")
        prom.query('netsentry_check_success == 0')

It listens on 127.0.0.1 at a free port, keeps its TSDB in a temporary directory and talks to
nothing but the targets of its config (no Alertmanager: drop `alerting` from the config). The
HTTP API is read with http.client, so no proxy setting of the environment applies.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.daemon import Daemon

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


class PromQLError(Exception):
    """The API refused a query: `error_type` is Prometheus's (bad_data for a parse error)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


def promtool(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus(Daemon):
    name = "prometheus"
    port_taken = ("address already in use",)
    poll_seconds = 0.1

    def __init__(self, config: dict[str, Any], directory: Path, *,
                 ready_timeout: float = 30, flags: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.flags = flags  # more command-line flags (--enable-feature=native-histograms)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.config_file = directory / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.start(_free_port, ready_timeout=ready_timeout)

    def argv_for(self, port: int) -> list[str]:
        return [PROMETHEUS, f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
                "--log.level=info", *self.flags]

    def answers(self) -> bool:
        return self._get("/-/ready")[0] == 200

    def _get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def api(self, endpoint: str, **params: str) -> Any:
        """GET /api/v1/ENDPOINT; the `data` of a success, PromQLError for an error."""
        query = urllib.parse.urlencode(params)
        _, body = self._get(f"/api/v1/{endpoint}" + (f"?{query}" if query else ""))
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise PromQLError(answer.get("errorType", "?"), answer.get("error", body.decode()))
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now: its samples as [{"metric": {...}, "value": [t, "v"]}]."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, as /api/v1/alerts lists them."""
        return list(self.api("alerts")["alerts"])

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.25) + 2):
            if predicate():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
