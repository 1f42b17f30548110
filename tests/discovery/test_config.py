"""The config of discovered targets: targets_file, targets_url, targets_srv, refresh_interval."""

from __future__ import annotations

import pytest

from exporter.config.load import load_text
from exporter.config.targets import HostPort
from exporter.errors import ConfigError

CHECK = '[[checks]]\nname = "fleet"\nkind = "tcp"\n'
WHERE = "/etc/netsentry/netsentry.toml"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, WHERE)
    return [line.removeprefix(WHERE + ":") for line in info.value.problems]


def test_a_targets_file_starts_where_the_config_file_is() -> None:
    config = load_text(CHECK + 'targets_file = "sd/*.json"\nlabels = { team = "net" }\n', WHERE)
    assert config.checks == ()
    [discovered] = config.discovered
    assert (discovered.source.type, discovered.source.spec, discovered.source.base_dir) == (
        "file", "sd/*.json", "/etc/netsentry")
    assert discovered.source.label == "file:sd/*.json"
    assert (discovered.base.name, discovered.base.kind, discovered.base.labels) == (
        "fleet", "tcp", (("team", "net"),))


def test_a_targets_url_is_an_http_checks_request() -> None:
    config = load_text(CHECK + 'targets_url = { url = "https://cmdb.test/sd", basic_auth = '
                       '{ username = "u", password = "p" } }\nrefresh_interval = "2m"\n', WHERE)
    source = config.discovered[0].source
    assert (source.type, source.spec, source.refresh) == ("http", "https://cmdb.test/sd", 120.0)
    assert source.request.target.host == "cmdb.test" and source.request.basic_auth is not None
    assert source.request.max_body_bytes == 16 << 20  # a cap fit for 100,000 targets
    assert load_text(CHECK + 'targets_url = "http://cmdb.test/"\n',
                     WHERE).discovered[0].source.refresh == 60.0  # http_sd's default


def test_a_targets_srv_is_a_dns_checks_query() -> None:
    config = load_text(CHECK + 'targets_srv = { name = "_x._tcp.test", server = '
                       '"127.0.0.1:5353" }\n', WHERE)
    source = config.discovered[0].source
    assert (source.type, source.refresh, source.request.record) == ("srv", 30.0, "SRV")
    assert source.request.server == (HostPort("127.0.0.1", 5353),)
    # Without a server: resolv.conf's, read at each refresh.
    plain = load_text(CHECK + 'targets_srv = "_x._tcp.test"\n', WHERE).discovered[0].source
    assert plain.request.server == ()


@pytest.mark.parametrize(("extra", "expected"), [
    ('targets_file = "sd/*.txt"\n',
     ["4: checks[0] \"fleet\".targets_file: 'sd/*.txt': Prometheus' file_sd files end in "
      ".json, .yml or .yaml"]),
    ('targets_file = "sd/*.json"\nrefresh_interval = "1m"\n',
     ['5: checks[0] "fleet".refresh_interval: targets_file is watched: its files are read '
      "again as soon as they change; remove the key"]),
    ('targets_url = "ftp://x/"\n',
     ["4: checks[0] \"fleet\".targets_url: expected an http:// or https:// URL, got 'ftp://x/'"]),
    ('targets_url = { url = "http://x/", method = "POST" }\n',
     ['4: checks[0] "fleet".targets_url.method: unknown key']),
    ('targets_url = { ca_file = "x" }\n',
     ["4: checks[0] \"fleet\".targets_url: missing required key 'url'"]),
    ('targets_srv = { name = "bad..name" }\n',
     ["4: checks[0] \"fleet\".targets_srv.name: invalid DNS name 'bad..name': empty label (a "
      "leading dot or two dots in a row)"]),
    ('target = "a:1"\ntargets_srv = "x"\n',
     ['5: checks[0] "fleet".targets_srv: give one of target, targets, targets_file, '
      "targets_url, targets_srv; this table has target and targets_srv"]),
    ('target = "a:1"\nrefresh_interval = "1m"\n',
     ['5: checks[0] "fleet".refresh_interval: is for targets_url and targets_srv only']),
    ('targets_url = "http://x/"\nrefresh_interval = "0s"\n',
     ['5: checks[0] "fleet".refresh_interval: must be longer than 0s']),
    ('targets_file = "sd/*.json"\nlabels = { job = "x" }\n',
     ["5: checks[0] \"fleet\".labels.job: netsentry's or Prometheus' series already have a "
      "'job' label; choose another name (like team or service)"]),
])
def test_problems(extra: str, expected: list[str]) -> None:
    assert problems(CHECK + extra) == expected


def test_a_kind_without_targets_takes_no_source() -> None:
    assert problems('[[checks]]\nname = "c"\nkind = "clock"\ntargets_file = "a.json"\n') == [
        '4: checks[0] "c".targets_file: a clock check takes no target: it checks this host; '
        "remove the key"]
