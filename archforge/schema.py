"""JSON Schema (draft 2020-12) of the spec language, including every installed block's args.

Editors use it to complete and check specs while they are typed; for VS Code's YAML
extension (the YAML language server)::

    archforge schema -o .archforge/spec.schema.json
    archforge schema --search -o .archforge/space.schema.json

    # .vscode/settings.json
    "yaml.schemas": {
        ".archforge/spec.schema.json": ["archforge/zoo/models/*.yaml"],
        ".archforge/space.schema.json": ["archforge/zoo/spaces/*.yaml"]
    }

or a first line ``# yaml-language-server: $schema=../../.archforge/spec.schema.json``
in a spec.

What the schema checks:

* the structure of a spec: the top-level keys (unknown ones are errors), ``input``,
  ``params``, ``define``, the keys of every node (``id``, ``block``, ``args``, ``in``,
  ``repeat``), from the same pydantic models :func:`archforge.load_spec` uses;
* ``block:``: any registered block (offered for completion with its summary line), or
  a name matching ``[A-Za-z_][A-Za-z0-9_]*`` (a ``define`` of the spec) or ``$param``;
* ``args:`` of a node whose ``block`` is a registered block, against that block's
  ``Args`` (``Args.model_json_schema()``): unknown args, wrong types, values out of
  range, and missing required args are errors. The rule is
  ``if: {properties: {block: {const: NAME}}} then: {properties: {args: ...}}``, one per
  block. A node whose block is a define or a ``$param`` takes any args;
* wherever a value stands in block args (also inside lists and nested mappings), a
  ``$name`` reference or a ``${...}`` expression string is accepted in place of the
  value; its result is checked by ``archforge validate``, not by the schema.

What only ``archforge validate`` checks: that ids, ``in`` references, defines and
params exist, expression results, graph cycles and shapes. A ``define`` named like a
registered block shadows the block in archforge, while the schema still applies the
block's args to nodes using that name: do not name defines after blocks.

Search spaces (``search=True``, ``archforge schema --search``): a separate schema, the
spec schema plus choice points and the top-level ``search:`` section. A choice point is one of::

    {choice: [v1, v2, ...], label: name, per_copy: true}
    {int: [low, high], step: 2, log: false, label: name, per_copy: true}
    {float: [low, high], step: 0.1, log: true, label: name, per_copy: true}

(``label``, ``step``, ``log``, ``per_copy`` optional), each the JSON Schema of its pydantic
model in :mod:`archforge.search.choices`, and may stand for a param value, a define's
param default, a node's ``block``, ``repeat``, ``in`` (or one element of its list),
``continues``, any value in a node's args (also inside lists), or the ``output`` of the
spec or a define. In a block's args the options of a ``choice``, and the ends of a range,
are checked against that arg's schema. What is arithmetic rather than form (a step that
divides its range, low below high, options listed twice) is left to ``archforge space``. The ``search:`` section is checked against
:class:`archforge.search.SearchSettings` (fields with shorthand forms, such as
``pruner: hyperband``, also accept a string). Keeping the two schemas apart means a
plain spec with a leftover choice point is flagged in the editor, as ``archforge
build`` would refuse it; every spec is also a valid search space.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel

from archforge.registry import BlockEntry, Registry, default_registry
from archforge.search.choices import POINT_MODELS
from archforge.spec.schema import BLOCK_REFERENCE, FORMAT_VERSION, Spec

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SPEC_SCHEMA_ID = "https://archforge.dev/schemas/spec-v1.json"
SPACE_SCHEMA_ID = "https://archforge.dev/schemas/search-space-v1.json"

#: A ``$name`` reference or a ``${...}`` expression (as :func:`archforge.spec.expressions.is_templated`).
TEMPLATE_PATTERN = r"^\$([A-Za-z_][A-Za-z0-9_]*|\{[\s\S]*\})$"

_TEMPLATE_REF = {"$ref": "#/$defs/template"}
_CHOICE_REF = {"$ref": "#/$defs/choice_point"}
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly")


def spec_json_schema(registry: Registry | None = None, *, search: bool = False) -> dict[str, Any]:
    """The JSON Schema of specs (or, with ``search=True``, of search spaces) for the blocks of ``registry``.

    ``registry`` defaults to every installed plugin. The result is plain JSON data
    (``json.dumps`` it), valid under draft 2020-12.
    """
    registry = default_registry() if registry is None else registry
    # Every name a spec may write: the short names, and the qualified names of plugin blocks
    # that a built-in of the same short name hides.
    names = {name: registry.blocks[name] for name in registry.names()}
    names.update((q, e) for q, e in sorted(registry.qualified.items()) if registry.blocks.get(e.block.name) is not e)
    schema = Spec.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.pop("$defs")

    defs["template"] = {
        "type": "string",
        "pattern": TEMPLATE_PATTERN,
        "description": "A $param reference or a ${...} expression, resolved by archforge.",
    }
    if search:
        defs.update(_choice_defs())
        section, section_defs = _search_section_schema()
        defs.update(section_defs)

    node = defs["NodeSpec"]
    props = node["properties"]
    props["block"] = {
        "description": props["block"].get("description", ""),
        "anyOf": [
            *({"const": name, "description": _block_summary(entry)} for name, entry in names.items()),
            {"type": "string", "pattern": BLOCK_REFERENCE, "description": "A define of this spec, or a $param holding a block name."},
        ],
    }
    props["repeat"] = {
        "description": props["repeat"].get("description", ""),
        "anyOf": [{"type": "integer", "minimum": 0}, _TEMPLATE_REF],
    }
    props["args"] = {"type": "object", "description": props["args"].get("description", "")}
    if search:
        props["block"]["anyOf"].append(_choice_schema({"type": "string", "pattern": BLOCK_REFERENCE}))
        props["repeat"]["anyOf"].append(_choice_schema({"anyOf": [{"type": "integer", "minimum": 0}, _TEMPLATE_REF]}))
        props["args"]["additionalProperties"] = _choice_if_choice()
        for key in ("in", "continues"):
            props[key] = _with_choice(props[key])
        for alternative in props["in"]["anyOf"][0]["anyOf"]:  # an element of a list of inputs may be a choice too
            if alternative.get("type") == "array":
                alternative["items"] = {"anyOf": [alternative["items"], _choice_schema(copy.deepcopy(alternative["items"]))]}

    rules = []
    for name, entry in names.items():
        args_schema, args_defs = _args_schema(entry, name, search)
        defs.update(args_defs)
        defs[f"args.{name}"] = args_schema
        then: dict[str, Any] = {"properties": {"args": {"$ref": f"#/$defs/args.{name}"}}}
        if args_schema.get("required"):
            then["required"] = ["args"]
        rules.append({"if": {"properties": {"block": {"const": name}}, "required": ["block"]}, "then": then})
    if rules:
        node["allOf"] = rules

    if search:
        for holder in (schema["properties"]["params"], defs["DefineSpec"]["properties"]["params"]):
            holder["additionalProperties"] = _choice_if_choice()
        for holder in (schema, defs["DefineSpec"]):
            holder["properties"]["output"] = _with_choice(holder["properties"]["output"])
        schema["properties"]["search"] = section

    title = "archforge search space" if search else "archforge spec"
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SPACE_SCHEMA_ID if search else SPEC_SCHEMA_ID,
        "title": title,
        "description": f"{title} (format version {FORMAT_VERSION}) with the args of {len(names)} registered blocks.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
        "$defs": defs,
    }


def _block_summary(entry: BlockEntry) -> str:
    doc = (type(entry.block).__doc__ or "").strip().split("\n")[0]
    origin = f"{entry.plugin.distribution} {entry.plugin.version}"
    return f"{doc} [{entry.block.family}; {origin}]" if doc else f"[{entry.block.family}; {origin}]"


def _args_schema(entry: BlockEntry, name: str, search: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema of one block's ``Args`` (templates accepted) and its nested definitions, renamed under ``args.NAME.``."""
    model = entry.block.Args
    prefix = f"args.{name}."
    try:
        raw = model.model_json_schema(ref_template="#/$defs/" + prefix + "{model}")
    except Exception as exc:  # an Args type pydantic cannot describe: accept any mapping rather than fail
        return {"type": "object", "$comment": f"no JSON schema for these args: {type(exc).__name__}: {exc}"}, {}
    nested = raw.pop("$defs", {})
    defs = {prefix + key: _inside(value, search) for key, value in nested.items()}
    schema = _inside(raw, search)
    schema["description"] = _block_summary(entry)
    return schema, defs


