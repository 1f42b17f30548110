import pytest

from exporter.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("15s", 15), ("1m", 60), ("1h30m", 5400), ("2d", 172800), ("1w", 604800),
     ("1m30s500ms", 90.5), ("0s", 0)],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty duration"), ("15", "invalid duration '15'"), ("1.5s", "invalid duration"),
     ("30m1h", "largest to smallest"), ("1s1s", "largest to smallest"), ("-1s", "invalid"),
     ("15 s", "invalid"), ("1y", "invalid")],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.5, 15, 60, 5400, 90.5, 86400 + 1])
def test_format_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
