"""Run a command where the system resolver sees only the test's own dnsmasq.

run_in_netns() starts `unshare --mount --net` (a fresh network namespace that has only a
loopback, so nothing can leave the machine or reach the host's loopback services) and, inside
it, this module's _inner(): bring `lo` up, bind-mount a resolv.conf, an nsswitch.conf saying
`hosts: files dns` and optionally a hosts file over /etc, serve the records with dnsmasq on
127.0.0.1:53, then run the command. The mounts vanish with the namespace.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.dnsmasq import Dnsmasq

ROOT = Path(__file__).resolve().parents[2]
UNSHARE = ["unshare", "--mount", "--net", "--propagation", "private", "--"]
_READY = "setup-done"


@functools.cache
def netns_available() -> bool:
    """Whether `unshare --mount --net` works here (it needs root or CAP_SYS_ADMIN)."""
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_in_netns(
    argv: list[str],
    *,
    hosts: dict[str, list[str]] | None = None,
    dnsmasq_records: dict[str, Any] | None = None,
    resolv_conf: str = "nameserver 127.0.0.1\n",
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv in a fresh mount+network namespace and return its exit code, stdout and stderr.

    hosts: name -> addresses for /etc/hosts (plus localhost); None keeps the real /etc/hosts.
    dnsmasq_records: keyword arguments of Dnsmasq (a, aaaa, mx, txt, cname, local, extra_args).
    """
    if not netns_available():
        raise RuntimeError("`unshare --mount --net` does not work here: these tests need root "
                           "(or CAP_SYS_ADMIN) and util-linux `unshare`; they are never skipped")
    with tempfile.TemporaryDirectory(prefix="netns-") as tmp:
        config = {"argv": argv, "hosts": hosts, "records": dnsmasq_records or {},
                  "resolv_conf": resolv_conf, "env": env, "dir": tmp}
        Path(tmp, "config.json").write_text(json.dumps(config))
        inner = ("import sys; sys.path.insert(0, sys.argv[1]); import tests.support.netns as n; "
                 "n._inner()")
        cmd = [*UNSHARE, sys.executable, "-c", inner, str(ROOT), f"{tmp}/config.json"]
        # On a timeout, SIGTERM lets the wrapper kill and reap the command and dnsmasq; then
        # SIGKILL to its own process group gets anything left (e.g. the command's children).
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                stdout, stderr = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                stdout, stderr = "", ""
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr) from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if not Path(tmp, _READY).exists():
            raise RuntimeError(f"namespace setup failed ({proc.returncode}):\n{stderr}")
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _inner() -> None:
    """Inside the namespace (as root): set up the resolver, serve DNS, run the command."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # run finally:
    config = json.loads(Path(sys.argv[2]).read_text())
    tmp = Path(config["dir"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    files = {"resolv.conf": config["resolv_conf"]}
    if Path("/etc/nsswitch.conf").exists():  # no myhostname, resolve, mdns, ...: files, then DNS
        nsswitch = Path("/etc/nsswitch.conf").read_text()
        files["nsswitch.conf"] = re.sub(r"(?m)^hosts:.*\n?", "", nsswitch) + "hosts: files dns\n"
    if config["hosts"] is not None:
        files["hosts"] = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{ip} {name}\n" for name, ips in config["hosts"].items() for ip in ips)
    for name, text in files.items():
        Path(tmp, name).write_text(text)
        subprocess.run(["mount", "--bind", str(tmp / name), f"/etc/{name}"], check=True)
    with Dnsmasq(port=53, **config["records"]) as dnsmasq:
        Path(tmp, _READY).touch()
        sys.stdout.flush()
        code = subprocess.run(config["argv"], env=config["env"]).returncode
        if dnsmasq.proc is not None and dnsmasq.proc.poll() is not None:
            print(f"netns: dnsmasq died during the command:\n{dnsmasq.logs}", file=sys.stderr)
    sys.exit(code if code >= 0 else 128 - code)  # killed by a signal: as sh reports it
