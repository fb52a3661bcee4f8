"""YAML loading that remembers where every key and value came from.

The document is parsed with PyYAML's *safe* loader: only plain YAML types are ever
constructed, and a tag such as ``!!python/object/apply`` is refused. Instead of
``yaml.safe_load``'s bare tree we walk the composed node graph ourselves, which lets
us record the file:line:column of every key and value under its *path* (a tuple of
mapping keys and list indices, the same shape as a pydantic error's ``loc``), and
reject duplicate keys, which ``safe_load`` silently overwrites.
"""

from __future__ import annotations

import re
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
        self.sizes: dict[int, int] = {}  # merged_size by node id (nodes live as long as the loader)

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
            merges = [key_node for key_node, _ in node.value if key_node.tag == _MERGE_TAG]
            written = len(node.value) - len(merges)
            if merges and self.count + self.merged_size(node) > MAX_VALUES:
                # flatten_mapping would build the whole list first: nested '<<' of aliases grow it tenfold a level
                raise self.error(f"document too large: more than {MAX_VALUES} values ('<<' merges of aliases?)", node.start_mark)
            try:
                self.loader.flatten_mapping(node)  # resolves '<<' merge keys: merged pairs first, then the written ones
            except yaml.constructor.ConstructorError:
                mark = merges[0].start_mark if merges else node.start_mark
                raise self.error("'<<' can only merge a mapping or a list of mappings", mark) from None
            merged = len(node.value) - written
            out: dict[Any, Any] = {}
            written_keys: set[str] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                key = self.walk_scalar(key_node, "mapping key")
                if not isinstance(key, str):
                    # e.g. `on:` or `1:` would silently become true / 1; every key of a spec is a name
                    raise self.error(f"mapping key {key_node.value!r} is read as {_type_name(key)}, not a name: quote it", key_node.start_mark)
                if index >= merged:
                    # A written key may override a merged one (YAML merge semantics), never another written one.
                    if key in written_keys:
                        raise self.error(f"duplicate key '{key}'", key_node.start_mark)
                    written_keys.add(key)
                self.doc.keys[path + (key,)] = _location(self.doc.file, key_node.start_mark)
                out[key] = self.walk(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self.error(_refused(node.tag), node.start_mark)
            return [self.walk(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.walk_scalar(node, "value")

    def merged_size(self, node: yaml.MappingNode) -> int:
        """How many pairs ``node`` has once its '<<' merges are flattened (without flattening them)."""
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        self.sizes[id(node)] = MAX_VALUES + 1  # a merge that reaches itself is too large too
        total = 0
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                total += 1
                continue
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for sub in merged:
                if isinstance(sub, yaml.MappingNode):
                    total += self.merged_size(sub)
            if total > MAX_VALUES:
                break
        self.sizes[id(node)] = total
        return total

    def walk_scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"a {what} must be a plain scalar", node.start_mark)
        try:
            # SafeLoader only knows the standard YAML tags; anything else
            # (e.g. !!python/object/apply) raises a ConstructorError here.
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self.error(_refused(node.tag), node.start_mark) from None
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            raise self.error(f"cannot read {what} {_short(node.value)}: {exc}", node.start_mark) from None
        except (KeyError, AttributeError, IndexError):  # PyYAML's own: `!!bool 1`, `!!timestamp x`
            short = "!!" + node.tag[len(_STANDARD_PREFIX):] if node.tag.startswith(_STANDARD_PREFIX) else node.tag
            raise self.error(f"cannot read {what} {_short(node.value)} as '{short}'", node.start_mark) from None


_STANDARD_PREFIX = "tag:yaml.org,2002:"
_MERGE_TAG = _STANDARD_PREFIX + "merge"


def _refused(tag: str) -> str:
    short = "!!" + tag[len(_STANDARD_PREFIX):] if tag.startswith(_STANDARD_PREFIX) else tag
    return f"refused YAML tag '{short}': specs may only contain plain data"


def _short(text: str) -> str:
    quoted = repr(text)
    return quoted if len(quoted) < 40 else quoted[:37] + "..."


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def _reader_error(exc: yaml.YAMLError, text: str, file: str) -> SpecError:
    position = getattr(exc, "position", None)
    if isinstance(position, int) and isinstance(text, str):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
    else:
        line, column = 1, 1
    character = getattr(exc, "character", None)
    if isinstance(character, int):
        message = f"unreadable YAML: character U+{character:04X} is not allowed in a spec"
    else:
        message = f"unreadable YAML: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
    return SpecError(message, Location(file, line, column))


def load_located(text: str, file: str = "<string>") -> LocatedDocument:
    """Parse one YAML document into a :class:`LocatedDocument`.

    Raises :class:`SpecError` (with the position) for syntax errors, several
    documents, non-standard tags and duplicate keys.
    """
    doc = LocatedDocument(data=None, file=file)
    try:
        # The reader checks the characters as it is created: a control character fails here already.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _reader_error(exc, text, file) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            if problem == "second occurrence" and exc.context:  # a duplicate anchor
                first = f" (first at line {exc.context_mark.line + 1})" if exc.context_mark else ""
                problem = exc.context.split(";")[0] + first
            lines = text.splitlines()
            if mark is not None and mark.line < len(lines) and re.search(r"(?<![\"'])\$\{", lines[mark.line]):
                problem += ' (inside {...} or [...] an expression must be quoted: "${...}")'
            raise SpecError(f"YAML syntax error: {problem}", _location(file, mark) if mark else Location(file, 1, 1)) from None
        except yaml.YAMLError as exc:  # reader errors: control characters, bad encoding
            raise _reader_error(exc, text, file) from None
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
