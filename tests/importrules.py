"""The architecture's arrows as data, and a small AST checker that holds a package tree to them.

The tables below are the rules (`../shared/DESIGN.md`, "Architecture"); `check(root, package)`
walks every module under `root/package`, resolves each import it finds anywhere in the module
(in functions, under `if TYPE_CHECKING:`, under version checks; relative ones too) and returns a
`Violation` for every import that a rule forbids. Module names in the tables are written for the
real package, `exporter`; `check` reads that first component as the package it is given, so the
same tables judge a fake tree in a test.

How an import becomes the module(s) it imports:

- `import a.b.c` imports `a.b.c` (its parent packages are not counted: every module imports
  `exporter/__init__.py` that way, and it is not an arrow).
- `from X import n`, X in the package: `X.n` when that file exists (`from exporter.net import udp`
  is `exporter.net.udp`), else X (n is a name defined in X).
- `from X import n`, X outside it: X, and X.n as well, since n may be a submodule
  (`from urllib import request`, `from dns import query`); a plain name n could only match a
  table entry by being spelled like one of X's submodules.

An import of the package that points at nothing fails too: a module that does not exist
(`missing-module`), or `from M import n` where n is neither a submodule of M nor a name bound
anywhere in M (`missing-name`) — stale paths after a move, even in a function that no test runs.

A name in a table covers its submodules: `exporter.web` is the web layer, `http` is `http.client`
and `http.server` too.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "exporter"  # how the tables spell the package; check() substitutes the real one

# Standard-library modules that do I/O (or wait, or reach the kernel), which a codec must not
# import. A codec turns bytes into dataclasses and back; whatever it needs from the world (the
# time, the bytes) is handed to it. Entropy is not on the list: a DNS codec draws a query ID from
# `secrets`. Neither are `sys` (version checks) and `datetime`/`calendar` (date arithmetic).
IO_STDLIB: dict[str, str] = {
    "socket": "network sockets",
    "ssl": "TLS over sockets",
    "select": "waiting on file descriptors",
    "selectors": "waiting on file descriptors",
    "asyncio": "the event loop: sockets, subprocesses, sleeping",
    "asyncore": "socket event loop (removed in 3.12)",
    "asynchat": "socket event loop (removed in 3.12)",
    "socketserver": "socket servers",
    "http": "HTTP clients and servers",
    "urllib.request": "fetching URLs (urllib.parse is pure and allowed)",
    "ftplib": "network protocol client",
    "smtplib": "network protocol client",
    "poplib": "network protocol client",
    "imaplib": "network protocol client",
    "telnetlib": "network protocol client",
    "xmlrpc": "RPC over HTTP",
    "webbrowser": "starts programs",
    "os": "files, processes, environment",
    "io": "file objects and streams",
    "pathlib": "the file system",
    "shutil": "the file system",
    "tempfile": "the file system",
    "glob": "the file system",
    "fileinput": "the file system",
    "fcntl": "file-descriptor control",
    "mmap": "memory-mapped files",
    "sqlite3": "database files",
    "dbm": "database files",
    "shelve": "database files",
    "subprocess": "runs programs",
    "pty": "runs programs on a terminal",
    "signal": "process signals",
    "resource": "process limits",
    "threading": "threads",
    "_thread": "threads",
    "multiprocessing": "processes",
    "concurrent": "thread and process pools",
    "queue": "blocking queues between threads",
    "sched": "sleeps until events are due",
    "time": "sleeps and reads the clock (a codec is handed the times it encodes)",
    "ctypes": "calls into C libraries and the kernel",
    "logging": "writes to handlers (a codec reports by raising its error type)",
}

# dnspython's modules that send or wait; its message layer (dns.message, dns.name, dns.rdata...,
# dns.inet) is pure and is what exporter/codecs/dns.py is built on.
DNSPYTHON_IO: dict[str, str] = {
    "dns.query": "sends queries",
    "dns.asyncquery": "sends queries",
    "dns.resolver": "resolves over the network",
    "dns.asyncresolver": "resolves over the network",
    "dns.asyncbackend": "the async socket backends",
}


@dataclass(frozen=True)
class Rule:
    """Modules matching `importers` import none of `forbidden`, and of the package's own modules
    only those matching `only` (when given)."""

    name: str
    importers: tuple[str, ...]
    says: str
    forbidden: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None


# The arrows. Each rule reads: these modules ──╳──► those.
RULES: tuple[Rule, ...] = (
    Rule(
        "codecs-pure",
        importers=("exporter.codecs",),
        says="a codec is pure (bytes ⇄ dataclasses): no I/O; of exporter, only codecs and errors",
        forbidden=(*IO_STDLIB, *DNSPYTHON_IO),
        only=("exporter.codecs", "exporter.errors"),
    ),
    Rule(
        "checks-below-pipeline",
        importers=("exporter.checks",),
        says="a check imports neither the web layer, the scheduler, the renderer, the runner, "
        "the store, the app nor the cli",
        forbidden=(
            "exporter.web",
            "exporter.scheduler",
            "exporter.exposition",
            "exporter.runner",
            "exporter.store",
            "exporter.app",
            "exporter.cli",
        ),
    ),
    Rule(
        "scheduler-knows-no-check",
        importers=("exporter.scheduler",),
        says="the scheduler knows no check and no runner (it calls back), nor the store, "
        "the renderer or the web layer",
        forbidden=(
            "exporter.checks",
            "exporter.runner",
            "exporter.store",
            "exporter.exposition",
            "exporter.web",
        ),
    ),
    Rule(
        "config-below-web",
        importers=("exporter.config",),
        says="config imports neither the web layer, the cli, the app, the scheduler, the runner "
        "nor discovery",
        forbidden=(
            "exporter.web",
            "exporter.cli",
            "exporter.app",
            "exporter.scheduler",
            "exporter.runner",
            "exporter.discovery",
        ),
    ),
    Rule(
        "discovery-below-app",
        importers=("exporter.discovery",),
        says="discovery finds targets and makes checks of them: it imports neither the web "
        "layer, the cli, the app, the scheduler nor the store (the app schedules what it finds)",
        forbidden=(
            "exporter.web",
            "exporter.cli",
            "exporter.app",
            "exporter.scheduler",
            "exporter.store",
        ),
    ),
    Rule(
        "net-bottom",
        importers=("exporter.net",),
        says="net is the bottom layer: of exporter it imports only net, codecs and errors",
        only=("exporter.net", "exporter.codecs", "exporter.errors"),
    ),
)

# Each third-party library is imported in its one module, so replacing it touches one file.
# A library missing here cannot be imported at all: a new dependency is added here, deliberately.
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "apscheduler": ("exporter.scheduler",),
    "dns": ("exporter.codecs.dns",),  # dnspython, its message layer only (see DNSPYTHON_IO)
    "yaml": ("exporter.codecs.yaml_document",),  # PyYAML: --web.config.file, file_sd files
    "bcrypt": ("exporter.web.auth",),
    "prometheus_client": ("exporter.process_metrics",),  # its process collectors, nothing else
    "tomli": ("exporter.config.load",),  # tomllib before Python 3.11
    # h11 has two homes by design: the server and the client each drive an h11 connection of
    # their own (one parses requests and writes responses, the other the reverse); neither is a
    # wrapper the other could share.
    "h11": ("exporter.web.server", "exporter.net.http_client"),
    "h2": ("exporter.net.http2_client",),  # python-hyper's HTTP/2 framing, the client's only
    "wsproto": ("exporter.net.websocket_client",),  # RFC 6455 framing, sans I/O
    "uvloop": ("exporter.loop",),  # the optional event loop; everything else is loop-agnostic
}

THIRD_PARTY_HOME = "third-party-home"
THIRD_PARTY_UNLISTED = "third-party-unlisted"
MISSING_MODULE = "missing-module"
MISSING_NAME = "missing-name"
SAYS = {
    **{rule.name: rule.says for rule in RULES},
    THIRD_PARTY_HOME: "a third-party library is imported only in its module (THIRD_PARTY)",
    THIRD_PARTY_UNLISTED: "a third-party library not in THIRD_PARTY is not imported anywhere",
    MISSING_MODULE: "an import of the package names a module that exists",
    MISSING_NAME: "`from M import n` of the package names a submodule or a name bound in M",
}
ALL_RULES: tuple[str, ...] = tuple(SAYS)


@dataclass(frozen=True, order=True)
class Violation:
    path: str  # the importing file, relative to root, with slashes
    line: int
    rule: str
    imported: str

    def __str__(self) -> str:
        text = f"{self.path}:{self.line}: imports {self.imported} — {self.rule}: {SAYS[self.rule]}"
        homes = THIRD_PARTY.get(self.imported.split(".")[0], ())
        return f"{text}; its home: {', '.join(homes)}" if self.rule == THIRD_PARTY_HOME else text


def covers(pattern: str, module: str) -> bool:
    return module == pattern or module.startswith(pattern + ".")


def qualify(name: str, package: str) -> str:
    head, dot, rest = name.partition(".")
    return package + dot + rest if head == PACKAGE else name


@dataclass(frozen=True)
class Tree:
    root: Path
    package: str

    def modules(self) -> Iterator[tuple[str, Path]]:
        for path in sorted((self.root / self.package).rglob("*.py")):
            parts = path.relative_to(self.root).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path

    def file(self, module: str) -> Path | None:
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def internal(self, module: str) -> bool:
        return module.split(".")[0] == self.package


@functools.cache
def bound_names(path: Path) -> frozenset[str] | None:
    """Every name the module in `path` binds anywhere, or None when that cannot be known (a star
    import, a module `__getattr__`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
    return None if "__getattr__" in names else frozenset(names)


def imports(tree: Tree, module: str, path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, imported module, problem) for every import in the module; problem names
    MISSING_MODULE or MISSING_NAME when the import points at nothing in the package."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                missing = tree.internal(name) and tree.file(name) is None
                yield node.lineno, name, MISSING_MODULE if missing else None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: None if is_package else -1]
                if node.level - 1 >= len(parts):
                    yield node.lineno, "." * node.level + base, MISSING_MODULE
                    continue
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            if not tree.internal(base):
                yield node.lineno, base, None
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}", None
                continue
            source = tree.file(base)
            if source is None:
                yield node.lineno, base, MISSING_MODULE
                continue
            bound = bound_names(source)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if tree.file(sub) is not None:
                    yield node.lineno, sub, None
                elif bound is None or alias.name in bound or alias.name == "*":
                    yield node.lineno, base, None
                else:
                    yield node.lineno, sub, MISSING_NAME


