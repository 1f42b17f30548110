"""The badges: SVG that an XML parser reads, names as text whatever they hold, colours by
availability, and a real agent's answers with their type and caching headers."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest

from exporter.history import LatencyHistory
from exporter.web import badges
from tests.support.agent import Agent
from tests.web.served import XSS, served_agent

SVG = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_a_name_is_text_whatever_it_holds() -> None:
    for name in (XSS, 'a"b\'c&d', "]]><script>alert(1)</script>", "naïve ✓"):
        svg = badges.render(name, "99.9% 24h", "#4c1")
        assert texts(svg) == [name, name, "99.9% 24h", "99.9% 24h"]
        root = ElementTree.fromstring(svg)
        assert {e.tag.removeprefix(SVG) for e in root.iter()} <= {
            "svg", "title", "linearGradient", "stop", "clipPath", "rect", "g", "text"}
        assert root.get("aria-label") == f"{name}: 99.9% 24h"


def test_the_box_grows_with_the_text_and_long_names_are_clipped() -> None:
    def width(label: str) -> int:
        return int(ElementTree.fromstring(badges.render(label, "ok", "#4c1")).get("width", 0))

    assert width("a") < width("ab") < width("abW") < width("abW%")
    long = "x" * 500
    assert texts(badges.render(long, "ok", "#4c1"))[0] == "x" * 59 + "…"


@pytest.mark.parametrize(("ratio", "colour"), [
    (1.0, "#4c1"), (0.999, "#4c1"), (0.9989, "#97ca00"), (0.99, "#97ca00"), (0.97, "#dfb317"),
    (0.9, "#fe7d37"), (0.5, "#e05d44"), (0.0, "#e05d44"), (None, "#9f9f9f"),
])
def test_uptime_colours(ratio: float | None, colour: str) -> None:
    assert badges.uptime_colour(ratio) == colour


def test_uptime_over_an_hour_or_a_day_never_rounds_a_failure_up() -> None:
    history = LatencyHistory()
    now = 1_800_000_000.0
    for i in range(10_000):
        history.add(now - 80_000 + i * 8, 0.001, i != 0)  # one failure, 22 hours ago
    assert badges.uptime("web", [history], "24h", now).message == "99.99% 24h"
    assert badges.uptime("web", [history], "1h", now).message == "100% 1h"
    assert badges.uptime("web", [LatencyHistory()], "1h", now) == badges.Badge(
        "web", "no runs yet", badges.GREY)


@pytest.mark.parametrize(("path", "query", "asked"), [
    ("/badge/web/uptime.svg", {}, badges.Asked(False, "web", "uptime")),
    ("/badge/a/b/latency.svg", {}, badges.Asked(False, "a/b", "latency")),  # %2F, decoded
    ("/badge/group/edge/uptime.svg", {}, badges.Asked(True, "edge", "uptime")),
    ("/badge/group/uptime.svg", {}, badges.Asked(False, "group", "uptime")),  # a check
    ("/badge/uptime.svg", {"check": "group/x"}, badges.Asked(False, "group/x", "uptime")),
    ("/badge/latency.svg", {"group": "edge"}, badges.Asked(True, "edge", "latency")),
    ("/badge/uptime.svg", {}, None),
    ("/badge/web/uptime.png", {}, None),
    ("/badge/web/size.svg", {}, None),
])
def test_paths(path: str, query: dict[str, str], asked: badges.Asked | None) -> None:
    assert badges.parse_path(path, query) == asked


# --- a real agent ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with served_agent(tmp_path_factory.mktemp("agent") / "netsentry.toml") as agent:
        yield agent


def badge(agent: Agent, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
    status, got, body = agent.fetch("GET", path, headers=headers)
    return status, {k.lower(): v for k, v in got.items()}, body.decode()


def test_a_checks_badges(agent: Agent) -> None:
    status, headers, svg = badge(agent, "/badge/web-frontend/uptime.svg")
    assert status == 200
    assert headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert headers["cache-control"] == "max-age=60"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "default-src 'none'"
    assert texts(svg)[::2] == ["web-frontend", "100% 24h"]
    assert 'fill="#4c1"' in svg
    # Unchanged, the ETag answers a 304 with no body.
    status, again, body = badge(agent, "/badge/web-frontend/uptime.svg",
                                **{"If-None-Match": headers["etag"]})
    assert status == 304 and body == "" and again["etag"] == headers["etag"]
    _, _, svg = badge(agent, "/badge/web-frontend/uptime.svg?window=1h&label=Our+site")
    assert texts(svg)[::2] == ["Our site", "100% 1h"]
    _, _, svg = badge(agent, "/badge/web-frontend/latency.svg")
    label, message = texts(svg)[::2]
    assert label == "web-frontend" and message.endswith(("µs", "ms"))


def test_a_failing_check_named_like_markup(agent: Agent) -> None:
    quoted = urllib.parse.quote(XSS, safe="")
    status, _, svg = badge(agent, f"/badge/{quoted}/uptime.svg")
    assert status == 200 and texts(svg)[::2] == [XSS, "0% 24h"] and 'fill="#e05d44"' in svg
    assert "<img" not in svg
    _, _, svg = badge(agent, f"/badge/{quoted}/latency.svg")
    assert texts(svg)[::2] == [XSS, "down"]


def test_a_groups_badges(agent: Agent) -> None:
    _, _, body = agent.fetch("GET", "/api/v1/checks")
    tcp = [c for c in json.loads(body)["checks"] if c["group"] == "tcp"]
    runs = sum(c["availability"]["day"]["runs"] for c in tcp)
    assert len(tcp) == 2 and runs > 0
    status, _, svg = badge(agent, "/badge/group/tcp/uptime.svg")
    label, message = texts(svg)[::2]
    assert status == 200 and label == "tcp"
    assert 0 < float(message.removesuffix("% 24h")) < 100  # one up, one down
    _, _, svg = badge(agent, "/badge/group/tcp/latency.svg")
    assert texts(svg)[::2] == ["tcp", "down"]


def test_what_is_not_there_is_a_404_badge(agent: Agent) -> None:
    status, headers, svg = badge(agent, "/badge/no-such-check/uptime.svg")
    assert status == 404 and headers["content-type"].startswith("image/svg+xml")
    assert texts(svg)[::2] == ["no-such-check", "not found"]
    assert badge(agent, "/badge/group/nothing/uptime.svg")[0] == 404
    assert badge(agent, "/badge/web-frontend/colour.svg")[0] == 404
    assert badge(agent, "/badge/web-frontend/uptime.svg?target=elsewhere")[0] == 404


def test_the_json_has_the_group_and_availability(agent: Agent) -> None:
    _, _, body = agent.fetch("GET", "/api/v1/checks")
    document = json.loads(body)
    assert document["history"]["day_step_seconds"] == 900.0
    for check in document["checks"]:
        assert check["group"] == check["kind"]
        for span in ("hour", "day"):
            counted = check["availability"][span]
            assert counted["runs"] >= counted["successful"] >= 0
            expected = 1.0 if check["state"] == "up" else 0.0
            assert counted["ratio"] == expected

