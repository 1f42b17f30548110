"""`--config.watch`: the file watcher alone, and a real agent reloading a changed file."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from exporter.watch import FileWatcher
from tests.support.agent import Agent, tcp_checks
from tests.support.servers import AcceptServer

pytestmark = pytest.mark.timeout(120)

INTERVAL = 0.02


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(INTERVAL / 2)


async def quiet(calls: list[int], polls: int = 10) -> None:
    """Several polls go by; no new call may come meanwhile."""
    before = len(calls)
    await asyncio.sleep(INTERVAL * polls)
    assert len(calls) == before


def watching(path: Path, body: Callable[[list[int]], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        calls: list[int] = []
        watcher = FileWatcher(str(path), interval=INTERVAL)
        task = asyncio.create_task(watcher.run(lambda: calls.append(1)))
        try:
            await asyncio.wait_for(body(calls), 30)
        finally:
            task.cancel()

    asyncio.run(main())


def replace(path: Path, text: str) -> None:
    """As editors and config management do: write a new file, rename it over the old."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def test_changes_in_place_by_rename_and_by_touch(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text("one")

    async def body(calls: list[int]) -> None:
        await quiet(calls)
        with path.open("a") as f:  # in place
            f.write("two")
        await until(lambda: len(calls) == 1, "the in-place write")
        replace(path, "onetwo")  # same size, another inode
        await until(lambda: len(calls) == 2, "the rename")
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touch
        await until(lambda: len(calls) == 3, "the new modification time")
        await quiet(calls)

    watching(path, body)


def test_a_file_missing_for_a_while(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text("one")

    async def body(calls: list[int]) -> None:
        path.unlink()
        await quiet(calls)  # gone: nothing to load
        path.write_text("one, again")
        await until(lambda: len(calls) == 1, "the file to come back")
        await quiet(calls)

    watching(path, body)


def test_a_symlink_swapped_as_kubernetes_updates_a_configmap(tmp_path: Path) -> None:
    # The kubelet's layout: netsentry.toml -> ..data/netsentry.toml, ..data -> ..<version>;
    # an update writes a new version directory and renames a new ..data link over the old.
    for version, text in (("v1", "one"), ("v2", "two")):
        (tmp_path / f"..{version}").mkdir()
        (tmp_path / f"..{version}" / "netsentry.toml").write_text(text)
    (tmp_path / "..data").symlink_to("..v1")
    path = tmp_path / "netsentry.toml"
    path.symlink_to("..data/netsentry.toml")

    async def body(calls: list[int]) -> None:
        await quiet(calls)
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await until(lambda: len(calls) == 1, "the swapped link")
        await quiet(calls)

    watching(path, body)


def test_a_failing_callback_does_not_stop_the_watch(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text("one")

    async def main() -> None:
        calls: list[int] = []

        def on_change() -> None:
            calls.append(1)
            raise RuntimeError("reload bug")

        task = asyncio.create_task(FileWatcher(str(path), INTERVAL).run(on_change))
        try:
            path.write_text("two")
            await until(lambda: len(calls) == 1, "the first change")
            path.write_text("three")
            await until(lambda: len(calls) == 2, "the second change")
        finally:
            task.cancel()

    asyncio.run(main())


# --- through a real agent ----------------------------------------------------------------------


def runs(agent: Agent, name: str) -> float:
    return agent.value("netsentry_check_runs_total", check=name, kind="tcp") or 0


def test_the_agent_reloads_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    with AcceptServer() as server:
        path.write_text(tcp_checks(["a"], server.target))
        with Agent(path, "--config.watch") as agent:
            agent.wait_for(lambda: runs(agent, "a") >= 1, what="a to run")

            replace(path, tcp_checks(["a", "b"], server.target))  # as an editor saves
            agent.wait_for(lambda: agent.checks() == {"a", "b"}, what="b to be loaded")
            agent.wait_for(lambda: runs(agent, "b") >= 1, what="b to run")
            assert any("config file changed" in line for line in agent.lines)

            # A bad file, written in place, keeps the running config, as a bad SIGHUP does.
            path.write_text(tcp_checks(["a", "b"], server.target) + 'bogus = "x"\n')
            agent.wait_for(lambda: agent.value("netsentry_config_last_reload_successful") == 0,
                           what="the failed reload")
            assert any("config reload failed" in line and "bogus" in line
                       for line in agent.lines)
            before = runs(agent, "b")
            agent.wait_for(lambda: runs(agent, "b") > before, what="b to keep running")
            assert agent.checks() == {"a", "b"}

            path.write_text(tcp_checks(["a"], server.target))  # fixed
            agent.wait_for(lambda: agent.value("netsentry_config_last_reload_successful") == 1,
                           what="the good reload")
            assert agent.checks() == {"a"}


def test_without_the_flag_a_change_waits_for_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    with AcceptServer() as server:
        path.write_text(tcp_checks(["a"], server.target))
        with Agent(path) as agent:
            path.write_text(tcp_checks(["a", "b"], server.target))
            # The watch would have seen it within a second; three go by unnoticed.
            a_runs = runs(agent, "a")
            agent.wait_for(lambda: runs(agent, "a") >= a_runs + 3, what="three runs of a")
            assert agent.checks() == {"a"}
            assert agent.request("POST", "/-/reload")[0] == 200
            assert agent.checks() == {"a", "b"}
