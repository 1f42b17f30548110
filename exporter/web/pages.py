"""The human page at `/`: every check in its group (`group`, else its kind), its state, its
availability over the last hour and day, its last result and last hour's latency.

One self-contained document: its style and script are inline and allowed by hash in the
Content-Security-Policy (`CSP`), which forbids everything else — no external asset, no inline
event handler, no request but back to the agent — so the page works offline, and a check name
that is HTML shows as text twice over: it is escaped here, and would be inert if it were not.

The filter is a GET form (`?q=words&failing=1`): the server marks what it hides, so it works
without the script; the script applies it as one types and keeps it in the address. The page
refreshes itself by fetching its own address every `refresh_seconds()` and swapping in the
new `<main>`: one renderer (this module) for the first view and every refresh, the filter and
the caret in it untouched, open details kept open. Without script, a `<noscript>` meta refresh
reloads the page instead. Colours follow the browser's `prefers-color-scheme`: a dark page
for a dark desktop, with the same meaning in each colour.
"""

from __future__ import annotations

import time
from base64 import b64encode
from collections.abc import Iterator
from hashlib import sha256
from html import escape
from urllib.parse import quote

from exporter.history import NO_RUNS, POINTS, Availability, Window
from exporter.web.status import DOWN, PENDING, UP, CheckView, Filter, Overview, percent

REFRESH_SECONDS = 10

_STYLE = """
:root{color-scheme:light dark;--fg:#222;--bg:#fff;--ok:#0a7a2f;--down:#b00020;--down-bg:#fde8eb;
 --muted:#666;--line:#ddd;--spark-bg:#f7f7f7;--spark:#1f5fbf;--link:#0645ad;--low:#a15c00}
@media(prefers-color-scheme:dark){:root{--fg:#e4e4e4;--bg:#15171a;--ok:#1f8a45;--down:#d23a4e;
 --down-bg:#3b1d23;--muted:#9aa0a6;--line:#34383d;--spark-bg:#202328;--spark:#7fb0ff;
 --link:#8ab4f8;--low:#f0a64a}}
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:.75rem;max-width:75rem;
 color:var(--fg);background:var(--bg)}
a{color:var(--link)}
input,button{color:inherit;background:var(--bg);border:1px solid var(--line)}
h1{font-size:1.3rem;margin:0 .5rem 0 0;display:inline}h2{font-size:1.1rem;margin:1.2rem 0 .3rem}
h1 small,h2 small{color:var(--muted);font-weight:normal}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:baseline}
form{display:flex;flex-wrap:wrap;gap:.3rem 1rem;align-items:center;flex:1 1 20rem}
input[type=search]{flex:1 1 12rem;font:inherit;padding:.3rem .5rem;min-width:0}
.summary,.note{margin:.6rem 0}.note{color:var(--down);font-weight:bold}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th:nth-child(1){width:26%}th:nth-child(2){width:5.5rem}th:nth-child(3){width:7rem}
th:nth-child(4){width:13rem}th:nth-child(5){width:7rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.85rem;color:var(--muted);font-weight:normal}
tr.down{background:var(--down-bg)}tr.down td:first-child{box-shadow:inset 4px 0 var(--down)}
.name{overflow-wrap:anywhere}.name small,.when{color:var(--muted)}
.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:.85rem;
 font-weight:bold;color:#fff;background:var(--muted)}
.up .badge{background:var(--ok)}.down .badge{background:var(--down)}
.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.why code{color:var(--down);font-weight:bold}.why{overflow-wrap:anywhere}
svg.spark{display:inline-block;vertical-align:middle;width:120px;height:24px;margin-right:.4rem;
 background:var(--spark-bg)}
.spark .line{fill:none;stroke:var(--spark);stroke-width:1.5;stroke-linecap:round;
 stroke-linejoin:round}
.avail small{color:var(--muted)}.avail .low{color:var(--low);font-weight:bold}
h2 a{font-size:.8rem;font-weight:normal}
.spark .fail{stroke:var(--down);stroke-width:2;opacity:.45}
details{font-size:.85rem}summary{cursor:pointer;color:var(--muted)}
#offline{color:var(--down)}
@media(max-width:40rem){
 thead{display:none}table,tbody,tr{display:block}
 tr{border-bottom:1px solid var(--line);padding:.3rem 0}
 td{display:inline-block;border:0;padding:.15rem .5rem;vertical-align:middle}
 td.name,td.why{display:block}td.why:empty{display:none}
}
"""

