"""/probe benchmark: netsentry's `/probe?template=...&target=...` beside blackbox_exporter's
`/probe?module=...&target=...`, driven by `wrk`, on the same loopback targets in one run.

    .venv/bin/python bench/probe.py [--seconds 10] [--rounds 3] [--connections 8] [--json PATH]

What it does, all on loopback (127.0.0.1) only — nothing is sent anywhere else:

1. Starts the targets in child processes of their own (their CPU counts on neither side; it is
   shown apart): an accept-and-close TCP listener (bench/common.py) and a plain HTTP/1.1 server
   answering `GET /` with 200 (bench/tls_http.py's server child).
2. Starts blackbox_exporter 0.23 with modules `tcp_connect` and `http_2xx`, and netsentry with
   `[probe] allow = ["127.0.0.1/32"]` and templates of the same names (kind tcp, kind http),
   both with a 2 s timeout and no scheduled checks.
3. For each case (tcp, http), round after round, alternating which exporter goes first: `wrk`
   (-t 1, --connections keep-alive connections, --seconds long, after a 2 s warm-up) against
   each exporter's /probe of that target. A wrk Lua script counts the answers that say
   `probe_success 1` (netsentry: `netsentry_probe_success 1`); /proc gives the CPU each
   exporter and the target spent during the run.
4. The web layer's floor: wrk against each exporter's `/-/healthy`, CPU per request.
5. A table of medians over the rounds: probes/s, CPU per probe, their ratio, failures.
   DESIGN.md's goal for /probe (issue 8): no worse than blackbox per probe (ratio ≤ 1).

It is a benchmark, not a test: it exits 0 whether or not the goal is met (1 on a harness error).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from tls_http import make_certs, start_servers

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
WARMUP_SECONDS = 2
STARTUP_TIMEOUT = 60.0
CASES = ("tcp", "http")
MODULES = {"tcp": "tcp_connect", "http": "http_2xx"}
SUCCESS_LINE = {"blackbox": "probe_success 1", "netsentry": "netsentry_probe_success 1"}

# Counts the answers whose body has the success line (passed as the script's argument), per
# wrk thread, and prints the totals at the end.
WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0; line = "\\n" .. args[1] .. "\\n" end
function response(status, headers, body)
  if status == 200 and string.find(body, line, 1, true) then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok"); bad = bad + t:get("bad") end
  io.write(string.format("probes_ok %d\\nprobes_bad %d\\n", ok, bad))
end
"""

BLACKBOX_CONFIG = """modules:
  tcp_connect:
    prober: tcp
    timeout: 2s
  http_2xx:
    prober: http
    timeout: 2s
"""

NETSENTRY_CONFIG = """[probe]
allow = ["127.0.0.1/32"]
max_in_flight = 16

[probe.templates.tcp_connect]
kind = "tcp"
timeout = "2s"

[probe.templates.http_2xx]
kind = "http"
timeout = "2s"
"""


def start_netsentry(children: common.Children, python: str, workdir: Path
                    ) -> tuple[subprocess.Popen[bytes], common.StreamLog, int]:
    config = workdir / "netsentry.toml"
    config.write_text(NETSENTRY_CONFIG, encoding="utf-8")
    argv = [python, "-m", "exporter", "--config.file", str(config),
            "--web.listen-address", f"{HOST}:0"]
    print(f"\n== netsentry: {shlex.join(argv)}", flush=True)
    proc = children.start(argv)
    assert proc.stderr is not None
    log = common.StreamLog(proc.stderr, str(workdir / "netsentry.stderr"))
    port = int(log.wait_for(r"msg=listening address=127\.0\.0\.1:(\d+)", STARTUP_TIMEOUT,
                            proc).group(1))
    log.wait_for(r'msg="config loaded"', STARTUP_TIMEOUT, proc)
    return proc, log, port


