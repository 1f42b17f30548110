"""Real multi-hop paths for the tests: network namespaces joined into a chain of routers.

    client ── r1 ── r2 ── target
               └─── r3 ───┘

`Chain()` (a context manager) makes five namespaces, named after this process and a counter so
that chains of parallel tests never meet, joins them with veth pairs and routes IPv4 and IPv6
so that the client reaches the target through r1 and r2; `reroute("r3")` moves r1's route to
the target and the target's route back onto r3, `reroute("r2")` moves them back. Every
namespace has its loopback up; r1, r2 and r3 forward. Nothing leaves the namespaces: the
addresses (10.231.N.0/24 and fd00:231:N::/64 for link N, nothing the host routes) exist only
inside them, and the target's own address (10.231.9.1, fd00:231:9::1) sits on its loopback,
so it stays the same whichever router leads to it.

The routers answer with ICMP errors without rate limit (icmp_ratelimit 0 in every namespace:
the kernel's default of one error per second per peer, with a burst of six, would make a
second traceroute in one test see silent hops). `silence_icmp(ns)` makes one router a silent
hop instead: its ratelimit becomes 100000 s. The kernel's limit is a token bucket per peer
(inet_peer_xrlim_allow) whose tokens are the jiffies since the last error, capped at six times
the limit; a peer it never answered starts with 60 s of tokens, one it answered with the limit
at 0 with none. Both are far below 100000 s, so the router stops at once, without a first
error to spend (test_netpath checks that: no `Time to live exceeded` comes back from it at
all), while it still forwards.

`Chain(delay=..., loss=..., jitter=..., seed=...)` puts tests.support.delayline between r1 and
r2 instead of a veth pair (the kernel here has no netem: see that module), a process the chain
starts and stops by its PID; `line_stats()` is what it counted per direction.

`run(ns, argv, timeout)` runs a program in a namespace; `spawn(ns, argv)` starts one that the
chain stops when it closes. `run_check(ns, kind, options)` runs one netsentry check in a
namespace (tests.support.netpath_run, in a process of its own) and returns what it recorded
as JSON-like data; `CheckSession` keeps that process for several runs, so that what a check
remembers between runs (its `memory`) carries over, as it does in the agent:

    with Chain() as chain, CheckSession(chain.client, "path",
                                        {"target": chain.target_address(4)}) as check:
        first = check.run()
        chain.reroute("r3")
        moved = check.run()   # value(moved, "netsentry_path_changes_total", "counters") == 1

A check that opens ICMP datagram sockets without root needs the namespace's
`net.ipv4.ping_group_range` (new namespaces start at "1 0", none): `sysctl(ns, {...})`.
`remove_stale()` (run once per process by the first chain) deletes the namespaces of chains
whose process was killed before it could close them.

Everything here needs root (namespaces, sysctls, TUN): `available()` says whether this
machine allows it; the tests that use a chain are never skipped in CI.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DELAYLINE = Path(__file__).with_name("delayline.py")
IP_TIMEOUT = 10.0  # seconds for one `ip` or `sysctl` command
ROLES = ("client", "r1", "r2", "r3", "target")
ROUTERS = ("r1", "r2", "r3")
TARGET4 = "10.231.9.1"
TARGET6 = "fd00:231:9::1"
SILENT_MS = 100_000_000  # icmp ratelimit of a silent hop: 100000 s (6x fits in an int of jiffies)

# Link number, the namespace at the .1 end, the one at the .2 end. In each namespace, the
# interface towards a neighbour is named after the neighbour's role.
LINKS = ((1, "client", "r1"), (2, "r1", "r2"), (3, "r2", "target"), (4, "r1", "r3"),
         (5, "r3", "target"))
_counter = itertools.count(1)


def available() -> bool:
    """Whether this machine lets us make namespaces, veths and TUNs (as root it does)."""
    return _available()


@functools.cache
def _available() -> bool:
    name = f"np{os.getpid()}probe"
    try:
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True,
                              timeout=IP_TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    try:
        return made and os.path.exists("/dev/net/tun")
    finally:
        if made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=IP_TIMEOUT)


_STALE = re.compile(r"^np(\d+)-\d+-(client|r1|r2|r3|target)$")


@functools.cache
def remove_stale() -> list[str]:
    """Delete the namespaces of chains whose process is gone (killed before it could close
    them); once per process. Returns the names deleted."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=IP_TIMEOUT).stdout
    gone = []
    for line in listed.splitlines():
        name = line.split(" ", 1)[0]
        m = _STALE.match(name)
        if m and not Path(f"/proc/{m[1]}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=IP_TIMEOUT)
            gone.append(name)
    return gone


def link_address(link: int, end: int, family: int) -> str:
    """The address of end 1 or 2 of link `link`."""
    return f"10.231.{link}.{end}" if family == 4 else f"fd00:231:{link}::{end}"


def _ip(*args: str, input: str | None = None) -> None:
    proc = subprocess.run(["ip", *args], input=input, capture_output=True, text=True,
                          timeout=IP_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}")


def run(ns: str, argv: Sequence[str], timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv in namespace `ns` (`ip netns exec`) and return what it did; the command is
    killed, and TimeoutExpired raised, after `timeout` seconds."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], input=input,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def sysctl(ns: str, values: Mapping[str, object]) -> None:
    """Set sysctls in namespace `ns` (e.g. {"net.ipv4.ping_group_range": "0 2147483647"})."""
    argv = ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())]
    proc = run(ns, argv, timeout=IP_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"sysctl in {ns} failed: {proc.stderr.strip()}")


