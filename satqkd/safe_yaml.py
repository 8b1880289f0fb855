"""Bounded YAML loading for config files: a file a user got wrong (or a hostile one) ends in one
:class:`YamlInputError` line, never a hang, a huge allocation or a traceback.

Built on PyYAML's SafeLoader, with these bounds on top:

- only regular files (not /dev/zero, a FIFO or a directory), at most `max_bytes` read;
- UTF-8 text only;
- no aliases (``*name``): an anchor may be defined but never expanded, so a "billion laughs"
  document cannot grow past its own size;
- nesting at most `max_depth` levels of mappings and sequences;
- no duplicate keys in a mapping (the second one would silently win);
- integer literals of at most `MAX_INT_DIGITS` digits; a bad date or number is a one-line error.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_INT_DIGITS = 64


class YamlInputError(ValueError):
    """A YAML file cannot be used; the message is one line, without the file's name."""


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader refusing aliases, duplicate keys, deep nesting and over-long integers."""

    max_depth = MAX_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise ComposerError(
                None,
                None,
                "aliases (*name) are not allowed in config files; write the value out",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                event = self.peek_event()
                raise ComposerError(
                    None,
                    None,
                    f"nested deeper than {self.max_depth} levels",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "found an unhashable key",
                        key_node.start_mark,
                    ) from None
                if duplicate:
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {_one_line(repr(key), 60)}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as exc:
            raise ConstructorError(
                None, None, f"invalid value ({_one_line(str(exc), 100)})", node.start_mark
            ) from None

    def construct_yaml_int(self, node: Node) -> int:
        digits = sum(ch.isalnum() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise ConstructorError(
                None, None, f"integer longer than {MAX_INT_DIGITS} digits", node.start_mark
            )
        return super().construct_yaml_int(node)


BoundedSafeLoader.add_constructor("tag:yaml.org,2002:int", BoundedSafeLoader.construct_yaml_int)


def read_bounded_text(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most max_bytes; YamlInputError or OSError."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise YamlInputError("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise YamlInputError("not a regular file")
    if info.st_size > max_bytes:
        raise YamlInputError(f"larger than {max_bytes} bytes ({info.st_size} bytes)")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YamlInputError(f"larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlInputError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def load_text(text: str) -> Any:
    """The data of one YAML document under the bounds above; YamlInputError if refused."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _one_line(exc.problem or exc.context or "invalid YAML")
        raise YamlInputError(f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"invalid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise YamlInputError("invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def load_file(path: str | Path, max_bytes: int = MAX_BYTES) -> Any:
    """The data of a YAML file under the bounds above; YamlInputError or OSError."""
    return load_text(read_bounded_text(Path(path), max_bytes))
