"""A real agent restarted with --storage.path keeps each check's availability; a storage file
cut short or full of garbage is recovered up to its last good record, the rest counted in the
log, and never stops the agent from starting."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from exporter.codecs import availability as codec
from tests.support.agent import ROOT, Agent
from tests.support.servers import AcceptServer, closed_port


def availability(agent: Agent) -> dict[str, Any]:
    """Each check's availability, once the agent is ready (the file read, the config loaded)."""
    agent.wait_for(lambda: agent.fetch("GET", "/-/ready")[0] == 200, what="the agent ready")
    status, _, body = agent.fetch("GET", "/api/v1/checks")
    assert status == 200
    return {c["name"]: c["availability"] for c in json.loads(body)["checks"]}


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    with AcceptServer() as server:
        path = tmp_path / "netsentry.toml"
        path.write_text(
            '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n\n'
            f'[[checks]]\nname = "up"\nkind = "tcp"\ntarget = "127.0.0.1:{server.port}"\n\n'
            f'[[checks]]\nname = "down"\nkind = "tcp"\ntarget = "127.0.0.1:{closed_port()}"\n')
        yield path


@contextmanager
def ran(config: Path, *args: str, runs: int = 4) -> Iterator[Agent]:
    with Agent(config, *args) as agent:
        agent.wait_for(lambda: all(a["hour"]["runs"] >= runs
                                   for a in availability(agent).values()),
                       what=f"{runs} runs of each check")
        yield agent


def test_a_restarted_agent_keeps_its_availability(config: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ran(config, "--storage.path", str(data)) as agent:
        before = availability(agent)
    assert (data / "availability.nsav").stat().st_size > len(codec.HEADER)
    with Agent(config, "--storage.path", str(data)) as again:
        after = availability(again)  # at once, before the checks have run much
        log = "\n".join(again.lines)
    for name in ("up", "down"):
        for span in ("hour", "day"):
            assert after[name][span]["runs"] >= before[name][span]["runs"], (name, span)
    assert after["up"]["day"]["ratio"] == 1.0 and after["down"]["day"]["ratio"] == 0.0
    assert re.search(r'msg="storage opened" .*checks=2', log), log
    assert "damaged" not in log
    # Without it, a restart starts afresh.
    with Agent(config) as plain:
        fresh = availability(plain)
    assert fresh["down"]["day"]["runs"] < before["down"]["day"]["runs"]


@pytest.mark.parametrize("damage", ["cut mid-record", "garbage after", "only garbage"])
def test_a_damaged_file_is_recovered_and_never_stops_the_agent(
        config: Path, tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    with ran(config, "--storage.path", str(data)) as agent:
        before = availability(agent)
    path = data / "availability.nsav"
    whole = path.read_bytes()
    # A crash in the middle of an append: the newest record is there in part.
    torn = codec.encode([codec.Minutes(1, ((1, 5, 5, 100),) * 20)])[:-7]
    damaged = {"cut mid-record": whole + torn, "garbage after": whole + os.urandom(10_000),
               "only garbage": os.urandom(10_000)}[damage]
    path.write_bytes(damaged)
    good = codec.decode(damaged).good
    with Agent(config, "--storage.path", str(data)) as again:
        after = availability(again)
        log = "\n".join(again.lines)
    [line] = [line for line in log.splitlines() if "storage file damaged" in line]
    assert f"dropped_bytes={len(damaged) - good} " in line + " "
    assert (data / "availability.nsav.damaged").read_bytes() == damaged
    if damage == "only garbage":
        assert after["down"]["day"]["runs"] < before["down"]["day"]["runs"]
    else:  # everything before the damage
        assert after["down"]["day"]["runs"] >= before["down"]["day"]["runs"]
        assert good == len(whole)
    assert codec.decode(path.read_bytes()).dropped == 0  # whole again


def test_a_storage_path_that_cannot_be_used_is_one_line_and_exit_2(
        config: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data = tmp_path / "data"
    for where, says in ((tmp_path / "a-file", "a-file"),
                        (data, "in use by another netsentry")):
        holder = Agent(config, "--storage.path", str(data)) if where == data else None
        try:
            done = subprocess.run(
                [sys.executable, "-m", "exporter", "--web.listen-address", "127.0.0.1:0",
                 "--config.file", str(config), "--storage.path", str(where)],
                cwd=ROOT, capture_output=True, text=True, timeout=30)
        finally:
            if holder is not None:
                holder.stop()
        assert done.returncode == 2, done.stderr
        [line] = [line for line in done.stderr.splitlines() if line.startswith("netsentry:")]
        assert says in line and "Traceback" not in done.stderr
