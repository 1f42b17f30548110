"""An agent serving the status page over a few real checks, for the page's tests: one up (a TCP
listener of the test's), one down and named like an HTML tag (a closed port), one DNS check of
localhost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.agent import Agent
from tests.support.servers import AcceptServer, closed_port

XSS = "<img src=x onerror=alert(1)>"
STATES = {"web-frontend": "up", XSS: "down", "resolver-localhost": "up"}


def states(agent: Agent) -> dict[str, str]:
    """Each check's state, as /api/v1/checks says."""
    status, _, body = agent.fetch("GET", "/api/v1/checks")
    assert status == 200
    return {c["name"]: c["state"] for c in json.loads(body)["checks"]}


@contextmanager
def served_agent(path: Path) -> Iterator[Agent]:
    """The agent on its config at `path`, once every check has run."""
    with AcceptServer() as server:
        checks = (("web-frontend", "tcp", f"127.0.0.1:{server.port}"),
                  (XSS, "tcp", f"127.0.0.1:{closed_port()}"),
                  ("resolver-localhost", "dns", "localhost"))
        path.write_text('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n' + "".join(
            f"\n[[checks]]\nname = {json.dumps(name)}\nkind = {json.dumps(kind)}\n"
            f"target = {json.dumps(target)}\n" for name, kind, target in checks))
        with Agent(path) as agent:
            agent.wait_for(lambda: states(agent) == STATES, what="every check to have run")
            yield agent
