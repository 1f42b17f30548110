"""The package layout keeps the architecture's arrows: every import of every module under exporter/,
walked with `ast`, against the rules in `tests/importrules.py` (the table is the architecture;
`../shared/DESIGN.md`, "Architecture"). Then the checker itself, on fake trees: each rule fails on
a deliberate violation and passes on a clean tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.importrules import (
    ALL_RULES,
    DNSPYTHON_IO,
    IO_STDLIB,
    RULES,
    THIRD_PARTY,
    Tree,
    check,
)

ROOT = Path(__file__).resolve().parent.parent


def test_exporter_keeps_the_arrows() -> None:
    violations = check(ROOT, "exporter")
    assert not violations, "imports that break the layout:\n" + "\n".join(map(str, violations))


def test_the_tables_name_modules_that_exist() -> None:
    """A rule about a module that moved would hold vacuously; a home that moved would fail every
    import of its library for the wrong reason."""
    tree = Tree(ROOT, "exporter")
    named = {
        name for rule in RULES for name in (*rule.importers, *rule.forbidden, *(rule.only or ()))
    }
    named |= {home for homes in THIRD_PARTY.values() for home in homes}
    internal = {name for name in named if tree.internal(name)}
    assert internal, "the tables name no module of exporter"
    assert sorted(name for name in internal if tree.file(name) is None) == []
    assert not set(IO_STDLIB) & set(THIRD_PARTY)
    assert all(name.split(".")[0] == "dns" for name in DNSPYTHON_IO)


# A fake package with every layer, each module binding VALUE; the cases overwrite files in it.
PACKAGE = "fakepkg"
SCAFFOLD = [
    "__init__.py",
    "app.py",
    "errors.py",
    "metrics.py",
    "runner.py",
    "scheduler.py",
    "store.py",
    "exposition.py",
    "process_metrics.py",
    "codecs/__init__.py",
    "codecs/x.py",
    "codecs/dns.py",
    "net/__init__.py",
    "net/udp.py",
    "net/tcp.py",
    "net/http_client.py",
    "config/__init__.py",
    "config/model.py",
    "config/load.py",
    "checks/__init__.py",
    "checks/base.py",
    "checks/y.py",
    "web/__init__.py",
    "web/server.py",
    "web/routes.py",
    "web/webconfig.py",
    "web/auth.py",
    "cli/__init__.py",
    "cli/main.py",
]


def fake_tree(root: Path, files: dict[str, str]) -> Path:
    for name in SCAFFOLD:
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("VALUE = 1\n")
    for name, text in files.items():
        (root / PACKAGE / name).write_text(textwrap.dedent(text))
    return root


def found(root: Path) -> list[tuple[str, int, str, str]]:
    return [(v.path, v.line, v.rule, v.imported) for v in check(root, PACKAGE)]


def test_the_checker_reports_exactly_the_violations_of_a_fake_tree(tmp_path: Path) -> None:
    fake_tree(
        tmp_path,
        {
            "codecs/x.py": "import struct\nimport socket\n",
            "checks/y.py": "from fakepkg.net import udp\nfrom fakepkg.web.server import VALUE\n",
            "scheduler.py": "import apscheduler\n\n\ndef later():\n    import fakepkg.checks.y\n",
            "cli/main.py": "import argparse\nimport yaml\n",
            "web/webconfig.py": "import yaml\n",
            "app.py": "from fakepkg import checks, scheduler\nfrom fakepkg.web import server\n",
        },
    )
    assert found(tmp_path) == [
        ("fakepkg/checks/y.py", 2, "checks-below-pipeline", "fakepkg.web.server"),
        ("fakepkg/cli/main.py", 2, "third-party-home", "yaml"),
        ("fakepkg/codecs/x.py", 2, "codecs-pure", "socket"),
        ("fakepkg/scheduler.py", 5, "scheduler-knows-no-check", "fakepkg.checks.y"),
    ]
    assert str(check(tmp_path, PACKAGE)[0]).startswith(
        "fakepkg/checks/y.py:2: imports fakepkg.web.server — checks-below-pipeline: a check"
    )


# rule → (files breaking it, the violations expected, files of a clean tree that use what the
# rule allows). Line numbers count from the first line of each text.
CASES: dict[str, tuple[dict[str, str], list[tuple[str, int, str]], dict[str, str]]] = {
    "codecs-pure": (
        {
            "codecs/dns.py": """\
                import struct
                import socket
                from urllib import request
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from fakepkg.net import udp
                def build():
                    from .. import metrics
                    import dns.query
                    from os import path, sep
            """,
        },
        [
            ("fakepkg/codecs/dns.py", 2, "socket"),
            ("fakepkg/codecs/dns.py", 3, "urllib.request"),
            ("fakepkg/codecs/dns.py", 6, "fakepkg.net.udp"),
            ("fakepkg/codecs/dns.py", 8, "fakepkg.metrics"),
            ("fakepkg/codecs/dns.py", 9, "dns.query"),
            ("fakepkg/codecs/dns.py", 10, "os"),
        ],
        {
            "codecs/dns.py": """\
                import secrets
                import struct
                from urllib.parse import quote
                import dns.message
                from dns import name, inet
                from fakepkg.errors import VALUE
                from fakepkg import errors
                from . import x
                from .x import VALUE as X
            """,
        },
    ),
    "checks-below-pipeline": (
        {
            "checks/y.py": """\
                import fakepkg.web.server
                from fakepkg import scheduler
                from .. import runner
                from fakepkg import store, app
                from ..exposition import VALUE
                def main():
                    from fakepkg.cli import main
            """,
        },
        [
            ("fakepkg/checks/y.py", 1, "fakepkg.web.server"),
            ("fakepkg/checks/y.py", 2, "fakepkg.scheduler"),
            ("fakepkg/checks/y.py", 3, "fakepkg.runner"),
            ("fakepkg/checks/y.py", 4, "fakepkg.app"),
            ("fakepkg/checks/y.py", 4, "fakepkg.store"),
            ("fakepkg/checks/y.py", 5, "fakepkg.exposition"),
            ("fakepkg/checks/y.py", 7, "fakepkg.cli.main"),
        ],
        {
            "checks/y.py": """\
                import socket
                from fakepkg.net import udp
                from fakepkg.config.model import VALUE
                from fakepkg.codecs import x
                from fakepkg import errors, metrics
                from . import base
            """,
        },
    ),
    "scheduler-knows-no-check": (
        {
            "scheduler.py": """\
                from fakepkg.checks import y
                from . import store
                from .web import server
                from fakepkg import exposition
                def run():
                    import fakepkg.runner
                from fakepkg import checks
            """,
        },
        [
            ("fakepkg/scheduler.py", 1, "fakepkg.checks.y"),
            ("fakepkg/scheduler.py", 2, "fakepkg.store"),
            ("fakepkg/scheduler.py", 3, "fakepkg.web.server"),
            ("fakepkg/scheduler.py", 4, "fakepkg.exposition"),
            ("fakepkg/scheduler.py", 6, "fakepkg.runner"),
            ("fakepkg/scheduler.py", 7, "fakepkg.checks"),
        ],
        {
            "scheduler.py": """\
                import asyncio
                from apscheduler.schedulers.asyncio import AsyncIOScheduler
                from fakepkg import metrics
                from . import errors
            """,
        },
    ),
    "config-below-web": (
        {
            "config/model.py": """\
                from fakepkg.web import server
                from .. import cli
                from fakepkg import app
                import fakepkg.scheduler
                from ..runner import VALUE
            """,
        },
        [
            ("fakepkg/config/model.py", 1, "fakepkg.web.server"),
            ("fakepkg/config/model.py", 2, "fakepkg.cli"),
            ("fakepkg/config/model.py", 3, "fakepkg.app"),
            ("fakepkg/config/model.py", 4, "fakepkg.scheduler"),
            ("fakepkg/config/model.py", 5, "fakepkg.runner"),
        ],
        {
            "config/model.py": """\
                from fakepkg.checks import VALUE
                from fakepkg.checks.base import VALUE as BASE
                from fakepkg.net import udp
                from fakepkg.errors import VALUE as ERRORS
                from . import load
            """,
        },
    ),
    "net-bottom": (
        {
            "net/udp.py": """\
                from fakepkg import checks
                from fakepkg.config.model import VALUE
                import fakepkg.metrics
                from .. import store
                from ..web import server
            """,
        },
        [
            ("fakepkg/net/udp.py", 1, "fakepkg.checks"),
            ("fakepkg/net/udp.py", 2, "fakepkg.config.model"),
            ("fakepkg/net/udp.py", 3, "fakepkg.metrics"),
            ("fakepkg/net/udp.py", 4, "fakepkg.store"),
            ("fakepkg/net/udp.py", 5, "fakepkg.web.server"),
        ],
        {
            "net/udp.py": """\
                import asyncio
                import socket
                from . import tcp
                from .tcp import VALUE
                from fakepkg.codecs import x
                from fakepkg.errors import VALUE as ERRORS
            """,
        },
    ),
    "third-party-home": (
        {
            "web/routes.py": """\
                import yaml
                from h11 import Request
            """,
            "checks/y.py": """\
                def later():
                    from apscheduler.triggers.interval import IntervalTrigger
            """,
            "codecs/x.py": "from dns import message\n",
        },
        [
            ("fakepkg/checks/y.py", 2, "apscheduler.triggers.interval"),
            ("fakepkg/codecs/x.py", 1, "dns"),
            ("fakepkg/web/routes.py", 1, "yaml"),
            ("fakepkg/web/routes.py", 2, "h11"),
        ],
        {
            "web/webconfig.py": "import yaml\n",
            "web/server.py": "import h11\n",
            "net/http_client.py": "from h11 import Connection\n",
            "web/auth.py": "import bcrypt\n",
            "process_metrics.py": "from prometheus_client import process_collector\n",
            "codecs/dns.py": "import dns.message\n",
            "config/load.py": """\
                import sys
                if sys.version_info >= (3, 11):
                    import tomllib
                else:
                    import tomli as tomllib
            """,
        },
    ),
    "third-party-unlisted": (
        {
            "app.py": """\
                import requests
                def later():
                    from attr import define
            """,
        },
        [
            ("fakepkg/app.py", 1, "requests"),
            ("fakepkg/app.py", 3, "attr"),
        ],
        {
            "app.py": """\
                from __future__ import annotations
                import sys
                import tomllib
                from fakepkg import scheduler, runner, store
                from fakepkg.web import server
            """,
        },
    ),
    "missing-module": (
        {
            "app.py": """\
                import fakepkg.gone
                from fakepkg.net.gone import VALUE
                from ... import scheduler
                def later():
                    from .web.gone import VALUE
            """,
        },
        [
            ("fakepkg/app.py", 1, "fakepkg.gone"),
            ("fakepkg/app.py", 2, "fakepkg.net.gone"),
            ("fakepkg/app.py", 3, "..."),
            ("fakepkg/app.py", 5, "fakepkg.web.gone"),
        ],
        {
            "app.py": """\
                import fakepkg.net.udp
                from fakepkg.net import udp
                from . import scheduler
                from .web import server
            """,
        },
    ),
    "missing-name": (
        {
            "app.py": """\
                from fakepkg.net import gone
                from fakepkg.errors import VALUE, Gone
            """,
        },
        [
            ("fakepkg/app.py", 1, "fakepkg.net.gone"),
            ("fakepkg/app.py", 2, "fakepkg.errors.Gone"),
        ],
        {
            "app.py": """\
                from fakepkg.net import VALUE, udp
                from fakepkg.metrics import ANYTHING
                from fakepkg.errors import Bound
            """,
            "metrics.py": "from fakepkg.errors import *\n",
            "errors.py": """\
                try:
                    Bound = int
                except ImportError:
                    pass
            """,
        },
    ),
}


def test_every_rule_has_a_case() -> None:
    assert sorted(CASES) == sorted(ALL_RULES)


@pytest.mark.parametrize("rule", list(CASES))
def test_a_rule_fails_on_its_violation(tmp_path: Path, rule: str) -> None:
    files, expected, _ = CASES[rule]
    assert found(fake_tree(tmp_path, files)) == sorted(
        (path, line, rule, imported) for path, line, imported in expected
    )


@pytest.mark.parametrize("rule", list(CASES))
def test_a_rule_passes_on_a_clean_tree(tmp_path: Path, rule: str) -> None:
    _, _, files = CASES[rule]
    assert found(fake_tree(tmp_path, files)) == []
