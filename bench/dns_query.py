"""DNS benchmark: N scheduled `dns` checks in netsentry vs. blackbox_exporter's dns /probe.

    .venv/bin/python bench/dns_query.py [--checks 1000] [--interval 10] [--window 30]
                                        [--rounds 1] [--json PATH]

What it does, all on loopback (127.0.0.1) only — nothing is sent anywhere else:

1. Starts a real dnsmasq on 127.0.0.1 and a free high port, with no upstream and nothing read
   from the host (no resolv.conf, no /etc/hosts); it answers `host.test A 127.0.0.5` from a
   --host-record and refuses to forward anything (the `test` domain is --local).
2. netsentry, direct query: N `dns` checks of `host.test` asking that dnsmasq over UDP. The
   agent warms up one interval, then a window of --window seconds is measured between two
   /metrics scrapes and two /proc readings (with a scrape every --scrape-every seconds in
   between, as a Prometheus server would): CPU per completed check, runs/s, failures,
   missed/skipped runs, scheduler lag p50/p99 (histogram_quantile over bucket deltas).
3. netsentry, system resolver: N `dns` checks of `localhost` without `server`, answered by
   getaddrinfo from /etc/hosts (skipped, with the reason, when /etc/hosts or nsswitch would
   not keep that lookup on the machine).
4. blackbox_exporter 0.23, module `dns_a` (the same query to the same dnsmasq): /probe paced
   at N / interval per second for min(window, 20) s — the like-for-like reference — and once
   at full speed; CPU per probe from /proc.
5. A table, the ratios netsentry / blackbox (paced) and issue 19's goal (≤ 0.4; DESIGN.md's
   first one was 0.5). With --rounds N, steps 4 and 2 alternate N times (blackbox first) and
   the goal is judged on the medians of the rounds: the paced reference moved from 780 to
   1,040 µs between single runs.

It is a benchmark, not a test: it exits 0 whether or not the goal is met (1 on a harness error).
"""

from __future__ import annotations

import argparse
import math
import os
import pwd
import shlex
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

DNSMASQ = "/usr/sbin/dnsmasq"
HOST = "127.0.0.1"
QUERY_NAME = "host.test"
QUERY_ADDRESS = "127.0.0.5"
SYSTEM_NAME = "localhost"
TIMEOUT = "2s"
STARTUP_TIMEOUT = 300.0
GOAL_CPU_RATIO = 0.4  # issue 19 (DESIGN.md: 0.5)
MIN_COMPLETION = 0.99

