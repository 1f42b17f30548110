"""The `[probe]` section: the allow-list and the templates of ad-hoc probes, each problem with
its line, and the checks an ad-hoc request builds from them."""

from __future__ import annotations

import ipaddress

import pytest

from exporter.checks import KINDS
from exporter.checks.http import BasicAuth, Secret
from exporter.config.load import load_text
from exporter.config.settings import adhoc_check
from exporter.config.targets import HostPort
from exporter.errors import ConfigError

GOOD = """
[defaults]
timeout = "4s"

[probe]
allow = ["*.example.org", "10.0.0.0/8", "192.0.2.7"]
max_in_flight = 8
timeout_offset = "250ms"

[probe.templates.web]
kind = "http"
timeout = "3s"
valid_status = ["2xx", 301]
basic_auth = { username = "probe", password = "pw" }

[probe.templates.smtp]
kind = "tcp"
dialog = [{ expect = "^220 " }]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.toml")
    return info.value.problems


def test_good_probe_section_is_typed() -> None:
    probe = load_text(GOOD, "f.toml").probe
    assert probe.allow.patterns == ("*.example.org",)
    assert probe.allow.networks == (ipaddress.ip_network("10.0.0.0/8"),
                                    ipaddress.ip_network("192.0.2.7/32"))
    assert (probe.max_in_flight, probe.timeout, probe.timeout_offset) == (8, 4.0, 0.25)
    web = probe.template("web")
    assert web is not None
    assert (web.kind, web.timeout) == ("http", 3.0)
    assert dict(web.values) == {"valid_status": ("2xx", 301),
                                "basic_auth": BasicAuth("probe", Secret("pw"))}
    smtp = probe.template("smtp")
    assert smtp is not None and smtp.timeout == 4.0  # [defaults] timeout
    assert probe.template("nope") is None


def test_without_a_probe_section_ad_hoc_probes_are_off() -> None:
    probe = load_text('[defaults]\ntimeout = "2s"\n', "f.toml").probe
    assert not probe.allow
    assert (probe.templates, probe.max_in_flight, probe.timeout, probe.timeout_offset) == (
        (), 16, 2.0, 0.5)


CASES = [
    pytest.param(
        '[probe]\nallow = "10.0.0.0/8"\n',
        ["f.toml:2: probe.allow: expected an array of host patterns and networks, got a "
         "string ('10.0.0.0/8')"],
        id="allow-not-array",
    ),
    pytest.param(
        '[probe]\nallow = ["ok.test",\n  "10.0.0.1/8", 7]\n',
        # Each element at its own line.
        ["f.toml:3: probe.allow[1]: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?",
         "f.toml:3: probe.allow[2]: expected a string, got a number (7)"],
        id="bad-entries",
    ),
    pytest.param(
        '[probe]\nallow = ["*.*.test"]\n',
        ["f.toml:2: probe.allow[0]: '*.*.test' is not a host name, a *.domain pattern or a "
         "network (10.0.0.0/8)"],
        id="bad-pattern",
    ),
    pytest.param(
        '[probe]\nalow = []\n',
        ['f.toml:2: probe.alow: unknown key (did you mean "allow"?)'],
        id="unknown-key",
    ),
    pytest.param(
        '[probe]\nmax_in_flight = 100\n',
        ["f.toml:2: probe.max_in_flight: must be a whole number from 1 to 24 (the web "
         "server's other handlers need room), got a number (100)"],
        id="max-in-flight",
    ),
    pytest.param(
        '[probe]\ntimeout_offset = "0s"\n',
        ["f.toml:2: probe.timeout_offset: must be longer than 0s"],
        id="offset",
    ),
    pytest.param(
        "[probe]\ntemplates = 3\n",
        ["f.toml:2: probe.templates: must be a table: write [probe.templates.NAME]"],
        id="templates-not-table",
    ),
    pytest.param(
        '[probe.templates.web]\ntimeout = "1s"\n',
        ["f.toml:1: probe.templates.web: missing required key 'kind'; known kinds: "
         f"{', '.join(KINDS)}"],
        id="template-without-kind",
    ),
    pytest.param(
        '[probe.templates.web]\nkind = "htp"\n',
        ["f.toml:2: probe.templates.web.kind: unknown kind 'htp' (did you mean \"http\"?); "
         f"known kinds: {', '.join(KINDS)}"],
        id="template-unknown-kind",
    ),
    pytest.param(
        '[probe.templates.web]\nkind = "http"\ntarget = "http://x/"\ntimeuot = "1s"\n',
        ["f.toml:3: probe.templates.web.target: a template has no target: each request "
         "gives it (&target=)",
         'f.toml:4: probe.templates.web.timeuot: unknown key (did you mean "timeout"?)'],
        id="template-target-and-unknown-key",
    ),
    pytest.param(
        '[probe.templates.web]\nkind = "http"\nmax_redirects = -1\nvalid_status = ["2x"]\n'
        'timeout = "soon"\n',
        ["f.toml:5: probe.templates.web.timeout: invalid duration 'soon'; use e.g. 500ms, "
         "15s, 1m or 1h30m",
         "f.toml:4: probe.templates.web.valid_status: invalid status '2x': expected a code "
         '(200) or a class ("2xx")',
         "f.toml:3: probe.templates.web.max_redirects: must be 0 or more"],
        id="template-bad-values",
    ),
    pytest.param(
        # A problem between keys is found at load too, not only when a probe comes.
        '[probe.templates.api]\nkind = "http"\nheaders = { Authorization = "x" }\n'
        'basic_auth = { username = "u", password = "p" }\n',
        ["f.toml:4: probe.templates.api.basic_auth: conflicts with an Authorization header"],
        id="template-cross-key-problem",
    ),
    pytest.param(
        '[probe.templates.mx]\nkind = "dns"\nrecord = "MX"\n',
        ["f.toml:3: probe.templates.mx.record: needs `server`: the system resolver "
         "(getaddrinfo) answers addresses only, with no rcode or flags"],
        id="template-dns-server-only-key",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_problems(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


# --- the checks of ad-hoc probes ------------------------------------------------------------


def test_adhoc_check_takes_the_template_and_the_target() -> None:
    probe = load_text(GOOD, "f.toml").probe
    check = adhoc_check("tcp", probe.template("smtp"), "mx.example.org:25", 9.0)
    assert (check.name, check.kind, check.target, check.timeout) == (
        "smtp", "tcp", "mx.example.org:25", 4.0)
    assert check.settings.target == HostPort("mx.example.org", 25)
    assert [step.text for step in check.settings.dialog] == ["^220 "]
    bare = adhoc_check("tcp", None, "10.0.0.1:22", 9.0)
    assert (bare.name, bare.timeout, bare.settings.dialog) == ("tcp", 9.0, ())


@pytest.mark.parametrize(("kind", "target", "message"), [
    ("tcp", "", "target: missing; a tcp check needs one (&target=)"),
    ("tcp", "x.example.org", "target: invalid target 'x.example.org': expected host:port"),
    ("http", "ftp://x/", "target: expected an http:// or https:// URL, got 'ftp://x/'"),
    ("http", "http://u:pw@x/", "target: the URL holds a user name or password: use "
     "basic_auth instead"),
])
def test_adhoc_check_problems(kind: str, target: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        adhoc_check(kind, None, target, 5.0)
    assert info.value.problems == [message]