def silence_icmp(ns: str) -> None:
    """Make the router in `ns` a silent hop: it forwards but sends no ICMP errors (time
    exceeded, unreachable) for 100000 s; see the module docstring for why none gets out."""
    sysctl(ns, {"net.ipv4.icmp_ratelimit": SILENT_MS,
                "net.ipv4.icmp_ratemask": (1 << 3) | (1 << 4) | (1 << 11) | (1 << 12),
                "net.ipv6.icmp.ratelimit": SILENT_MS})


def unsilence_icmp(ns: str) -> None:
    """Undo silence_icmp: errors without rate limit again (the peer's bucket refills at once)."""
    sysctl(ns, {"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0})


class Chain:
    """client → r1 → r2 → target (and r1 → r3 → target), in namespaces; see the module doc.

    The namespace names are `.client`, `.r1`, `.r2`, `.r3` and `.target`. With `delay` (in
    seconds), `loss` (a share, 0 to 1), `jitter` or `limit` the r1–r2 link is a delay line.
    The line ends after `lifetime` seconds, and when the thread that made the chain ends
    (PR_SET_PDEATHSIG follows the parent thread): make and use a chain in one thread.
    """

    def __init__(self, *, delay: float | None = None, loss: float = 0.0, jitter: float = 0.0,
                 seed: int = 0, limit: int = 1000, lifetime: float = 900) -> None:
        prefix = f"np{os.getpid()}-{next(_counter)}"
        self.names = {role: f"{prefix}-{role}" for role in ROLES}
        self.client, self.r1, self.r2, self.r3, self.target = (self.names[r] for r in ROLES)
        self.delayed = delay is not None or loss > 0 or jitter > 0
        self.line_config = {"delay": delay or 0.0, "loss": loss, "jitter": jitter,
                            "seed": seed, "limit": limit, "lifetime": lifetime}
        self.via = "r2"
        self.made: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.line: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._ctl_file: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.final_line_stats: dict[str, Any] | None = None

    # --- what the client sees -----------------------------------------------------------------

    def address(self, ns: str, family: int = 4) -> str:
        """The address of host `ns` (a namespace name or a role) that the client reaches it at:
        the side of it facing the client (the target: its loopback address)."""
        role = self._role(ns)
        where = {"client": (1, 1), "r1": (1, 2), "r2": (2, 2), "r3": (4, 2)}
        if role == "target":
            return TARGET4 if family == 4 else TARGET6
        return link_address(*where[role], family)

    def target_address(self, family: int = 4) -> str:
        return self.address("target", family)

    def hops(self, family: int = 4) -> list[str]:
        """The routers' addresses from the client to the target, in order, as the current
        route goes (r1, then r2 or r3): what the kernel puts in their ICMP time exceeded."""
        return [self.address("r1", family), self.address(self.via, family)]

    def _role(self, ns: str) -> str:
        if ns in self.names:
            return ns
        for role, name in self.names.items():
            if name == ns:
                return role
        raise KeyError(f"{ns!r} is not a namespace of this chain")

    # --- setup and teardown -------------------------------------------------------------------

    def __enter__(self) -> Chain:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        atexit.register(self.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        remove_stale()
        for role in ROLES:
            _ip("netns", "add", self.names[role])
            self.made.append(self.names[role])
        for role in ROLES:
            values: dict[str, object] = {
                "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0,
                "net.ipv6.conf.default.accept_ra": 0,
                "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                "net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0,
            }
            if role in ROUTERS:
                values |= {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}
            sysctl(self.names[role], values)
        for _, a, b in LINKS:
            if self.delayed and {a, b} == {"r1", "r2"}:
                _ip("-n", self.names[a], "tuntap", "add", "dev", b, "mode", "tun")
                _ip("-n", self.names[b], "tuntap", "add", "dev", a, "mode", "tun")
            else:
                _ip("link", "add", "name", b, "netns", self.names[a], "type", "veth",
                    "peer", "name", a, "netns", self.names[b])
        if self.delayed:
            self._start_line()
        batches: dict[str, list[str]] = {role: ["link set lo up"] for role in ROLES}
        for n, a, b in LINKS:
            for role, device, end in ((a, b, 1), (b, a, 2)):
                batches[role] += [
                    f"link set {device} up",
                    f"addr add {link_address(n, end, 4)}/24 dev {device}",
                    f"addr add {link_address(n, end, 6)}/64 dev {device} nodad",
                ]
        batches["target"] += [f"addr add {TARGET4}/32 dev lo",
                              f"addr add {TARGET6}/128 dev lo nodad"]
        for family in (4, 6):
            t, default = self.target_address(family), self._default(family)
            batches["client"].append(f"route add {default} via {link_address(1, 2, family)}")
            batches["r1"] += [f"route add {t} via {link_address(2, 2, family)}",
                              f"route add {self._net(3, family)} via "
                              f"{link_address(2, 2, family)}",
                              f"route add {self._net(5, family)} via "
                              f"{link_address(4, 2, family)}"]
            batches["r2"] += [f"route add {t} via {link_address(3, 2, family)}",
                              f"route add {default} via {link_address(2, 1, family)}"]
            batches["r3"] += [f"route add {t} via {link_address(5, 2, family)}",
                              f"route add {default} via {link_address(4, 1, family)}"]
            batches["target"].append(f"route add {default} via {link_address(3, 1, family)}")
        for role, lines in batches.items():
            _ip("-n", self.names[role], "-batch", "-", input="\n".join(lines) + "\n")

    @staticmethod
    def _default(family: int) -> str:
        return "default" if family == 4 else "::/0"  # a batch line cannot say -6

    @staticmethod
    def _net(link: int, family: int) -> str:
        return f"10.231.{link}.0/24" if family == 4 else f"fd00:231:{link}::/64"

    def reroute(self, via: str) -> None:
        """Send the client's traffic to the target, and the target's back, through `via`
        ("r2" or "r3", a role or namespace name) from now on."""
        via = self._role(via)
        if via not in ("r2", "r3"):
            raise ValueError("reroute via r2 or r3")
        forward, back = ((2, 3) if via == "r2" else (4, 5))
        for family in (4, 6):
            default = self._default(family)
            _ip("-n", self.r1, "-batch", "-", input=(
                f"route replace {self.target_address(family)} via "
                f"{link_address(forward, 2, family)}\n"))
            _ip("-n", self.target, "-batch", "-", input=(
                f"route replace {default} via {link_address(back, 1, family)}\n"))
        self.via = via

    def _start_line(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="delayline-")
        ours, theirs = socket.socketpair()
        self._ctl = ours
        config = {**self.line_config, "parent": os.getpid(), "ctl": theirs.fileno(),
                  "stats_path": f"{self._tmp.name}/stats.json",
                  "a": {"netns": self.r1, "device": "r2", "name": "r1"},
                  "b": {"netns": self.r2, "device": "r1", "name": "r2"}}
        try:
            self.line = subprocess.Popen([sys.executable, str(DELAYLINE), json.dumps(config)],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            theirs.close()
        ours.settimeout(IP_TIMEOUT)
        self._ctl_file = ours.makefile("rb")
        answer = self._read_ctl()
        if not answer.get("ready"):
            raise RuntimeError(f"the delay line did not start: {answer}")

    def _read_ctl(self) -> dict[str, Any]:
        assert self._ctl_file is not None
        try:
            line = self._ctl_file.readline()
        except TimeoutError:
            raise RuntimeError("the delay line did not answer within "
                               f"{IP_TIMEOUT:g}s") from None
        if not line:
            raise RuntimeError("the delay line exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def line_stats(self) -> dict[str, Any]:
        """What the delay line counted, per direction ("r1>r2", "r2>r1"): received, forwarded,
        dropped, overflow, write_errors, in_flight, and received_by / dropped_by packet class
        (e.g. "ipv4/icmp/8" echo requests, "ipv6/icmp/129" echo replies). After close(), the
        counts it had when it stopped."""
        if self._ctl is None:
            if self.final_line_stats is not None:
                return self.final_line_stats
            raise RuntimeError("this chain has no delay line")
        self._ctl.sendall(b"stats\n")
        return self._read_ctl()

    def spawn(self, ns: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start argv in namespace `ns`; the chain stops it (by its PID) when it closes."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.names.get(ns, ns), *argv],
            stdin=popen.pop("stdin", subprocess.DEVNULL), start_new_session=True, **popen)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop what the chain started and delete its namespaces; safe to call twice."""
        for proc in self.procs:
            stop(proc)
        self.procs.clear()
        if self.line is not None:
            if self._ctl is not None:
                with contextlib.suppress(OSError, RuntimeError, ValueError):
                    self._ctl.sendall(b"stop\n")
                    self.final_line_stats = self._read_ctl()
            stop(self.line)
            self.line = None
            if self.final_line_stats is None and self._tmp is not None:  # it ended on its own
                with contextlib.suppress(OSError, ValueError):
                    self.final_line_stats = json.loads(
                        Path(self._tmp.name, "stats.json").read_text())
        if self._ctl_file is not None:
            self._ctl_file.close()
            self._ctl_file = None
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        for name in reversed(self.made):
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["ip", "netns", "del", name], capture_output=True,
                               timeout=IP_TIMEOUT)
        self.made.clear()
        atexit.unregister(self.close)


def stop(proc: subprocess.Popen[Any], grace: float = 5) -> None:
    """End proc (its process group: `ip netns exec` execs the program, which may fork)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)


# --- netsentry checks in a namespace ----------------------------------------------------------


class CheckSession:
    """One netsentry check of `kind` with `options` (config keys, target included), run in
    namespace `ns` by a process of its own (tests.support.netpath_run) as often as `run()` is
    called; the check's memory and previous result carry over from run to run."""

    def __init__(self, ns: str, kind: str, options: Mapping[str, Any], *,
                 timeout: float = 30, env: Mapping[str, str] | None = None) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.support.netpath_run"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True, env={**os.environ, **(env or {})})
        self._send({"kind": kind, "options": dict(options)})

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def run(self, timeout: float | None = None) -> dict[str, Any]:
        """Run the check once more and return its result (see run_check)."""
        self._send({"run": True, "timeout": timeout})
        return self._answer(self.timeout if timeout is None else timeout + 10)

    def _answer(self, wait: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(wait):
                self.close()
                raise TimeoutError(f"the check gave no result within {wait:g}s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.close()
            raise RuntimeError(f"netpath_run exited ({self.proc.returncode}):\n{err}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> str:
        """End the process; returns what it wrote on stderr (the runner's logs)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stop(self.proc)
            err = ""
        except ValueError:  # already read
            err = ""
        stop(self.proc)
        return err or ""

    def __enter__(self) -> CheckSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_check(ns: str, kind: str, options: Mapping[str, Any], timeout: float = 30,
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one netsentry check in namespace `ns` and return its result:

    {"success": bool, "reason": "timeout" or None, "message": str, "duration": seconds,
     "gauges": [[metric, {label: value}, value], ...], "counters": [...] (the increments),
     "histograms": [[metric, {label: value}, sample], ...], "details": [[name, text], ...]}

    `options` are the check's config keys (`target` among them; `timeout` too if wanted):
    they become a [[checks]] table in TOML, loaded as the agent loads its config.
    """
    with CheckSession(ns, kind, options, timeout=timeout, env=env) as session:
        return session.run()


def values(result: Mapping[str, Any], metric: str, section: str = "gauges",
           **labels: str) -> list[float]:
    """The values of `metric` in result[section] whose labels include `labels`."""
    return [value for name, have, value in result[section]
            if name == metric and all(have.get(k) == v for k, v in labels.items())]


def value(result: Mapping[str, Any], metric: str, section: str = "gauges",
          **labels: str) -> float:
    """The one value of `metric` (with those labels) in result[section]."""
    found = values(result, metric, section, **labels)
    if len(found) != 1:
        raise KeyError(f"{metric} {labels}: {len(found)} values in {section}")
    return found[0]


@contextlib.contextmanager
def listener(chain: Chain, ns: str, port: int) -> Iterator[None]:
    """A TCP server in namespace `ns` on `port` of all its addresses, IPv4 and IPv6, that
    accepts and closes connections until the block ends (bounded: it exits after 300 s)."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_INET6)\n"
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('::', {port})); s.listen(16); s.settimeout(0.5)\n"
        "print('listening', flush=True)\n"
        "end = time.monotonic() + 300\n"
        "while time.monotonic() < end:\n"
        "    try:\n"
        "        c, _ = s.accept()\n"
        "    except TimeoutError:\n"
        "        continue\n"
        "    c.close()\n"
    )
    proc = chain.spawn(ns, [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(IP_TIMEOUT) and proc.stdout.readline().strip() == "listening"
    if not ready:
        stop(proc)
        raise RuntimeError(f"the listener in {ns} did not start")
    try:
        yield
    finally:
        stop(proc)


def wait_until(predicate: Any, timeout: float = 10, step: float = 0.05) -> bool:
    """Poll predicate() until it is true or `timeout` passes (bounded); returns the last."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)