#: Keys of each kind of choice point, kind first (the fields of :data:`archforge.search.choices.POINT_MODELS`).
CHOICE_KINDS: dict[str, tuple[str, ...]] = {
    kind: (kind, *(f.alias or name for name, f in model.model_fields.items() if (f.alias or name) != kind))
    for kind, model in POINT_MODELS.items()
}


def _choice_defs() -> dict[str, Any]:
    """``choice_point`` (any of the three kinds, any values) and ``choice_point.KIND``: each model's JSON Schema."""
    defs = {f"choice_point.{kind}": _point_schema(model) for kind, model in POINT_MODELS.items()}
    defs["choice_point"] = {"anyOf": [{"$ref": f"#/$defs/choice_point.{kind}"} for kind in POINT_MODELS]}
    return defs


def _choice_schema(options: dict[str, Any]) -> dict[str, Any]:
    """A choice point whose ``choice`` options (or ``int``/``float`` range ends) each match ``options``.

    Each kind is its model's schema (``choice_point.KIND``) with ``options`` added at its value
    positions: the items of a ``choice`` list, and the two ends of a range, which besides their
    own integer or number type must be valid values of the place the point stands in.
    """
    if not options:
        return _CHOICE_REF
    kinds = []
    for kind, model in POINT_MODELS.items():
        values = _point_schema_once(model)["properties"][kind]
        at: dict[str, Any] = {}
        if "items" in values:
            at["items"] = options
        if "prefixItems" in values:
            at["prefixItems"] = [options for _ in values["prefixItems"]]
        kinds.append({"allOf": [{"$ref": f"#/$defs/choice_point.{kind}"}, {"properties": {kind: at}}]})
    return {"anyOf": kinds}


