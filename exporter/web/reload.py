"""The web config kept current while the agent runs, as exporter-toolkit keeps it.

exporter-toolkit reads its web config on every request, so a certificate renewed on disk
(cert-manager, certbot, a Vault agent) is served without a restart. netsentry does the same
by polling: every second it stats the web config file and the certificate, key and client CA
files it names (`watch.fingerprint`, through symlinks, as Kubernetes swaps secret volumes),
and loads the whole file again once what changed has stood still for a poll, so that a
certificate and its key replaced one after the other are read as a pair.

- A file that loads applies at once: new TLS handshakes get the new certificate, key and
  client CAs (the listener's context hands every handshake to the newest one in its SNI
  callback, which each ClientHello goes through, with or without a server name), new
  connections are held to the new `client_allowed_sans`, requests are checked against the new
  users and `rate_limit` (a changed one starts full), responses carry the new headers.
  Connections already open keep what they were accepted with.
- Some settings stay as the listener started: whether it speaks TLS at all, and what OpenSSL
  copies into a connection before that callback (TLS versions, client_auth_type, cipher
  suites, curve). A new file that changes any of them is refused, naming them: restart to
  apply it.
- A file that does not load, or is refused, changes nothing: the running settings stay, the
  problems are logged once, and `netsentry_web_config_last_reload_successful` is 0 until a
  file that loads is seen. While it is 0 the file is tried again every poll (a missing key
  file may appear without the web config changing), quietly unless the problems change.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from exporter.errors import ConfigError
from exporter.net.blocking import BlockingPool
from exporter.watch import Fingerprint, fingerprint
from exporter.web import webconfig
from exporter.web.auth import BasicAuth
from exporter.web.ratelimit import TokenBucket
from exporter.web.server import Request, Response
from exporter.web.webconfig import WebConfig, client_sans

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_REFUSALS_LOGGED = 256  # distinct refused certificates logged, at most


class LiveWebConfig:
    """The running web config: a guard, headers and TLS contexts that follow the file."""

    def __init__(self, first: WebConfig, *, open_paths: frozenset[str] = frozenset(),
                 poll: float = POLL_SECONDS) -> None:
        self.current = first
        self.ok = True  # whether the newest file seen is the one in effect
        self.poll = poll
        self._open_paths = open_paths
        self._pool: BlockingPool | None = None  # bcrypt's thread, from the first user on
        self._auth = self._guard_for(first)
        self._limiter = self._limiter_for(first)
        self._refused: set[tuple[str, ...]] = set()  # certificates' SANs refused and logged
        self._loaded = self._fingerprints(first)  # the files as the running config read them
        self._previous = self._loaded  # as the last poll saw them
        self._problems: list[str] = []
        # The context the listeners start with; each handshake moves on to the newest one.
        self.tls = first.tls
        if self.tls is not None:
            self.tls.sni_callback = self._newest_context

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.current.headers

    def header_list(self) -> tuple[tuple[str, str], ...]:
        """The headers, as the server asks for them at every response."""
        return self.current.headers

    async def guard(self, request: Request) -> Response | None:
        limiter = self._limiter
        if limiter is not None and request.path not in self._open_paths and not limiter.allow():
            return Response(429, b"Too Many Requests\n",
                            headers=(("Retry-After", str(limiter.retry_after())),))
        auth = self._auth
        return None if auth is None else await auth(request)

    def admit(self, peercert: Any) -> bool:
        """Whether a TLS client may go on: with `client_allowed_sans`, its verified
        certificate must carry one of them."""
        allowed = self.current.client_allowed_sans
        if not allowed:
            return True
        sans = client_sans(peercert)
        if any(san in allowed for san in sans):
            return True
        key = tuple(sans)
        if key not in self._refused and len(self._refused) < _REFUSALS_LOGGED:
            self._refused.add(key)
            log.warning("client certificate refused: none of its SANs is in "
                        "client_allowed_sans", extra={"sans": ",".join(sans) or "none"})
        return False

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.poll)
            self.poll_once()

    def poll_once(self) -> None:
        now = self._fingerprints(self.current)
        settled, self._previous = now == self._previous, now
        if settled and (now != self._loaded or not self.ok):
            self.reload()

    def reload(self) -> list[str]:
        """Load the file again; apply it, or keep the running config and return the problems."""
        path = self.current.source
        try:
            new = webconfig.load_file(path)
            problems = [f"{path}: {change}: cannot change while running; restart netsentry "
                        "to apply it" for change in webconfig.needs_restart(self.current, new)]
        except ConfigError as exc:
            problems = exc.problems
        if problems:
            if not self.ok and problems == self._problems:
                return problems  # the same failure as at the last poll: said already
            self.ok, self._problems = False, problems
            log.error("web config reload failed; keeping the running web config",
                      extra={"problems": "; ".join(problems)})
            return problems
        self._loaded = self._previous = self._fingerprints(new)
        if new.rate_limit != self.current.rate_limit:
            self._limiter = self._limiter_for(new)
        self.current, self.ok, self._problems = new, True, []
        self._auth = self._guard_for(new)
        log.info("web config loaded", extra={"source": path, "users": len(new.users),
                                             "tls": new.tls is not None})
        return []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @staticmethod
    def _limiter_for(config: WebConfig) -> TokenBucket | None:
        limit = config.rate_limit
        return None if limit is None else TokenBucket(limit.interval, limit.burst)

    def _guard_for(self, config: WebConfig) -> BasicAuth | None:
        if not config.users:
            return None
        if self._pool is None:
            self._pool = BlockingPool(workers=1, name="netsentry-bcrypt")
        return BasicAuth(config.users, open_paths=self._open_paths, pool=self._pool)

    def _fingerprints(self, config: WebConfig) -> tuple[Fingerprint | None, ...]:
        return tuple(fingerprint(path) for path in (config.source, *config.tls_files))

    def _newest_context(self, connection: ssl.SSLObject, server_name: str | None,
                        context: ssl.SSLContext) -> None:
        newest = self.current.tls
        if newest is not None and newest is not context:
            connection.context = newest
