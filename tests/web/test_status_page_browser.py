"""The status page in a real headless Chromium, served by a real agent on loopback.

A person's view of it: the checks render grouped by kind, a failing check is marked in a way
one can see (computed styles, not just class names), typing in the filter and clicking "failing
only" hide what they should and keep it in the address, the page refreshes itself without
losing the filter, a check named like an HTML tag shows as text and no dialog opens, the page
fetches nothing but the agent, and it fits a phone's width. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import Agent
from tests.support.chromium import Browser, Page
from tests.web.served import XSS, served_agent

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
Opener = Callable[..., Page]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with served_agent(tmp_path_factory.mktemp("agent") / "netsentry.toml") as agent:
        yield agent


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(tmp_path_factory.mktemp("chromium")) as browser:
        yield browser


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Opener]:
    """Tabs for one test, closed after it (their refreshes would go on otherwise)."""
    pages: list[Page] = []

    def open_page(width: int = 1100, height: int = 700, mobile: bool = False) -> Page:
        pages.append(browser.page(width, height, mobile))
        return pages[-1]

    yield open_page
    for page in pages:
        page.close()


ROWS = """Array.from(document.querySelectorAll("tr.check"), (row) => ({
  name: row.querySelector("td.name b").textContent,
  kind: row.closest("section").querySelector("h2").firstChild.textContent.trim(),
  state: row.querySelector(".badge").textContent,
  visible: row.offsetParent !== null,
  background: getComputedStyle(row).backgroundColor,
  badge: getComputedStyle(row.querySelector(".badge")).backgroundColor,
}))"""


def rows(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate(ROWS))


def visible(page: Page) -> set[str]:
    return {row["name"] for row in rows(page) if row["visible"]}


def test_renders_marks_failures_and_shows_markup_as_text(agent: Agent, open_page: Opener) -> None:
    page = open_page()
    page.navigate(f"http://127.0.0.1:{agent.port}/")
    got = {row["name"]: row for row in rows(page)}
    assert set(got) == {"web-frontend", XSS, "resolver-localhost"}
    assert [got[n]["kind"] for n in ("web-frontend", XSS, "resolver-localhost")] == [
        "tcp", "tcp", "dns"]
    assert page.evaluate('Array.from(document.querySelectorAll("section.kind h2"), '
                         '(h) => h.firstChild.textContent.trim())') == ["dns", "tcp"]
    # Failing is visible: its own background and a red badge, unlike the rows that are up.
    failing, ok = got[XSS], got["web-frontend"]
    assert failing["state"] == "down" and ok["state"] == "up"
    assert failing["background"] != ok["background"]
    assert failing["badge"] == "rgb(176, 0, 32)" and ok["badge"] == "rgb(10, 122, 47)"
    assert "refused" in page.evaluate(
        'document.querySelector("tr.down td.why").textContent')
    # The markup in the name is text: no element was made from it, and no dialog opened.
    assert page.evaluate('document.querySelectorAll("img").length') == 0
    assert page.evaluate('document.querySelector("tr.down td.name b").textContent') == XSS
    assert page.events("Page.javascriptDialogOpening") == []
    # One sparkline per check, with the latest minute drawn for the checks that succeeded.
    assert page.evaluate('document.querySelectorAll("svg.spark").length') == 3
    assert page.evaluate('document.querySelectorAll("tr.up svg.spark path.line").length') == 2
    assert page.evaluate('document.querySelectorAll("tr.down svg.spark path.fail").length') == 1
    # Nothing was fetched but the agent, and nothing was blocked (our inline code ran).
    urls = [e["request"]["url"] for e in page.events("Network.requestWillBeSent")]
    assert urls and all(u.startswith(f"http://127.0.0.1:{agent.port}/") for u in urls), urls
    blocked = [e for e in page.events("Log.entryAdded")
               if "Content Security Policy" in e["entry"].get("text", "")]
    assert blocked == []
    page.screenshot(ARTIFACTS / "status-page.png")


def test_filtering_by_typing_and_clicking(agent: Agent, open_page: Opener) -> None:
    page = open_page()
    page.navigate(f"http://127.0.0.1:{agent.port}/")
    assert visible(page) == {"web-frontend", XSS, "resolver-localhost"}
    page.click('input[name="q"]')
    page.type("tcp")
    assert visible(page) == {"web-frontend", XSS}
    assert page.evaluate("location.search") == "?q=tcp"
    page.click('input[name="failing"]')
    assert visible(page) == {XSS}
    assert page.evaluate("location.search") == "?q=tcp&failing=1"
    assert page.evaluate('document.querySelector("section.kind:not([hidden]) h2")'
                         '.firstChild.textContent.trim()') == "tcp"
    page.screenshot(ARTIFACTS / "status-page-failing-only.png")
    # A word nothing has: everything hidden, and the page says so.
    page.send("Input.insertText", {"text": " nothing-has-this"})
    assert visible(page) == set()
    assert page.evaluate('document.getElementById("none").hidden') is False
    # The address keeps the filter: loading it again applies it, before any script runs too.
    page.navigate(f"http://127.0.0.1:{agent.port}/?q=resolver")
    assert visible(page) == {"resolver-localhost"}
    assert page.evaluate('document.querySelector("input[name=q]").value') == "resolver"


def test_refreshes_itself_and_keeps_the_filter(agent: Agent, open_page: Opener) -> None:
    page = open_page()
    page.navigate(f"http://127.0.0.1:{agent.port}/?failing=1")
    before = page.evaluate('document.querySelector(".summary").textContent')
    page.evaluate('document.getElementById("live").dataset.marker = "old"')
    since = len(page.browser.events)
    request = page.wait_for("Network.requestWillBeSent", timeout=25, since=since, type="Fetch")
    assert request["request"]["url"] == f"http://127.0.0.1:{agent.port}/?failing=1"
    page.wait_for("Network.loadingFinished", timeout=10, since=since,
                  requestId=request["requestId"])
    for _ in range(50):  # the swap follows the response within a few event-loop turns
        if page.evaluate('document.getElementById("live").dataset.marker') is None:
            break
        page.evaluate("new Promise((done) => setTimeout(done, 100))")
    assert page.evaluate('document.getElementById("live").dataset.marker') is None
    assert page.evaluate('document.querySelector(".summary").textContent') != before
    assert visible(page) == {XSS}
    assert page.evaluate('document.getElementById("offline").hidden') is True


def test_fits_a_phone(agent: Agent, open_page: Opener) -> None:
    page = open_page(390, 844, mobile=True)
    page.navigate(f"http://127.0.0.1:{agent.port}/")
    assert visible(page) == {"web-frontend", XSS, "resolver-localhost"}
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate('getComputedStyle(document.querySelector("thead")).display') == "none"
    page.screenshot(ARTIFACTS / "status-page-phone.png")
