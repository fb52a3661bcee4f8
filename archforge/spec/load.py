"""From YAML text to a :class:`Spec`, turning every pydantic complaint into a located :class:`SpecError`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from archforge.errors import Location, SpecError, did_you_mean
from archforge.spec.located_yaml import LocatedDocument, load_located
from archforge.spec.schema import FORMAT_VERSION, DefineSpec, InputSpec, NodeSpec, Spec
from archforge.spec.text import short_value, type_name
from archforge.spec.zoo import resolve_source

MAX_SPEC_BYTES = 4 * 1024 * 1024

# Which model a path inside the spec document is validated by, for "did you mean" on unknown keys.
_SECTION_MODELS: dict[str, type[BaseModel]] = {"input": InputSpec}


def read_spec_text(source: str | os.PathLike[str], what: str = "spec") -> str:
    """The UTF-8 text of a spec file; unreadable, oversized or undecodable files are located SpecErrors."""
    path = Path(source)
    if "\0" in str(path):  # the OS cannot take it: Path.exists() and open() raise ValueError, not OSError
        raise SpecError(f"cannot read {what}: the path contains a NUL character", Location(str(path).replace("\0", "\\0"), 1, 1))
    try:
        if path.exists() and not path.is_file():
            # a directory fails to open, but a FIFO would block and /dev/zero would never end
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise SpecError(f"cannot read {what}: {kind}", Location(str(path), 1, 1))
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror or exc}", Location(str(path), 1, 1)) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{what} file larger than {MAX_SPEC_BYTES} bytes (archforge.spec.load.MAX_SPEC_BYTES)", Location(str(path), 1, 1))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{what} is not valid UTF-8 (byte {exc.start})", Location(str(path), line, 1)) from None


def load_spec(source: str | os.PathLike[str]) -> Spec:
    """Read and validate a spec file or a bundled model by name (structure only; blocks and shapes are checked by :func:`archforge.validate`).

    ``source`` is a path, or the name of a bundled model (``"convit_tiny"``); how one is
    told from the other is the rule of :mod:`archforge.spec.zoo`.
    """
    path = resolve_source(source, "spec")
    return parse_spec(read_spec_text(path), file=str(Path(path)))


def parse_spec(text: str, file: str = "<string>") -> Spec:
    """Parse spec YAML given as text; ``file`` is used in error locations."""
    return spec_from_document(load_located(text, file))


def spec_from_document(doc: LocatedDocument) -> Spec:
    data = doc.data
    if data is None or data == "":
        raise SpecError("the spec is empty", doc.locate(()))
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of keys (archforge, name, input, nodes, ...), got {type_name(data)}", doc.locate(()))
    if "archforge" not in data:
        raise SpecError(f"missing format version: add 'archforge: {FORMAT_VERSION}' at the top", doc.locate(()))
    version = data["archforge"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise SpecError(
            f"unsupported format version {short_value(version) if not isinstance(version, (dict, list)) else '(' + short_value(version) + ')'}: "
            f"this archforge reads 'archforge: {FORMAT_VERSION}'",
            doc.locate(("archforge",)),
        )
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, doc, ()) from None
    except RecursionError:
        raise SpecError("spec nested too deeply", doc.locate(())) from None
    spec._document = doc
    return spec


def validation_error(exc: ValidationError, doc: LocatedDocument, prefix: tuple[Any, ...], node: str | None = None,
                     model: type[BaseModel] | None = None, block_args: bool = False) -> SpecError:
    """The first error of ``exc`` (by position in the file) as a :class:`SpecError`; ``block_args``: ``model`` is a block's ``Args``."""
    errors = _plain_errors(exc, doc, prefix)
    errors.sort(key=lambda e: _sort_key(doc, e["path"]))
    first = errors[0]
    path = first["path"]
    name = node or _node_of(doc, path)
    kind = first["type"]
    where = f" in node '{name}'" if name else ""
    if kind in ("extra_forbidden", "missing") and not name and len(path) > 1:
        where = f" in '{dotted(path[:-1])}'"
    if kind == "extra_forbidden":
        known = _known_keys(model, doc, path[:-1]) if len(path) > len(prefix) else []
        message = f"unknown key '{path[-1]}'{where}{did_you_mean(str(path[-1]), known)}{_valid_keys(known, block_args)}"
        location = doc.locate(path, key=True)
    elif kind == "missing":
        message = f"missing key '{path[-1]}'{where}"
        location = doc.locate(path[:-1])
    elif first["key"]:  # a mapping key that breaks its pattern, e.g. a define named 'builtin:conv'
        owner = "define" if path[:-1] == ("define",) else f"key in '{dotted(path[:-1]) or 'spec'}'"
        problem = _describe(first)
        message = f"{owner} {short_value(path[-1])}{' is ' if problem.startswith('not ') else ': '}{problem}{where}"
        location = doc.locate(path, key=True)
    else:
        message = f"{dotted(path) or 'spec'}: {_describe(first)}{_got(first)}{where}{_literal_hint(first)}"
        location = doc.locate(path, key=first["key"])
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return SpecError(message, location, name)