_SCRIPT = """
"use strict";
(() => {
  const form = document.getElementById("filter");
  const words = form.elements.q, failing = form.elements.failing;
  const apply = () => {
    const wanted = words.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let shown = 0;
    for (const group of document.querySelectorAll("section.kind")) {
      let inGroup = 0;
      for (const row of group.querySelectorAll("tr.check")) {
        const text = row.dataset.search;
        const show = (!failing.checked || row.classList.contains("down")) &&
          wanted.every((word) => text.includes(word));
        row.hidden = !show;
        inGroup += show ? 1 : 0;
      }
      group.hidden = inGroup === 0;
      shown += inGroup;
    }
    const none = document.getElementById("none");
    if (none) none.hidden = shown > 0;
    const query = new URLSearchParams();
    if (words.value.trim()) query.set("q", words.value.trim());
    if (failing.checked) query.set("failing", "1");
    const search = query.toString();
    history.replaceState(null, "", search ? "?" + search : location.pathname);
  };
  const offline = document.getElementById("offline");
  const refresh = async () => {
    if (!document.hidden) {
      try {
        const response = await fetch(location.pathname + location.search, {cache: "no-store"});
        if (!response.ok) throw new Error("HTTP " + response.status);
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("live");
        if (!fresh) throw new Error("no checks in the answer");
        const open = new Set(Array.from(document.querySelectorAll("tr.check details[open]"),
          (details) => details.closest("tr").dataset.check));
        for (const row of fresh.querySelectorAll("tr.check")) {
          const details = row.querySelector("details");
          if (details && open.has(row.dataset.check)) details.open = true;
        }
        document.getElementById("live").replaceWith(document.adoptNode(fresh));
        document.title = page.title;
        offline.hidden = true;
        apply();
      } catch (error) {
        offline.textContent = "Not refreshed: " + error.message + ". Retrying.";
        offline.hidden = false;
      }
    }
    setTimeout(refresh, Number(document.body.dataset.refresh) * 1000);
  };
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  apply();
  setTimeout(refresh, Number(document.body.dataset.refresh) * 1000);
})();
"""


def _hash(text: str) -> str:
    return "'sha256-" + b64encode(sha256(text.encode()).digest()).decode() + "'"


