"""Values for people (exporter/humanize.py): each unit's rules at their boundaries, and the
shape of every metric the kinds declare read off its name and help text."""

from __future__ import annotations

import math

import pytest

from exporter import humanize, metrics
from exporter.checks import kind_specs

NAN, INF = math.nan, math.inf
NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
DAY = 86400.0


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"),
    (3e-11, "0.0300 ns"),
    (999e-9, "999 ns"),
    (999.6e-9, "1.00 µs"),  # rounded to three digits first, then the unit: not 1000 ns
    (1e-6, "1.00 µs"),
    (23.456e-6, "23.5 µs"),
    (234.75e-6, "235 µs"),
    (999.4e-6, "999 µs"),
    (999.6e-6, "1.00 ms"),
    (1e-3, "1.00 ms"),
    (0.0123, "12.3 ms"),
    (0.1234, "123 ms"),
    (0.9994, "999 ms"),
    (0.99951, "1.00 s"),
    (1, "1.00 s"),
    (16, "16.0 s"),
    (59.94, "59.9 s"),
    (59.96, "60 s (1m)"),
    (7200, "7200 s (2h)"),
    (90061.4, "90061 s (1d1h1m1s)"),
    (-0.002, "-2.00 ms"),
    (-23.456e-6, "-23.5 µs"),
    (NAN, "NaN"),
    (INF, "+Inf"),
    (-INF, "-Inf"),
])
def test_durations_have_three_significant_digits_in_ns_us_ms_s(seconds: float,
                                                                text: str) -> None:
    assert humanize.duration(seconds) == text


def test_a_signed_duration_says_plus() -> None:
    assert [humanize.duration(v, signed=True) for v in (0.002, -0.002, 0.0, NAN)] == [
        "+2.00 ms", "-2.00 ms", "0 s", "NaN"]


@pytest.mark.parametrize(("count", "text"), [
    (0, "0 B"),
    (916, "916 B"),
    (1023, "1023 B"),
    (1024, "1.00 KiB (1024 B)"),
    (1536, "1.50 KiB (1536 B)"),
    (65535, "64.0 KiB (65535 B)"),
    (1000 * 1024, "0.977 MiB (1024000 B)"),  # not 1000 KiB: three digits, the next unit
    (2**20 - 1, "1.00 MiB (1048575 B)"),
    (1.5 * 2**20, "1.50 MiB (1572864 B)"),
    (5 * 2**30, "5.00 GiB (5368709120 B)"),
    (NAN, "NaN"),
    (INF, "+Inf"),
])
def test_sizes_are_bytes_then_kib_mib_gib(count: float, text: str) -> None:
    assert humanize.size(count) == text


@pytest.mark.parametrize(("share", "text"), [
    (0, "0%"),
    (0.25, "25.0%"),
    (1, "100%"),
    (1 / 3, "33.3%"),
    (0.001, "0.100%"),
    (0.000999, "999 ppm"),
    (1e-5, "10.0 ppm"),  # a clock's frequency adjustment
    (-1.5e-6, "-1.50 ppm"),
    (NAN, "NaN"),
    (-INF, "-Inf"),
])
def test_ratios_are_percentages_then_ppm(share: float, text: str) -> None:
    assert humanize.ratio(share) == text


@pytest.mark.parametrize(("offset", "text"), [
    (12.5 * DAY, "2027-01-27 20:00:00 UTC (in 12 days)"),  # whole days left, rounded down
    (12 * DAY, "2027-01-27 08:00:00 UTC (in 12 days)"),
    (-(3 * DAY + 3600), "2027-01-12 07:00:00 UTC (3 days ago)"),
    (DAY, "2027-01-16 08:00:00 UTC (in 1 day)"),
    (5400, "2027-01-15 09:30:00 UTC (in 1 hour)"),
    (-7200, "2027-01-15 06:00:00 UTC (2 hours ago)"),
    (-30, "2027-01-15 07:59:30 UTC (30 seconds ago)"),
    (0.4, "2027-01-15 08:00:00 UTC (now)"),
])
def test_timestamps_are_utc_dates_and_how_far_from_now(offset: float, text: str) -> None:
    assert humanize.timestamp(NOW + offset, NOW) == text


def test_timestamps_beyond_dates_are_numbers() -> None:
    assert [humanize.timestamp(v, NOW) for v in (NAN, INF, -INF, 1e20)] == [
        "NaN", "+Inf", "-Inf", "1e+20"]


def test_plain_numbers_keep_their_type() -> None:
    assert [humanize.number(v) for v in (3, 0, 4294967295, 1.0, 1.1, 2.0, 1 / 3, NAN)] == [
        "3", "0", "4294967295", "1.0", "1.1", "2.0", "0.333333", "NaN"]