# --- small helpers ------------------------------------------------------------------------------


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(20):
        port = common.free_port(HOST)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind((HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


# --- dnsmasq ------------------------------------------------------------------------------------


def dns_query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + \
        struct.pack("!HH", 1, 1)


def dns_answers_ok(port: int, timeout: float = 0.5) -> bool:
    """One UDP query for host.test A to 127.0.0.1:port; True when it answers 127.0.0.5."""
    qid = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((HOST, port))
        s.send(dns_query(QUERY_NAME, qid))
        try:
            reply = s.recv(4096)
        except OSError:
            return False
    if len(reply) < 12:
        return False
    rid, flags, _, ancount = struct.unpack("!HHHH", reply[:8])
    return (rid == qid and flags & 0x8000 and flags & 0xF == 0 and ancount >= 1
            and socket.inet_aton(QUERY_ADDRESS) in reply[12:])


@dataclass
class Dnsmasq:
    proc: subprocess.Popen[bytes]
    port: int
    log: common.StreamLog
    argv: list[str] = field(default_factory=list)


def start_dnsmasq(children: common.Children, workdir: Path) -> Dnsmasq:
    user = pwd.getpwuid(os.geteuid()).pw_name
    for _attempt in range(3):  # the free port may be taken between finding and binding it
        port = free_udp_tcp_port()
        argv = [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--no-poll", "--bind-interfaces", f"--listen-address={HOST}", f"--port={port}",
                f"--pid-file={workdir / 'dnsmasq.pid'}", f"--user={user}", "--local=/test/",
                f"--host-record={QUERY_NAME},{QUERY_ADDRESS}", "--cache-size=1000",
                "--log-facility=-"]  # stderr, not syslog; no --log-queries: quiet
        print(f"== dnsmasq: {shlex.join(argv)}", flush=True)
        proc = children.start(argv)
        assert proc.stderr is not None
        log = common.StreamLog(proc.stderr, str(workdir / "dnsmasq.stderr"))
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and proc.poll() is None:
            if dns_answers_ok(port):
                print(f"   dnsmasq answers {QUERY_NAME} A {QUERY_ADDRESS} on {HOST}:{port} "
                      f"(pid {proc.pid})", flush=True)
                return Dnsmasq(proc, port, log, argv)
            time.sleep(0.1)
        children.stop(proc)
        log.join(2.0)
        print("   dnsmasq did not answer; last lines:\n   " + "\n   ".join(log.lines[-5:]),
              flush=True)
    raise RuntimeError("dnsmasq did not start; see dnsmasq.stderr")


# --- the agent ----------------------------------------------------------------------------------


def write_config(path: Path, case: str, n: int, interval: float, dns_port: int) -> None:
    timeout = TIMEOUT if interval > 2.0 else f"{round(interval * 500)}ms"  # must be < interval
    lines = ["[defaults]", f'interval = "{round(interval * 1000)}ms"', f'timeout = "{timeout}"',
             ""]
    for i in range(n):
        lines += ["[[checks]]", f'name = "dns-{case}-{i + 1:05d}"', 'kind = "dns"']
        if case == "direct":
            lines += [f'target = "{QUERY_NAME}"', f'server = "{HOST}:{dns_port}"',
                      'transport = "udp"']
        else:
            lines += [f'target = "{SYSTEM_NAME}"']
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def system_case_problem() -> str | None:
    """Why a getaddrinfo("localhost") could leave the machine, or None when it cannot."""
    in_hosts = False
    try:
        with open("/etc/hosts", encoding="utf-8") as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                if len(words) >= 2 and SYSTEM_NAME in words[1:]:
                    in_hosts = in_hosts or words[0].startswith("127.") or words[0] == "::1"
    except OSError as exc:
        return f"cannot read /etc/hosts: {exc}"
    if not in_hosts:
        return f"{SYSTEM_NAME} has no loopback line in /etc/hosts"
    try:
        with open("/etc/nsswitch.conf", encoding="utf-8") as f:
            hosts = next((ln.split(":", 1)[1].split() for ln in f
                          if ln.split("#", 1)[0].strip().startswith("hosts:")), ["files"])
    except OSError:
        hosts = ["files"]  # glibc's default without nsswitch.conf starts with files too
    if not hosts or hosts[0] != "files":
        return f"nsswitch.conf's hosts line does not start with files: {' '.join(hosts)}"
    getent = shutil.which("getent")
    if getent is None:
        return "no getent to verify the lookup"
    result = subprocess.run([getent, "hosts", SYSTEM_NAME], capture_output=True, text=True,
                            timeout=10, check=False)
    addresses = [ln.split()[0] for ln in result.stdout.splitlines() if ln.split()]
    print(f"   getent hosts {SYSTEM_NAME}: {' '.join(addresses) or '(nothing)'}", flush=True)
    if result.returncode != 0 or not addresses:
        return f"getent hosts {SYSTEM_NAME} failed (exit {result.returncode})"
    if not all(a.startswith("127.") or a == "::1" for a in addresses):
        return f"getent hosts {SYSTEM_NAME} gave non-loopback addresses {addresses}"
    return None


def bench_agent(children: common.Children, case: str, args: argparse.Namespace, dns: Dnsmasq,
                workdir: Path) -> dict[str, Any]:
    config = workdir / f"netsentry-{case}.toml"
    write_config(config, case, args.checks, args.interval, dns.port)
    return common.measure_agent(children, args, config, label=f"dns checks ({case})",
                                head={"case": case}, tail={}, side=dns.proc,
                                side_key="dnsmasq_cpu_us_per_run", startup_timeout=STARTUP_TIMEOUT)


# --- blackbox_exporter --------------------------------------------------------------------------


def bench_blackbox(children: common.Children, args: argparse.Namespace, dns: Dnsmasq,
                   workdir: Path) -> dict[str, Any]:
    proc, log, port = common.start_blackbox(
        children,
        "modules:\n  dns_a:\n    prober: dns\n    timeout: 2s\n    dns:\n"
        f"      query_name: {QUERY_NAME}\n      query_type: A\n"
        "      transport_protocol: udp\n      preferred_ip_protocol: ip4\n",
        workdir)
    target = f"{HOST}:{dns.port}"
    out: dict[str, Any] = {"pid": proc.pid, "port": port, "clients": args.blackbox_clients,
                           "target": target}
    try:
        warm = common.run_probes(port, "dns_a", [target], 100, args.blackbox_clients, 60.0)
        if warm["ok"] == 0:
            raise RuntimeError(f"blackbox warm-up probes all failed: {warm['examples']}")
        out.update(common.paced_and_full(proc.pid, dns.proc.pid, "dnsmasq_cpu_us_per_probe", port,
                                         "dns_a", target, args))
        status = common.proc_status(proc.pid)
        out.update({"peak_rss_kib": status.get("VmHWM"), "threads": status.get("Threads")})
    finally:
        common.stop_blackbox(children, proc, log, out)
    return out


# --- the report ---------------------------------------------------------------------------------

CASE_TITLES = {"direct": "netsentry dns, server (direct UDP query)",
               "system": "netsentry dns, system resolver (getaddrinfo)"}


def evaluate(results: list[dict[str, Any]], bb: dict[str, Any] | None) -> list[dict[str, Any]]:
    paced, full = (bb.get("paced"), bb.get("full")) if bb else (None, None)
    goals = []
    for r in results:
        goal = {"goal": f"{r['case']}: CPU per check ≤ {GOAL_CPU_RATIO} × blackbox CPU per dns "
                        "probe", "case": r["case"]}
        system = r["case"] == "system"
        caveats = ["not like-for-like: getaddrinfo vs. a UDP query"] if system else []
        goals.append(common.cpu_goal(r, paced, full, goal, GOAL_CPU_RATIO, MIN_COMPLETION,
                                     caveats))
    return goals


def report(info: dict[str, Any], args: argparse.Namespace, results: list[dict[str, Any]],
           bb: dict[str, Any] | None, goals: list[dict[str, Any]]) -> str:
    lines = common.report_head(
        "netsentry dns benchmark", info,
        f"dnsmasq:  {info.get('dnsmasq_version', '?')} on {HOST}:{info.get('dns_port', '?')} "
        f"({QUERY_NAME} A {QUERY_ADDRESS}; no upstream)",
        f"logs:     {info['workdir']}",
        f"checks:   {args.checks:,} at a {args.interval:g} s interval "
        f"({args.checks / args.interval:g} runs/s), window {args.window:g} s, "
        f"scrape every {args.scrape_every:g} s")
    lines += common.agent_report(results, "dnsmasq CPU µs per run", "dnsmasq_cpu_us_per_run")
    if bb is not None and "paced" in bb:
        t = common.Table(["blackbox_exporter 0.23 (dns_a, udp)", "paced", "full speed"])
        p, f = bb["paced"], bb["full"]
        t.add("rate asked", f"{p['rate_per_s']:g}/s", "as fast as "
              f"{bb['clients']} clients go")
        t.add("probes (ok / failed)", f"{p['ok']} / {p['failed']}", f"{f['ok']} / {f['failed']}")
        t.add("probes/s", common.fmt(p["probes_per_s"], ".1f"),
              common.fmt(f["probes_per_s"], ".0f"))
        t.add("CPU µs per probe", common.fmt(p["cpu_us_per_probe"], ".1f", " µs"),
              common.fmt(f["cpu_us_per_probe"], ".1f", " µs"))
        t.add("CPU (share of one core)", common.fmt(p["cpu_core_fraction"] * 100, ".1f", " %"),
              common.fmt(f["cpu_core_fraction"] * 100, ".1f", " %"))
        t.add("dnsmasq CPU µs per probe", common.fmt(p["dnsmasq_cpu_us_per_probe"], ".1f", " µs"),
              common.fmt(f["dnsmasq_cpu_us_per_probe"], ".1f", " µs"))
        t.add("other processes' load (cores)", common.fmt(p["other_load_cores"], ".2f"),
              common.fmt(f["other_load_cores"], ".2f"))
        t.add("peak RSS (VmHWM)", common.fmt((bb.get("peak_rss_kib") or math.nan) / 1024, ".1f",
                                             " MiB"), "")
        lines += [t.render(), ""]
        for label, part in (("paced", p), ("full speed", f)):
            if part["examples"]:
                lines.append(f"blackbox failures ({label}): " + "; ".join(part["examples"]))
        lines += common.blackbox_stderr(bb)
    elif bb is not None:
        lines += ["blackbox: not measured (see the error below)", ""]
    t = common.Table(["goal (issue 19)", "netsentry / blackbox paced", "vs. full speed", "met"])
    for g in goals:
        r = next(x for x in results if x["case"] == g["case"])
        t.add(g["goal"], g["measured"],
              common.fmt(r.get("cpu_ratio_vs_blackbox_full_speed"), ".2f"),
              common.verdict(g["met"]) + (" (informational)" if g["case"] == "system" else ""))
    lines += [t.render(), ""]
    lines += [
        "  criterion: netsentry CPU µs per completed check / blackbox CPU µs per /probe at the",
        f"  same rate (N / interval), ≤ {GOAL_CPU_RATIO}, with no failures on either side and",
        f"  completion ≥ {MIN_COMPLETION}. Agent CPU includes the --scrape-every scrapes, not the",
        "  two boundary scrapes' renders; dnsmasq's CPU is shown apart and counted on neither",
        "  side. CPU is from /proc (clock ticks of "
        f"1/{common.CLK_TCK} s). The system-resolver case",
        "  has no blackbox counterpart (blackbox always asks a nameserver): its ratio is",
        "  informational, against the direct-query probe; and its N checks all resolve the",
        "  same name, so concurrent runs may share one getaddrinfo (netsentry's resolver",
        "  coalesces identical lookups in flight): it can cost less per check than N distinct",
        "  names would.",
        "=" * 78,
    ]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=1000, help="number of dns checks")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate blackbox paced and netsentry direct this many times "
                             "and judge the goal by the medians (the machine's speed drifts "
                             "between measurements; default 1)")
    common.agent_arguments(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.checks <= 100_000:
        parser.error("--checks in [1, 100000]")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds in [1, 20]")
    common.check_agent_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, info = common.start_run("netsentry-bench-dns-", argv)
    version = common.tool_version([DNSMASQ, "--version"])
    info["dnsmasq_version"] = version.replace("Copyright", "").split("  ")[0]
    results: list[dict[str, Any]] = []
    bb: dict[str, Any] | None = None
    rounds: list[tuple[float, float]] = []  # (netsentry direct, blackbox paced) µs per run
    error: str | None = None
    try:
        with common.Children() as children:
            dns = start_dnsmasq(children, workdir)
            info["dns_port"] = dns.port
            try:
                for number in range(1, args.rounds + 1):
                    if args.rounds > 1:
                        print(f"\n== round {number} of {args.rounds}", flush=True)
                    if not args.no_blackbox:
                        bb = {}
                        bb = bench_blackbox(children, args, dns, workdir)
                    time.sleep(2.0)
                    direct = bench_agent(children, "direct", args, dns, workdir)
                    rounds.append((direct.get("cpu_us_per_check", math.nan),
                                   bb["paced"]["cpu_us_per_probe"] if bb else math.nan))
                results.append(direct)
                print(f"\n== system-resolver case: checking that {SYSTEM_NAME} stays local",
                      flush=True)
                problem = system_case_problem()
                if problem:
                    print(f"   skipped: {problem}", flush=True)
                    results.append({"case": "system", "skipped": problem})
                else:
                    time.sleep(2.0)
                    results.append(bench_agent(children, "system", args, dns, workdir))
                if dns.proc.poll() is not None:
                    raise RuntimeError(f"dnsmasq exited with {dns.proc.returncode}")
            except (RuntimeError, TimeoutError, OSError) as exc:
                error = common.harness_error(exc)
            finally:
                children.stop(dns.proc)
                dns.log.join(5.0)
                info["dnsmasq_stderr_tail"] = dns.log.lines[-10:]
    except KeyboardInterrupt:
        print("\ninterrupted; children stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        error = common.harness_error(exc)
    if len(rounds) > 1 and results and bb and "paced" in bb:
        # The goal is judged on the medians of the rounds; the tables show the last round.
        ours, theirs = (statistics.median(v) for v in zip(*rounds, strict=True))
        results[0] = {**results[0], "cpu_us_per_check": ours}
        bb = {**bb, "paced": {**bb["paced"], "cpu_us_per_probe": theirs}}
        info["rounds"] = [{"netsentry_us": a, "blackbox_paced_us": b, "ratio": a / b}
                          for a, b in rounds]
    goals = evaluate(results, bb)
    print(report(info, args, results, bb, goals), flush=True)
    if "rounds" in info:
        print("rounds (netsentry direct / blackbox paced, µs per run): " + "; ".join(
            f"{r['netsentry_us']:.0f} / {r['blackbox_paced_us']:.0f} = {r['ratio']:.2f}"
            for r in info["rounds"]) + f"; the goal above is judged on their medians, "
            f"{results[0]['cpu_us_per_check']:.0f} / {bb['paced']['cpu_us_per_probe']:.0f} "
            f"(the tables show the last round's other figures)", flush=True)
    return common.finish(args.json, {**info, "args": vars(args), "netsentry": results,
                                     "blackbox": bb, "goals": goals, "error": error}, error)


if __name__ == "__main__":
    raise SystemExit(main())
