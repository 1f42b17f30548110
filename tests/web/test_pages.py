"""The status page and /api/v1/checks: rendered from a store, and served by a real agent."""

from __future__ import annotations

import gzip
import json
import re
from base64 import b64encode
from hashlib import sha256
from html.parser import HTMLParser
from pathlib import Path

import pytest

from exporter.config.load import load_text
from exporter.errors import Reason
from exporter.history import POINTS, STEP, Window
from exporter.store import Result, Store
from exporter.web import pages
from exporter.web.status import Filter, Overview, checks_json, checks_json_parts, overview
from tests.web.served import XSS, served_agent

NOW = 1_700_000_000.0 - 1_700_000_000.0 % STEP + 30

TEXT = f"""
[[checks]]
name = "web"
kind = "tcp"
target = "127.0.0.1:80"
labels = {{ team = "edge" }}

[[checks]]
name = {json.dumps(XSS)}
kind = "tcp"
target = "127.0.0.1:1"

[[checks]]
name = "resolver"
kind = "dns"
target = "localhost"

[[checks]]
name = "new"
kind = "http"
target = "http://127.0.0.1/?a=\\"><script>alert(2)</script>"
"""


def make_overview(reload_ok: bool = True) -> Overview:
    store = Store()
    store.load(load_text(TEXT, "t.toml").checks)
    states = store.states
    store.record("web", states["web"].check, Result(True, None, "", 0.004, NOW - 70))
    store.record("web", states["web"].check, Result(True, None, "", 0.002, NOW - 2))
    store.record(XSS, states[XSS].check, Result(
        False, Reason.REFUSED, "refused <b>here</b>", 0.0003, NOW - 1,
        details=(("address", "<127.0.0.1>"),)))
    store.record("resolver", states["resolver"].check, Result(True, None, "", 0.0011, NOW - 5))
    return overview(store, NOW, "1.2.3", "/etc/<netsentry>.toml", reload_ok)


