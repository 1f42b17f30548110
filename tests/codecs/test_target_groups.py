"""Prometheus' target groups (file_sd, http_sd) and SRV answers as targets."""

import pytest

from exporter.codecs.target_groups import (
    TargetGroup,
    TargetGroupError,
    nameservers,
    parse,
    srv_targets,
)

JSON = """[
  {"targets": ["10.0.0.1:80", "10.0.0.2:80"], "labels": {"team": "web", "__meta_x": "y"}},
  {"targets": ["db:5432"]}
]"""

YAML = """
- targets: ["10.0.0.1:80", "10.0.0.2:80"]
  labels:
    team: web
    __meta_x: y
- targets:
    - db:5432
  labels: null
"""


def test_json_and_yaml_give_the_same_groups() -> None:
    expected = [TargetGroup(("10.0.0.1:80", "10.0.0.2:80"), (("team", "web"), ("__meta_x", "y"))),
                TargetGroup(("db:5432",))]
    assert parse(JSON, "json") == expected
    assert parse(YAML, "yaml") == expected


def test_an_empty_document_has_no_groups() -> None:
    assert parse("", "yaml") == []
    assert parse("[]", "json") == []
    assert parse('[{"targets": []}]', "json") == [TargetGroup(())]


@pytest.mark.parametrize(("text", "form", "message"), [
    ('{"targets": []}', "json", "expected a list of target groups, got an object"),
    ("[1]", "json", "target group 0: expected an object with targets and labels, got a number (1)"),
    ('[{"targets": ["a:1"]}, {"labels": {}}]', "json",
     "target group 1: targets: expected a list of strings, got null"),
    ('[{"targets": ["a:1", 7]}]', "json",
     "target group 0: targets[1]: expected a target string, got a number (7)"),
    ('[{"targets": ["a:1"], "labels": {"n": 1}}]', "json",
     "target group 0: labels: 'n': names and values are strings, got a number (1)"),
    ('[{"targets": ["a:1"], "labels": ["x"]}]', "json",
     "target group 0: labels: expected an object of strings, got a list"),
    ('[{"targets": ["a:1"], "label": {}}]', "json",
     "target group 0: unknown key 'label' (a group has targets and labels)"),
    ('[{"targets": ', "json", "not JSON: Expecting value at line 1, column 14"),
    ("- targets: [a\n- b: :\n", "yaml", "not YAML: "),
    ("[" * 100_000, "json", "nested too deeply"),
    ("- " + "[" * 50_000, "yaml", "nested too deeply"),
    ("[" + "9" * 5000 + "]", "json", "Exceeds the limit (4300 digits)"),
    # A lone surrogate would make every exposition of the target's series fail to encode.
    ('[{"targets": ["a:1"], "labels": {"x": "\\ud800"}}]', "json",
     "target group 0: '\\ud800' is not valid Unicode text"),
])
def test_problems_name_the_group_and_key(text: str, form: str, message: str) -> None:
    with pytest.raises(TargetGroupError) as caught:
        parse(text, form)
    assert str(caught.value).startswith(message), str(caught.value)


def test_srv_answers_become_host_port_targets() -> None:
    group = srv_targets(["10 5 389 ldap1.example.org.", "20 5 636 ldap2.example.org.",
                         "10 5 389 ldap1.example.org.", "0 0 0 .", "1 1 53 ::1."])
    assert group == TargetGroup(("ldap1.example.org:389", "ldap2.example.org:636", "[::1]:53"))
    with pytest.raises(TargetGroupError, match="not an SRV answer"):
        srv_targets(["10 5 ldap.example.org."])


def test_nameservers_of_a_resolv_conf() -> None:
    text = ("# comment\nsearch example.org\nnameserver 127.0.0.53\n nameserver ::1 # six\n"
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserverX 1.1.1.1\n;nameserver 9\n")
    assert nameservers(text) == ["127.0.0.53", "::1", "10.0.0.1"]
    assert nameservers("") == []
