"""The command line: exit statuses, one-line errors, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from exporter.checks import KINDS
from tests.support.agent import ROOT
from tests.support.servers import AcceptServer, closed_port

THREE_MISTAKES = """\
[[checks]]
name = "a"
kind = "tcp"
target = "127.0.0.1:1"
timeuot = "1s"

[[checks]]
name = "b"
kind = "dnz"

[[checks]]
name = "a"
kind = "tcp"
target = "127.0.0.1:2"
"""


def netsentry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_check_config_prints_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(THREE_MISTAKES)
    for args in (["check-config", str(path)], ["--config.check", "--config.file", str(path)]):
        proc = netsentry(*args)
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [
            f'{path}:5: checks[0] "a".timeuot: unknown key (did you mean "timeout"?)',
            f"{path}:9: checks[1] \"b\".kind: unknown kind 'dnz' (did you mean \"dns\"?); "
            f"known kinds: {', '.join(KINDS)}",
            f'{path}:12: checks[2] "a".name: duplicate name; checks[0] (line 1) has it already',
            "3 problem(s) found",
        ]


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text('[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "127.0.0.1:1"\n')
    proc = netsentry("check-config", str(path))
    assert (proc.returncode, proc.stdout) == (0, f"{path}: OK, 1 check(s)\n")


def test_check_config_reads_the_targets_files_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "good.json").write_text(
        '[{"targets": ["127.0.0.1:1", "127.0.0.1:2"]}, {"targets": ["no-port"]}]')
    path = tmp_path / "fleet.toml"
    path.write_text('[[checks]]\nname = "web"\nkind = "tcp"\ntargets_file = "sd/*.json"\n\n'
                    '[[checks]]\nname = "cmdb"\nkind = "tcp"\n'
                    'targets_url = "http://127.0.0.1:1/sd"\n')
    proc = netsentry("check-config", str(path))
    assert proc.returncode == 2  # a refused target is a problem of the file
    assert proc.stdout.splitlines() == [
        f"{path}: OK, 0 check(s)", "web: 2 target(s) from file:sd/*.json, 1 refused",
        "cmdb: targets from http:http://127.0.0.1:1/sd, asked when the agent runs"]
    good = tmp_path / "sd" / "good.json"
    assert proc.stderr.splitlines() == [
        f"{good}: target: invalid target 'no-port': expected host:port",
        "1 problem(s) found in the targets files"]
    (tmp_path / "sd" / "good.json").write_text('[{"targets": ["127.0.0.1:1"]}]')
    (tmp_path / "sd" / "bad.json").write_text('[{"targets": ')
    proc = netsentry("check-config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith(f"{tmp_path / 'sd' / 'bad.json'}: not JSON")
    (tmp_path / "sd" / "bad.json").unlink()
    assert netsentry("check-config", str(path)).returncode == 0


def test_check_config_of_the_embedded_default() -> None:
    proc = netsentry("check-config")
    assert proc.returncode == 0 and "<embedded default>: OK" in proc.stdout


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    syntax = tmp_path / "syntax.toml"
    syntax.write_text('[defaults]\ninterval = "30s\n')
    for args, expected in [
        (["--config.file", str(tmp_path / "missing.toml")],
         f"{tmp_path / 'missing.toml'}: cannot read the config file: No such file or directory"),
        (["--config.file", str(syntax)], f"{syntax}:2:"),
        (["--web.listen-address", "nonsense"], "netsentry: --web.listen-address:"),
    ]:
        proc = netsentry(*args)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if "level=" not in line]
        assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
        assert "Traceback" not in proc.stderr


def test_probe_one_check() -> None:
    with AcceptServer() as server:
        proc = netsentry("probe", "tcp", server.target, "--timeout", "2s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result" in proc.stdout and "success" in proc.stdout
    assert re.search(r"^tcp connect +\d[\d.]* (ns|µs|ms|s)$", proc.stdout, re.M), proc.stdout
    refused = netsentry("probe", "tcp", f"127.0.0.1:{closed_port()}")
    assert refused.returncode == 1
    assert "FAILURE (refused): connection refused" in refused.stdout


def test_probe_bad_input_exits_2() -> None:
    for args, expected in [
        (["probe", "tcp", "127.0.0.1"], "command line: target: invalid target '127.0.0.1'"),
        (["probe", "tcp", "127.0.0.1:1", "--famly", "ipv4"],
         'command line: famly: unknown key (did you mean "family"?)'),
        (["probe", "nope", "x"], "command line: kind: unknown kind 'nope'"),
        (["probe"], "netsentry probe: missing KIND"),
    ]:
        proc = netsentry(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(expected), proc.stderr
        assert "Traceback" not in proc.stderr


def test_probe_config_file_prints_a_table(tmp_path: Path) -> None:
    with AcceptServer() as server:
        path = tmp_path / "n.toml"
        path.write_text(
            f'[[checks]]\nname = "up"\nkind = "tcp"\ntarget = "{server.target}"\n\n'
            f'[[checks]]\nname = "down"\nkind = "tcp"\ntarget = "127.0.0.1:{closed_port()}"\n'
        )
        proc = netsentry("probe", "--config.file", str(path))
    assert proc.returncode == 1
    header, up, down, _, summary = proc.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "KIND", "TARGET", "RESULT"]
    assert summary == "1 of 2 checks failed"
    assert up.split()[0] == "up" and up.split()[3] == "ok"
    assert down.split()[0] == "down" and down.split()[3] == "refused"


def test_run_flags_that_cannot_work_exit_2() -> None:
    for args, expected in [
        (["--config.watch"], "netsentry: --config.watch needs --config.file"),
        (["--shard", "3/3"], "netsentry: --shard: "),
        (["--web.listen-address", "nope"], "netsentry: --web.listen-address: "),
    ]:
        proc = netsentry(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(expected), proc.stderr
        assert "Traceback" not in proc.stderr
