"""HTTP basic authentication (RFC 7617) against bcrypt hashes, at no cost to checks and scrapes.

- bcrypt is slow on purpose (about 60 ms of CPU at cost 10). It runs on a thread of its own,
  never on the event loop, so no check or scrape waits for someone's password; one thread
  bounds what a flood of wrong passwords can take to one core.
- A successful check is remembered as an HMAC-SHA256 digest of the user, the hash and the
  password, under a key drawn at start-up that never leaves the process. Prometheus sends the
  same credentials on every scrape, so only its first scrape pays for bcrypt. Failures are not
  remembered: every wrong password costs a full bcrypt run, so guessing stays exactly as slow
  as bcrypt makes it. At most `cache_size` digests are kept (the oldest go first), and no
  password: a digest is worthless without the key.
- An unknown user is checked against a configured hash of the highest cost, and refused
  whatever the outcome, so it takes as long as a known user with a wrong password: timing
  does not tell which users exist (give every user the same cost).
- As Go's bcrypt (and so exporter-toolkit) does, only the first 72 bytes of a password count.

This is the only module that imports bcrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any

import bcrypt

from exporter.net.blocking import BlockingPool
from exporter.web.server import Request, Response

MAX_PASSWORD_BYTES = 72  # bcrypt's limit
CHALLENGE = 'Basic realm="netsentry", charset="UTF-8"'

Verify = Callable[[bytes, bytes], bool]  # (password, hash) -> whether they match


def _checkpw(password: bytes, hashed: bytes) -> bool:
    return bool(bcrypt.checkpw(password, hashed))


class BasicAuth:
    """A guard for the web server: None lets a request through, else the 401 to answer."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        open_paths: frozenset[str] = frozenset(),
        verify: Verify = _checkpw,
        pool: BlockingPool | None = None,
        cache_size: int = 1024,
    ) -> None:
        if not users:
            raise ValueError("basic auth needs at least one user")
        self._users = dict(users)
        self._open_paths = open_paths
        self._verify = verify
        self._pool = pool or BlockingPool(workers=1, name="netsentry-bcrypt")
        self._key = os.urandom(32)
        self._cache: dict[bytes, None] = {}  # insertion-ordered: the oldest first
        self._cache_size = cache_size
        # For unknown users: the costliest hash (the cost is the two digits after "$2y$").
        self._decoy = max(self._users.values(), key=lambda h: int(h[4:6]))

    async def __call__(self, request: Request) -> Response | None:
        if request.path in self._open_paths:
            return None
        if await self.authenticate(request.headers.get("authorization", "")):
            return None
        return Response(401, b"Unauthorized\n", headers=(("WWW-Authenticate", CHALLENGE),))

    async def authenticate(self, authorization: str) -> bool:
        """Whether an Authorization header value names a user and its password."""
        credentials = _credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        password = password[:MAX_PASSWORD_BYTES]
        hashed = self._users.get(user)
        if hashed is None:
            await self._run(password, self._decoy)
            return False
        digest = self._digest(user, hashed, password)
        if digest in self._cache:
            return True
        if not await self._run(password, hashed):
            return False
        self._cache[digest] = None
        if len(self._cache) > self._cache_size:
            del self._cache[next(iter(self._cache))]
        return True

    def close(self) -> None:
        self._pool.close()

    async def _run(self, password: bytes, hashed: bytes) -> bool:
        verify = self._verify
        result: Any = await self._pool.submit(lambda: verify(password, hashed))
        return bool(result)

    def _digest(self, user: str, hashed: bytes, password: bytes) -> bytes:
        name = user.encode()
        message = len(name).to_bytes(4, "big") + name + hashed + password
        return hmac.new(self._key, message, hashlib.sha256).digest()


def _credentials(authorization: str) -> tuple[str, bytes] | None:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