def judge(tree: Tree, importer: str, imported: str) -> Iterator[str]:
    """The rules an import of `imported` by `importer` breaks."""
    package = tree.package

    def within(patterns: tuple[str, ...], module: str) -> bool:
        return any(covers(qualify(pattern, package), module) for pattern in patterns)

    for rule in RULES:
        if not within(rule.importers, importer):
            continue
        outside_only = rule.only is not None and not within(rule.only, imported)
        if within(rule.forbidden, imported) or (tree.internal(imported) and outside_only):
            yield rule.name
    top = imported.split(".")[0]
    if top == package or top in sys.stdlib_module_names:
        return
    if top not in THIRD_PARTY:
        yield THIRD_PARTY_UNLISTED
    elif importer not in {qualify(home, package) for home in THIRD_PARTY[top]}:
        yield THIRD_PARTY_HOME


def check(root: Path, package: str) -> list[Violation]:
    """Every import under root/package that breaks a rule, sorted by file and line. A statement
    breaks a rule once per module it imports: `from os import path, sep` is one violation, os's."""
    tree = Tree(Path(root), package)
    found: list[Violation] = []
    for module, path in tree.modules():
        where = path.relative_to(tree.root).as_posix()
        for line, imported, problem in imports(tree, module, path):
            for rule in [problem] if problem else judge(tree, module, imported):
                if not any(
                    (v.path, v.line, v.rule) == (where, line, rule) and covers(v.imported, imported)
                    for v in found
                ):
                    found.append(Violation(where, line, rule, imported))
    return sorted(found)
