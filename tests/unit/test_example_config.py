"""config/podod.example.yaml explains every key of every section: a key added to a model
without its line in the example fails here.

The check follows the key's path, not just its name: ``metrics.port`` must be written under
``metrics:``, not merely somewhere in the file (``port:`` also appears under ``servers:``).
Commented-out lines count (``#   port: 22`` under a commented server entry documents
``servers[].port``), and so do flow mappings (``bob: {role: viewer}``). A secret ``X`` may be
documented as ``X_file``. Mapping-valued keys (``access.unix_users``) need one commented
entry showing the keys of their values.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel

from podod.config import Config
from podod.monitor.settings import COLLECTOR_SETTINGS

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "podod.example.yaml"
ANY = "*"  # a key of a mapping whose keys the user chooses (user names, probe names, ...)

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- +)?(?P<key>[A-Za-z_@\"'][\w.@:\"'-]*):"
                       r"(?: +(?P<value>.*))?$")


@dataclass
class Node:
    key: str
    indent: int
    children: list[Node] = field(default_factory=list)

    def child_keys(self) -> set[str]:
        return {c.key for c in self.children}


def _strip_comment(text: str) -> str:
    """Drop a trailing ``  # comment`` (not a '#' inside quotes, good enough here)."""
    match = re.search(r"\s+#", text)
    return text[:match.start()] if match else text


def _flow_children(value: str, indent: int) -> list[Node]:
    """Keys of an inline mapping ``{a: 1, b: {c: 2}}``, as child nodes."""
    value = value.strip()
    if not value.startswith("{"):
        return []
    try:
        data = yaml.safe_load(value)
    except yaml.YAMLError:
        return []

    def nodes(obj: object, depth: int) -> list[Node]:
        if not isinstance(obj, dict):
            return []
        return [Node(str(k), depth, nodes(v, depth + 1)) for k, v in obj.items()]

    return nodes(data, indent + 1)


def example_tree(text: str) -> Node:
    """The example's keys as a tree, commented-out keys included."""
    root = Node("", -1)
    stack = [root]
    for raw in text.splitlines():
        line = raw
        if line.lstrip(" ").startswith("#"):
            # A commented key is written '# key:' where the key itself would stand:
            # '    # password_file: ...' is a sibling of '    password: null'.
            hash_at = line.index("#")
            line = line[:hash_at] + line[hash_at + 1:].removeprefix(" ")
        match = _KEY_LINE.match(_strip_comment(line).rstrip())
        if match is None:
            continue
        indent = len(match["indent"]) + len(match["dash"] or "")
        key = match["key"].strip("\"'")
        node = Node(key, indent, _flow_children(match["value"] or "", indent))
        while stack[-1].indent >= indent:
            stack.pop()
        stack[-1].children.append(node)
        stack.append(node)
    return root


def _models(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (list[X], X | None, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models(arg)
    return found


def _is_mapping(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    return any(_is_mapping(a) for a in typing.get_args(annotation))


def model_paths(model: type[BaseModel], prefix: tuple[str, ...] = (),
                stack: tuple[type[BaseModel], ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a model: ``("servers", "tunnels", "remote_port")``; a mapping's
    user-chosen keys are ``*``. List items are transparent, as in the YAML."""
    out: list[tuple[str, ...]] = []
    if model in stack:
        return out
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = (*prefix, key)
        out.append(path)
        for sub in _models(info.annotation):
            inner = (*path, ANY) if _is_mapping(info.annotation) else path
            out += model_paths(sub, inner, (*stack, model))
    return out


def explained(node: Node, path: tuple[str, ...]) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head == ANY:
        return any(explained(child, rest) for child in node.children)
    names = (head, f"{head}_file") if not rest else (head,)
    return any(explained(child, rest) for child in node.children if child.key in names)


def all_paths() -> list[tuple[str, ...]]:
    """The Config model's paths, and the built-in collectors' settings, which
    ``monitor.collectors`` holds as plain mappings validated per collector."""
    paths = model_paths(Config)
    for name, model in COLLECTOR_SETTINGS.items():
        paths += model_paths(model, ("monitor", "collectors", name))
    return paths


def missing_keys(text: str) -> list[str]:
    tree = example_tree(text)
    return [".".join(p) for p in all_paths() if not explained(tree, p)]


def test_every_config_key_is_explained_in_the_example() -> None:
    missing = missing_keys(EXAMPLE.read_text())
    assert missing == [], f"keys not explained in config/podod.example.yaml: {missing}"


def test_the_check_follows_paths_and_comments() -> None:
    """The checker itself: a key elsewhere in the file does not count, a commented or
    inline one does, and X_file documents a secret X."""
    tree = example_tree(
        "metrics:\n  enabled: true\nservers:\n  - name: a\n    port: 22\n"
        "  # - name: b\n  #   host: b.example   # its address\n"
        "access:\n  unix_users: {}\n  #  bob: {role: viewer, domains: [x.org]}\n"
        "mail:\n  database:\n    password: null\n    # password_file: /etc/pw\n")
    assert explained(tree, ("metrics", "enabled"))
    assert not explained(tree, ("metrics", "port"))
    assert explained(tree, ("servers", "port")) and explained(tree, ("servers", "host"))
    assert explained(tree, ("access", "unix_users", ANY, "domains"))
    assert not explained(tree, ("access", "unix_users", ANY, "name"))
    assert explained(tree, ("mail", "database", "password"))
    assert explained(tree, ("mail", "database", "password_file"))
    assert not explained(tree, ("mail", "database", "password", "password_file"))
    assert not explained(tree, ("mail", "database", "dsn"))
