"""Notices that a file changed (`--config.watch`), by polling its metadata on the event loop.

Polling is portable (no inotify, which misses the renames of editors and of Kubernetes'
ConfigMap volumes unless the directory is watched) and cheap: one stat() per interval. The
fingerprint is (device, inode, size, modification time in ns), taken through symlinks, so a
file replaced by rename, written in place, or swapped behind a symlink all count as changes.
A file that is missing for a moment (an editor between delete and write) is no change; when it
comes back different, it is one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

Fingerprint = tuple[int, int, int, int]


def fingerprint(path: str) -> Fingerprint | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class FileWatcher:
    """Calls `on_change` on the loop whenever `path` differs from when it was last seen."""

    def __init__(self, path: str, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self.seen = fingerprint(path)  # taken before the first load: no change can slip by

    async def run(self, on_change: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = fingerprint(self.path)
            if now is not None and now != self.seen:
                self.seen = now
                log.info("config file changed", extra={"path": self.path})
                try:
                    on_change()
                except Exception:  # a bug in the reload must not end the watching
                    log.exception("reload after a change of %s failed", self.path)
