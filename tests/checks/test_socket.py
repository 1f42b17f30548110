"""The socket check against this machine's own kernel: a clamp above rmem_max found and named,
requests within limits honoured, keepalive on a connected loopback socket, bind on busy, free,
TIME_WAIT and privileged ports, the kernel settings as /proc/sys has them, config errors with
their lines, and the probe command's side-by-side table."""

from __future__ import annotations

import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.checks import socket as socket_check
from exporter.config.load import load_check, load_text
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError, Reason
from exporter.net import sysctl
from exporter.store import Result
from tests.support.agent import ROOT, Agent
from tests.support.checks import run_check
from tests.support.netns import run_in_netns
from tests.support.servers import closed_port


def check(**keys: Any) -> CheckConfig:
    table = {"name": "s", "kind": "socket", "interval": "1m", "timeout": "2s", **keys}
    return load_check(table, "test")


def series(result: Result) -> dict[tuple[str, str], float]:
    """(metric name without the prefix, its one label or "") -> value."""
    return {(spec.name.removeprefix("netsentry_"), labels[0] if labels else ""): value
            for spec, labels, value in result.observations}


def limit(name: str) -> int:
    """A kernel setting these tests rely on: they fail, never skip, where it is unreadable."""
    values, unread = sysctl.read()
    assert name in values, f"these tests need /proc/sys for {name}: {unread}"
    return values[name]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener that never accepts: the kernel completes handshakes into its backlog."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as sock:
        yield sock


# --- requested vs effective ---------------------------------------------------------------------


def test_a_buffer_above_rmem_max_is_clamped_and_the_run_fails_naming_it() -> None:
    rmem_max = limit("net.core.rmem_max")
    asked = rmem_max + 4096
    result = run_check(check(options={"SO_RCVBUF": asked, "TCP_NODELAY": 1}))
    assert result.reason is Reason.UNEXPECTED_RESPONSE, result
    # Linux clamps the request at rmem_max, then doubles it (socket(7)).
    assert result.message == (
        f"SO_RCVBUF = {asked} not in effect: reads back {2 * rmem_max}, expected at least "
        f"{2 * asked} (Linux doubles buffer sizes, net.core.rmem_max = {rmem_max})")
    got = series(result)
    assert got["socket_option_requested", "SO_RCVBUF"] == asked
    assert got["socket_option_value", "SO_RCVBUF"] == 2 * rmem_max
    assert got["socket_option_satisfied", "SO_RCVBUF"] == 0
    assert got["socket_option_satisfied", "TCP_NODELAY"] == 1  # the other option took effect
    assert got["socket_kernel_setting", "net.core.rmem_max"] == rmem_max


def test_requests_within_the_limits_take_effect() -> None:
    assert limit("net.core.wmem_max") >= 65536 and limit("net.core.rmem_max") >= 65536
    options = {"SO_SNDBUF": 65536, "SO_RCVBUF": 65536, "TCP_NODELAY": True, "SO_REUSEADDR": 1,
               "IP_TOS": 16, "IP_TTL": 33, "TCP_USER_TIMEOUT": 30000}
    result = run_check(check(options=options))
    assert result.success, result
    got = series(result)
    assert {name: got["socket_option_value", name] for name in options} == {
        "SO_SNDBUF": 131072, "SO_RCVBUF": 131072, "TCP_NODELAY": 1, "SO_REUSEADDR": 1,
        "IP_TOS": 16, "IP_TTL": 33, "TCP_USER_TIMEOUT": 30000}
    assert all(got["socket_option_satisfied", name] == 1 for name in options)
    assert got["socket_option_requested", "TCP_NODELAY"] == 1


def test_the_kernel_masks_ecn_bits_of_ip_tos_on_tcp() -> None:
    # The two low bits of the TOS byte are ECN, which the kernel owns on TCP sockets: a
    # request that sets them reads back without them, and that is a finding.
    result = run_check(check(options={"IP_TOS": 17}))
    assert (result.reason, result.message) == (Reason.UNEXPECTED_RESPONSE,
                                               "IP_TOS = 17 not in effect: reads back 16")