def probe_path(exporter: str, module: str, target: str) -> str:
    key = "module" if exporter == "blackbox" else "template"
    return f"/probe?{key}={module}&target={urllib.parse.quote(target, safe='')}"


def parse_wrk(text: str) -> dict[str, Any]:
    """What wrk printed: requests, seconds, socket errors, non-2xx, and the script's counts."""
    out: dict[str, Any] = {}
    if m := re.search(r"(\d+) requests in ([\d.]+)(\w+),", text):
        unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m[3]]
        out["requests"], out["wrk_seconds"] = int(m[1]), float(m[2]) * unit
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      text):
        out["socket_errors"] = sum(int(x) for x in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non_2xx"] = int(m[1])
    for key in ("probes_ok", "probes_bad"):
        if m := re.search(rf"^{key} (\d+)$", text, re.M):
            out[key] = int(m[1])
    if m := re.search(r"Latency\s+([\d.]+\w+)", text):
        out["latency_mean"] = m[1]
    return out


def run_wrk(url: str, success: str | None, seconds: int, connections: int, script: Path,
            pids: dict[str, int]) -> dict[str, Any]:
    """One wrk run against `url`; the CPU each of `pids` spent meanwhile. With `success`,
    only answers holding that line count (else every 2xx answer does)."""
    argv = [WRK, "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
            *(["-s", str(script), url, "--", success] if success else [url])]
    before = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    elapsed = time.monotonic() - started
    cpu = {name: common.cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    out = parse_wrk(done.stdout)
    if success is None and "requests" in out:
        out["probes_ok"] = out["requests"] - out.get("non_2xx", 0)
        out["probes_bad"] = out.get("non_2xx", 0)
    if "requests" not in out or "probes_ok" not in out:
        raise RuntimeError(f"cannot read wrk's output:\n{done.stdout}")
    ok = out["probes_ok"]
    out.update(seconds=elapsed, probes_per_s=ok / out["wrk_seconds"],
               cpu_s={k: round(v, 3) for k, v in cpu.items()},
               cpu_us_per_probe=cpu["exporter"] / ok * 1e6 if ok else math.nan,
               target_cpu_us_per_probe=cpu["target"] / ok * 1e6 if ok else math.nan)
    return out


def check_once(port: int, path: str, success: str) -> None:
    status, _, body, _ = common.http_get(HOST, port, path, timeout=10.0)
    if status != 200 or f"\n{success}\n" not in body.decode():
        raise RuntimeError(f"GET {path} answered {status}:\n{body.decode()[:600]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk run length (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per case and exporter")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections (at most netsentry's max_in_flight, 16)")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 600 or not 1 <= args.rounds <= 20:
        parser.error("--seconds in [1, 600], --rounds in [1, 20]")
    if not 1 <= args.connections <= 16:
        parser.error("--connections in [1, 16]: more would be answered 503 by netsentry")
    workdir, info = common.start_run("netsentry-bench-probe-", argv)
    script = workdir / "count.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    runs: list[dict[str, Any]] = []
    budget = 120 + (len(CASES) + 1) * 2 * args.rounds * (args.seconds + WARMUP_SECONDS + 5)
    with common.Children() as children:
        try:
            listeners = common.start_listeners(children, [HOST], 1, budget)
            servers = start_servers(children, make_certs(workdir / "certs"), workdir, budget)
            targets = {"tcp": (listeners.endpoints[0], listeners.proc.pid),
                       "http": (f"http://{HOST}:{servers.http_port}/", servers.proc.pid)}
            bb, _, bb_port = common.start_blackbox(children, BLACKBOX_CONFIG, workdir)
            ns, _, ns_port = start_netsentry(children, args.python, workdir)
            exporters = {"blackbox": (bb.pid, bb_port), "netsentry": (ns.pid, ns_port)}
            for case in CASES:
                target, target_pid = targets[case]
                order = list(exporters)
                for round_ in range(args.rounds):
                    for name in order if round_ % 2 == 0 else order[::-1]:
                        pid, port = exporters[name]
                        path = probe_path(name, MODULES[case], target)
                        check_once(port, path, SUCCESS_LINE[name])
                        url = f"http://{HOST}:{port}{path}"
                        pids = {"exporter": pid, "target": target_pid}
                        run_wrk(url, SUCCESS_LINE[name], WARMUP_SECONDS, args.connections,
                                script, pids)
                        one = run_wrk(url, SUCCESS_LINE[name], args.seconds, args.connections,
                                      script, pids)
                        one.update(case=case, exporter=name, round=round_ + 1, url=url)
                        runs.append(one)
                        print(f"   {case:4} {name:9} round {round_ + 1}: "
                              f"{one['probes_per_s']:7.0f} probes/s, "
                              f"{one['cpu_us_per_probe']:5.0f} µs CPU/probe, "
                              f"{one['probes_bad']} bad", flush=True)
            # The web layer's floor: a request that does nothing, under the same load.
            for round_ in range(args.rounds):
                for name, (pid, port) in exporters.items():
                    url = f"http://{HOST}:{port}/-/healthy"
                    pids = {"exporter": pid, "target": pid}
                    one = run_wrk(url, None, args.seconds, args.connections, script, pids)
                    one.update(case="healthy", exporter=name, round=round_ + 1, url=url)
                    runs.append(one)
                    print(f"   /-/healthy {name:9} round {round_ + 1}: "
                          f"{one['cpu_us_per_probe']:5.0f} µs CPU/request", flush=True)
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            common.harness_error(exc)
            return 1
    print(report(runs, args))
    return common.finish(args.json, {**info, "args": vars(args), "runs": runs}, None)


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def med(case: str, exporter: str, key: str) -> float:
        return common.median([r[key] for r in runs
                              if r["case"] == case and r["exporter"] == exporter])

    def total(case: str, exporter: str, key: str) -> int:
        return sum(r.get(key, 0) for r in runs if r["case"] == case and r["exporter"] == exporter)

    table = common.Table(["medians of " + str(args.rounds) + " runs", *(
        f"{case} {exporter}" for case in CASES for exporter in ("blackbox", "netsentry"))])
    cells = [(case, exporter) for case in CASES for exporter in ("blackbox", "netsentry")]
    table.add("probes/s", *(common.fmt(med(c, e, "probes_per_s"), ".0f") for c, e in cells))
    table.add("exporter CPU µs per probe",
              *(common.fmt(med(c, e, "cpu_us_per_probe"), ".0f") for c, e in cells))
    table.add("target CPU µs per probe",
              *(common.fmt(med(c, e, "target_cpu_us_per_probe"), ".0f") for c, e in cells))
    table.add("failed probes / socket errors / non-2xx", *(
        f"{total(c, e, 'probes_bad')} / {total(c, e, 'socket_errors')} / "
        f"{total(c, e, 'non_2xx')}" for c, e in cells))
    lines = ["", f"wrk -t 1 -c {args.connections} -d {args.seconds}s, keep-alive, after a "
             f"{WARMUP_SECONDS} s warm-up; CPU from /proc (utime+stime)", "", table.render(), ""]
    lines.append("web layer floor, exporter CPU µs per /-/healthy request: " + ", ".join(
        f"{e} {common.fmt(med('healthy', e, 'cpu_us_per_probe'), '.0f')}"
        for e in ("blackbox", "netsentry")))
    for case in CASES:
        ratio = med(case, "netsentry", "cpu_us_per_probe") / med(
            case, "blackbox", "cpu_us_per_probe")
        rate = med(case, "netsentry", "probes_per_s") / med(case, "blackbox", "probes_per_s")
        verdict = "met" if ratio <= 1 else "NOT met"
        lines.append(f"{case}: netsentry / blackbox CPU per probe {ratio:.2f} (goal ≤ 1: "
                     f"{verdict}); probes/s {rate:.2f}×")
    return "\n".join(lines)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(1)
