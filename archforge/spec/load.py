"""From YAML text to a :class:`Spec`, turning every pydantic complaint into a located :class:`SpecError`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from archforge.errors import Location, SpecError, did_you_mean
from archforge.spec.located_yaml import LocatedDocument, load_located
from archforge.spec.schema import FORMAT_VERSION, DefineSpec, InputSpec, NodeSpec, Spec

MAX_SPEC_BYTES = 4 * 1024 * 1024

# Which model a path inside the spec document is validated by, for "did you mean" on unknown keys.
_SECTION_MODELS: dict[str, type[BaseModel]] = {"input": InputSpec}


def load_spec(source: str | os.PathLike[str]) -> Spec:
    """Read and validate a spec file (structure only; blocks and shapes are checked by :func:`archforge.validate`)."""
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror or exc}", Location(str(path), 1, 1)) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"spec file larger than {MAX_SPEC_BYTES} bytes", Location(str(path), 1, 1))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"spec is not valid UTF-8 (byte {exc.start})", Location(str(path), line, 1)) from None
    return parse_spec(text, file=str(path))


def parse_spec(text: str, file: str = "<string>") -> Spec:
    """Parse spec YAML given as text; ``file`` is used in error locations."""
    return spec_from_document(load_located(text, file))


def spec_from_document(doc: LocatedDocument) -> Spec:
    data = doc.data
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of keys (archforge, name, input, nodes, ...), got {_type_name(data)}", doc.locate(()))
    if "archforge" not in data:
        raise SpecError(f"missing format version: add 'archforge: {FORMAT_VERSION}' at the top", doc.locate(()))
    if data["archforge"] != FORMAT_VERSION or isinstance(data["archforge"], bool):
        raise SpecError(
            f"unsupported format version {data['archforge']!r}: this archforge reads 'archforge: {FORMAT_VERSION}'",
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


def validation_error(exc: ValidationError, doc: LocatedDocument, prefix: tuple[Any, ...], node: str | None = None, model: type[BaseModel] | None = None) -> SpecError:
    """The first error of ``exc`` (by position in the file) as a :class:`SpecError`."""
    errors = sorted(exc.errors(), key=lambda e: _sort_key(doc, prefix + tuple(e["loc"])))
    first = errors[0]
    loc = tuple(first["loc"])
    path = prefix + loc
    node = node or _node_of(doc, path)
    kind = first["type"]
    where = f" in node '{node}'" if node else (f" in '{_dotted(path[:-1])}'" if len(path) > 1 else "")
    if kind == "extra_forbidden":
        known = _known_keys(model, doc, path[:-1]) if loc else []
        message = f"unknown key '{loc[-1]}'{where}{did_you_mean(str(loc[-1]), known)}"
        location = doc.locate(path, key=True)
    elif kind == "missing":
        message = f"missing key '{loc[-1]}'{where}"
        location = doc.locate(path[:-1])
    else:
        message = f"{_dotted(path) or 'spec'}: {first['msg']}{_got(first)}{where}"
        location = doc.locate(path)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return SpecError(message, location, node)


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
        node = _get(data, path[:2])
        return node.get("id") if isinstance(node, dict) and isinstance(node.get("id"), str) else f"nodes[{path[1]}]"
    if len(path) >= 4 and path[0] == "define" and path[2] == "nodes" and isinstance(path[3], int):
        node = _get(data, path[:4])
        name = node.get("id") if isinstance(node, dict) and isinstance(node.get("id"), str) else f"nodes[{path[3]}]"
        return f"{path[1]}.{name}"
    return None


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _got(error: dict[str, Any]) -> str:
    if error["type"] in ("missing", "extra_forbidden") or "input" not in error:
        return ""
    value = error["input"]
    if isinstance(value, (dict, list)):
        return f" (got a {_type_name(value)})"
    text = repr(value)
    return f" (got {text if len(text) < 40 else text[:37] + '...'})"


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", type(None): "nothing"}.get(type(value), type(value).__name__)


def _sort_key(doc: LocatedDocument, path: tuple[Any, ...]) -> tuple[int, int]:
    location = doc.locate(path)
    return (location.line, location.column)