def test_ipv6_options_on_an_ipv6_socket() -> None:
    result = run_check(check(family="ipv6", options={"IPV6_V6ONLY": 1, "IPV6_TCLASS": 32,
                                                   "IPV6_UNICAST_HOPS": 7}))
    assert result.success, result
    got = series(result)
    assert got["socket_option_value", "IPV6_UNICAST_HOPS"] == 7
    assert ("socket_option_value", "IP_TOS") not in got  # IPv4's options are not audited
    assert dict(result.details)["socket"] == "tcp ipv6"


def test_no_options_audits_what_a_new_socket_gets() -> None:
    result = run_check(check())
    assert result.success, result
    got = series(result)
    assert not [key for key in got if key[0] in ("socket_option_requested",
                                                   "socket_option_satisfied")]
    # A new TCP socket's keepalive and TTL defaults are the kernel's settings.
    assert got["socket_option_value", "TCP_KEEPIDLE"] == limit("net.ipv4.tcp_keepalive_time")
    assert got["socket_option_value", "TCP_KEEPCNT"] == limit("net.ipv4.tcp_keepalive_probes")
    assert got["socket_option_value", "IP_TTL"] == limit("net.ipv4.ip_default_ttl")
    assert got["socket_option_value", "SO_KEEPALIVE"] == 0
    # The kernel settings, as /proc/sys has them, multi-valued ones one field each.
    rmem = Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()
    assert [got["socket_kernel_setting", f"net.ipv4.tcp_rmem.{field}"]
            for field in ("min", "default", "max")] == [int(v) for v in rmem]
    first, last = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    assert got["socket_kernel_setting", "net.ipv4.ip_local_port_range.first"] == int(first)
    assert got["socket_kernel_setting", "net.ipv4.ip_local_port_range.last"] == int(last)


def test_udp_audits_socket_level_options_only() -> None:
    result = run_check(check(protocol="udp", options={"SO_RCVBUF": 4096}))
    assert result.success, result
    names = {label for (name, label) in series(result) if name == "socket_option_value"}
    assert names == {"SO_SNDBUF", "SO_RCVBUF", "SO_REUSEADDR", "SO_REUSEPORT", "IP_TOS", "IP_TTL"}


# --- connected ----------------------------------------------------------------------------------


def test_keepalive_options_read_back_on_a_connected_loopback_socket(
    listener: socket.socket
) -> None:
    keepalive = {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 5}
    port = listener.getsockname()[1]
    result = run_check(check(target=f"127.0.0.1:{port}", options=keepalive))
    assert result.success, result
    got = series(result)
    assert {name: got["socket_connected_option_value", name] for name in keepalive} == keepalive
    # TCP_INFO of the connection, through the tcp check's codec, with the MSS.
    assert got["tcp_snd_mss_bytes", ""] > 0
    assert got["tcp_snd_cwnd", ""] > 0
    assert got["tcp_rtt_seconds", ""] > 0
    # An unrequested send buffer is TCP's to tune: once connected, the kernel grows it from
    # tcp_wmem's default towards its max (tcp_sndbuf_expand), and the check shows it.
    assert limit("net.ipv4.tcp_wmem.max") > limit("net.ipv4.tcp_wmem.default")
    assert got["socket_connected_option_value", "SO_SNDBUF"] > got["socket_option_value",
                                                                    "SO_SNDBUF"]
    assert dict(result.details)["address"] == f"127.0.0.1:{port}"


def test_a_refused_connect_fails_as_refused() -> None:
    result = run_check(check(target=f"127.0.0.1:{closed_port()}", options={"TCP_NODELAY": 1}))
    assert result.reason is Reason.REFUSED
    # The options were set and read before the connect: those series are there.
    assert series(result)["socket_option_value", "TCP_NODELAY"] == 1


# --- bind ---------------------------------------------------------------------------------------