class Elements(HTMLParser):
    """Every element of a page, as (tag, attributes); and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def rows(self) -> dict[str, dict[str, str | None]]:
        """Check name -> the attributes of its row."""
        return {str(a["data-check"]): a for tag, a in self.elements if tag == "tr" and
                "data-check" in a}


def test_names_messages_targets_and_details_are_text() -> None:
    page = pages.status_page(make_overview(), Filter())
    parsed = Elements(page)
    tags = [tag for tag, _ in parsed.elements]
    assert "img" not in tags and tags.count("script") == 1
    assert tags.count("b") == 5  # the four names and the summary; none from the message
    text = "".join(parsed.text)
    for raw in (XSS, 'http://127.0.0.1/?a="><script>alert(2)</script>', "refused <b>here</b>",
                "address: <127.0.0.1>", "/etc/<netsentry>.toml"):
        assert raw in text
    # The attribute values made from names survive as the names themselves.
    assert XSS in parsed.rows()
    assert "onerror" not in [k for _, attrs in parsed.elements for k in attrs]


def test_the_csp_allows_exactly_the_page_s_own_style_and_script() -> None:
    page = pages.status_page(make_overview(), Filter())
    csp = dict(pages.HEADERS)["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        assert len(bodies) == 1
        digest = b64encode(sha256(bodies[0].encode()).digest()).decode()
        assert directives[directive] == f"'sha256-{digest}'"
    assert "http:" not in csp and "https:" not in csp and "*" not in csp
    # Nothing refers to an asset, and the links stay on the agent.
    elements = Elements(page).elements
    assert not [a for _, a in elements if "src" in a] and "link" not in [t for t, _ in elements]
    hrefs = [a["href"] for _, a in elements if "href" in a]
    assert hrefs[:2] == ["metrics", "api/v1/checks"]
    # Relative, so that they stay under any --web.route-prefix and through any proxy.
    assert not [h for h in hrefs if h.startswith("/") or ":" in h], hrefs


def test_checks_are_grouped_by_kind_and_failures_marked() -> None:
    page = pages.status_page(make_overview(), Filter())
    kinds = re.findall(r'<section class="kind"><h2>(\w+) <small>([^<]*)</small>', page)
    assert kinds == [("dns", "1 check · 100% up over 24 h"), ("http", "1 check"),
                     ("tcp", "2 checks, 1 failing · 66.66% up over 24 h")]
    rows = Elements(page).rows()
    assert [rows[n]["class"] for n in ("web", XSS, "resolver", "new")] == [
        "check up", "check down", "check up", "check pending"]
    assert "<title>netsentry: 1 of 4 failing</title>" in page
    assert "4 checks: <b>1 failing</b>, 2 up, 1 pending" in page
    assert "<code>refused</code> refused &lt;b&gt;here&lt;/b&gt;" in page
    assert "<small>127.0.0.1:80 team=edge</small>" in page  # the check's own labels
    assert "failed; the previous config is running" not in page
    assert "failed; the previous config is running" in pages.status_page(
        make_overview(reload_ok=False), Filter())


@pytest.mark.parametrize(("query", "shown"), [
    ({}, {"web", XSS, "resolver", "new"}),
    ({"q": "TCP"}, {"web", XSS}),
    ({"q": "refused 127.0.0.1"}, {XSS}),
    ({"q": "pending"}, {"new"}),
    ({"q": "team=edge"}, {"web"}),
    ({"failing": "1"}, {XSS}),
    ({"failing": "0"}, {"web", XSS, "resolver", "new"}),
    ({"q": "resolver", "failing": "1"}, set()),
])
def test_the_filter_from_the_address(query: dict[str, str], shown: set[str]) -> None:
    only = Filter.from_query(query)
    page = pages.status_page(make_overview(), only)
    rows = Elements(page).rows()
    assert {name for name, attrs in rows.items() if "hidden" not in attrs} == shown
    # A group with nothing to show is hidden, and an empty result says so.
    sections = re.findall(r'<section class="kind"( hidden)?><h2>(\w+)', page)
    kinds = {"web": "tcp", XSS: "tcp", "resolver": "dns", "new": "http"}
    assert {kind for hidden, kind in sections if not hidden} == {kinds[n] for n in shown}
    assert ('<p id="none" hidden>' in page) == bool(shown)
    assert [c["name"] for c in json.loads(checks_json(make_overview(), only))["checks"]] == [
        n for n in ("web", XSS, "resolver", "new") if n in shown]
    # The form shows the filter it applied.
    assert f'value="{query.get("q", "")}"' in page
    assert (" checked>" in page) == (query.get("failing") == "1")


def test_groups_name_the_sections_and_each_row_has_its_availability() -> None:
    store = Store()
    grouped = TEXT
    for name in ("web", "resolver"):
        grouped = grouped.replace(f'name = "{name}"\n', f'name = "{name}"\ngroup = "Edge & <b>"\n')
    store.load(load_text(grouped, "t.toml").checks)
    web = store.states["web"].check
    for i in range(400):  # 400 runs over the last 20 minutes, the first one failing
        store.record("web", web, Result(i > 0, None if i else Reason.TIMEOUT, "", 0.002,
                                        NOW - 1200 + 3 * i))
    page = pages.status_page(overview(store, NOW, "1", "t.toml", True), Filter())
    sections = re.findall(r'<section class="kind"><h2>(.*?) <small>([^<]*)</small> '
                          r'<a href="([^"]*)"', page)
    assert sections == [
        ("Edge &amp; &lt;b&gt;", "2 checks · 99.75% up over 24 h",
         "badge/group/Edge%20%26%20%3Cb%3E/uptime.svg"),
        ("http", "1 check", "badge/group/http/uptime.svg"),
        ("tcp", "1 check", "badge/group/tcp/uptime.svg")]
    row = re.search(r'<tr class="check up" data-check="web".*?</tr>', page)
    assert row is not None
    assert ('<span title="399 of 400 runs succeeded in the last hour">99.75%</span> '
            "<small>1 h</small>") in row[0]
    pending = re.search(r'<tr class="check pending" data-check="new".*?</tr>', page)
    assert pending is not None and '<span title="No run in the last hour">–</span>' in pending[0]
    # A word of the group finds its checks.
    assert Filter("edge").accepts("up", overview(store, NOW, "1", "t", True).checks[2]
                                  .search_text)


def test_the_sparkline_draws_the_hour_to_scale_and_marks_failed_minutes() -> None:
    slowest: list[int | None] = [None] * POINTS
    slowest[-3], slowest[-2], slowest[-1] = 10_000, 5_000, None  # microseconds
    slowest[0] = 2_000  # alone: a dot
    failed = bytearray(POINTS)
    failed[-1] = failed[10] = 1
    svg = pages._sparkline(Window(NOW, tuple(slowest), bytes(failed)))
    line = re.search(r'<path class="line" d="([^"]+)"/>', svg)
    assert line is not None
    assert line[1] == f"M1 18h0M{2 * 57 + 1} 2h0L{2 * 58 + 1} 12"
    bars = re.search(r'<path class="fail" d="([^"]+)"/>', svg)
    assert bars is not None and bars[1] == "M21 0v24M119 0v24"
    assert "up to 10.0 ms; failures in 2 minutes" in svg
    empty = pages._sparkline(Window(NOW, (None,) * POINTS, bytes(POINTS)))
    assert "<path" not in empty and "No successful run in the last hour" in empty


def test_the_json_shape() -> None:
    document = json.loads(checks_json(make_overview(), Filter()))
    assert document["version"] == "1.2.3" and document["generated_at"] == NOW
    assert document["config"] == {"source": "/etc/<netsentry>.toml",
                                  "last_reload_successful": True}
    assert document["summary"] == {"checks": 4, "up": 2, "down": 1, "pending": 1}
    assert document["history"] == {"step_seconds": STEP, "points": POINTS,
                                   "day_step_seconds": 900.0, "day_points": 96}
    checks = {c["name"]: c for c in document["checks"]}
    web, xss, new = checks["web"], checks[XSS], checks["new"]
    assert web["kind"] == "tcp" and web["target"] == "127.0.0.1:80"
    assert web["labels"] == {"team": "edge"} and new["labels"] == {}
    assert web["state"] == "up" and web["runs"] == 2 and web["failures"] == {}
    assert web["last"] == {"success": True, "reason": None, "message": "",
                           "duration_seconds": 0.002, "finished_at": NOW - 2, "details": {}}
    assert web["last_success_at"] == NOW - 2
    latency = web["latency"]
    assert latency["start"] == NOW - 30 - (POINTS - 1) * STEP
    assert len(latency["slowest_seconds"]) == len(latency["failed"]) == POINTS
    assert latency["slowest_seconds"][-2:] == [0.004, 0.002]
    assert web["group"] == "tcp" and web["availability"] == {
        "hour": {"runs": 2, "successful": 2, "ratio": 1.0},
        "day": {"runs": 2, "successful": 2, "ratio": 1.0}}
    assert new["availability"]["day"] == {"runs": 0, "successful": 0, "ratio": None}
    assert xss["state"] == "down" and xss["failures"] == {"refused": 1}
    assert xss["last"]["reason"] == "refused"
    assert xss["last"]["details"] == {"address": "<127.0.0.1>"}
    assert xss["latency"]["failed"][-1] is True and xss["latency"]["slowest_seconds"][-1] is None
    assert new["state"] == "pending" and new["last"] is None and new["interval_seconds"] == 30


def test_rendered_in_parts_of_bounded_size_that_add_up_to_the_whole() -> None:
    view = make_overview()
    parts = list(pages.status_page_parts(view, Filter(), rows_per_part=1))
    assert "".join(parts) == pages.status_page(view, Filter())
    assert max(part.count('<tr class="check') for part in parts) == 1
    parts = list(checks_json_parts(view, Filter("tcp"), checks_per_part=1))
    assert json.loads("".join(parts)) == json.loads(checks_json(view, Filter("tcp")))
    assert max(part.count('"name":') for part in parts) == 1
    assert len(json.loads("".join(parts))["checks"]) == 2


def test_the_refresh_slows_down_for_large_pages() -> None:
    assert [pages.refresh_seconds(n) for n in (0, 1000, 2500, 10_000)] == [10, 10, 25, 100]
    assert '<body data-refresh="10">' in pages.status_page(make_overview(), Filter())


def test_served_by_the_agent(tmp_path: Path) -> None:
    path = tmp_path / "netsentry.toml"
    with served_agent(path) as agent:
        status, headers, body = agent.fetch("GET", "/api/v1/checks?failing=1")
        assert status == 200 and headers["Content-Type"] == "application/json"
        document = json.loads(body)
        assert [c["name"] for c in document["checks"]] == [XSS]
        assert document["config"]["source"] == str(path)
        assert any(document["checks"][0]["latency"]["failed"])
        status, headers, body = agent.fetch("GET", "/?q=frontend")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Content-Security-Policy"] == pages.CSP
        assert headers["X-Content-Type-Options"] == "nosniff"
        rows = Elements(body.decode()).rows()
        assert "hidden" not in rows["web-frontend"] and "hidden" in rows[XSS]
        assert agent.fetch("POST", "/api/v1/checks")[0] == 405
        gzipped = {"Accept-Encoding": "gzip"}
        status, headers, body = agent.fetch("GET", "/", headers=gzipped)
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert XSS in Elements(gzip.decompress(body).decode()).rows()
        status, headers, body = agent.fetch("GET", "/api/v1/checks", headers=gzipped)
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert XSS in [c["name"] for c in json.loads(gzip.decompress(body))["checks"]]
