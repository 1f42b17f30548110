"""Service discovery at scale (issue 17): a targets_file of 100,000 targets in a real agent.

    .venv/bin/python bench/discovery.py [--targets 100000] [--rounds 3] [--churn 1000]
                                        [--settle 5] [--window 4] [--shards 10]
                                        [--interval 1h] [--shard-agents 10] [--json PATH]

Each round, on loopback only, starts three agents one after the other, each with tcp checks
at --interval (1 h: runs stay a small, steady background; but one APScheduler job per
occupied 50 ms slot, some 54,000 of them for 100,000 keys over an hour, where a 1 m interval
has 1,200) aimed at closed ports on 127.0.0.0/8:

- `empty`: a targets_file with no targets: the agent's own start-up, subtracted below;
- `discovered`: a targets_file of --targets targets (groups of 100, each with a `zone`
  label): the time from spawn to the "config loaded" line (the file read, one check per
  target made, all of them in the store and scheduled) and the agent's CPU to then; RSS after
  --settle s; then the file rewritten with one target changed, and again with --churn targets
  changed: the agent's CPU over --window s from the write, minus its CPU over the same window
  with nothing changed just before (the runs' background), and the time from the write to
  its "discovered targets changed" line (the file is polled every second: up to 1 s of it is
  the poll's wait);
- `static`: the same number of checks written as `targets = [...]` lists (10,000 each, the
  most a list may hold): time, CPU and RSS, for comparison.

With --shard-agents N, then N agents one after the other, `--shard I/N` each, over the same
file of --targets: each one's time and CPU to load, RSS, and CPU of the --churn change; and,
from each one's /metrics, that their target sets are disjoint and complete.

With --in-process, none of that: where the agent's CPU goes instead, in this process (a real
`exporter.app.Agent` whose steps are timed by wrappers, the loop never run so that no check
runs): the load of the file and a change of one and of --churn targets, split into the file's
poll (glob, read, parse), the discoverer's checks (`make_checks`), `Store.load`,
`Scheduler.update` and the whole `Agent._adopt`; one line per round.

Figures are medians over the rounds. Then, in-process, --shards N → N + 1 for N = 1 ..
--shards over the (check, target) keys ("fleet\\ttarget") of the same targets: the fraction
that moves (expected 1/(N + 1)), whether all of it moves to the new shard, and whether the
N + 1 shards' sets are disjoint and complete.

A benchmark, not a test: it exits 0 whether or not the figures are good (1 on a harness error).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common

from exporter import shard

STARTUP_TIMEOUT = 300.0
CHANGED = r'msg="discovered targets changed"'
GROUP = 100
LIST_MAX = 10_000  # the most one `targets = [...]` may hold


def address(i: int, port: int) -> str:
    return f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}:{port}"


def write_targets(path: Path, targets: list[str]) -> None:
    groups = [{"targets": targets[i:i + GROUP], "labels": {"zone": f"z{(i // GROUP) % 7}"}}
              for i in range(0, len(targets), GROUP)]
    path.write_text(json.dumps(groups), encoding="utf-8")
    stat = path.stat()  # a change the poll cannot miss, even within one mtime tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def head(interval: str) -> str:
    return f'[defaults]\ninterval = "{interval}"\ntimeout = "2s"\n'


def discovered_config(path: Path, sd: Path, interval: str = "1h") -> None:
    path.write_text(head(interval) + f'\n[[checks]]\nname = "fleet"\nkind = "tcp"\n'
                    f'targets_file = "{sd}"\n', encoding="utf-8")


def static_config(path: Path, targets: list[str], interval: str = "1h") -> None:
    tables = [f'\n[[checks]]\nname = "fleet-{i // LIST_MAX}"\nkind = "tcp"\ntargets = '
              + json.dumps(targets[i:i + LIST_MAX]) + "\n"
              for i in range(0, len(targets), LIST_MAX)]
    path.write_text(head(interval) + "".join(tables), encoding="utf-8")


def wait_nth(log: common.StreamLog, pattern: str, n: int, timeout: float,
             proc: Any) -> str:
    """The n-th line (from 1) matching `pattern`."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in list(log.lines) if regex.search(line)]
        if len(found) >= n:
            return found[n - 1]
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}; last lines:\n"
                               + "\n".join(log.lines[-20:]))
        time.sleep(0.02)
    raise TimeoutError(f"no {n}th line matching {pattern!r} within {timeout:g}s")


