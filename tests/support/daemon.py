"""What the tests' real servers (dnsmasq, chronyd, Prometheus) have in common.

A `Daemon` subclass says how to run its program on a port (`argv`) and how to ask it once
whether it serves (`answers`); `start()` does the rest: a free port (another, up to three
times, when the program says the port was taken between finding and binding it), its stderr
collected by a thread into `.log` (complete only after stop()), polling until it answers or
exits, and stop() or the `with` block ending it. `temp_dir()` gives the program a directory of
its own (config, pid file), removed once it stopped.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

D = TypeVar("D", bound="Daemon")


class Daemon:
    name: ClassVar[str]
    # stderr phrases that mean the port was taken: try another one.
    port_taken: ClassVar[tuple[str, ...]]
    # what `answers` may raise while the program is not serving yet
    not_ready: ClassVar[tuple[type[BaseException], ...]] = (OSError,)
    poll_seconds: ClassVar[float] = 0.02

    def __init__(self) -> None:
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.argv: list[str] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def temp_dir(self) -> str:
        """A directory of the program's own, made at the first call, removed by cleanup()."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.name}-")
        return self._tmp.name

    def argv_for(self, port: int) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        """Ask the program once whether it serves; may raise one of `not_ready`."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove what was made for the program (its temp dir), after it stopped."""
        if self._tmp is not None:
            self._tmp.cleanup()

    def start(self, free_port: Callable[[], int], port: int = 0, ready_timeout: float = 10) -> None:
        for _ in range(3 if port == 0 else 1):
            self.port = port or free_port()
            self.argv = self.argv_for(self.port)
            self.log = []
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True)
            self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
            self._reader.start()
            try:
                self.wait_ready(ready_timeout)
                return
            except BaseException:
                self._terminate()
                if not any(taken in line for line in self.log for taken in self.port_taken):
                    self.cleanup()
                    raise
        self.cleanup()
        raise RuntimeError(f"{self.name} could not bind a port in 3 tries:\n{self.logs}")

    @property
    def logs(self) -> str:
        return "\n".join(self.log)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 10) -> None:
        """Ask until the program answers; raise if it exits, or does not within `timeout`."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / self.poll_seconds) + 2):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.logs}")
            try:
                if self.answers():
                    return
            except self.not_ready:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(self.poll_seconds)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} in {timeout:g}s:\n"
                           f"{self.logs}")

    def stop(self) -> None:
        self._terminate()
        self.cleanup()

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._reader.join(2)
            assert self.proc.stderr is not None
            self.proc.stderr.close()

    def __enter__(self: D) -> D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
