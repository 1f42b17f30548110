"""The human page at `/`: the agent, its version, and every check's state, all escaped."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from exporter.store import CheckState

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem}
tr:nth-child(even){background:#f4f4f4}.ok{color:#0a7a2f}.failing{color:#b00020;font-weight:bold}
.pending{color:#777}td.num{text-align:right;font-variant-numeric:tabular-nums}
@media(max-width:40rem){td,th{padding:.2rem}}
"""


def _state(state: CheckState) -> tuple[str, str]:
    if state.last is None:
        return "pending", "pending"
    return ("ok", "up") if state.last.success else ("failing", "down")


def status_page(version: str, states: Iterable[CheckState], config_source: str,
                reload_ok: bool) -> str:
    rows = []
    for state in states:
        css, word = _state(state)
        last = state.last
        duration = f"{last.duration * 1000:.1f} ms" if last else ""
        reason = "" if last is None or last.reason is None else last.reason.value
        message = "" if last is None else last.message
        check = state.check
        rows.append(
            f'<tr><td>{escape(check.name)}</td><td>{escape(check.kind)}</td>'
            f"<td>{escape(check.target)}</td><td class=\"{css}\">{word}</td>"
            f'<td class="num">{duration}</td><td>{escape(reason)}</td>'
            f"<td>{escape(message)}</td></tr>"
        )
    reload_note = "" if reload_ok else (
        '<p class="failing">The last config reload failed; the previous config is running.</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>netsentry</title><style>{_STYLE}</style></head>
<body><h1>netsentry {escape(version)}</h1>
<p><a href="/metrics">Metrics</a> · config: {escape(config_source)}</p>{reload_note}
<table><thead><tr><th>Check</th><th>Kind</th><th>Target</th><th>State</th><th>Last duration</th>
<th>Reason</th><th>Message</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody></table></body></html>
"""