@pytest.mark.parametrize(("spec", "sample", "text"), [
    (metrics.TLS_CERT_EXPIRY, NOW + 12 * DAY + 60, "2027-01-27 08:01:00 UTC (in 12 days)"),
    (metrics.TLS_CERT_EXPIRY, NOW - 3 * DAY, "2027-01-12 08:00:00 UTC (3 days ago)"),
    (metrics.TCP_CONNECT, 0.00023475999978472828, "235 µs"),
    (metrics.NTP_OFFSET, -0.0123, "-12.3 ms"),
    (metrics.DNS_MIN_TTL, 300, "300 s (5m)"),
    (metrics.TCP_PMTU, 65535, "64.0 KiB (65535 B)"),
    (metrics.HTTP_RESPONSE_BYTES, 916, "916 B"),
    (metrics.PING_LOSS, 0.25, "25.0%"),
    (metrics.CLOCK_FREQUENCY, -1.25e-5, "-12.5 ppm"),
    (metrics.PATH_REACHED, 1, "yes"),
    (metrics.NTP_SANITY, 0, "no"),
    (metrics.NTP_SANITY, NAN, "NaN"),
    (metrics.NTP_STRATUM, 2, "2"),
    (metrics.HTTP_VERSION, 1.0, "1.0"),
    (metrics.TCP_CONNECT, NAN, "NaN"),
    (metrics.HTTP_RESPONSE_BYTES, INF, "+Inf"),
])
def test_a_metric_is_written_in_the_unit_its_name_carries(spec: metrics.Spec, sample: float,
                                                          text: str) -> None:
    assert humanize.value(spec, sample, NOW) == text


def test_rows_name_metrics_as_people_say_them() -> None:
    samples = [
        (metrics.TCP_CONNECT, (), 0.0012),
        (metrics.HTTP_PHASE, ("connect",), 0.000312),
        (metrics.CLOCK_STATE, ("ok",), 0),
        (metrics.CLOCK_STATE, ("ins",), 0),
        (metrics.CLOCK_STATE, ("error",), 1),
        (metrics.TLS_VERSION, ("TLSv1.3",), 1),
        (metrics.GRPC_HEALTH_STATUS, ("SERVING",), 0),
        (metrics.GRPC_HEALTH_STATUS, ("NOT_SERVING",), 0),
        (metrics.NTP_FALSETICKER, ("127.0.0.1:123",), 1),
        (metrics.NTP_FALSETICKER, ("127.0.0.2:123",), 0),
        (metrics.SOCKET_OPTION_VALUE, ("SO_RCVBUF",), 262144),
    ]
    assert humanize.rows(samples, NOW) == [
        ("tcp connect", "1.20 ms"),
        ("http phase connect", "312 µs"),
        ("clock state", "error"),  # a state set: one row, the state that is 1
        ("tls version", "TLSv1.3"),  # an info series: its labels
        ("grpc healthcheck status", "none"),
        ("ntp falseticker 127.0.0.1:123", "yes"),  # yes/no per server: not a state set
        ("ntp falseticker 127.0.0.2:123", "no"),
        ("socket option value SO_RCVBUF", "262144"),
    ]


def test_a_state_set_sample_that_is_neither_0_nor_1_shows_as_it_is() -> None:
    assert humanize.rows([(metrics.CLOCK_STATE, ("ok",), 1),
                          (metrics.CLOCK_STATE, ("error",), NAN)], NOW) == [
        ("clock state", "ok"), ("clock state error", "NaN")]


def test_every_kind_metric_has_a_shape_its_samples_fit() -> None:
    """The shapes come from metrics.py's wording: a yes/no and a state set are gauges, a state
    set and an info metric have labels to name, and every name reads as words once its
    prefix and unit are gone."""
    specs = kind_specs()
    assert specs
    for spec in specs:
        assert spec.name.startswith("netsentry_"), spec.name
        words = humanize.label(spec)
        assert words and "_" not in words and not words.startswith("netsentry"), spec.name
        if humanize.is_yes_no(spec) or humanize.is_state_set(spec):
            assert spec.type == metrics.GAUGE and not humanize.unit(spec.name), spec.name
        if spec.help.startswith("1 for the "):
            assert humanize.is_state_set(spec), spec.name
        if spec.help.startswith("Always 1"):
            assert humanize.is_info(spec), spec.name
    shapes = {s.name for s in specs if humanize.is_state_set(s)}
    assert {"netsentry_clock_state", "netsentry_grpc_healthcheck_status"} <= shapes
