"""The `netsentry` command line, in Prometheus' conventions.

    netsentry [run] [--config.file F] [--config.watch] [--web.listen-address A]...
                    [--web.systemd-socket] [--web.config.file W] [--web.route-prefix P]
                    [--web.external-url U] [--web.max-requests N] [--shard I/N]
                    [--storage.path DIR] [--event-loop asyncio|uvloop|auto]
                    [--log.level L] [--log.format F]
    netsentry check-config PATH            (also: netsentry --config.check --config.file PATH)
    netsentry probe KIND TARGET [--KEY VALUE ...] [--timeout 5s] [--metrics]
    netsentry probe --config.file F [--metrics]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from exporter import __version__, app, loop, shard
from exporter.checks import host_problems
from exporter.cli import logs, probe
from exporter.config.load import load_default, load_file
from exporter.config.model import Config
from exporter.discovery.discoverer import make_checks
from exporter.discovery.files import FileTargets
from exporter.errors import ConfigError
from exporter.web import prefix, systemd, webconfig
from exporter.web.server import parse_listen_address

COMMANDS = ("run", "check-config", "probe")


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netsentry",
        description="Prometheus exporter and scheduled network-monitoring agent. "
        "Other commands: check-config PATH, probe KIND TARGET.",
    )
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="TOML config; without it an embedded default monitors this host")
    parser.add_argument("--config.check", dest="config_check", action="store_true",
                        help="validate the config and exit (0 valid, 2 invalid)")
    parser.add_argument("--config.watch", dest="config_watch", action="store_true",
                        help="reload the config file when it changes (checked every second)")
    parser.add_argument("--shard", metavar="I/N", default="0/1",
                        help="run only shard I (from 0) of N of the checks, for N agents "
                        "sharing one config (default 0/1: all of them)")
    parser.add_argument("--storage.path", dest="storage_path", metavar="DIR",
                        help="keep each check's availability and latency history of the last "
                        "day in this directory, across restarts (default: in memory only)")
    parser.add_argument("--web.listen-address", dest="listen", action="append", metavar="ADDR",
                        help="address to serve on, repeatable (default :10025)")
    parser.add_argument("--web.systemd-socket", dest="systemd_socket", action="store_true",
                        help="serve on the sockets systemd passes (socket activation) "
                        "instead of --web.listen-address")
    parser.add_argument("--web.config.file", dest="web_config", metavar="PATH",
                        help="exporter-toolkit web config (TLS, basic auth, headers, "
                        "rate limit)")
    parser.add_argument("--web.external-url", dest="external_url", metavar="URL",
                        help="the URL the agent is reached at (through a reverse proxy); "
                        "redirects point under its path")
    parser.add_argument("--web.route-prefix", dest="route_prefix", metavar="PATH",
                        help="the path every route is served under (default: the external "
                        "URL's path, else /)")
    parser.add_argument("--web.max-requests", dest="max_requests", type=int, default=32,
                        metavar="N", help="requests handled at a time; past them 503 "
                        "(default 32; 0: no limit)")
    parser.add_argument("--event-loop", dest="event_loop", choices=loop.CHOICES,
                        default=os.environ.get("NETSENTRY_EVENT_LOOP", loop.DEFAULT),
                        help="the event loop: asyncio's, uvloop's (pip install "
                        "'netsentry[uvloop]'), or auto (uvloop when installed); default "
                        f"$NETSENTRY_EVENT_LOOP, else {loop.DEFAULT}")
    parser.add_argument("--log.level", dest="log_level", choices=tuple(logs.LEVELS),
                        default="info")
    parser.add_argument("--log.format", dest="log_format", choices=logs.FORMATS,
                        default="logfmt")
    parser.add_argument("--version", action="version", version=f"netsentry {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "run"
    if command == "check-config":
        return check_config(args)
    if command == "probe":
        return probe.main(args)
    return run(args)


def run(argv: list[str]) -> int:
    options = _run_parser().parse_args(argv)
    if options.config_check:
        return check_config([options.config_file] if options.config_file else [])
    if options.config_watch and not options.config_file:
        print("netsentry: --config.watch needs --config.file: the embedded default config "
              "never changes", file=sys.stderr)
        return 2
    try:
        own_shard = shard.parse(options.shard)
    except ValueError as exc:
        print(f"netsentry: --shard: {exc}", file=sys.stderr)
        return 2
    if options.systemd_socket and options.listen:
        print("netsentry: --web.listen-address and --web.systemd-socket exclude each other: "
              "with socket activation, systemd's .socket unit says where to listen",
              file=sys.stderr)
        return 2
    if options.max_requests < 0:
        print(f"netsentry: --web.max-requests: {options.max_requests} is negative; give a "
              "number of requests, or 0 for no limit", file=sys.stderr)
        return 2
    try:
        route_prefix = prefix.make(options.external_url, options.route_prefix)
    except ValueError as exc:
        print(f"netsentry: {exc}", file=sys.stderr)
        return 2
    sockets: tuple[socket.socket, ...] = ()
    if options.systemd_socket:
        try:
            sockets = tuple(systemd.listen_fds())
        except ValueError as exc:
            print(f"netsentry: {exc}", file=sys.stderr)
            return 2
    web = None
    if options.web_config:
        try:
            web = webconfig.load_file(options.web_config)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 2
    try:
        loop.resolve(options.event_loop)
    except ValueError as exc:
        print(f"netsentry: --event-loop: {exc}", file=sys.stderr)
        return 2
    logs.setup(options.log_level, options.log_format)
    listen = tuple(options.listen or [":10025"])
    for address in listen:
        try:
            parse_listen_address(address)
        except ValueError as exc:
            print(f"netsentry: --web.listen-address: {exc}", file=sys.stderr)
            return 2
    try:
        return loop.run(app.run_agent(app.Options(
            options.config_file, listen, web, options.config_watch, own_shard,
            route_prefix, options.max_requests, sockets,
            storage_path=options.storage_path)), options.event_loop)
    except KeyboardInterrupt:
        return 0


def check_config(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="netsentry check-config",
                                     description="Validate a config file and print every problem.")
    parser.add_argument("path", nargs="?", help="the TOML config (default: the embedded one)")
    options = parser.parse_args(argv)
    try:
        if options.path is None:
            loaded = load_default("127.0.0.1:10025")
        else:
            loaded = load_file(options.path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 2
    print(f"{loaded.source}: OK, {len(loaded.checks)} check(s)")
    problems = _discovered(loaded)
    # A valid config that this host cannot run all of: said, but not an invalid config.
    kinds = [c.kind for c in loaded.checks] + [d.base.kind for d in loaded.discovered]
    for kind, problem in host_problems(kinds).items():
        print(f"warning: {kind} checks cannot run here: {problem}", file=sys.stderr)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) found in the targets files", file=sys.stderr)
        return 2
    return 0


def _discovered(loaded: Config) -> list[str]:
    """Prints what each discovered check finds now, and returns the problems of its targets
    files (as promtool checks file_sd files); a URL or an SRV name is asked by the agent."""
    problems = []
    for discovered in loaded.discovered:
        name, source = discovered.base.name, discovered.source
        if source.type != "file":
            print(f"{name}: targets from {source.label}, asked when the agent runs")
            continue
        poll = FileTargets(source).poll()
        made = make_checks(discovered.base, poll.groups, lambda key: True)
        print(f"{name}: {len(made.checks)} target(s) from {source.label}"
              + (f", {made.refused} refused" if made.refused else ""))
        problems += [*poll.problems, *made.problems]
    return problems
