"""The agent: config, scheduler, runner, store and web server wired together, and its lifecycle.

Start-up loads the config and binds the listen addresses before anything runs, so that a bad
file or a taken port is a one-line error. Reloads (SIGHUP, `POST /-/reload`, and with
`--config.watch` a change of the file) swap in a new
config only if it is valid: unchanged checks keep their state and their place in time, changed
ones start afresh, removed ones vanish with their series.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import platform
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace

from exporter import __version__, exposition
from exporter.checks import host_problems
from exporter.config.load import load_default, load_file
from exporter.config.model import CheckConfig, Config
from exporter.discovery.manager import Discovery
from exporter.errors import ConfigError
from exporter.loop import name as loop_name
from exporter.native_histograms import schema_for
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.scheduler import Scheduler
from exporter.shard import ALL, Shard
from exporter.storage import Storage
from exporter.store import Result, Store
from exporter.watch import FileWatcher
from exporter.web import status
from exporter.web.prefix import ROOT, Prefix
from exporter.web.probe import ProbeEndpoint
from exporter.web.reload import LiveWebConfig
from exporter.web.routes import OPEN_PATHS, Routes
from exporter.web.server import WebServer, parse_listen_address
from exporter.web.webconfig import WebConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Options:
    config_file: str | None
    listen_addresses: tuple[str, ...] = (":10025",)
    web: WebConfig | None = None  # --web.config.file: TLS, basic auth, headers
    watch: bool = False  # --config.watch: reload when the config file changes
    shard: Shard = ALL  # --shard I/N: run only this shard's checks
    prefix: Prefix = ROOT  # --web.route-prefix, --web.external-url
    max_requests: int = 32  # --web.max-requests: handlers at a time, 0 for no limit
    # --web.systemd-socket: the listening sockets systemd passed, served instead of addresses
    sockets: tuple[socket.socket, ...] = ()
    storage_path: str | None = None  # --storage.path: availability across restarts


def self_target(bound: str) -> str:
    """Where the agent can reach itself: `:10025` and `0.0.0.0:…` become 127.0.0.1."""
    host, port = parse_listen_address(bound)
    if host in (None, "", "0.0.0.0"):
        return f"127.0.0.1:{port}"
    if host == "::":
        return f"[::1]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _first_tcp(bound: list[str]) -> str:
    """The first bound address that is TCP (systemd may pass Unix sockets too)."""
    for address in bound:
        try:
            parse_listen_address(address)
        except ValueError:
            continue
        return address
    return "127.0.0.1:10025"


class Agent:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.store = Store()
        # --storage.path: each check's hour and day kept across restarts.
        self.storage = Storage(options.storage_path) if options.storage_path else None
        self.config: Config | None = None  # the running one: loaded, sharded, discovered
        self.started = time.time()
        self.loaded: Config | None = None  # as the file says
        self.reload_ok = False
        self.reload_time: float | None = None
        self._blocking = BlockingPool(workers=8, name="netsentry-resolve")
        self.runner = Runner(Resolver(self._blocking))
        self.probe = ProbeEndpoint(lambda: self.config, self.runner.resolver, self.store)
        self.scheduler = Scheduler(self.run_scheduled)
        self.discovery = Discovery(self.runner, options.shard.owns,
                                   lambda: self._adopt("discovered targets changed"))
        # With --web.config.file, TLS, users and headers follow the file while serving.
        live = self.live_web = (LiveWebConfig(options.web, open_paths=OPEN_PATHS)
                                if options.web else None)
        routes = Routes(self.store, self.probe, self.agent_snapshot, self.status_overview,
                        lambda: self._ready and self.scheduler.running, self.reload,
                        classic_histograms=lambda: self.loaded is None
                        or self.loaded.metrics.classic_histograms).table()
        self.web = WebServer(
            routes, prefix=options.prefix, max_handlers=options.max_requests,
            unlimited=OPEN_PATHS,  # /-/healthy answers however busy the agent is
            ssl=live.tls if live else None, guard=live.guard if live else None,
            admit=live.admit if live else None, headers=live.header_list if live else tuple)
        self._watches: list[asyncio.Task[None]] = []  # polling the config and web config files
        self.bound: list[str] = []
        self._stop = asyncio.Event()
        self._ready = False
        self._kinds_asked: set[str] = set()  # kinds whose host problems were looked for

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the config and bind; raises ConfigError or OSError before anything runs."""
        watcher = None
        if self.options.config_file is not None:
            if self.options.watch:  # before the load, so that no change can slip by
                watcher = FileWatcher(self.options.config_file)
            first = load_file(self.options.config_file)
        if self.options.sockets:
            self.bound = await self.web.start((), self.options.sockets)
        else:
            self.bound = await self.web.start(self.options.listen_addresses)
        for address in self.bound:
            log.info("listening", extra={"address": address,
                                         "event_loop": loop_name(asyncio.get_running_loop())})
        if self.options.config_file is None:
            first = load_default(self_target(_first_tcp(self.bound)))
        if self.storage is not None:  # a damaged file is recovered, never a refusal
            await self.storage.start()
            self._watches.append(asyncio.create_task(
                self.storage.run(lambda: self.store.histories)))
        self.scheduler.start()
        self.apply(first)
        if watcher is not None:
            self._watches.append(asyncio.create_task(watcher.run(self.reload)))
        if self.live_web is not None:
            self._watches.append(asyncio.create_task(self.live_web.run()))
        _tune_gc()
        self._ready = True

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`); SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.close()

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self._ready = False
        for task in self._watches:
            task.cancel()
        self.discovery.close()
        self.scheduler.shutdown()
        if self.storage is not None:  # the minute under way too
            await self.storage.close(self.store.histories)
        await self.web.close()
        self._blocking.close()
        if self.live_web is not None:
            self.live_web.close()
        log.info("stopped")

    # --- config -----------------------------------------------------------------------------

    def apply(self, new: Config) -> None:
        """Run `new`: its checks (this shard's) and, as they are found, its discovered ones."""
        self.loaded = new
        # A new native bucket factor starts every histogram afresh (store.load sees it).
        self.store.schema = schema_for(new.metrics.native_histogram_factor)
        self.scheduler.lag.rescale(self.store.schema)
        self.discovery.update(new.discovered)  # a targets_file is read by now
        self.reload_ok = True
        self.reload_time = time.time()
        self._adopt("config loaded")
        kinds = ({c.kind for c in new.checks} | {d.base.kind for d in new.discovered}
                 ) - self._kinds_asked
        self._kinds_asked |= kinds
        for kind, problem in host_problems(sorted(kinds)).items():
            log.warning("checks of this kind cannot run here", extra={"kind": kind,
                                                                      "problem": problem})

    def _adopt(self, event: str) -> None:
        """Schedule the loaded config's checks of this shard and the discovered ones: unchanged
        checks keep their state and phase, changed ones start afresh, removed ones vanish."""
        if self.loaded is None:
            return
        shard = self.options.shard
        static = tuple(c for c in self.loaded.checks if shard.owns(c.key))
        new = replace(self.loaded, checks=static + tuple(self.discovery.checks()))
        old = {c.key: c for c in self.config.checks} if self.config else {}
        self.config = new
        self.store.load(new.checks)
        if self.storage is not None:  # checks new since start: the file's history of them
            self.storage.adopt(self.store.histories)
        self.scheduler.update({c.key: c.interval for c in new.checks})
        changed = [c.key for c in new.checks if old.get(c.key) not in (None, c)]
        for key in changed:
            self.scheduler.cancel(key)  # a run of the old config would only be discarded
        added = sum(1 for c in new.checks if c.key not in old)
        removed = len(set(old) - {c.key for c in new.checks})
        log.info(event, extra={"source": new.source, "checks": len(new.checks),
                               "added": added, "changed": len(changed), "removed": removed,
                               "shard": str(shard)})

    def reload(self) -> list[str]:
        """Reload the config file; on problems keep the running config and return them."""
        if self.options.config_file is None:
            log.info("reload requested; running the embedded default config, nothing to reload")
            return []
        try:
            new = load_file(self.options.config_file)
        except ConfigError as exc:
            self.reload_ok = False
            log.error("config reload failed; keeping the running config",
                      extra={"problems": "; ".join(exc.problems)})
            return exc.problems
        self.apply(new)
        return []

    # --- runs -------------------------------------------------------------------------------

    async def run_scheduled(self, key: str) -> None:
        state = self.store.states.get(key)
        if state is None:
            return
        check = state.check  # the very object the store holds, to detect reloads meanwhile
        result = await self.runner.run(check, memory=state.memory, previous=state.last)
        new = self.store.record(key, check, result)
        if new is not None:
            _log_transition(check, state.last.success if state.last else None, result)

    # --- what the pages show ------------------------------------------------------------------

    def agent_snapshot(self) -> exposition.AgentSnapshot:
        lag = self.scheduler.lag
        return exposition.AgentSnapshot(
            version=__version__,
            python_version=platform.python_version(),
            hostname=socket.gethostname(),
            reload_ok=self.reload_ok,
            reload_time=self.reload_time,
            in_flight=self.scheduler.in_flight,
            configured=Counter(c.kind for c in self.config.checks) if self.config else {},
            lag_buckets=tuple(lag.counts),
            lag_sum=lag.sum,
            clock_steps=self.scheduler.steps,
            missed=dict(self.scheduler.missed),
            skipped=dict(self.scheduler.skipped),
            shard=(self.options.shard.index, self.options.shard.count),
            web_reload_ok=self.live_web.ok if self.live_web else None,
            discovery=self.discovery.statuses(),
            started=self.started,
            lag_native=lag.native,
        )

    def status_overview(self) -> status.Overview:
        source = self.config.source if self.config else ""
        return status.overview(self.store, time.time(), __version__, source, self.reload_ok)


def _tune_gc() -> None:
    """Keep the cyclic garbage collector's full passes rare and short.

    Every run replaces its check's state, so with 10,000 checks tens of thousands of objects a
    second survive long enough to be promoted to the oldest generation, and CPython then scans
    everything in a full pass (tens of ms at 10,000 checks: every run due meanwhile starts late).
    Freezing what exists after start-up (modules, config) takes it out of those passes, and a
    higher third threshold makes them several times rarer. The garbage of a run is acyclic
    and freed at once by reference counting; the collector only has cycles to find.
    """
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


def _log_transition(check: CheckConfig, was_ok: bool | None, result: Result) -> None:
    """Logs are quiet: only the first failure and the recovery, never every failed run."""
    if was_ok is not False and not result.success:
        log.warning("check failing", extra={**_who(check), "reason": str(result.reason),
                                            "detail": result.message})
    elif was_ok is False and result.success:
        log.info("check recovered", extra=_who(check))


def _who(check: CheckConfig) -> dict[str, str]:
    """The check a log line is about: its name and kind, and a target list's target."""
    who = {"check": check.name, "kind": check.kind}
    if check.per_target:
        who["target"] = check.target
    return who


async def run_agent(options: Options) -> int:
    """Serve until stopped; 0 on a clean stop, 2 when start-up fails."""
    agent = Agent(options)
    try:
        await agent.start()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        await agent.close()
        return 2
    except OSError as exc:
        print(f"netsentry: {exc}", file=sys.stderr)
        await agent.close()
        return 2
    await agent.serve()
    return 0
