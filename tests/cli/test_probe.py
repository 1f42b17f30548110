"""`netsentry probe` as people read it, against real servers on loopback: units in the human
form, a certificate's expiry as a date and how far off it is, `--metrics` for the raw lines,
and the config file's table."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path

from tests.support.agent import ROOT
from tests.support.certs import DAY, Authority, now, server_context
from tests.support.httpservers import HttpServer, Reply
from tests.support.servers import AcceptServer, closed_port

# A duration as humanize writes it: three significant digits, then its unit.
DURATION = r"(\d\.\d\d|\d\d\.\d|\d{3}) (ns|µs|ms|s)"
METRIC_LINE = re.compile(r"(netsentry_[a-z_]+)(\{[^}]*\})? +(\S+)")


def netsentry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def rows(text: str) -> dict[str, str]:
    """The probe's `what  value` lines (two spaces or more apart), by what."""
    return dict(re.split(r"  +", line, maxsplit=1) for line in text.splitlines() if "  " in line)


def test_tcp_is_written_in_units_and_metrics_gives_the_raw_lines() -> None:
    with AcceptServer() as server:
        human = netsentry("probe", "tcp", server.target)
        raw = netsentry("probe", "tcp", server.target, "--metrics")
    assert (human.returncode, raw.returncode) == (0, 0), human.stderr + raw.stderr
    got = rows(human.stdout)
    assert got["result"] == "success"
    for what in ("duration", "dns lookup", "tcp connect", "tcp rtt"):
        assert re.fullmatch(DURATION, got[what]), (what, got[what])
    assert re.fullmatch(r"\d+\.\d+ KiB \(\d+ B\)", got["tcp pmtu"]), got["tcp pmtu"]
    assert "netsentry_" not in human.stdout
    lines = raw.stdout.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["check", "result", "duration", "address"]
    matches = [METRIC_LINE.fullmatch(line) for line in lines[4:]]
    assert matches and all(matches), lines
    samples = [(m.group(1), m.group(3)) for m in matches if m]
    assert [name for name, _ in samples[:2]] == ["netsentry_dns_lookup_seconds",
                                                 "netsentry_tcp_connect_seconds"]
    for name, text in samples:  # the exposition's own spelling: repr of the float, or an int
        assert text in (repr(float(text)), str(int(float(text)))), (name, text)
    assert len(samples) == len(got) - 4  # one human row per metric line


def test_a_certificate_expiry_is_a_date_and_the_days_left(tmp_path: Path) -> None:
    authority = Authority(ends=now() + 30 * DAY)
    files = authority.issue(tmp_path / "certs", "localhost", ["127.0.0.1"], days=12.5)
    with HttpServer({"/": Reply(body=b"x" * 2048)}, tls=server_context(files)) as server:
        human = netsentry("probe", "http", server.url(), "--ca_file", str(files.ca))
        raw = netsentry("probe", "http", server.url(), "--ca_file", str(files.ca), "--metrics")
    assert (human.returncode, raw.returncode) == (0, 0), human.stdout + human.stderr
    expires = (now() + datetime.timedelta(days=12.5)).timestamp()
    got = rows(human.stdout)
    date = f"{datetime.datetime.fromtimestamp(expires, datetime.timezone.utc):%Y-%m-%d %H:%M}"
    assert re.fullmatch(rf"{date}:\d\d UTC \(in 12 days\)", got["tls cert expiry"]), got
    assert got["certificate expires"] == got["tls cert expiry"]  # the kind's own line agrees
    assert got["http response"] == "2.00 KiB (2048 B)"
    assert got["tls version"].startswith("TLSv1.")
    assert re.fullmatch(DURATION, got["http phase tls"]), got["http phase tls"]
    assert re.fullmatch(DURATION, got["tls"]), got  # the phase detail, in the same units
    metric = rows(raw.stdout)
    assert abs(float(metric["netsentry_tls_cert_expiry_timestamp_seconds"]) - expires) <= 1
    assert metric["netsentry_http_response_bytes"] == "2048"
    assert metric['netsentry_http_phase_seconds{phase="tls"}'] != got["http phase tls"]


def test_metrics_is_a_flag_without_a_value() -> None:
    proc = netsentry("probe", "tcp", "127.0.0.1:1", "--metrics=yes")
    assert proc.returncode == 2
    assert proc.stderr.startswith("netsentry probe: --metrics takes no value")


def test_the_config_files_table_reads_at_a_glance(tmp_path: Path) -> None:
    closed = closed_port()
    with AcceptServer() as server:
        path = tmp_path / "n.toml"
        path.write_text(
            f'[[checks]]\nname = "up"\nkind = "tcp"\ntarget = "{server.target}"\n\n'
            f'[[checks]]\nname = "down"\nkind = "tcp"\ntarget = "127.0.0.1:{closed}"\n\n'
            '[[checks]]\nname = "clock"\nkind = "clock"\n')
        plain = netsentry("probe", "--config.file", str(path))
        raw = netsentry("probe", "--config.file", str(path), "--metrics")
    assert plain.returncode == raw.returncode == 1  # a check failed
    table, summary = plain.stdout.rstrip("\n").split("\n\n")
    lines = table.splitlines()
    assert re.fullmatch(r"NAME +KIND +TARGET +RESULT +DURATION +MESSAGE", lines[0])
    by_name = {line.split()[0]: line.split() for line in lines[1:]}
    assert by_name["up"][1:4] == ["tcp", server.target, "ok"]
    assert by_name["down"][1:4] == ["tcp", f"127.0.0.1:{closed}", "refused"]
    assert by_name["clock"][1:3] == ["clock", "-"]  # no target: a dash, not a gap
    # The durations are right-aligned: their units end in one column.
    durations = [re.search(DURATION, line) for line in lines[1:]]
    assert len({match.end() for match in durations if match}) == 1, table
    failed = sum(row[3] != "ok" for row in by_name.values())
    assert summary == f"{failed} of 3 checks failed"
    # --metrics: the same table and summary, then every check's raw lines, labelled as
    # /metrics labels them.
    raw_table, raw_summary, raw_lines = raw.stdout.rstrip("\n").split("\n\n")
    assert raw_table.splitlines()[0] == lines[0] and raw_summary == summary
    samples = [METRIC_LINE.fullmatch(line) for line in raw_lines.splitlines()]
    assert samples and all(samples), raw_lines
    assert re.search(r'^netsentry_tcp_connect_seconds\{check="up",kind="tcp"\} \S+$',
                     raw_lines, re.M), raw_lines
    assert re.search(r'^netsentry_clock_max_error_seconds\{check="clock",kind="clock"\} \S+$',
                     raw_lines, re.M), raw_lines
    assert 'netsentry_tcp_connect_seconds{check="down"' not in raw_lines  # it was refused
