"""One check per target: a target list's, and a discovered target group's.

A [[checks]] table with `targets`, `targets_file`, `targets_url` or `targets_srv` is converted
once, but for the target (`CheckBase`); each target then costs one conversion of its own, and
a discovered target group brings labels of its own, checked here against the same rules as the
check's (`labels.py`). Prometheus' own labels of a group (`__address__`, `__meta_*`: every
name starting `__`) are dropped, as Prometheus drops them after relabeling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.checks import KINDS
from exporter.config.labels import label_problems
from exporter.config.model import CheckBase, CheckConfig
from exporter.config.problems import PathKey, Problems
from exporter.config.settings import build_settings

# A target is the `target` label of every series of its check: bounded, whichever list or
# source it comes from.
MAX_TARGET_LENGTH = 2048


def group_labels(base: CheckBase, group_labels: Mapping[str, Any], problems: Problems,
                 where: PathKey) -> tuple[tuple[str, str], ...] | None:
    """The labels of `base`'s checks of a discovered group: the group's `group_labels` joined
    to the check's own (which win where both name a label), under the check's max_labels; or
    None once their problems are added at `where`. Judged once per group, not per target: a
    group's labels are the same for each of its targets."""
    before = len(problems.lines)
    kept = {name: value for name, value in group_labels.items() if not name.startswith("__")}
    theirs = {n: v for n, v in kept.items() if n not in dict(base.labels)}
    for name, message in label_problems(theirs, max_labels=len(theirs)):
        shown = name if len(name) <= 64 else f"{name[:60]}..."  # a name of 1 MiB is not logged
        problems.add((*where, "labels", shown) if name else (*where, "labels"), message)
    labels = tuple({**kept, **dict(base.labels)}.items())
    if len(labels) > base.max_labels:
        problems.add((*where, "labels"), f"{len(labels)} labels with the target group's, "
                     f"more than max_labels ({base.max_labels})")
    return None if len(problems.lines) > before else labels


def target_check(base: CheckBase, target: str, problems: Problems, where: PathKey,
                 path: PathKey, labels: tuple[tuple[str, str], ...] | None = None
                 ) -> CheckConfig | None:
    """`base`'s check of `target`, or None once its problems are added: those of the target at
    `path`, the others at `where`. `labels` (a discovered group's, from `group_labels`) stand
    in for the check's own."""
    before = len(problems.lines)
    kind = KINDS[base.kind]
    settings = build_settings(kind.settings, {"target": target}, where, problems,
                              given=dict(base.values), paths={"target": path})
    if settings is None:
        return None
    if kind.schedule_problems is not None:
        for key, message in kind.schedule_problems(settings, base.interval, base.timeout):
            problems.add((*where, key), message)
    if len(problems.lines) > before:
        return None
    return CheckConfig(base.name, base.kind, target, base.interval, base.timeout, settings,
                       base.labels if labels is None else labels, per_target=True,
                       group=base.group)