def test_bind_on_a_port_a_listener_holds_fails_with_eaddrinuse(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    result = run_check(check(bind=f"127.0.0.1:{port}", options={"SO_REUSEADDR": 1}))
    assert (result.reason, result.message) == (
        Reason.NETWORK_ERROR,
        f"cannot bind and listen on 127.0.0.1:{port}: EADDRINUSE (Address already in use)")
    assert series(result)["socket_option_value", "SO_REUSEADDR"] == 1


def test_bind_on_a_free_port_succeeds_and_lets_it_go() -> None:
    port = closed_port()
    result = run_check(check(bind=f"127.0.0.1:{port}"))
    assert result.success, result
    with socket.create_server(("127.0.0.1", port)):  # the check closed its socket
        pass


def test_udp_bind_on_a_busy_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = run_check(check(protocol="udp", bind=f"127.0.0.1:{port}"))
    assert (result.reason, result.message) == (
        Reason.NETWORK_ERROR, f"cannot bind 127.0.0.1:{port}: EADDRINUSE (Address already in use)")


def test_a_restart_over_time_wait_needs_so_reuseaddr() -> None:
    # A server (with SO_REUSEADDR, as servers do) closes a connection first and exits: its
    # port sits in TIME_WAIT. A restart binds again only with SO_REUSEADDR.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = server.accept()
        accepted.close()
        assert client.recv(1) == b""
        client.close()
    without = run_check(check(bind=f"127.0.0.1:{port}"))
    with_reuse = run_check(check(bind=f"127.0.0.1:{port}", options={"SO_REUSEADDR": 1}))
    assert without.reason is Reason.NETWORK_ERROR
    assert "EADDRINUSE" in without.message
    assert with_reuse.success, with_reuse


def test_a_privileged_port_is_eacces_without_the_capability() -> None:
    # In a user namespace of its own, the agent keeps its files but has no capability over
    # the host's network namespace: what a service without CAP_NET_BIND_SERVICE gets.
    port = limit("net.ipv4.ip_unprivileged_port_start") - 1
    assert port > 0
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user",
         sys.executable, "-m", "exporter", "probe", "socket", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (f"FAILURE (network_error): cannot bind and listen on 127.0.0.1:{port}: "
            "EACCES (Permission denied)") in proc.stdout


# --- the kernel settings (exporter.sysctl) ------------------------------------------------------


def test_sysctl_reads_fields_and_leaves_out_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "core").mkdir()
    (tmp_path / "net/ipv4/tcp_rmem").write_text("4096\t131072\t6291456\n")
    (tmp_path / "net/core/rmem_max").write_text("212992\n")
    (tmp_path / "net/core/wmem_max").write_text("lots\n")
    (tmp_path / "net/core/somaxconn").mkdir()  # unreadable as a file
    values, unread = sysctl.read(tmp_path, {"net.ipv4.tcp_rmem": ("min", "default", "max"),
                                            "net.core.rmem_max": (), "net.core.wmem_max": (),
                                            "net.core.somaxconn": (), "net.core.absent": ()})
    assert values == {"net.ipv4.tcp_rmem.min": 4096, "net.ipv4.tcp_rmem.default": 131072,
                      "net.ipv4.tcp_rmem.max": 6291456, "net.core.rmem_max": 212992}
    assert unread == ["net.core.wmem_max: expected 1 integer(s), got 'lots'",
                      "net.core.somaxconn: Is a directory",
                      "net.core.absent: No such file or directory"]


def test_sysctl_parse_wants_the_right_number_of_integers() -> None:
    assert sysctl.parse("a.b", "32768\t60999\n", ("first", "last")) == [
        ("a.b.first", 32768), ("a.b.last", 60999)]
    for text in ("1 2 3", "", "1.5"):
        with pytest.raises(ValueError):
            sysctl.parse("a.b", text, ("first", "last"))


def test_unreadable_settings_are_absent_and_noted(tmp_path: Path) -> None:
    # The check's own view when /proc/sys is hidden: no series for the settings, a detail.
    values, unread = sysctl.read(tmp_path)
    assert values == {}
    assert len(unread) == len(sysctl.SETTINGS)


# --- rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "requested", "effective", "doubles", "ok"), [
    ("buffer", 65536, 131072, True, True),
    ("buffer", 65536, 131071, True, False),  # clamped
    ("buffer", 65536, 65536, True, False),  # Linux would have doubled it
    ("buffer", 65536, 65536, False, True),  # a kernel that keeps what it is given
    ("buffer", 1, 2304, True, True),  # the kernel's minimum raises a small request
    ("flag", 5, 1, True, True),  # any non-zero request reads back 1
    ("flag", 0, 0, True, True),
    ("flag", 1, 0, True, False),
    ("exact", 60, 60, True, True),
    ("exact", 17, 16, True, False),
])
def test_in_effect(rule: str, requested: int, effective: int, doubles: bool, ok: bool) -> None:
    assert socket_check.in_effect(rule, requested, effective, doubles) is ok


