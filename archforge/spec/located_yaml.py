"""YAML loading that remembers where every key and value came from.

The document is parsed with PyYAML's *safe* loader: only plain YAML types are ever
constructed, and a tag such as ``!!python/object/apply`` is refused. Instead of
``yaml.safe_load``'s bare tree we walk the composed node graph ourselves, which lets
us record the file:line:column of every key and value under its *path* (a tuple of
mapping keys and list indices, the same shape as a pydantic error's ``loc``), and
reject duplicate keys, which ``safe_load`` silently overwrites. Merge keys (``<<``)
follow the YAML merge rule, applied here rather than by PyYAML (whose order changed
between releases): written keys win over merged ones, earlier mappings of a merge list
over later ones.

PyYAML reads YAML 1.1, where some plain scalars mean something few authors intend.
Each such case is decided here, once, for every spec and search space:

* refused, with a hint to quote the text or write the number plainly:
  base-60 numbers (``190:20:30`` would be 685230), integers with a leading zero
  (``010`` would be 8), ``yes``/``no``/``on``/``off`` as values (booleans in YAML 1.1,
  strings in YAML 1.2: write ``true``/``false``), dates and times (``2001-12-14``),
  ``!!binary``, and ``<<``/``=`` as plain values;
* refused because nothing in a spec can use them: ``.inf``, ``.nan`` and floats that
  overflow to infinity (``1e400``), numbers larger than :data:`~archforge.spec.expressions.MAX_NUMBER`, and the
  ``!!set``, ``!!omap`` and ``!!pairs`` collections (like every non-standard tag);
* accepted, because the meaning is unambiguous and YAML 1.2 and Python agree:
  ``1e-4``, ``1E5``, ``1.5e3`` (floats, which PyYAML would leave as strings), ``0o17``
  (octal), ``0x1F``, ``0b101`` and ``1_000``.

Mapping keys are always names: a key read as anything but a string (``on:``, ``1:``,
``2001-12-14:``) is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from archforge.errors import Location, SpecError
from archforge.spec.expressions import MAX_NUMBER
from archforge.spec.text import short_value, type_name

Path = tuple[Any, ...]

# Aliases let a few lines expand into a huge tree ("billion laughs"); a spec never
# legitimately needs more values, or deeper nesting, than this. Errors name the bound: raise it here.
MAX_VALUES = 200_000
MAX_DEPTH = 100
_HERE = "archforge.spec.located_yaml."


class _Loader(yaml.SafeLoader):
    """The safe loader, reading the YAML 1.2 spellings of numbers that YAML 1.1 leaves as strings."""


class _Dumper(yaml.SafeDumper):
    """The safe dumper, quoting the strings that :class:`_Loader` would read as numbers."""


for _first in "-+.0123456789":
    for _cls in (_Loader, _Dumper):
        _cls.add_implicit_resolver(
            "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"), [_first]
        )
        _cls.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?0o[0-7_]+$"), [_first])


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that :func:`load_located` reads back to the same values."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100, allow_unicode=False)


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
        self.flat: dict[int, list[_Pair]] = {}  # flatten() by node id: an anchor merged many times is flattened once

    def error(self, message: str, mark: yaml.Mark | None) -> SpecError:
        loc = _location(self.doc.file, mark) if mark is not None else Location(self.doc.file, 1, 1)
        return SpecError(message, loc)

    def walk(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.error(f"document too large: more than {MAX_VALUES} values (alias expansion?) ({_HERE}MAX_VALUES)", node.start_mark)
        if depth > MAX_DEPTH:
            raise self.error(f"document nested more than {MAX_DEPTH} levels deep ({_HERE}MAX_DEPTH)", node.start_mark)
        self.doc.values[path] = _location(self.doc.file, node.start_mark)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise self.error(_refused(node.tag), node.start_mark)
            if any(key_node.tag == _MERGE_TAG for key_node, _ in node.value) and self.count + self.merged_size(node) > MAX_VALUES:
                # flattening would build the whole list first: nested '<<' of aliases grow it tenfold a level
                raise self.error(f"document too large: more than {MAX_VALUES} values ('<<' merges of aliases?) ({_HERE}MAX_VALUES)", node.start_mark)
            out: dict[Any, Any] = {}
            for key, key_node, value_node in self.flatten(node):
                self.doc.keys[path + (key,)] = _location(self.doc.file, key_node.start_mark)
                out[key] = self.walk(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.error(_refused(node.tag), node.start_mark)
            return [self.walk(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.walk_scalar(node, "value")

    def flatten(self, node: yaml.MappingNode) -> list[_Pair]:
        """The pairs of ``node`` with its '<<' merges applied by the YAML merge rule (not PyYAML's, which
        changed between releases): a written key wins over a merged one, an earlier mapping of a merge
        list over a later one, and merged mappings have their own merges applied first."""
        known = self.flat.get(id(node))
        if known is not None:
            return known
        merged: dict[str, _Pair] = {}
        written: dict[str, _Pair] = {}
        merge_key: yaml.Node | None = None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                if merge_key is not None:
                    raise self.error("duplicate key '<<': list the mappings to merge in one '<<: [...]'", key_node.start_mark)
                merge_key = key_node
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode) or source.tag != _MAP_TAG:
                        raise self.error("'<<' can only merge a mapping or a list of mappings", key_node.start_mark)
                    for pair in self.flatten(source):
                        merged.setdefault(pair[0], pair)  # the first mapping that has the key wins
                continue
            key = self.walk_scalar(key_node, "mapping key")
            if not isinstance(key, str):
                # e.g. `on:` or `1:` would silently become true / 1; every key of a spec is a name
                raise self.error(f"mapping key {short_value(key_node.value)} is read as {type_name(key)}, not a name: quote it", key_node.start_mark)
            if key in written:  # a written key may override a merged one, never another written one
                raise self.error(f"duplicate key '{key}'", key_node.start_mark)
            written[key] = (key, key_node, value_node)
        merged.update(written)
        pairs = list(merged.values())
        self.flat[id(node)] = pairs
        return pairs

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
        if node.tag in (_MERGE_TAG, _VALUE_TAG):
            if what == "mapping key" and node.tag == _VALUE_TAG:
                return node.value  # PyYAML's safe_load reads a '=' key as the string too
            raise self.error(f"{short_value(node.value)} is special in YAML: quote it ({short_value(node.value)})", node.start_mark)
        odd = _oddity(node) if what == "value" else None  # a key that is not a string has its own message
        if odd:
            raise self.error(odd, node.start_mark)
        if node.tag == _INT_TAG and _decimal_digits(node.value) > len(str(MAX_NUMBER)):
            # Checked on the text: int() refuses over 4300 digits with advice about sys.set_int_max_str_digits.
            if what == "mapping key":
                raise self.error(f"mapping key {short_value(node.value)} is read as a number, not a name: quote it", node.start_mark)
            raise self.error(_too_large(node.value), node.start_mark)
        try:
            # SafeLoader only knows the standard YAML tags; anything else
            # (e.g. !!python/object/apply) raises a ConstructorError here.
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self.error(_refused(node.tag), node.start_mark) from None
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            raise self.error(f"cannot read {what} {short_value(node.value)}: {exc}", node.start_mark) from None
        except (KeyError, AttributeError, IndexError):  # PyYAML's own: `!!bool 1`, `!!timestamp x`
            raise self.error(f"cannot read {what} {short_value(node.value)} as '{_short_tag(node.tag)}'", node.start_mark) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(f"{what} {short_value(node.value)} is not a finite number: specs take finite numbers only", node.start_mark)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            raise self.error(_too_large(node.value), node.start_mark)
        return value


def _too_large(text: str) -> str:
    return (f"number {short_value(text)} is too large: spec numbers are at most {MAX_NUMBER:.0e} in magnitude "
            "(archforge.spec.expressions.MAX_NUMBER)")


def _decimal_digits(text: str) -> int:
    """The significant digits of an integer scalar in base 10; 0 in base 2, 8 or 16, whose int() has no digit limit."""
    digits = text.replace("_", "").lstrip("+-")
    if digits[:2] in ("0b", "0o", "0x"):
        return 0
    return len(digits.lstrip("0"))


_Pair = tuple[str, yaml.Node, yaml.Node]  # key, key node, value node

_STANDARD_PREFIX = "tag:yaml.org,2002:"
_MERGE_TAG = _STANDARD_PREFIX + "merge"
_VALUE_TAG = _STANDARD_PREFIX + "value"
_MAP_TAG = _STANDARD_PREFIX + "map"
_SEQ_TAG = _STANDARD_PREFIX + "seq"
_INT_TAG = _STANDARD_PREFIX + "int"
_FLOAT_TAG = _STANDARD_PREFIX + "float"
_BOOL_TAG = _STANDARD_PREFIX + "bool"
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")
_YAML11_BOOLEANS = {"yes", "no", "on", "off"}


def _oddity(node: yaml.ScalarNode) -> str | None:
    """Why a YAML 1.1 reading of ``node`` is refused (see the module docstring), or ``None``."""
    text, tag = node.value, node.tag
    if tag in (_INT_TAG, _FLOAT_TAG) and ":" in text:
        return f"{short_value(text)} is a base-60 number in YAML 1.1: quote it ({short_value(text)}) or write the number"
    if tag == _INT_TAG and _LEADING_ZERO.match(text):
        return f"{short_value(text)} is an octal number in YAML 1.1: drop the leading zero, write 0o{text.lstrip('+-0_') or '0'} for octal, or quote it"
    if tag == _BOOL_TAG and text.lower() in _YAML11_BOOLEANS:
        meaning = "true" if text.lower() in ("yes", "on") else "false"
        return f"{short_value(text)} is the boolean {meaning} in YAML 1.1: write {meaning}, or quote it ({short_value(text)}) for the word"
    if tag == _STANDARD_PREFIX + "timestamp":
        return f"{short_value(text)} is read as a date: quote it ({short_value(text)})"
    if tag == _STANDARD_PREFIX + "binary":
        return "refused YAML tag '!!binary': specs may only contain plain data"
    return None


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_STANDARD_PREFIX):] if tag.startswith(_STANDARD_PREFIX) else tag


def _refused(tag: str) -> str:
    return f"refused YAML tag '{_short_tag(tag)}': specs may only contain plain data"


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
        loader = _Loader(text)
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
