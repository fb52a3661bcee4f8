"""YAML loading that remembers where every key and value came from.

The document is parsed with PyYAML's *safe* loader: only plain YAML types are ever
constructed, and a tag such as ``!!python/object/apply`` is refused. Instead of
``yaml.safe_load``'s bare tree we walk the composed node graph ourselves, which lets
us record the file:line:column of every key and value under its *path* (a tuple of
mapping keys and list indices, the same shape as a pydantic error's ``loc``), and
reject duplicate keys, which ``safe_load`` silently overwrites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from archforge.errors import Location, SpecError

Path = tuple[Any, ...]

# Aliases let a few lines expand into a huge tree ("billion laughs"); a spec never
# legitimately needs more values than this.
MAX_VALUES = 200_000


@dataclass
class LocatedDocument:
    """A plain Python tree plus the location of each value (and of each mapping key)."""

    data: Any
    file: str
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Location:
        """The location of ``path``, falling back to its closest ancestor that has one."""
        path = tuple(path)
        while True:
            if key and path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return Location(self.file, 1, 1)
            path = path[:-1]


def _location(file: str, mark: yaml.Mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, doc: LocatedDocument):
        self.loader = loader
        self.doc = doc
        self.count = 0

    def error(self, message: str, mark: yaml.Mark | None) -> SpecError:
        loc = _location(self.doc.file, mark) if mark is not None else Location(self.doc.file, 1, 1)
        return SpecError(message, loc)

    def walk(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.error(f"document too large: more than {MAX_VALUES} values (alias expansion?)", node.start_mark)
        if depth > 100:
            raise self.error("document nested more than 100 levels deep", node.start_mark)
        self.doc.values[path] = _location(self.doc.file, node.start_mark)
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                raise self.error(_refused(node.tag), node.start_mark)
            written = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
            try:
                self.loader.flatten_mapping(node)  # resolves '<<' merge keys: merged pairs first, then the written ones
            except yaml.constructor.ConstructorError as exc:
                mark = exc.problem_mark or node.start_mark
                raise self.error(f"'<<' merges only a mapping or a list of mappings ({exc.problem})", mark) from None
            merged = len(node.value) - written
            out: dict[Any, Any] = {}
            for index, (key_node, value_node) in enumerate(node.value):
                key = self.walk_scalar(key_node, "mapping key")
                if not isinstance(key, str):
                    # e.g. `on:` or `1:` would silently become true / 1; every key of a spec is a name
                    raise self.error(f"mapping key {key_node.value!r} is read as {_type_name(key)}, not a name: quote it", key_node.start_mark)
                if key in out and index > merged:
                    # A written key may override a merged one (YAML merge semantics), never another written one.
                    first_written = index - 1 >= merged and any(
                        self.loader.construct_object(k, deep=True) == key for k, _ in node.value[merged:index]
                    )
                    if first_written:
                        raise self.error(f"duplicate key '{key}'", key_node.start_mark)
                self.doc.keys[path + (key,)] = _location(self.doc.file, key_node.start_mark)
                out[key] = self.walk(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self.error(_refused(node.tag), node.start_mark)
            return [self.walk(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.walk_scalar(node, "value")

    def walk_scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"a {what} must be a plain scalar", node.start_mark)
        try:
            # SafeLoader only knows the standard YAML tags; anything else
            # (e.g. !!python/object/apply) raises a ConstructorError here.
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self.error(_refused(node.tag), node.start_mark) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise self.error(f"cannot read {what} {node.value!r}: {exc}", node.start_mark) from None


_STANDARD_PREFIX = "tag:yaml.org,2002:"
_MERGE_TAG = _STANDARD_PREFIX + "merge"


def _refused(tag: str) -> str:
    short = "!!" + tag[len(_STANDARD_PREFIX):] if tag.startswith(_STANDARD_PREFIX) else tag
    return f"refused YAML tag '{short}': specs may only contain plain data"


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def load_located(text: str, file: str = "<string>") -> LocatedDocument:
    """Parse one YAML document into a :class:`LocatedDocument`.

    Raises :class:`SpecError` (with the position) for syntax errors, several
    documents, non-standard tags and duplicate keys.
    """
    doc = LocatedDocument(data=None, file=file)
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            lines = text.splitlines()
            if mark is not None and mark.line < len(lines) and "${" in lines[mark.line]:
                problem += ' (inside {...} or [...] an expression must be quoted: "${...}")'
            raise SpecError(f"YAML syntax error: {problem}", _location(file, mark) if mark else Location(file, 1, 1)) from None
        except yaml.YAMLError as exc:  # reader errors: control characters, bad encoding
            mark = getattr(exc, "position", None)
            line = 1 if mark is None else text.count("\n", 0, mark) + 1
            raise SpecError(f"unreadable YAML: {(str(exc).splitlines() or [type(exc).__name__])[0]}", Location(file, line, 1)) from None
        except RecursionError:
            raise SpecError("YAML nested too deeply", Location(file, 1, 1)) from None
        if node is None:
            raise SpecError("the spec is empty", Location(file, 1, 1))
        try:
            doc.data = _Walker(loader, doc).walk(node, ())
        except RecursionError:
            raise SpecError("YAML nested too deeply", Location(file, 1, 1)) from None
    finally:
        loader.dispose()
    return doc
