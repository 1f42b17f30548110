"""Config loading: every problem at once, each with file, line, path and an exact message."""

import socket
from pathlib import Path

import pytest

from exporter.checks import KINDS
from exporter.checks.tcp import TcpSettings
from exporter.config.load import load_check, load_default, load_file, load_text
from exporter.config.locate import locate
from exporter.config.targets import HostPort
from exporter.errors import ConfigError

GOOD = """
[defaults]
interval = "15s"
timeout = "2s"

[[checks]]
name = "web"
kind = "tcp"
target = "127.0.0.1:8080"

[[checks]]
name = "mail"
kind = "tcp"
target = "localhost:smtp"
interval = "1m"
family = "ipv4"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.toml")
    return info.value.problems


def test_good_config_is_typed() -> None:
    loaded = load_text(GOOD, "f.toml")
    web, mail = loaded.checks
    assert (web.name, web.kind, web.interval, web.timeout) == ("web", "tcp", 15.0, 2.0)
    assert web.settings == TcpSettings(target=HostPort("127.0.0.1", 8080))
    assert mail.interval == 60.0
    assert mail.settings.target == HostPort("localhost", 25)
    assert mail.settings.family == "ipv4"
    assert loaded.check("mail") is mail


def test_labels_keep_their_order_and_tell_checks_apart() -> None:
    text = CHECK + 'labels = { team = "db", tier = "1" }\n'
    check = load_text(text, "f.toml").checks[0]
    assert check.labels == (("team", "db"), ("tier", "1"))
    assert load_text(CHECK, "f.toml").checks[0].labels == ()
    # Changed labels are a changed check: its series start again under the new labels.
    assert load_text(text.replace('"db"', '"web"'), "f.toml").checks[0] != check


def test_equal_text_gives_equal_checks() -> None:
    assert load_text(GOOD, "a").checks == load_text(GOOD, "b").checks


CHECK = '[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "127.0.0.1:1"\n'

CASES = [
    pytest.param(
        CHECK + 'targte = "x"\n',
        ['f.toml:5: checks[0] "a".targte: unknown key (did you mean "target"?)'],
        id="misspelt-key",
    ),
    pytest.param(
        '[[checks]]\nname = "a"\nkind = "tpc"\n',
        ["f.toml:3: checks[0] \"a\".kind: unknown kind 'tpc' (did you mean \"tcp\"?); "
         f"known kinds: {', '.join(KINDS)}"],
        id="unknown-kind",
    ),
    pytest.param(
        CHECK + "interval = 15\n",
        ['f.toml:5: checks[0] "a".interval: expected a duration string like "15s", '
         "got a number (15)"],
        id="wrong-type-duration",
    ),
    pytest.param(
        CHECK + "family = 4\n",
        ["f.toml:5: checks[0] \"a\".family: expected a string, got a number (4)"],
        id="wrong-type",
    ),
    pytest.param(
        CHECK + 'family = "ipv5"\n',
        ["f.toml:5: checks[0] \"a\".family: must be one of 'any', 'ipv4', 'ipv6', got 'ipv5'"],
        id="bad-choice",
    ),
    pytest.param(
        CHECK + "\n" + CHECK,
        ['f.toml:7: checks[1] "a".name: duplicate name; checks[0] (line 1) has it already'],
        id="duplicate-name",
    ),
    pytest.param(
        CHECK + 'interval = "5s"\ntimeout = "5s"\n',
        ['f.toml:6: checks[0] "a".timeout: the timeout (5s) must be shorter than the '
         "interval (5s)"],
        id="timeout-not-below-interval",
    ),
    pytest.param(
        '[defaults]\ninterval = "1s"\n\n' + CHECK,
        ["f.toml:1: defaults.timeout: must be shorter than the interval (1s)"],
        id="defaults-timeout-not-below-interval",
    ),
    pytest.param(
        '[[checks]]\nname = ""\nkind = "tcp"\ntarget = "127.0.0.1:1"\n',
        ['f.toml:2: checks[0] "".name: must not be empty'],
        id="empty-name",
    ),
    pytest.param(
        '[[checks]]\nkind = "tcp"\ntarget = "127.0.0.1:1"\n',
        ["f.toml:1: checks[0]: missing required key 'name'"],
        id="missing-name",
    ),
    pytest.param(
        '[[checks]]\nname = "a"\nkind = "tcp"\n',
        ["f.toml:1: checks[0] \"a\": missing required key 'target'"],
        id="missing-target",
    ),
    pytest.param(
        '[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "localhost"\n',
        ["f.toml:4: checks[0] \"a\".target: invalid target 'localhost': expected host:port"],
        id="target-without-port",
    ),
    pytest.param(
        '[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "localhost:70000"\n',
        ['f.toml:4: checks[0] "a".target: port 70000 is out of range 1-65535'],
        id="port-out-of-range",
    ),
    pytest.param(
        '[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "localhost:nosuchservice"\n',
        ["f.toml:4: checks[0] \"a\".target: unknown service name 'nosuchservice' for tcp"],
        id="unknown-service",
    ),
    pytest.param(
        '[defaults]\nintervl = "1m"\n',
        ['f.toml:2: defaults.intervl: unknown key (did you mean "interval"?)'],
        id="defaults-unknown-key",
    ),
    pytest.param(
        '[defualts]\ninterval = "1m"\n',
        ['f.toml:1: defualts: unknown key (did you mean "defaults"?)'],
        id="top-level-unknown-key",
    ),
    pytest.param(
        '[defaults]\ninterval = "1 minute"\n',
        ["f.toml:2: defaults.interval: invalid duration '1 minute'; use e.g. 500ms, 15s, "
         "1m or 1h30m"],
        id="bad-duration",
    ),
    pytest.param(
        "checks = 3\n",
        ["f.toml:1: checks: must be an array of tables: write each check as [[checks]]"],
        id="checks-not-array",
    ),
    pytest.param(
        '[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "[::1:80"\n',
        ["f.toml:4: checks[0] \"a\".target: invalid target '[::1:80': write an IPv6 address "
         "as [::1]:port"],
        id="bad-ipv6",
    ),
    pytest.param(
        CHECK + 'labels = { team = "db", phase = "x", __a = "y", "bad-name" = "z", n = 3 }\n',
        ['f.toml:5: checks[0] "a".labels.phase: netsentry\'s or Prometheus\' series already '
         "have a 'phase' label; choose another name (like team or service)",
         'f.toml:5: checks[0] "a".labels.__a: starts with __, which Prometheus keeps for itself',
         'f.toml:5: checks[0] "a".labels.bad-name: is not a Prometheus label name '
         "([a-zA-Z_][a-zA-Z0-9_]*)",
         'f.toml:5: checks[0] "a".labels.n: must be a string, got int'],
        id="label-names-and-values",
    ),
    pytest.param(
        CHECK + '\n[checks.labels]\nteam = "db"\nreason = "x"\n',
        ['f.toml:8: checks[0] "a".labels.reason: netsentry\'s or Prometheus\' series already '
         "have a 'reason' label; choose another name (like team or service)"],
        id="label-reserved-in-subtable",
    ),
    pytest.param(
        CHECK + 'labels = { team = "db", tier = "1" }\nmax_labels = 1\n',
        ['f.toml:5: checks[0] "a".labels: 2 labels, more than max_labels (1): each one is on '
         "every series of the check"],
        id="labels-over-max",
    ),
    pytest.param(
        CHECK + 'labels = "db"\nmax_labels = -1\n',
        ['f.toml:5: checks[0] "a".labels: expected a table of names and strings, like '
         "labels = { team = \"db\" }, got a string ('db')",
         'f.toml:6: checks[0] "a".max_labels: expected a whole number of 0 or more, got a '
         "number (-1)"],
        id="labels-not-a-table",
    ),
    pytest.param(
        CHECK + 'labels = { team = "a\\nb" }\n',
        ['f.toml:5: checks[0] "a".labels.team: must be at most 256 printable characters'],
        id="label-value-unprintable",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_problems(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_three_mistakes_three_lines() -> None:
    text = (
        '[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "127.0.0.1:1"\ntimeuot = "1s"\n\n'
        '[[checks]]\nname = "b"\nkind = "dnz"\n\n'
        '[[checks]]\nname = "c"\nkind = "tcp"\ntarget = "127.0.0.1:99999"\n'
    )
    assert problems(text) == [
        'f.toml:5: checks[0] "a".timeuot: unknown key (did you mean "timeout"?)',
        "f.toml:9: checks[1] \"b\".kind: unknown kind 'dnz' (did you mean \"dns\"?); "
        f"known kinds: {', '.join(KINDS)}",
        'f.toml:14: checks[2] "c".target: port 99999 is out of range 1-65535',
    ]


def test_syntax_error_has_line_and_column() -> None:
    [line] = problems('[defaults]\ninterval = "1m\n')
    assert line.startswith("f.toml:2:")
    assert "TOML syntax error" in line


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_file("/nonexistent/netsentry.toml")
    assert info.value.problems == [
        "/nonexistent/netsentry.toml: cannot read the config file: No such file or directory"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[defaults]\ninterval = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_file(str(path))


def test_embedded_default_is_valid_and_local() -> None:
    loaded = load_default("127.0.0.1:4321")
    assert loaded.source == "<embedded default>"
    tcp, hostname, localhost, clock, sockets, ping = loaded.checks
    assert (tcp.kind, tcp.target) == ("tcp", "127.0.0.1:4321")
    assert (hostname.kind, hostname.target) == ("dns", socket.gethostname())
    assert (localhost.kind, localhost.target, localhost.settings.server) == ("dns", "localhost", ())
    assert (clock.kind, clock.target) == ("clock", "")  # the kernel's clock; no NTP server
    # An audit of what a new socket gets: no options requested, nothing contacted.
    assert (sockets.kind, sockets.target, sockets.settings.options) == ("socket", "", ())
    assert (ping.kind, ping.target) == ("ping", "127.0.0.1")  # loopback only


def test_load_check_without_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_check({"name": "probe", "kind": "tcp", "target": "x"}, "command line")
    assert info.value.problems == [
        "command line: target: invalid target 'x': expected host:port"
    ]


def test_locate_skips_multiline_strings_and_arrays() -> None:
    text = (
        '[defaults]\nx = """\nname = "fake"\n"""\ny = [\n  1,\n  2,\n]\n'
        "[[checks]]\nname = 'a'\n[[checks]]\n  name = \"b\"\n[checks.sub]\nk = 1\n"
    )
    lines = locate(text)
    assert lines[("defaults",)] == 1
    assert lines[("defaults", "x")] == 2
    assert ("defaults", "name") not in lines
    assert lines[("defaults", "y")] == 5
    assert lines[("checks", 0)] == 9
    assert lines[("checks", 0, "name")] == 10
    assert lines[("checks", 1, "name")] == 12
    assert lines[("checks", 1, "sub", "k")] == 14
