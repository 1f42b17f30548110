"""The discovered checks of the running config, across reloads.

A reload that leaves a discovered check as it was keeps its discoverer, and with it the last
good targets (a URL is not asked again, nor a file read again, for a reload of another check);
a changed one starts afresh, a removed one stops. A `targets_file` is read before `update`
returns, so that its checks start with the config; a URL or an SRV name is asked at once, and
its checks start when it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from exporter.config.model import CheckConfig, DiscoveredCheck
from exporter.discovery.discoverer import Discoverer
from exporter.exposition import SourceStatus
from exporter.runner import Runner


class Discovery:
    def __init__(self, runner: Runner, owns: Callable[[str], bool],
                 on_change: Callable[[], object]) -> None:
        self._runner = runner
        self._owns = owns
        self._on_change = on_change
        self._running: list[tuple[Discoverer, asyncio.Task[None]]] = []

    def update(self, discovered: tuple[DiscoveredCheck, ...]) -> None:
        old = self._running
        running = []
        for wanted in discovered:
            kept = next((pair for pair in old if pair[0].discovered == wanted), None)
            if kept is not None:
                old.remove(kept)
                running.append(kept)
                continue
            discoverer = Discoverer(wanted, self._runner, self._owns)
            if wanted.source.type == "file":
                discoverer.poll_files()
            running.append((discoverer, asyncio.create_task(discoverer.run(self._on_change))))
        for _, task in old:
            task.cancel()
        self._running = running

    def checks(self) -> list[CheckConfig]:
        """Every discovered check, in config order, then each source's order."""
        return [check for discoverer, _ in self._running for check in discoverer.checks]

    def statuses(self) -> tuple[SourceStatus, ...]:
        return tuple(discoverer.status for discoverer, _ in self._running)

    def close(self) -> None:
        for _, task in self._running:
            task.cancel()
        self._running = []
