"""SVG badges of a check or a group, for READMEs and wikis: `/badge/CHECK/uptime.svg`,
`/badge/CHECK/latency.svg`, `/badge/group/GROUP/uptime.svg` and `…/latency.svg`.

Drawn like shields.io's "flat" badges (a grey label, a coloured message, 20 px high), from
the live store on the event loop, with no snapshot to copy: a badge reads only its own
checks. Text widths are estimated from Verdana's advance widths at 11 px (the font the badge
asks for; DejaVu Sans, its fallback here, is as wide within a pixel or two a word), since an
SVG cannot size a box to its text by itself.

Every name is text in the SVG, escaped for XML (`&`, `<`, `>`, quotes), and the answer forbids
everything else (`Content-Security-Policy: default-src 'none'`): an SVG opened on its own is a
document that could carry script, this one carries none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from html import escape

from exporter.history import Availability, LatencyHistory
from exporter.store import CheckState
from exporter.web.status import percent

CONTENT_TYPE = "image/svg+xml; charset=utf-8"
# A minute, like the page's data: a README's badge proxy (GitHub's camo) may keep it that long.
HEADERS = (("Cache-Control", "max-age=60"), ("X-Content-Type-Options", "nosniff"),
           ("Content-Security-Policy", "default-src 'none'"))
METRICS = ("uptime", "latency")
WINDOWS = {"24h": "24h", "1d": "24h", "1h": "1h"}
MAX_LABEL = 60  # characters of a label or message drawn; longer ones end in "…"

GREY, BLUE = "#9f9f9f", "#007ec6"
# Shields' palette, by availability: at least 99.9 %, 99 %, 95 %, 90 %, below.
_UPTIME_COLOURS = ((0.999, "#4c1"), (0.99, "#97ca00"), (0.95, "#dfb317"), (0.9, "#fe7d37"))
RED = "#e05d44"

# Verdana's advance widths at 11 px, rounded to a tenth, by the characters sharing them.
_WIDTHS = {**dict.fromkeys(" ", 3.9), **dict.fromkeys("il.,:;'|!", 3.1),
           **dict.fromkeys("fjrtI()[]{}/-", 4.3), **dict.fromkeys("abcdeghknopqsuvxyz", 6.6),
           **dict.fromkeys("0123456789$_", 7.0), **dict.fromkeys("?", 6.0),
           **dict.fromkeys("#+<=>^~", 9.2), **dict.fromkeys("mw", 10.1),
           **dict.fromkeys("MW%", 11.1), **dict.fromkeys("ABCDEFGHJKLNOPQRSTUVXYZ&", 7.6)}
_OTHER = 7.6


@dataclass(frozen=True, slots=True)
class Badge:
    label: str
    message: str
    colour: str

    def svg(self) -> str:
        return render(self.label, self.message, self.colour)


def text_width(text: str) -> float:
    return sum(_WIDTHS.get(c, _OTHER) for c in text)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def render(label: str, message: str, colour: str) -> str:
    """The SVG of one badge: `label` on grey, `message` on `colour`."""
    label, message = _clip(label), _clip(message)
    left = round(text_width(label) + 10)
    right = round(text_width(message) + 10)
    width = left + right
    title = escape(f"{label}: {message}")
    shown_label, shown_message = escape(label), escape(message)
    # Text at 10× and scaled down, as shields draws it, so that its x lands on a tenth.
    lx, mx = left * 5, left * 10 + right * 5
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,'
        'sans-serif" font-size="110" transform="scale(.1)">'
        f'<text x="{lx}" y="150" fill="#010101" fill-opacity=".3">{shown_label}</text>'
        f'<text x="{lx}" y="140">{shown_label}</text>'
        f'<text x="{mx}" y="150" fill="#010101" fill-opacity=".3">{shown_message}</text>'
        f'<text x="{mx}" y="140">{shown_message}</text></g></svg>')


def etag(svg: str) -> str:
    return '"' + sha256(svg.encode()).hexdigest()[:20] + '"'


def uptime_colour(ratio: float | None) -> str:
    if ratio is None:
        return GREY
    return next((colour for floor, colour in _UPTIME_COLOURS if ratio >= floor), RED)


def uptime(label: str, histories: Iterable[LatencyHistory], window: str, now: float) -> Badge:
    """Successful runs / runs of the checks over the last hour or day."""
    total = Availability(0, 0)
    for history in histories:
        total += history.hour(now) if window == "1h" else history.last_day(now)
    return Badge(label, f"{percent(total.ratio)} {window}" if total.runs else "no runs yet",
                 uptime_colour(total.ratio))


def latency(label: str, states: Iterable[CheckState]) -> Badge:
    """The last run's duration; of several checks the slowest, or how many are down."""
    down, slowest = 0, 0.0
    ran = False
    for state in states:
        last = state.last
        if last is None:
            continue
        ran = True
        if last.success:
            slowest = max(slowest, last.duration)
        else:
            down += 1
    if not ran:
        return Badge(label, "no runs yet", GREY)
    if down:
        return Badge(label, "down" if down == 1 else f"{down} down", RED)
    return Badge(label, _duration(slowest), BLUE)


def _duration(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 1:
        return f"{seconds * 1e6:.0f} µs"
    if ms < 1000:
        return f"{ms:.3g} ms"
    return f"{seconds:.3g} s"


@dataclass(frozen=True, slots=True)
class Asked:
    """What a badge path asks for: a check (by name, and a target list's target) or a group."""

    group: bool
    name: str
    metric: str


def parse_path(path: str, query: Mapping[str, str]) -> Asked | None:
    """`/badge/NAME/METRIC.svg`, `/badge/group/NAME/METRIC.svg`, or `/badge/METRIC.svg` with
    `?check=NAME` or `?group=NAME` (for names the path form cannot tell apart)."""
    rest = path.removeprefix("/badge/")
    head, _, file = rest.rpartition("/")
    metric = file.removesuffix(".svg")
    if not file.endswith(".svg") or metric not in METRICS:
        return None
    if not head:
        if query.get("group"):
            return Asked(True, query["group"], metric)
        return Asked(False, query["check"], metric) if query.get("check") else None
    if head.startswith("group/") and len(head) > len("group/"):
        return Asked(True, head[len("group/"):], metric)
    return Asked(False, head, metric)


def badge(asked: Asked, states: Mapping[str, CheckState],
          histories: Mapping[str, LatencyHistory], query: Mapping[str, str],
          now: float) -> Badge | None:
    """The badge asked for, or None when no check has that name (or target), or that group."""
    target = query.get("target")
    if asked.group:
        keys = [k for k, s in states.items() if s.check.section == asked.name]
    else:
        keys = [k for k, s in states.items() if s.check.name == asked.name
                and (target is None or s.check.target == target)]
    if not keys:
        return None
    label = query.get("label") or (asked.name if target is None else f"{asked.name} {target}")
    if asked.metric == "uptime":
        window = WINDOWS.get(query.get("window", "24h"), "24h")
        return uptime(label, (histories[k] for k in keys), window, now)
    return latency(label, (states[k] for k in keys))


def missing(asked: Asked | None) -> str:
    """The badge of a check or group there is none of (served with a 404)."""
    return render(asked.name if asked else "badge", "not found", GREY)
