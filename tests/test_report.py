"""A run described for people (exporter/report.py): the human form of hand-made results, and
`metrics=True` giving the raw metric lines exactly as `netsentry probe` printed them before."""

from __future__ import annotations

from exporter import metrics
from exporter.checks.base import Observation
from exporter.config.load import load_check
from exporter.config.model import CheckConfig
from exporter.errors import Reason
from exporter.report import describe
from exporter.store import Result, split

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
DAY = 86400.0

TCP = [
    (metrics.DNS_LOOKUP, (), 2.4406000193266664e-05),
    (metrics.TCP_CONNECT, (), 0.00032905099988056463),
    (metrics.TCP_RTT, (), 3.5e-05),
    (metrics.TCP_RETRANSMITS, (), 0),
    (metrics.TCP_PMTU, (), 65535),
    (metrics.TLS_HANDSHAKE, (), 0.0021),
    (metrics.TLS_CERT_EXPIRY, (), NOW + 12.5 * DAY),
    (metrics.TLS_VERSION, ("TLSv1.3",), 1),
]


def result(observations: list[Observation] | None = None, **fields: object) -> Result:
    series, values = split(TCP if observations is None else observations)
    given: dict[str, object] = {"success": True, "reason": None, "message": "",
                                "duration": 0.000495, "finished": NOW,
                                "details": (("address", "127.0.0.1:443"),), **fields}
    return Result(**given, series=series, values=values)  # type: ignore[arg-type]


def check(kind: str = "tcp", target: str = "127.0.0.1:443") -> CheckConfig:
    table = {"name": "probe", "kind": kind, "interval": "24h"}
    return load_check({**table, "target": target} if target else table, "test")


def test_the_human_form_writes_each_metric_in_its_unit() -> None:
    assert describe(check(), result()).splitlines() == [
        "check            tcp 127.0.0.1:443",
        "result           success",
        "duration         495 µs",
        "address          127.0.0.1:443",
        "dns lookup       24.4 µs",
        "tcp connect      329 µs",
        "tcp rtt          35.0 µs",
        "tcp retransmits  0",
        "tcp pmtu         64.0 KiB (65535 B)",
        "tls handshake    2.10 ms",
        "tls cert expiry  2027-01-27 20:00:00 UTC (in 12 days)",  # from the run's end
        "tls version      TLSv1.3",
    ]


def test_metrics_gives_the_raw_lines_as_before() -> None:
    # The metric lines as `netsentry probe` printed them before it wrote units: the name, its
    # labels, the value as the exposition writes it.
    lines = describe(check(), result(), metrics=True).splitlines()
    expected = [
        ("check", "tcp 127.0.0.1:443"),
        ("result", "success"),
        ("duration", "495 µs"),
        ("address", "127.0.0.1:443"),
        ("netsentry_dns_lookup_seconds", "2.4406000193266664e-05"),
        ("netsentry_tcp_connect_seconds", "0.00032905099988056463"),
        ("netsentry_tcp_rtt_seconds", "3.5e-05"),
        ("netsentry_tcp_retransmits", "0"),
        ("netsentry_tcp_pmtu_bytes", "65535"),
        ("netsentry_tls_handshake_seconds", "0.0021"),
        ("netsentry_tls_cert_expiry_timestamp_seconds", "1801080000.0"),
        ('netsentry_tls_version_info{version="TLSv1.3"}', "1"),
    ]
    width = max(len(name) for name, _ in expected)  # one column, as wide as the longest name
    assert lines == [f"{name:<{width}}  {value}" for name, value in expected]


def test_an_expired_certificate_says_how_long_ago() -> None:
    text = describe(check(), result([(metrics.TLS_CERT_EXPIRY, (), NOW - 3 * DAY - 60)]))
    assert text.splitlines()[-1].split(None, 3)[-1] == "2027-01-12 07:59:00 UTC (3 days ago)"


def test_a_failure_and_values_that_are_not_numbers() -> None:
    failed = result([(metrics.TCP_CONNECT, (), float("nan")),
                     (metrics.HTTP_RESPONSE_BYTES, (), float("inf")),
                     (metrics.PING_LOSS, (), 1.0)],
                    success=False, reason=Reason.REFUSED, message="connection refused",
                    duration=1.5, details=())
    assert describe(check(), failed).splitlines() == [
        "check          tcp 127.0.0.1:443",
        "result         FAILURE (refused): connection refused",
        "duration       1.50 s",
        "tcp connect    NaN",
        "http response  +Inf",
        "ping loss      100%",
    ]
    raw = describe(check(), failed, metrics=True).splitlines()
    assert [line.split() for line in raw[3:]] == [
        ["netsentry_tcp_connect_seconds", "NaN"], ["netsentry_http_response_bytes", "+Inf"],
        ["netsentry_ping_loss_ratio", "1.0"]]


def test_a_kinds_table_is_written_in_units_too() -> None:
    hops = [(metrics.PATH_HOPS, (), 2), (metrics.PATH_REACHED, (), 1),
            (metrics.PATH_HOP_RTT, ("1",), 0.000045), (metrics.PATH_HOP_LOSS, ("1",), 0.0),
            (metrics.PATH_HOP_RTT, ("2",), 0.0123), (metrics.PATH_HOP_LOSS, ("2",), 1 / 3)]
    text = describe(check("path", "127.0.0.1"), result(hops, details=()))
    rows, table = text.split("\n\n")
    assert rows.splitlines()[3:] == ["path hops     2", "path reached  yes"]
    assert table.splitlines() == ["hop  median rtt  loss",
                                  "1    45.0 µs     0%",
                                  "2    12.3 ms     33.3%"]
