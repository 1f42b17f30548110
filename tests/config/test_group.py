"""The `group` key: a check's section of the status page and its group badge (default: its
kind), carried by every check a target list or a discovered source makes."""

from __future__ import annotations

import pytest

from exporter.config.expand import target_check
from exporter.config.load import load_text
from exporter.config.problems import Problems
from exporter.errors import ConfigError

CHECK = '[[checks]]\nname = "a"\nkind = "tcp"\ntarget = "127.0.0.1:1"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.toml")
    return info.value.problems


def test_a_check_without_a_group_is_in_its_kinds_section() -> None:
    [check] = load_text(CHECK, "f.toml").checks
    assert check.group == "" and check.section == "tcp"


def test_a_group_names_the_section() -> None:
    [check] = load_text(CHECK + 'group = "Mail & <web>"\n', "f.toml").checks
    assert check.group == check.section == "Mail & <web>"


def test_a_target_list_and_a_discovered_check_carry_the_group(tmp_path: object) -> None:
    loaded = load_text(
        '[[checks]]\nname = "fleet"\nkind = "tcp"\ngroup = "edge"\n'
        'targets = ["127.0.0.1:1", "127.0.0.1:2"]\n\n'
        '[[checks]]\nname = "found"\nkind = "tcp"\ngroup = "sd"\ntargets_file = "x/*.json"\n',
        "/nowhere/f.toml")
    assert [(c.target, c.section) for c in loaded.checks] == [
        ("127.0.0.1:1", "edge"), ("127.0.0.1:2", "edge")]
    [found] = loaded.discovered
    assert found.base.group == "sd"
    check = target_check(found.base, "127.0.0.1:9", Problems("f.toml", {}), ("checks", 1),
                         ("checks", 1, "targets_file"))
    assert check is not None and check.section == "sd" and check.per_target


def test_a_changed_group_is_a_changed_check() -> None:
    [before] = load_text(CHECK + 'group = "x"\n', "f.toml").checks
    [after] = load_text(CHECK + 'group = "y"\n', "f.toml").checks
    assert before != after


@pytest.mark.parametrize(("line", "expected"), [
    pytest.param("group = 1\n", 'f.toml:5: checks[0] "a".group: expected a string, got a '
                 "number (1)", id="not-a-string"),
    pytest.param('group = "  "\n', 'f.toml:5: checks[0] "a".group: must not be empty; leave it '
                 "out for the kind's section", id="empty"),
    pytest.param('group = "a\\tb"\n', 'f.toml:5: checks[0] "a".group: must be at most 200 '
                 "printable characters", id="unprintable"),
    pytest.param(f'group = "{"g" * 201}"\n', 'f.toml:5: checks[0] "a".group: must be at most '
                 "200 printable characters", id="too-long"),
    pytest.param('gruop = "x"\n', 'f.toml:5: checks[0] "a".gruop: unknown key (did you mean '
                 '"group"?)', id="misspelt"),
])
def test_bad_groups(line: str, expected: str) -> None:
    assert problems(CHECK + line) == [expected]