def _point_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model.model_json_schema()`` without pydantic's generated titles, a fresh copy (it is nested many times)."""
    return copy.deepcopy(_point_schema_once(model))


@functools.cache
def _point_schema_once(model: type[BaseModel]) -> dict[str, Any]:
    return _untitled(model.model_json_schema())


def _untitled(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("default", "examples", "const", "enum"):  # data, not schemas
            out[key] = value
        elif key in ("properties", "patternProperties", "$defs"):  # names of subschemas
            out[key] = {name: _untitled(sub) for name, sub in value.items()}
        elif key != "title":
            out[key] = _untitled(value)
    return out


def _with_choice(field: dict[str, Any]) -> dict[str, Any]:
    """A field's schema that also accepts a choice point whose options are values of the field (``None`` too, if it has one)."""
    annotations = {key: field[key] for key in _ANNOTATIONS if key in field}
    values = {key: value for key, value in field.items() if key not in _ANNOTATIONS and key != "title"}
    return {**annotations, "anyOf": [values, _choice_schema(copy.deepcopy(values))]}


def _choice_if_choice() -> dict[str, Any]:
    """Any value; a mapping with a ``choice``, ``int`` or ``float`` key must be a well-formed choice point."""
    return {
        "if": {"type": "object", "anyOf": [{"required": [kind]} for kind in CHOICE_KINDS]},
        "then": _CHOICE_REF,
    }


def _search_section_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``search:`` section from :class:`archforge.search.SearchSettings`, and its nested definitions."""
    open_section = {"type": "object", "description": "How to search this space; read by archforge.search."}
    try:
        from archforge.search.settings import SearchSettings
    except ImportError:  # pragma: no cover - the search package is part of archforge
        return open_section, {}
    raw = SearchSettings.model_json_schema(ref_template="#/$defs/search.{model}")
    nested = {f"search.{key}": value for key, value in raw.pop("$defs", {}).items()}
    # Fields validated "before" their type may take shorthand forms (``pruner: hyperband``,
    # ``objectives: accuracy,params``): also accept a string there and leave it to archforge.
    shorthand = set()
    for decorator in SearchSettings.__pydantic_decorators__.field_validators.values():
        if decorator.info.mode in ("before", "plain", "wrap"):
            shorthand.update(decorator.info.fields)
    for name, field_info in SearchSettings.model_fields.items():
        key = field_info.alias or name
        if name in shorthand and key in raw.get("properties", {}):
            prop = raw["properties"][key]
            annotations = {k: prop.pop(k) for k in _ANNOTATIONS if k in prop}
            raw["properties"][key] = {**annotations, "anyOf": [prop, {"type": "string"}]}
    raw["description"] = "How to search this space (dataset, strategy, budget, objectives, ...); read by archforge.search."
    return raw, nested


def _accepts_any_string(schema: dict[str, Any]) -> bool:
    if not schema or set(schema) <= set(_ANNOTATIONS):
        return True  # no constraint at all
    types = schema.get("type")
    if types == "string" or (isinstance(types, list) and "string" in types):
        constrained = {"pattern", "enum", "const", "format", "minLength", "maxLength"} & set(schema)
        return not constrained and not {"anyOf", "oneOf", "allOf", "not", "$ref"} & set(schema)
    return False


def _inside(schema: dict[str, Any], search: bool) -> dict[str, Any]:
    """Recurse into the value positions of ``schema`` without wrapping ``schema`` itself."""
    schema = copy.copy(schema)
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {key: _value(sub, search) for key, sub in schema["properties"].items()}
    if isinstance(schema.get("patternProperties"), dict):
        schema["patternProperties"] = {key: _value(sub, search) for key, sub in schema["patternProperties"].items()}
    for key in ("items", "additionalProperties", "unevaluatedItems", "contains"):
        if isinstance(schema.get(key), dict):
            schema[key] = _value(schema[key], search)
    if isinstance(schema.get("prefixItems"), list):
        schema["prefixItems"] = [_value(sub, search) for sub in schema["prefixItems"]]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            schema[key] = [_inside(sub, search) for sub in schema[key]]
    return schema


def _value(schema: dict[str, Any], search: bool) -> dict[str, Any]:
    """A schema at a value position: also accept a template string (and, in search spaces, a choice of values)."""
    inner = _inside(schema, search)
    if _accepts_any_string(inner) and not search:
        return inner
    annotations = {key: inner.pop(key) for key in _ANNOTATIONS if key in inner}
    alternatives: list[dict[str, Any]]
    if set(inner) == {"anyOf"}:
        alternatives = list(inner["anyOf"])
    elif inner:
        alternatives = [inner]
    else:
        alternatives = [{}]
    if not any(alt == _TEMPLATE_REF for alt in alternatives) and not _accepts_any_string(inner):
        alternatives.append(_TEMPLATE_REF)
    if search:
        options = {"anyOf": list(alternatives)} if len(alternatives) > 1 else alternatives[0]
        alternatives.append(_choice_schema(options))
    return {**annotations, "anyOf": alternatives}


__all__ = ["CHOICE_KINDS", "JSON_SCHEMA_DIALECT", "TEMPLATE_PATTERN", "spec_json_schema"]
