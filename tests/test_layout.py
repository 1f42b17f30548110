"""The package layout keeps the architecture's arrows: every import of every module under exporter/,
walked with `ast`, against the rules in `tests/importrules.py` (the table is the architecture;
`../shared/DESIGN.md`, "Architecture"). Then the checker itself, on fake trees: each rule fails on
a deliberate violation and passes on a clean tree."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
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
    "discovery/__init__.py",
    "discovery/files.py",
    "checks/http.py",
    "watch.py",
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
            "codecs/yaml_document.py": "import yaml\n",
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


# Each rule's case: files that break it, each import that breaks it marked `# ! imported-name`
# at the end of its line, and files of a clean tree that use what the rule allows.
@dataclass(frozen=True)
class Case:
    breaks: dict[str, str]
    clean: dict[str, str]

    def expected(self, rule: str) -> list[tuple[str, int, str, str]]:
        """The violations the marks promise, sorted as check() reports them."""
        return sorted(
            (f"{PACKAGE}/{name}", number, rule, imported)
            for name, text in self.breaks.items()
            for number, line in enumerate(textwrap.dedent(text).splitlines(), 1)
            if MARK in line
            for imported in line.split(MARK, 1)[1].split()
        )


MARK = "# ! "

CASES: dict[str, Case] = {
    "codecs-pure": Case(
        breaks={
            "codecs/dns.py": """\
                import struct
                import socket  # ! socket
                from urllib import request  # ! urllib.request
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from fakepkg.net import udp  # ! fakepkg.net.udp
                def build():
                    from .. import metrics  # ! fakepkg.metrics
                    import dns.query  # ! dns.query
                    from os import path, sep  # ! os
            """,
        },
        clean={
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
    "checks-below-pipeline": Case(
        breaks={
            "checks/y.py": """\
                import fakepkg.web.server  # ! fakepkg.web.server
                from fakepkg import scheduler  # ! fakepkg.scheduler
                from .. import runner  # ! fakepkg.runner
                from fakepkg import store, app  # ! fakepkg.app fakepkg.store
                from ..exposition import VALUE  # ! fakepkg.exposition
                def main():
                    from fakepkg.cli import main  # ! fakepkg.cli.main
            """,
        },
        clean={
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
    "scheduler-knows-no-check": Case(
        breaks={
            "scheduler.py": """\
                from fakepkg.checks import y  # ! fakepkg.checks.y
                from . import store  # ! fakepkg.store
                from .web import server  # ! fakepkg.web.server
                from fakepkg import exposition  # ! fakepkg.exposition
                def run():
                    import fakepkg.runner  # ! fakepkg.runner
                from fakepkg import checks  # ! fakepkg.checks
            """,
        },
        clean={
            "scheduler.py": """\
                import asyncio
                from apscheduler.schedulers.asyncio import AsyncIOScheduler
                from fakepkg import metrics
                from . import errors
            """,
        },
    ),
    "config-below-web": Case(
        breaks={
            "config/model.py": """\
                from fakepkg.web import server  # ! fakepkg.web.server
                from .. import cli  # ! fakepkg.cli
                from fakepkg import app  # ! fakepkg.app
                import fakepkg.scheduler  # ! fakepkg.scheduler
                from ..runner import VALUE  # ! fakepkg.runner
                from fakepkg.discovery import files  # ! fakepkg.discovery.files
            """,
        },
        clean={
            "config/model.py": """\
                from fakepkg.checks import VALUE
                from fakepkg.checks.base import VALUE as BASE
                from fakepkg.net import udp
                from fakepkg.errors import VALUE as ERRORS
                from . import load
            """,
        },
    ),
    "discovery-below-app": Case(
        breaks={
            "discovery/files.py": """\
                from fakepkg.web import server  # ! fakepkg.web.server
                from fakepkg import app, store  # ! fakepkg.app fakepkg.store
                import fakepkg.scheduler  # ! fakepkg.scheduler
                def later():
                    from ..cli import main  # ! fakepkg.cli.main
            """,
        },
        clean={
            "discovery/files.py": """\
                from fakepkg.config.model import VALUE
                from fakepkg.checks import http
                from fakepkg.runner import VALUE as RUNNER
                from fakepkg.codecs import dns
                from fakepkg import watch
            """,
        },
    ),
    "net-bottom": Case(
        breaks={
            "net/udp.py": """\
                from fakepkg import checks  # ! fakepkg.checks
                from fakepkg.config.model import VALUE  # ! fakepkg.config.model
                import fakepkg.metrics  # ! fakepkg.metrics
                from .. import store  # ! fakepkg.store
                from ..web import server  # ! fakepkg.web.server
            """,
        },
        clean={
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
    "third-party-home": Case(
        breaks={
            "web/routes.py": """\
                import yaml  # ! yaml
                from h11 import Request  # ! h11
            """,
            "checks/y.py": """\
                def later():
                    from apscheduler.triggers import interval  # ! apscheduler.triggers
            """,
            "codecs/x.py": """\
                from dns import message  # ! dns
            """,
        },
        clean={
            "codecs/yaml_document.py": "import yaml\n",
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
    "third-party-unlisted": Case(
        breaks={
            "app.py": """\
                import requests  # ! requests
                def later():
                    from attr import define  # ! attr
            """,
        },
        clean={
            "app.py": """\
                from __future__ import annotations
                import sys
                import tomllib
                from fakepkg import scheduler, runner, store
                from fakepkg.web import server
            """,
        },
    ),
    "missing-module": Case(
        breaks={
            "app.py": """\
                import fakepkg.gone  # ! fakepkg.gone
                from fakepkg.net.gone import VALUE  # ! fakepkg.net.gone
                from ... import scheduler  # ! ...
                def later():
                    from .web.gone import VALUE  # ! fakepkg.web.gone
            """,
        },
        clean={
            "app.py": """\
                import fakepkg.net.udp
                from fakepkg.net import udp
                from . import scheduler
                from .web import server
            """,
        },
    ),
    "missing-name": Case(
        breaks={
            "app.py": """\
                from fakepkg.net import gone  # ! fakepkg.net.gone
                from fakepkg.errors import VALUE, Gone  # ! fakepkg.errors.Gone
            """,
        },
        clean={
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
    case = CASES[rule]
    expected = case.expected(rule)
    assert expected, "a case with nothing marked proves nothing"
    assert found(fake_tree(tmp_path, case.breaks)) == expected


@pytest.mark.parametrize("rule", list(CASES))
def test_a_rule_passes_on_a_clean_tree(tmp_path: Path, rule: str) -> None:
    assert found(fake_tree(tmp_path, CASES[rule].clean)) == []