def _plain_errors(exc: ValidationError, doc: LocatedDocument, prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Pydantic's errors with document paths: union member tags (``in.str``) and ``[key]`` taken out of ``loc``,
    the alternatives of one union merged into one error, and a ``missing`` key dropped when the same
    mapping has an unknown one (a typo: ``blok`` is reported, not the absent ``block``)."""
    errors = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path, tag, key, data = list(prefix), None, False, _get(doc.data, prefix)
        for i, part in enumerate(loc):
            if part == "[key]":
                key = True
                continue
            present = (isinstance(data, dict) and part in data) or (
                isinstance(data, list) and isinstance(part, int) and -len(data) <= part < len(data)
            )
            if isinstance(part, str) and not present and not (i == len(loc) - 1 and error["type"] in ("missing", "extra_forbidden")):
                if tag is None:  # a union member such as 'int', 'list[str]', "literal['same']"
                    tag = (part, len(path))
                continue
            path.append(part)
            data = data[part] if present else None
        errors.append({**error, "path": tuple(path), "tag": tag, "key": key})

    # One union, several members: prefer a member that got further into the value (the element
    # of a list that is not a string), otherwise say which alternatives were expected.
    deeper = {e["path"][: e["tag"][1]] for e in errors if e["tag"] is not None and len(e["path"]) > e["tag"][1]}
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    plain = []
    for error in errors:
        if error["tag"] is not None and len(error["path"]) == error["tag"][1]:
            if error["path"] in deeper:
                continue
            if error["path"] in merged:
                merged[error["path"]]["alternatives"].append(error["tag"][0])
                continue
            error = merged[error["path"]] = {**error, "alternatives": [error["tag"][0]]}
        plain.append(error)
    for error in plain:
        if len(error.get("alternatives", ())) > 1:
            error["type"] = "union"
    typos = {e["path"][:-1] for e in plain if e["type"] == "extra_forbidden"}
    return [e for e in plain if not (e["type"] == "missing" and e["path"][:-1] in typos)] or plain


_ALTERNATIVES = {
    "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false", "none": "null",
    "list[str]": "a list of strings", "list[int]": "a list of integers", "list[float]": "a list of numbers",
}


def _describe(error: dict[str, Any]) -> str:
    """Pydantic's message, said the way the rest of the diagnostics are."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "union":
        names = []
        for tag in error["alternatives"]:
            if tag.startswith("literal[") and tag.endswith("]"):
                names.extend(part.strip() for part in tag[len("literal["):-1].split(","))
            else:
                names.append(_ALTERNATIVES.get(tag, "a mapping" if tag.startswith("dict[") else tag))
        return "expected " + " or ".join(dict.fromkeys(names))
    if kind in ("too_short", "too_long") and "actual_length" in ctx:
        bound = ctx.get("min_length" if kind == "too_short" else "max_length")
        word = "at least" if kind == "too_short" else "at most"
        return f"needs {word} {bound} item{'s' if bound != 1 else ''}, got {ctx['actual_length']}"
    if kind == "string_pattern_mismatch":
        from archforge.spec.schema import BLOCK_REFERENCE, IDENTIFIER

        if ctx.get("pattern") == IDENTIFIER:
            return "not a valid name: use letters, digits and '_', not starting with a digit"
        if ctx.get("pattern") == BLOCK_REFERENCE:
            return "not a block name: use letters, digits and '_', optionally after '<plugin>:' (or a $param holding a block name)"
    message = str(error.get("msg", kind))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = re.sub(r"a valid dictionary( or instance of \w+)?", "a mapping", message)
    return message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message


#: Valid keys listed after an unknown one, at most (a block's args rarely number more).
_LISTED_KEYS = 20


def _valid_keys(known: list[str], block_args: bool) -> str:
    """``; valid: a, b, c`` — what may be written there instead (block args say so when there are none)."""
    if not known:
        return "; this block takes no args" if block_args else ""
    shown = ", ".join(known[:_LISTED_KEYS]) + (f", … ({len(known)} in all)" if len(known) > _LISTED_KEYS else "")
    return f"; valid {'args' if block_args else 'keys'}: {shown}"


def _known_keys(model: type[BaseModel] | None, doc: LocatedDocument, parent: tuple[Any, ...]) -> list[str]:
    if model is None:
        model = _model_at(parent)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema model validating the mapping at ``path`` of a spec document."""
    if path == ():
        return Spec
    if len(path) == 1:
        return _SECTION_MODELS.get(path[0])
    if path[0] == "nodes" and len(path) == 2:
        return NodeSpec
    if path[0] == "define" and len(path) == 2:
        return DefineSpec
    if path[0] == "define" and len(path) == 4 and path[2] == "nodes":
        return NodeSpec
    return None


def _node_of(doc: LocatedDocument, path: tuple[Any, ...]) -> str | None:
    """A readable name for the node that ``path`` points into, if any."""
    data = doc.data
    if len(path) >= 2 and path[0] == "nodes" and isinstance(path[1], int):
        return _node_name(_get(data, path[:2]), path[1])
    if len(path) >= 4 and path[0] == "define" and path[2] == "nodes" and isinstance(path[3], int):
        return f"{path[1]}.{_node_name(_get(data, path[:4]), path[3])}"
    return None


def _node_name(node: Any, index: int) -> str:
    from archforge.spec.schema import IDENTIFIER

    node_id = node.get("id") if isinstance(node, dict) else None
    return node_id if isinstance(node_id, str) and re.match(IDENTIFIER, node_id) else f"nodes[{index}]"


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _literal_hint(error: dict[str, Any]) -> str:
    """A "did you mean" for a string that is not one of the allowed words (``init: refrence``)."""
    if not isinstance(error.get("input"), str):
        return ""
    if error["type"] == "literal_error":
        tags = [f"literal[{(error.get('ctx') or {}).get('expected', '').replace(' or ', ',')}]"]
    else:
        tags = error.get("alternatives") or []
    words = [part.strip().strip("'\"") for tag in tags if tag.startswith("literal[")
             for part in tag[len("literal["):-1].split(",")]
    return did_you_mean(error["input"], words) if words else ""


def _got(error: dict[str, Any]) -> str:
    if error["type"] in ("missing", "extra_forbidden", "too_short", "too_long") or "input" not in error:
        return ""
    if error["type"] in ("value_error", "assertion_error") and isinstance(error["input"], dict):
        return ""  # a check of the whole mapping, e.g. a model validator
    return f" (got {short_value(error['input'])})"


def dotted(path: tuple[Any, ...]) -> str:
    """A document path as diagnostics print it: ``define.unit.nodes[1].args.channels``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _sort_key(doc: LocatedDocument, path: tuple[Any, ...]) -> tuple[int, int]:
    location = doc.locate(path)
    return (location.line, location.column)