# Everything the page needs is in the page; the only request it may make is back to the agent.
CSP = (f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def refresh_seconds(checks: int) -> int:
    """How often the page refreshes: every 10 s up to 1,000 checks, then 10 s more per 1,000,
    so that a page left open costs the agent about the same share of a core at any size."""
    return max(REFRESH_SECONDS, REFRESH_SECONDS * checks // 1000)


def status_page(overview: Overview, only: Filter) -> str:
    return "".join(status_page_parts(overview, only))


def status_page_parts(overview: Overview, only: Filter, rows_per_part: int = 100,
                      ) -> Iterator[str]:
    """The page in parts of at most `rows_per_part` rows, for the agent to send between runs."""
    groups: dict[str, list[tuple[CheckView, str, bool]]] = {}
    for i, view in enumerate(overview.checks, 1):
        text = view.search_text
        groups.setdefault(view.state.check.section, []).append(
            (view, text, only.accepts(view.status, text)))
        if i % rows_per_part == 0:
            yield ""  # a turn of the event loop between slices of this pass too
    shown = sum(visible for rows in groups.values() for _, _, visible in rows)
    yield _head(overview, only, shown)
    for group in sorted(groups):
        rows = groups[group]
        down = sum(1 for view, _, _ in rows if view.status == DOWN)
        day = sum((view.last_day for view, _, _ in rows), NO_RUNS)
        counts = f"{len(rows)} check{'s' if len(rows) != 1 else ''}" + (
            f", {down} failing" if down else "") + (
            f" · {percent(day.ratio)} up over 24 h" if day.runs else "")
        hidden = "" if any(visible for _, _, visible in rows) else " hidden"
        badge = "badge/group/" + quote(group, safe="") + "/uptime.svg"
        yield (f'<section class="kind"{hidden}><h2>{escape(group)} <small>{counts}</small> '
               f'<a href="{escape(badge)}" title="This group\'s uptime badge, for a README '
               'or a wiki">badge</a></h2>\n'
               '<table><thead><tr><th>Check</th><th>State</th><th>Up 1 h · 24 h</th>'
               '<th>Latency, last hour</th><th>Last run</th><th>Reason</th></tr></thead>'
               '<tbody>\n')
        for first in range(0, len(rows), rows_per_part):
            yield "".join(_row(view, text, visible, overview.now)
                          for view, text, visible in rows[first:first + rows_per_part])
        yield "</tbody></table></section>\n"
    yield f"</main>\n<script>{_SCRIPT}</script>\n</body></html>\n"


def _head(overview: Overview, only: Filter, shown: int) -> str:
    down = overview.count(DOWN)
    total = len(overview.checks)
    title = f"netsentry: {down} of {total} failing" if down else "netsentry"
    failing_box = " checked" if only.failing_only else ""
    refresh = refresh_seconds(total)
    as_of = time.strftime("%H:%M:%S UTC", time.gmtime(overview.now))
    reload_note = "" if overview.reload_ok else (
        '<p class="note">The last config reload failed; the previous config is running.</p>\n')
    none_hidden = " hidden" if shown or not total else ""
    empty = "" if total else "<p>No checks are configured.</p>\n"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_STYLE}</style>
<noscript><meta http-equiv="refresh" content="{refresh * 3}"></noscript></head>
<body data-refresh="{refresh}">
<header><h1>netsentry <small>{escape(overview.version)}</small></h1>
<form id="filter" method="get" action="./" role="search">
<input type="search" name="q" value="{escape(only.text)}" aria-label="Filter checks"
 placeholder="Filter by name, target, reason…" autocomplete="off">
<label><input type="checkbox" name="failing" value="1"{failing_box}> failing only</label>
<noscript><button>Filter</button></noscript></form>
<nav><a href="metrics">Metrics</a> · <a href="api/v1/checks">JSON</a></nav></header>
<p id="offline" hidden></p>
<main id="live"><p class="summary">{total} checks: <b>{down} failing</b>, \
{overview.count(UP)} up, {overview.count(PENDING)} pending · \
config {escape(overview.config_source)} · as of {as_of}</p>
{reload_note}{empty}<p id="none"{none_hidden}>No check matches the filter.</p>
"""


def _row(view: CheckView, search_text: str, visible: bool, now: float) -> str:
    check, last = view.state.check, view.state.last
    status = view.status
    if last is None:
        latency = when = why = ""
    else:
        latency = f"{_ms(last.duration)} ms"
        ago = max(0.0, now - last.finished)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last.finished))
        when = f'<time datetime="{stamp}" title="{stamp}">{_ago(ago)}</time>'
        why = escape(last.message)
        if last.reason is not None:
            why = f"<code>{escape(last.reason.value)}</code> {why}"
        if last.details:  # what the run found, one click away
            facts = "<br>".join(f"{escape(k)}: {escape(v)}" for k, v in last.details)
            why += f"<details><summary>details</summary>{facts}</details>"
    under = " ".join((check.target, *(f"{k}={v}" for k, v in check.labels))).strip()
    target = f"<br><small>{escape(under)}</small>" if under else ""
    name = escape(check.name)
    return (
        # data-check tells the row apart for the script (a target list's rows share a name).
        f'<tr class="check {status}" data-check="{escape(check.key.replace(chr(9), " "))}" '
        f'data-search="{escape(search_text)}"'
        f'{"" if visible else " hidden"}><td class="name"><b>{name}</b>{target}</td>'
        f'<td><span class="badge">{status}</span></td>'
        f'<td class="num avail">{_availability(view.last_hour, "hour")} <small>1 h</small><br>'
        f'{_availability(view.last_day, "24 hours")} <small>24 h</small></td>'
        f'<td class="num">{_sparkline(view.hour)}{latency}</td>'
        f'<td class="when">{when}</td><td class="why">{why}</td></tr>\n')


# Path commands by slot, made once: slot i is drawn at x = 2i + 1 of a 120 x 24 box.
_MOVE = tuple(f"M{2 * i + 1} " for i in range(POINTS))
_LINE = tuple(f"L{2 * i + 1} " for i in range(POINTS))
_BAR = tuple(f"M{2 * i + 1} 0v24" for i in range(POINTS))


def _sparkline(hour: Window) -> str:
    """The slowest successful run of each minute as a line, minutes with failures as red bars;
    the scale runs from 0 to the hour's slowest, 20 pixels high."""
    top = max((v for v in hour.slowest if v is not None), default=0)
    line = []
    previous = False
    for i, value in enumerate(hour.slowest):
        if value is None:
            previous = False
        elif previous:
            line.append(f"{_LINE[i]}{22 - 20 * value // top}")
        else:
            line.append(f"{_MOVE[i]}{22 - 20 * value // (top or 1)}h0")
            previous = True
    failed = hour.failed.count(1)
    label = (f"Slowest run per minute over the last hour, up to {_ms(top / 1e6)} ms"
             if line else "No successful run in the last hour")
    paths = ""
    if failed:
        label += f"; failures in {failed} minute{'s' if failed != 1 else ''}"
        bars = "".join(_BAR[i] for i, bad in enumerate(hour.failed) if bad)
        paths = f'<path class="fail" d="{bars}"/>'
    if line:
        paths += f'<path class="line" d="{"".join(line)}"/>'
    return (f'<svg class="spark" viewBox="0 0 {2 * POINTS} 24" role="img" aria-label="{label}">'
            f"<title>{label}</title>{paths}</svg>")


def _availability(counted: Availability, span: str) -> str:
    """An availability with its runs in the tooltip, marked below 99 %."""
    if not counted.runs:
        return f'<span title="No run in the last {span}">–</span>'
    low = ' class="low"' if counted.successful < 0.99 * counted.runs else ""
    return (f'<span{low} title="{counted.successful} of {counted.runs} runs succeeded in the '
            f'last {span}">{percent(counted.ratio)}</span>')


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
