"""The status page's groups, availability, dark scheme and badges, in a real headless Chromium
against a real agent that keeps its history with --storage.path.

The badges are looked at as a README would show them: <img> elements of another page (served
from another port) that load them from the agent, at their own size, and opened on their own, where
Chromium lays out their text in the font it has (DejaVu Sans standing in for Verdana): every
word must fit its box. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.chromium import Browser, Page
from tests.support.httpservers import HttpServer, Reply
from tests.support.servers import AcceptServer, closed_port
from tests.web.served import XSS, states

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
GROUP = "Edge & <Mail>"
Opener = Callable[..., Page]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """Two checks in a group of their own (one up, one down and named like markup), one dns
    check in its kind's section."""
    directory = tmp_path_factory.mktemp("agent")
    path = directory / "netsentry.toml"
    with AcceptServer() as server:
        checks = (("web-frontend", "tcp", f"127.0.0.1:{server.port}", GROUP),
                  (XSS, "tcp", f"127.0.0.1:{closed_port()}", GROUP),
                  ("resolver-localhost", "dns", "localhost", None))
        path.write_text('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n' + "".join(
            f"\n[[checks]]\nname = {json.dumps(name)}\nkind = {json.dumps(kind)}\n"
            f"target = {json.dumps(target)}\n"
            + (f"group = {json.dumps(group)}\n" if group else "")
            for name, kind, target, group in checks))
        with Agent(path, "--storage.path", str(directory / "data")) as agent:
            agent.wait_for(lambda: states(agent) == {"web-frontend": "up", XSS: "down",
                                                     "resolver-localhost": "up"},
                           what="every check to have run")
            yield agent


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(tmp_path_factory.mktemp("chromium")) as browser:
        yield browser


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Opener]:
    pages: list[Page] = []

    def open_page(width: int = 1100, height: int = 700, scheme: str = "light") -> Page:
        page = browser.page(width, height)
        page.send("Emulation.setEmulatedMedia",
                  {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
        pages.append(page)
        return page

    yield open_page
    for page in pages:
        page.close()


SECTIONS = """Array.from(document.querySelectorAll("section.kind"), (section) => ({
  group: section.querySelector("h2").firstChild.textContent.trim(),
  summary: section.querySelector("h2 small").textContent,
  badge: section.querySelector("h2 a").href,
  rows: Array.from(section.querySelectorAll("tr.check"), (row) => ({
    name: row.querySelector("td.name b").textContent,
    availability: Array.from(row.querySelectorAll("td.avail span"), (s) => s.textContent),
    title: row.querySelector("td.avail span").title,
  })),
}))"""


def test_checks_in_their_groups_with_their_availability(agent: Agent, open_page: Opener) -> None:
    page = open_page()
    base = f"http://127.0.0.1:{agent.port}/"
    page.navigate(base)
    sections = page.evaluate(SECTIONS)
    assert [s["group"] for s in sections] == [GROUP, "dns"]  # markup in a group is text
    edge, dns = sections
    assert edge["summary"].startswith("2 checks, 1 failing · ")
    assert edge["summary"].endswith("% up over 24 h")
    assert edge["badge"] == base + "badge/group/" + urllib.parse.quote(GROUP, safe="") + \
        "/uptime.svg"
    rows = {row["name"]: row for row in edge["rows"]}
    assert rows["web-frontend"]["availability"] == ["100%", "100%"]
    assert rows[XSS]["availability"] == ["0%", "0%"]
    assert rows[XSS]["title"].startswith("0 of ") and "runs succeeded in the last hour" in \
        rows[XSS]["title"]
    assert [row["name"] for row in dns["rows"]] == ["resolver-localhost"]
    assert page.evaluate('document.querySelectorAll("img, script[src]").length') == 0
    # The filter finds a group by its name.
    page.click('input[name="q"]')
    page.type("edge")
    assert page.evaluate('Array.from(document.querySelectorAll("tr.check"))'
                         '.filter((r) => r.offsetParent !== null).length') == 2


COLOURS = """(() => {
  const style = (selector, property) =>
    getComputedStyle(document.querySelector(selector))[property];
  return {body: style("body", "backgroundColor"), text: style("body", "color"),
          up: style("tr.check.up", "backgroundColor"),
          down: style("tr.check.down", "backgroundColor"),
          badge: style("tr.check.down .badge", "backgroundColor"),
          link: style("nav a", "color"), spark: style("svg.spark", "backgroundColor"),
          scheme: matchMedia("(prefers-color-scheme: dark)").matches};
})()"""


def brightness(css: str) -> float:
    """0 (black) to 255 (white), of `rgb(r, g, b)` or `rgba(...)`."""
    r, g, b = (float(v) for v in css[css.index("(") + 1:css.index(")")].split(",")[:3])
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_dark_mode_follows_the_browser(agent: Agent, open_page: Opener) -> None:
    shown = {}
    for scheme in ("light", "dark"):
        page = open_page(scheme=scheme)
        page.navigate(f"http://127.0.0.1:{agent.port}/")
        shown[scheme] = page.evaluate(COLOURS)
        page.screenshot(ARTIFACTS / f"status-page-{scheme}.png")
    light, dark = shown["light"], shown["dark"]
    assert not light["scheme"] and dark["scheme"]
    assert brightness(light["body"]) > 200 and brightness(light["text"]) < 60
    assert brightness(dark["body"]) < 40 and brightness(dark["text"]) > 200
    assert brightness(dark["spark"]) < 60 and brightness(dark["link"]) > 120
    # A failing row stands out in both, and its badge is red in both.
    for colours in (light, dark):
        assert colours["down"] != colours["up"]
        r, g, b = (int(v) for v in colours["badge"][4:-1].split(","))
        assert r > 150 and g < 80 and b < 90
    assert dark["down"] != light["down"]


def test_badges_render_in_a_page_and_their_text_fits(agent: Agent, open_page: Opener) -> None:
    base = f"http://127.0.0.1:{agent.port}/badge/"
    wanted = {
        "uptime": "web-frontend/uptime.svg",
        "latency": "web-frontend/latency.svg",
        "markup": urllib.parse.quote(XSS, safe="") + "/uptime.svg",
        "group": "group/" + urllib.parse.quote(GROUP, safe="") + "/uptime.svg",
        "group-latency": "group/" + urllib.parse.quote(GROUP, safe="") + "/latency.svg",
        "hour": "web-frontend/uptime.svg?window=1h&label=" + urllib.parse.quote("Our site"),
        "missing": "no-such-check/uptime.svg",
    }
    readme = "<!DOCTYPE html><title>README</title><h1>Status</h1>" + "".join(
        f'<p><img id="{key}" alt="{key}" src="{base}{path}"></p>' for key, path in wanted.items())
    page = open_page(800, 500)
    # A wiki of another origin (another port of loopback) showing them.
    with HttpServer({"/README.html": Reply(200, readme.encode(), (
            ("Content-Type", "text/html; charset=utf-8"),))}) as wiki:
        page.navigate(wiki.url("/README.html"))
    images = page.evaluate("""Object.fromEntries(Array.from(document.images, (img) =>
        [img.id, {done: img.complete, width: img.naturalWidth, height: img.naturalHeight}]))""")
    page.screenshot(ARTIFACTS / "badges-in-a-page.png")
    for key, path in wanted.items():
        status, _, body = agent.fetch("GET", "/badge/" + path)
        assert status == (404 if key == "missing" else 200), key
        width = int(body.decode().split('width="', 1)[1].split('"', 1)[0])
        assert images[key]["done"] and images[key]["height"] == 20, key
        if key in ("uptime", "markup", "hour", "missing"):  # the others' text moves run by run
            assert images[key]["width"] == width, key
        else:
            assert abs(images[key]["width"] - width) <= 20, key
    assert page.events("Page.javascriptDialogOpening") == []
    # Opened on its own, each word sits inside its own box, whatever the font.
    for key, path in wanted.items():
        badge = open_page(400, 100)
        badge.navigate(base + path)
        fit = badge.evaluate("""(() => {
          const rects = document.querySelectorAll("g[clip-path] rect");
          const texts = document.querySelectorAll("text:not([fill-opacity])");
          return Array.from(texts, (text, i) => ({
            text: text.textContent, length: text.getComputedTextLength() * 0.1,
            box: Number(rects[i].getAttribute("width"))}));
        })()""")
        assert len(fit) == 2, key
        for word in fit:
            assert 0 < word["length"] <= word["box"] - 2, (key, word)
        if key == "markup":
            assert fit[0]["text"] == XSS
            assert badge.evaluate('document.querySelectorAll("img, script").length') == 0
