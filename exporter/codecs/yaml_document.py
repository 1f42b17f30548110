"""YAML text to nodes (with their lines) and to values: PyYAML's safe loader, and the one module
that imports PyYAML. `--web.config.file` reads nodes, to name the line of each problem; the
service-discovery files of `targets_file` read values.
"""

from __future__ import annotations

from typing import Any

import yaml

Node = yaml.Node
MappingNode = yaml.MappingNode
ScalarNode = yaml.ScalarNode
SequenceNode = yaml.SequenceNode
YAMLError = yaml.YAMLError
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"


def compose(text: str) -> Node | None:
    """The document's root node (None for an empty one); raises YAMLError."""
    return yaml.compose(text, Loader=yaml.SafeLoader)


def load(text: str) -> Any:
    """The document's value, with the safe loader's types only; raises YAMLError."""
    return yaml.safe_load(text)