# --- config -------------------------------------------------------------------------------------

HEAD = '[[checks]]\nname = "s"\nkind = "socket"\n'


@pytest.mark.parametrize(("body", "expected"), [
    ('options = { TCP_KEEPALIVE = 60 }\n',  # macOS's name for TCP_KEEPIDLE
     'f.toml:4: checks[0] "s".options: unknown socket option \'TCP_KEEPALIVE\' (did you mean '
     '"TCP_KEEPIDLE"?); the socket check knows ' + ", ".join(socket_check.OPTIONS)),
    ('options = { IP_TTL = 0, TCP_NODELAY = "yes" }\n',
     'f.toml:4: checks[0] "s".options: IP_TTL = 0 is out of range 1-255; '
     "TCP_NODELAY: expected an integer, got 'yes'"),
    ('protocol = "udp"\n\n[checks.options]\nTCP_NODELAY = 1\n',
     'f.toml:6: checks[0] "s".options: TCP_NODELAY is a TCP option and protocol is \'udp\''),
    ('family = "ipv6"\noptions = { IP_TOS = 16 }\n',
     'f.toml:5: checks[0] "s".options: IP_TOS is for ipv4 sockets and this one is ipv6 '
     "(use IPV6_TCLASS)"),
    ('target = "db.internal:5432"\noptions = { IP_TTL = 9 }\n',
     'f.toml:5: checks[0] "s".options: IP_TTL is for ipv4 sockets and the target may resolve '
     'to either: set family = "ipv4"'),
    ('target = "127.0.0.1:80"\nbind = "127.0.0.1:80"\n',
     'f.toml:5: checks[0] "s".bind: give `target` (connect to it) or `bind` (listen there), '
     "not both"),
    ('bind = "localhost:80"\n',
     'f.toml:4: checks[0] "s".bind: bind needs an IP address, not \'localhost\': 0.0.0.0:PORT '
     "is every IPv4 address, [::]:PORT every IPv6 one"),
    ('bind = "[::]:80"\nfamily = "ipv4"\n',
     'f.toml:5: checks[0] "s".family: the bind address gives the family; leave `family` out'),
    ('options = ["SO_RCVBUF"]\n',
     'f.toml:4: checks[0] "s".options: expected a table, got an array'),
])
def test_config_errors(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(HEAD + body, "f.toml")
    assert info.value.problems == [expected]


def test_an_option_this_platform_lacks_is_a_config_error() -> None:
    # As on a platform whose socket module has no TCP_KEEPIDLE (macOS calls it TCP_KEEPALIVE).
    elsewhere = types.SimpleNamespace(**{name: getattr(socket, name) for name in dir(socket)
                                         if name != "TCP_KEEPIDLE"})
    assert socket_check.parse_options({"SO_RCVBUF": 1}, elsewhere) == (("SO_RCVBUF", 1),)
    with pytest.raises(ValueError) as info:
        socket_check.parse_options({"TCP_KEEPIDLE": 60}, elsewhere)
    assert str(info.value) == f"TCP_KEEPIDLE is not available on this platform ({sys.platform})"


def test_booleans_are_flags() -> None:
    loaded = check(options={"TCP_NODELAY": True, "SO_KEEPALIVE": False})
    assert loaded.settings.options == (("TCP_NODELAY", 1), ("SO_KEEPALIVE", 0))


# --- the probe command and the agent ------------------------------------------------------------


def netsentry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_probe_prints_requested_effective_and_kernel_limit_side_by_side(
    listener: socket.socket
) -> None:
    rmem_max = limit("net.core.rmem_max")
    port = listener.getsockname()[1]
    proc = netsentry("probe", "socket", "--option", f"SO_RCVBUF={rmem_max + 1}",
                     "--option", "TCP_NODELAY=true", "--target", f"127.0.0.1:{port}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = lines.index("OPTION             REQUESTED  EFFECTIVE  CONNECTED  IN EFFECT  "
                         "KERNEL SETTING")
    rows = {line.split()[0]: line.split() for line in lines[header + 1:]}
    assert rows["SO_RCVBUF"] == ["SO_RCVBUF", str(rmem_max + 1), str(2 * rmem_max),
                                 str(2 * rmem_max), "NO", "net.core.rmem_max", "=", str(rmem_max)]
    assert rows["TCP_NODELAY"] == ["TCP_NODELAY", "1", "1", "1", "yes"]
    assert rows["IP_TTL"][-3:] == ["net.ipv4.ip_default_ttl", "=",
                                   str(limit("net.ipv4.ip_default_ttl"))]
    assert "FAILURE (unexpected_response): SO_RCVBUF = " in proc.stdout


def test_probe_option_spelling() -> None:
    for args, expected in [
        (["--option", "SO_RCVBUF"], "netsentry probe: --option takes NAME=VALUE"),
        (["--option", "SO_RCVBUF=1", "--options", "{IP_TTL = 3}"],
         "netsentry probe: give --option NAME=VALUE (repeatable) or --options {...}, not both"),
        (["--option", "SO_RCVBUF=big"],
         "command line: options: SO_RCVBUF: expected an integer, got 'big'"),
    ]:
        proc = netsentry("probe", "socket", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(expected), proc.stderr
    table = netsentry("probe", "socket", "--options", "{IP_TTL = 3}")
    assert table.returncode == 0, table.stderr
    assert any(line.split()[:3] == ["IP_TTL", "3", "3"] for line in table.stdout.splitlines())


def test_agent_exports_the_audit_and_names_a_clamp_in_log_and_page(tmp_path: Path) -> None:
    rmem_max = limit("net.core.rmem_max")
    path = tmp_path / "netsentry.toml"
    path.write_text(
        '[defaults]\ninterval = "1s"\ntimeout = "500ms"\n\n'
        '[[checks]]\nname = "clamped"\nkind = "socket"\n'
        f'options = {{ SO_RCVBUF = {rmem_max + 1} }}\n\n'
        '[[checks]]\nname = "defaults"\nkind = "socket"\n')
    with Agent(path) as agent:
        agent.wait_for(lambda: agent.value("netsentry_check_runs_total", check="clamped",
                                           kind="socket") and
                       agent.value("netsentry_check_runs_total", check="defaults",
                                   kind="socket"), what="both checks to run")
        got = agent.metrics()
        status, page = agent.request("GET", "/")

    def value(name: str, check: str, **labels: str) -> float | None:
        return got.get((name, frozenset({"check": check, "kind": "socket", **labels}.items())))

    assert value("netsentry_check_success", "clamped") == 0
    assert value("netsentry_check_success", "defaults") == 1
    assert value("netsentry_socket_option_satisfied", "clamped", option="SO_RCVBUF") == 0
    assert value("netsentry_socket_option_value", "clamped", option="SO_RCVBUF") == 2 * rmem_max
    assert value("netsentry_socket_option_requested", "defaults", option="SO_RCVBUF") is None
    assert value("netsentry_socket_kernel_setting", "defaults",
                 setting="net.core.rmem_max") == rmem_max
    assert value("netsentry_check_failures_total", "defaults",
                 reason="unexpected_response") == 0
    assert status == 200
    assert f"SO_RCVBUF = {rmem_max + 1} not in effect" in page
    failing = [line for line in agent.lines if "check failing" in line]
    assert len(failing) == 1 and "check=clamped" in failing[0]
    assert "SO_RCVBUF" in failing[0]


def test_the_audit_follows_the_network_namespaces_sysctls() -> None:
    # Per-namespace settings written in a namespace of the test's own: a new socket there
    # gets them, and the audit says so beside the settings.
    script = ("echo 600 > /proc/sys/net/ipv4/tcp_keepalive_time && "
              "echo 33 > /proc/sys/net/ipv4/ip_default_ttl && "
              f"cd {ROOT} && exec {sys.executable} -m exporter probe socket")
    proc = run_in_netns(["sh", "-c", script])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert rows["TCP_KEEPIDLE"] == ["TCP_KEEPIDLE", "600", "net.ipv4.tcp_keepalive_time", "=",
                                    "600"]
    assert rows["IP_TTL"] == ["IP_TTL", "33", "net.ipv4.ip_default_ttl", "=", "33"]
