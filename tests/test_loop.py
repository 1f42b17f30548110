"""exporter/loop.py: the agent on uvloop's loop behaves as on asyncio's.

uvloop is in the test extra, so these run wherever the suite does; each test runs on both
loops where the point is that they agree.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import loop
from exporter.net.resolve import literal_address
from exporter.net.udp import udp_exchange
from tests.support.agent import Agent, tcp_checks

LOOPS = ("asyncio", "uvloop")


def test_choices() -> None:
    assert loop.available()
    assert loop.resolve("auto") == "uvloop"
    assert loop.resolve("asyncio") == "asyncio"
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        loop.resolve("trio")


@pytest.mark.parametrize("choice", LOOPS)
def test_run_names_its_loop(choice: str) -> None:
    async def which() -> str:
        return loop.name(asyncio.get_running_loop())

    assert loop.run(which(), choice) == choice


@pytest.mark.parametrize("choice", LOOPS)
def test_time_is_monotonic_to_the_microsecond(choice: str) -> None:
    # uvloop's own loop.time() is libuv's millisecond clock: every reading a whole ms. A
    # finer clock gives a reading off the millisecond grid in (nearly) every one of 20.
    async def readings() -> list[float]:
        running = asyncio.get_running_loop()
        return [running.time() for _ in range(20)]

    off_grid = [t for t in loop.run(readings(), choice) if abs(t * 1000 - round(t * 1000)) > 1e-6]
    assert len(off_grid) >= 10


@pytest.mark.parametrize("choice", LOOPS)
def test_deadline_fires(choice: str) -> None:
    async def stuck() -> str:
        try:
            await asyncio.wait_for(asyncio.sleep(30), 0.05)
        except TimeoutError:
            return "timed out"
        return "slept"

    assert loop.run(stuck(), choice) == "timed out"


@pytest.mark.parametrize("choice", LOOPS)
def test_udp_exchange(choice: str) -> None:
    # uvloop 0.23's sock_sendto / sock_recvfrom raise NotImplementedError; DNS, NTP and the
    # udp check go through them.
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    address = literal_address("127.0.0.1", server.getsockname()[1], socket.AF_INET)
    assert address is not None

    async def exchange() -> tuple[bytes, int]:
        running = asyncio.get_running_loop()

        def answer() -> None:
            data, peer = server.recvfrom(100)
            server.sendto(b"not it", peer)  # a wrong reply is counted and ignored
            server.sendto(data.upper(), peer)

        running.add_reader(server.fileno(), answer)
        try:
            return await asyncio.wait_for(udp_exchange(address, b"ping", lambda d: d == b"PING"), 5)
        finally:
            running.remove_reader(server.fileno())

    try:
        assert loop.run(exchange(), choice) == (b"PING", 1)
    finally:
        server.close()


def test_agent_on_uvloop(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    config = tmp_path / "c.toml"
    config.write_text(tcp_checks(["a"], f"127.0.0.1:{listener.getsockname()[1]}"))
    try:
        with Agent(config, "--event-loop", "uvloop") as agent:
            assert any("event_loop=uvloop" in line for line in agent.lines)
            agent.wait_for(lambda: agent.value("netsentry_check_success", check="a", kind="tcp")
                           == 1, what="a tcp check to succeed on uvloop")
    finally:
        listener.close()


def test_unknown_loop_from_the_environment_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "exporter", "--web.listen-address",
                           "127.0.0.1:0"], capture_output=True, text=True, timeout=30,
                          env={"NETSENTRY_EVENT_LOOP": "trio", "PATH": "/usr/bin:/bin"},
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2
    assert "--event-loop: unknown event loop 'trio'" in done.stderr
