"""Where the agent's pages live: `--web.route-prefix` and `--web.external-url`, as in Prometheus.

- The external URL is where people and Prometheus reach the agent, through whatever reverse
  proxy; its path is the one redirects point under. The route prefix is the path the agent
  itself serves under, and defaults to the external URL's path (a proxy passing paths as they
  are). They differ behind a proxy that rewrites paths: `location /mon/ { proxy_pass
  http://agent/; }` is `--web.external-url=https://host/mon/` with the route prefix `/`.
  Without an external URL, the external path is the route prefix.
- As Prometheus does, a prefix is normalised rather than refused: slashes are trimmed at both
  ends and one put in front (`netsentry/` serves under `/netsentry`). What cannot be a path
  — a query, a fragment, `.` or `..` segments, spaces, control characters — is an error.
- Every route is served under the prefix; the prefix alone, and `/` outside it, redirect to
  the status page (`PREFIX/`, under the external path). Links in the pages are relative, so
  they work under any prefix and through any proxy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Characters a path segment may hold unescaped (RFC 3986 pchar), and percent escapes.
_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+")


@dataclass(frozen=True, slots=True)
class Prefix:
    """`route` is where the agent serves ("/" or "/a/b", no trailing slash); `external` is
    the path the outside world reaches it at, in the same form, for redirects."""

    route: str = "/"
    external: str = "/"

    def strip(self, path: str) -> str | None:
        """The route path under the prefix (`/metrics`), or None if `path` is not under it."""
        if self.route == "/":
            return path
        if path.startswith(self.route + "/"):
            return path[len(self.route):]
        return None

    def home(self) -> str:
        """Where a redirect to the status page points: the external path's `/`."""
        return self.external.rstrip("/") + "/"


def normalise(text: str, flag: str = "--web.route-prefix") -> str:
    """A path prefix as Prometheus normalises it: "/" + the text trimmed of slashes."""
    trimmed = text.strip("/")
    if not trimmed:
        return "/"
    for segment in trimmed.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"{flag} {text!r}: empty, '.' and '..' segments are not allowed")
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(f"{flag} {text!r}: {segment!r} is not a URL path segment "
                             "(no spaces, '?', '#' or control characters; escape with %XX)")
    return "/" + trimmed


def external_path(url: str) -> str:
    """The path of `--web.external-url`, normalised; the URL must be absolute http(s)."""
    flag = "--web.external-url"
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"{flag} {url!r}: spaces and non-ASCII characters must be %-escaped")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{flag} {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{flag} {url!r}: want an absolute URL, e.g. "
                         "https://monitoring.example.org/netsentry/")
    if parts.query or parts.fragment:
        raise ValueError(f"{flag} {url!r}: a query or fragment cannot be part of it")
    return normalise(parts.path, flag)


def make(external_url: str | None, route_prefix: str | None) -> Prefix:
    """The prefixes from the two flags; raises ValueError with a one-line message."""
    external = external_path(external_url) if external_url else None
    route = normalise(route_prefix) if route_prefix is not None else external or "/"
    # Without an external URL nothing rewrites paths on the way: the agent is where it serves.
    return Prefix(route, external or route)


ROOT = Prefix()
