"""Composing rules.yaml into a node tree with its aliases bounded. An alias is a reference, so composing
costs what the text costs; but everything that reads the tree walks each alias as the whole value it names,
and nested aliases multiply ("billion laughs": a 23 KB file once cost `check` 31 s and 1.5 GB). Real rules
need an alias only to reuse a keyword list in a few channels. Nothing here reads the rules themselves.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from bot.errors import ConfigError

MAX_ALIASES = 100  # alias uses (*name) in one file
MAX_ALIAS_VALUES = 10_000  # values the aliases add, each counted as the whole value it names


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting what each alias adds as it composes; over a bound, it stops at that
    alias with a ConfigError naming the file and line."""

    def __init__(self, text: str, label: str) -> None:
        super().__init__(text)
        self.label = label
        self.aliases = 0
        self.added = 0
        self.complete: set[int] = set()  # ids of nodes composed to the end (an alias may name only those)
        self.sizes: dict[int, int] = {}  # id -> values it stands for, aliases expanded (nodes outlive this)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if not self.check_event(AliasEvent):
            node = super().compose_node(parent, index)
            self.complete.add(id(node))
            return node
        event: AliasEvent = self.peek_event()  # type: ignore[no-untyped-call]
        node = super().compose_node(parent, index)
        if node is None:  # not for an alias: PyYAML raises on an unknown one
            return None
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        where = f"{self.label}:{line}"
        if id(node) not in self.complete:
            raise ConfigError([f"{where}: alias *{event.anchor} is used inside the value it names"])
        self.aliases += 1
        self.added += self.size(node)
        if self.aliases > MAX_ALIASES:
            raise ConfigError(
                [f"{where}: more than {MAX_ALIASES} YAML aliases (*name); write the values out instead"]
            )
        if self.added > MAX_ALIAS_VALUES:
            raise ConfigError(
                [
                    f"{where}: alias *{event.anchor} takes the file over {MAX_ALIAS_VALUES:,} values "
                    "repeated through YAML aliases; write the values out, or nest fewer aliases"
                ]
            )
        return node

    def size(self, node: Node) -> int:
        """How many values `node` is once every alias in it is written out (capped just over the bound)."""
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, SequenceNode):
            for child in node.value:
                total += self.size(child)
                if total > MAX_ALIAS_VALUES:
                    break
        elif isinstance(node, MappingNode):
            for key, value in node.value:
                total += self.size(key) + self.size(value)
                if total > MAX_ALIAS_VALUES:
                    break
        total = min(total, MAX_ALIAS_VALUES + 1)
        self.sizes[id(node)] = total
        return total


def compose_bounded(text: str, label: str) -> Node | None:
    """The document's node tree, as `yaml.compose` with the safe loader gives it, or ConfigError when its
    aliases repeat too much (PyYAML's own errors pass through)."""
    loader = _BoundedLoader(text, label)
    try:
        node: Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()