def start(children: common.Children, args: argparse.Namespace, config: Path,
          label: str, *extra: str) -> tuple[Any, common.StreamLog, dict[str, Any]]:
    argv = [*common.agent_argv(args.python, config), *extra]
    spawned = time.monotonic()
    proc = children.start(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    log = common.StreamLog(proc.stderr, str(config.with_suffix(".stderr")))
    line = wait_nth(log, r'msg="config loaded"', 1, STARTUP_TIMEOUT, proc)
    out = {"load_s": time.monotonic() - spawned, "load_cpu_s": common.cpu_seconds(proc.pid),
           "checks": int(re.search(r"checks=(\d+)", line)[1])}  # type: ignore[index]
    common.sleep_until(time.monotonic() + args.settle, [proc], label)
    out["rss_mib"] = common.proc_status(proc.pid)["VmRSS"] / 1024
    out["port"] = int(re.search(r"msg=listening address=127\.0\.0\.1:(\d+)",  # type: ignore[index]
                                "\n".join(log.lines))[1])
    return proc, log, out


def scraped_targets(port: int) -> set[str]:
    """The targets of the agent's checks, from its netsentry_check_info series."""
    status, _, body, _ = common.http_get("127.0.0.1", port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return {common.parse_labels(line[line.index("{"):])["target"]
            for line in body.decode().splitlines() if line.startswith("netsentry_check_info{")}


def change_cost(proc: Any, log: common.StreamLog, sd: Path, targets: list[str], n: int,
                count: int, window: float) -> dict[str, float]:
    """CPU of rewriting the file with `count` targets changed (the `n`-th change), beyond what
    the agent spends in the same window with nothing changed."""
    quiet0 = common.cpu_seconds(proc.pid)
    time.sleep(window)
    quiet = common.cpu_seconds(proc.pid) - quiet0
    for i in range(count):  # the first `count` targets of every GROUP-th group, spread out
        at = (i * GROUP * 7) % len(targets)
        host, port = targets[at].rsplit(":", 1)
        targets[at] = f"{host}:{int(port) + 1}"
    busy0, written = common.cpu_seconds(proc.pid), time.monotonic()
    write_targets(sd, targets)
    line = wait_nth(log, CHANGED, n, 60, proc)
    adopted = time.monotonic() - written
    time.sleep(max(0.0, window - (time.monotonic() - written)))
    busy = common.cpu_seconds(proc.pid) - busy0
    added = int(re.search(r"added=(\d+)", line)[1])  # type: ignore[index]
    return {"cpu_s": busy - quiet, "adopted_s": adopted, "added": added,
            "quiet_cpu_s": quiet}


def one_round(children: common.Children, args: argparse.Namespace, workdir: Path,
              index: int) -> dict[str, Any]:
    port = common.free_port()  # closed: every run is a quick refusal
    targets = [address(i, port) for i in range(args.targets)]
    result: dict[str, Any] = {}
    sd_empty = workdir / f"empty-{index}.json"
    write_targets(sd_empty, [])
    config = workdir / f"empty-{index}.toml"
    discovered_config(config, sd_empty, args.interval)
    proc, _, result["empty"] = start(children, args, config, "the empty agent")
    children.stop(proc)

    sd = workdir / f"sd-{index}.json"
    write_targets(sd, targets)
    config = workdir / f"discovered-{index}.toml"
    discovered_config(config, sd, args.interval)
    proc, log, out = start(children, args, config, "the discovered agent")
    out["one"] = change_cost(proc, log, sd, targets, 1, 1, args.window)
    out["churn"] = change_cost(proc, log, sd, targets, 2, args.churn, args.window)
    result["discovered"] = out
    children.stop(proc)

    config = workdir / f"static-{index}.toml"
    static_config(config, targets, args.interval)
    proc, _, result["static"] = start(children, args, config, "the static agent")
    children.stop(proc)
    return result


def shard_agents(children: common.Children, args: argparse.Namespace,
                 workdir: Path) -> dict[str, Any]:
    port = common.free_port()
    targets = [address(i, port) for i in range(args.targets)]
    count = args.shard_agents
    shards = []
    for index in range(count):
        sd = workdir / f"shard-{index}.json"  # each its own copy, changed by its own agent
        write_targets(sd, list(targets))
        config = workdir / f"shard-{index}.toml"
        discovered_config(config, sd, args.interval)
        proc, log, out = start(children, args, config, f"shard {index}",
                               "--shard", f"{index}/{count}")
        out["targets"] = scraped_targets(out["port"])
        out["churn"] = change_cost(proc, log, sd, list(targets), 1, args.churn, args.window)
        children.stop(proc)
        print(f"   shard {index}/{count}: {out['checks']:,} checks, load {out['load_s']:.2f} s, "
              f"CPU {out['load_cpu_s']:.2f} s, churn CPU {out['churn']['cpu_s']:.3f} s",
              flush=True)
        shards.append(out)
    sets = [s.pop("targets") for s in shards]
    union = set().union(*sets)
    return {"count": count, "shards": shards,
            "disjoint": sum(map(len, sets)) == len(union),
            "complete": union == set(targets)}


def in_process(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    from exporter.app import Agent, Options
    from exporter.config.load import load_file
    from exporter.discovery import discoverer, files

    logging.disable(logging.CRITICAL)  # a check's transitions would be logged, not measured
    times: dict[str, float] = {}

    def timed(name: str, function: Any) -> Any:
        @functools.wraps(function)
        def wrapper(*a: Any, **k: Any) -> Any:
            started = time.process_time()
            try:
                return function(*a, **k)
            finally:
                times[name] = times.get(name, 0.0) + time.process_time() - started
        return wrapper

    originals = (files.FileTargets.poll, discoverer.make_checks)
    files.FileTargets.poll = timed("poll", files.FileTargets.poll)  # type: ignore[method-assign]
    discoverer.make_checks = timed("make_checks", discoverer.make_checks)
    results = []

    async def one(index: int) -> dict[str, Any]:
        targets = [address(i, 9) for i in range(args.targets)]
        sd, config = workdir / f"inproc-{index}.json", workdir / f"inproc-{index}.toml"
        write_targets(sd, targets)
        discovered_config(config, sd, args.interval)
        agent = Agent(Options(str(config)))
        agent.scheduler.start()
        agent.scheduler.update = timed("scheduler_update",  # type: ignore[method-assign]
                                       agent.scheduler.update)
        agent.store.load = timed("store_load", agent.store.load)  # type: ignore[method-assign]
        agent._adopt = timed("agent_adopt", agent._adopt)  # type: ignore[method-assign]
        out = {}
        times.clear()
        started = time.process_time()
        agent.apply(load_file(str(config)))
        out["load"] = {"total": time.process_time() - started, **times}
        [(found, _)] = agent.discovery._running
        for label, count in (("one", 1), ("churn", args.churn)):
            for i in range(count):
                at = (i * GROUP * 7) % len(targets)
                host, port = targets[at].rsplit(":", 1)
                targets[at] = f"{host}:{int(port) + 1}"
            write_targets(sd, targets)
            times.clear()
            started = time.process_time()
            if found.poll_files():
                agent._adopt("discovered targets changed")
            out[label] = {"total": time.process_time() - started, **times}
        agent.discovery.close()
        agent.scheduler.shutdown()
        return out

    try:
        for index in range(args.rounds):
            results.append(asyncio.run(one(index)))
    finally:
        files.FileTargets.poll, discoverer.make_checks = originals  # type: ignore[method-assign]
    return results


def in_process_report(args: argparse.Namespace, info: dict[str, Any],
                      results: list[dict[str, Any]]) -> None:
    lines = common.report_head(f"service discovery in-process: {args.targets:,} targets, "
                               f"interval {args.interval}, CPU seconds", info)
    steps = ("total", "poll", "make_checks", "store_load", "scheduler_update", "agent_adopt")
    lines.append(f"{'':<22}" + "".join(f"{step:>18}" for step in steps))
    for label, what in (("load", "the file loaded"), ("one", "one target changed"),
                        ("churn", f"{args.churn:,} changed")):
        for r in results:
            lines.append(f"{what:<22}" + "".join(f"{r[label].get(step, 0.0):>18.3f}"
                                                 for step in steps))
        lines.append(f"{'  median':<22}" + "".join(
            f"{common.median([r[label].get(step, 0.0) for r in results]):>18.3f}"
            for step in steps))
    print("\n".join(lines), flush=True)


def movement(count: int, keys: list[str], shards: int) -> list[dict[str, Any]]:
    rows = []
    before = [shard.assign(k, 1) for k in keys]
    for n in range(1, shards + 1):
        after = [shard.assign(k, n + 1) for k in keys]
        moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
        sizes = [after.count(i) for i in range(n + 1)]
        rows.append({"from": n, "to": n + 1, "moved": len(moved) / count,
                     "expected": 1 / (n + 1), "all_to_new": all(a == n for _, a in moved),
                     "complete": sum(sizes) == count, "smallest": min(sizes),
                     "largest": max(sizes)})
        before = after
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--targets", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--churn", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--interval", default="1h")
    parser.add_argument("--shard-agents", type=int, default=0)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    workdir, info = common.start_run("netsentry-discovery-", argv)
    error = None
    payload: dict[str, Any] = {"info": info, "rounds": []}
    try:
        if args.in_process:
            payload["in_process"] = in_process(args, workdir)
            in_process_report(args, info, payload["in_process"])
            return common.finish(args.json, payload, None)
        with common.Children() as children:
            for index in range(args.rounds):
                print(f"round {index + 1} of {args.rounds}", flush=True)
                payload["rounds"].append(one_round(children, args, workdir, index))
            if args.shard_agents:
                print(f"{args.shard_agents} shard agents", flush=True)
                payload["shard_agents"] = shard_agents(children, args, workdir)
        keys = [f"fleet\t{address(i, 1)}" for i in range(args.targets)]
        payload["movement"] = movement(args.targets, keys, args.shards)
        report(args, info, payload)
    except (OSError, RuntimeError, TimeoutError) as exc:
        error = common.harness_error(exc)
    return common.finish(args.json, payload, error)


def report(args: argparse.Namespace, info: dict[str, Any], payload: dict[str, Any]) -> None:
    rounds = payload["rounds"]

    def med(*path: str) -> float:
        values = []
        for r in rounds:
            value: Any = r
            for key in path:
                value = value[key]
            values.append(value)
        return common.median(values)

    def each(*path: str, spec: str = ".2f") -> str:
        values = []
        for r in rounds:
            value: Any = r
            for key in path:
                value = value[key]
            values.append(format(value, spec))
        return " / ".join(values)

    n = args.targets
    lines = common.report_head(f"service discovery: {n:,} targets, {args.rounds} rounds, "
                               f"interval {args.interval}", info,
                               f"rounds:   {len(rounds)}; figures: median (each round)")
    load = med("discovered", "load_s") - med("empty", "load_s")
    cpu = med("discovered", "load_cpu_s") - med("empty", "load_cpu_s")
    static_load = med("static", "load_s") - med("empty", "load_s")
    static_cpu = med("static", "load_cpu_s") - med("empty", "load_cpu_s")
    rss0, rss_d, rss_s = (med("empty", "rss_mib"), med("discovered", "rss_mib"),
                          med("static", "rss_mib"))
    rows = [
        ("checks scheduled (discovered / static)",
         f"{med('discovered', 'checks'):,.0f} / {med('static', 'checks'):,.0f}"),
        ("start to 'config loaded', empty file (s)",
         f"{med('empty', 'load_s'):.2f} ({each('empty', 'load_s')})"),
        ("  CPU to then (s)",
         f"{med('empty', 'load_cpu_s'):.2f} ({each('empty', 'load_cpu_s')})"),
        (f"start to 'config loaded', {n:,} discovered (s)",
         f"{med('discovered', 'load_s'):.2f} ({each('discovered', 'load_s')})"),
        ("  CPU to then (s)",
         f"{med('discovered', 'load_cpu_s'):.2f} ({each('discovered', 'load_cpu_s')})"),
        (f"start to 'config loaded', {n:,} static targets = [...] (s)",
         f"{med('static', 'load_s'):.2f} ({each('static', 'load_s')})"),
        ("  CPU to then (s)",
         f"{med('static', 'load_cpu_s'):.2f} ({each('static', 'load_cpu_s')})"),
        ("adopting the targets, beyond the empty agent: time / CPU (s)",
         f"discovered {load:.2f} / {cpu:.2f}; static {static_load:.2f} / {static_cpu:.2f}"),
        ("one target changed: CPU beyond the quiet window (s)",
         f"{med('discovered', 'one', 'cpu_s'):.3f} "
         f"({each('discovered', 'one', 'cpu_s', spec='.3f')})"),
        ("  write to 'discovered targets changed' (s, ≤ 1 s is the poll)",
         f"{med('discovered', 'one', 'adopted_s'):.2f} "
         f"({each('discovered', 'one', 'adopted_s')})"),
        (f"{args.churn:,} targets changed ({args.churn / n:.0%}): CPU (s)",
         f"{med('discovered', 'churn', 'cpu_s'):.3f} "
         f"({each('discovered', 'churn', 'cpu_s', spec='.3f')}); averaged over a 60 s "
         f"refresh {med('discovered', 'churn', 'cpu_s') / 60:.2%} of a core"),
        ("  write to 'discovered targets changed' (s)",
         f"{med('discovered', 'churn', 'adopted_s'):.2f} "
         f"({each('discovered', 'churn', 'adopted_s')}); added "
         f"{med('discovered', 'churn', 'added'):,.0f}"),
        ("  quiet window's CPU (the runs' background, s)",
         f"{med('discovered', 'one', 'quiet_cpu_s'):.3f}"),
        (f"RSS after {args.settle:g} s: empty / discovered / static (MiB)",
         f"{rss0:.0f} / {rss_d:.0f} / {rss_s:.0f}"),
        ("RSS per 10,000 targets beyond the empty agent: discovered / static (MiB)",
         f"{(rss_d - rss0) * 10_000 / n:.1f} / {(rss_s - rss0) * 10_000 / n:.1f}"),
    ]
    width = max(len(label) for label, _ in rows)
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    lines += ["", f"--shard N → N+1 over {n:,} discovered (check, target) keys:",
              "  N → N+1   moved    1/(N+1)  all to the new shard  complete  "
              "smallest / largest shard"]
    for row in payload["movement"]:
        lines.append(f"  {row['from']:>2} → {row['to']:<3}  {row['moved']:.4f}   "
                     f"{row['expected']:.4f}   {row['all_to_new']!s:<20}  "
                     f"{row['complete']!s:<8}  {row['smallest']:,} / {row['largest']:,}")
    if "shard_agents" in payload:
        sa = payload["shard_agents"]
        shards = sa["shards"]
        k = sa["count"]
        base = med("empty", "load_cpu_s")

        def spread(key: str, spec: str = ".2f", sub: str = "") -> str:
            values = [s[sub][key] if sub else s[key] for s in shards]
            return (f"median {common.median(values):{spec}}, {min(values):{spec}}–"
                    f"{max(values):{spec}}")

        load_cpu = common.median([s["load_cpu_s"] for s in shards])
        per_10k = common.median([(s["rss_mib"] - rss0) * 10_000 / s["checks"] for s in shards])
        lines += ["", f"{k} agents, --shard I/{k} each, over the same {n:,} targets:",
                  f"  checks per shard: {spread('checks', ',.0f')}; sum "
                  f"{sum(s['checks'] for s in shards):,}; target sets disjoint "
                  f"{sa['disjoint']}, complete {sa['complete']}",
                  f"  start to 'config loaded' (s): {spread('load_s')}",
                  f"  CPU to then (s): {spread('load_cpu_s')}; beyond the empty agent "
                  f"({base:.2f}): median {load_cpu - base:.2f}",
                  f"  RSS (MiB): {spread('rss_mib', '.0f')}; per 10,000 checks beyond the "
                  f"empty agent: {per_10k:.1f}",
                  f"  {args.churn:,} of the {n:,} targets changed: CPU (s): "
                  f"{spread('cpu_s', '.3f', 'churn')}; averaged over a 60 s refresh "
                  f"{common.median([s['churn']['cpu_s'] for s in shards]) / 60:.2%} of a core",
                  f"  write to 'discovered targets changed' (s): "
                  f"{spread('adopted_s', '.2f', 'churn')}"]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
