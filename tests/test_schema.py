"""The JSON Schema for editors: shipped specs pass it, malformed ones fail it where archforge would."""

import argparse
import copy
import json
import re

import pytest
import yaml
from pydantic import Field

import archforge
from archforge import Block, BlockArgs
from archforge.registry import default_registry
from archforge.schema import spec_json_schema
from archforge.testing import registry_with
from archforge.cli.tools import add_commands
from conftest import SPECS

jsonschema = pytest.importorskip("jsonschema", reason="the schema tests validate with jsonschema")


class Yaml12Loader(yaml.SafeLoader):
    """YAML as editors read it (YAML 1.2, the YAML language server's default): ``3.0e7`` is a float.

    PyYAML follows YAML 1.1, where a float needs a sign in its exponent (``3.0e+7``);
    archforge reads ``3.0e7`` as a string and pydantic turns it into a number.
    """


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def load_yaml(text):
    return yaml.load(text, Loader=Yaml12Loader)


ALL_SPECS = sorted([*SPECS.rglob("*.yaml"), *SPECS.rglob("*.yml")])
SEARCH_DIR = SPECS / "spaces"


@pytest.fixture(scope="module")
def spec_schema():
    return spec_json_schema()


@pytest.fixture(scope="module")
def space_schema():
    return spec_json_schema(search=True)


def problems(schema, data):
    return list(jsonschema.Draft202012Validator(schema).iter_errors(data))


def assert_fails_at(schema, data, path):
    errors = problems(schema, data)
    assert errors, "the schema accepted it"
    paths = [list(e.absolute_path) for e in errors]
    assert any(p[: len(path)] == path for p in paths), paths


BASE = yaml.safe_load("""
archforge: 1
name: base
input: {shape: [3, 16, 16]}
params: {width: 8, act: gelu, depth: 2}
define:
  pair:
    params: {channels: 8}
    nodes:
      - {id: a, block: conv, args: {channels: $channels}}
      - {id: b, block: conv, args: {channels: $channels, act: none}}
nodes:
  - {id: stem, block: conv, args: {channels: $width, kernel: 3, act: $act}}
  - {id: body, block: pair, repeat: "${depth - 1}", args: {channels: "${width * 2}"}}
  - {id: pool, block: pool, args: {mode: avg, kernel: 2, stride: null}}
  - {id: head, block: classifier, args: {classes: 10}}
""")


def mutate(change):
    data = copy.deepcopy(BASE)
    change(data)
    return data


def test_schemas_are_valid_json_schema_2020_12(spec_schema, space_schema):
    for schema in (spec_schema, space_schema):
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert json.loads(json.dumps(schema)) == schema  # plain JSON data


def test_every_registered_block_has_an_args_rule(spec_schema):
    registry = default_registry()
    rules = {rule["if"]["properties"]["block"]["const"]: rule["then"] for rule in spec_schema["$defs"]["NodeSpec"]["allOf"]}
    assert set(rules) == set(registry.names())
    for name in registry.names():
        assert rules[name]["properties"]["args"] == {"$ref": f"#/$defs/args.{name}"}
        assert set(spec_schema["$defs"][f"args.{name}"]["properties"]) == set(registry.blocks[name].block.Args.model_fields)
    completions = [alt.get("const") for alt in spec_schema["$defs"]["NodeSpec"]["properties"]["block"]["anyOf"]]
    assert set(registry.names()) <= set(completions)


@pytest.mark.parametrize("path", ALL_SPECS, ids=[str(p.relative_to(SPECS)) for p in ALL_SPECS])
def test_every_shipped_spec_validates(path, spec_schema, space_schema):
    data = load_yaml(path.read_text())
    is_space = SEARCH_DIR in path.parents
    errors = problems(space_schema if is_space else spec_schema, data)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    if not is_space:  # a spec is a search space without choices
        assert not problems(space_schema, data)


def test_the_base_spec_is_valid_for_archforge_and_the_schema(spec_schema):
    assert not problems(spec_schema, BASE)
    archforge.validate(archforge.Spec.from_dict(BASE))


@pytest.mark.parametrize("change, path", [
    (lambda d: d["nodes"][0]["args"].update(channels="many"), ["nodes", 0, "args", "channels"]),  # wrong type
    (lambda d: d["nodes"][0]["args"].update(channels=0), ["nodes", 0, "args", "channels"]),  # out of range
    (lambda d: d["nodes"][0]["args"].update(chanels=8), ["nodes", 0, "args"]),  # unknown arg
    (lambda d: d["nodes"][0]["args"].update(act="rleu"), ["nodes", 0, "args", "act"]),  # not in the enum
    (lambda d: d["nodes"][0]["args"].update(kernel="$"), ["nodes", 0, "args", "kernel"]),  # not a template
    (lambda d: d["nodes"][0]["args"].update(kernel="${width"), ["nodes", 0, "args", "kernel"]),
    (lambda d: d["nodes"][0]["args"].pop("channels"), ["nodes", 0, "args"]),  # missing required arg
    (lambda d: d["nodes"][3].pop("args"), ["nodes", 3]),  # classifier needs args.classes
    (lambda d: d["define"]["pair"]["nodes"][0]["args"].update(stride=-1), ["define", "pair", "nodes", 0, "args", "stride"]),
    (lambda d: d.update(outputs="head"), []),  # unknown top-level key
    (lambda d: d.update(search={"trials": 3}), []),  # a search section belongs to search spaces
    (lambda d: d.update(archforge=2), ["archforge"]),
    (lambda d: d["input"].update(shape=[3, "16", 16]), ["input", "shape", 1]),
    (lambda d: d["nodes"][0].update(inputs="x"), ["nodes", 0]),  # unknown node key
    (lambda d: d["nodes"][0].update(block="3conv"), ["nodes", 0, "block"]),
    (lambda d: d["nodes"][1].update(repeat=-1), ["nodes", 1, "repeat"]),
    (lambda d: d["nodes"][0]["args"].update(channels={"choice": [8, 16]}), ["nodes", 0, "args", "channels"]),  # choices only in spaces
])
def test_malformed_specs_fail_where_archforge_fails(change, path, spec_schema):
    data = mutate(change)
    assert_fails_at(spec_schema, data, path)
    with pytest.raises(archforge.SpecError):  # the schema never refuses what archforge accepts, in these cases
        archforge.validate(archforge.Spec.from_dict(data))


@pytest.mark.parametrize("change", [
    lambda d: d["nodes"][0]["args"].update(channels="$width", kernel="${1 + 2}", act="$act"),
    lambda d: d["nodes"][0]["args"].update(bias="${width > 4}", padding="same", groups="depthwise"),
    lambda d: d["nodes"][0].update(block="$blk", args={"anything": [1, 2]}),  # a $param block: args unknown
    lambda d: d["nodes"][1].update(args={"channels": 4}),  # a define's params are free
    lambda d: d["nodes"][1].update(repeat=3),
    lambda d: d["nodes"][2].update(id="pooling", **{"in": "stem"}),
    lambda d: d["nodes"][0]["args"].update(kernel="${\n  1 + 2\n}"),  # multi-line expression
])
def test_templates_defines_and_params_are_accepted(change, spec_schema):
    assert not problems(spec_schema, mutate(change))


class Inner(BlockArgs):  # forbids unknown keys, like every Args
    size: int = Field(gt=0)
    mode: str = "x"


class Nested(Block):
    """A block with nested and list-valued args."""

    name = "nested_args"
    layout = "any"

    class Args(BlockArgs):
        sizes: list[int] = [1]
        inner: Inner | None = None
        ratio: tuple[float, float] = (0.5, 0.5)

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        raise NotImplementedError


@pytest.fixture(scope="module")
def nested_schema():
    return spec_json_schema(registry_with(Nested, entry_points=False))


def nested_spec(args):
    return {"archforge": 1, "name": "n", "input": {"shape": [4]}, "nodes": [{"block": "nested_args", "args": args}]}


@pytest.mark.parametrize("args, ok", [
    ({"sizes": [1, "$k", "${k * 2}"], "inner": {"size": "$k"}, "ratio": [0.1, "$r"]}, True),
    ({"sizes": "$sizes", "inner": "$inner"}, True),
    ({"inner": None}, True),
    ({"sizes": [1, "x"]}, False),
    ({"inner": {"size": 0}}, False),
    ({"inner": {"size": 1, "colour": 2}}, False),
    ({"ratio": [0.1, 0.2, 0.3]}, False),
])
def test_plugin_args_with_nested_models_and_lists(args, ok, nested_schema):
    jsonschema.Draft202012Validator.check_schema(nested_schema)
    assert (not problems(nested_schema, nested_spec(args))) == ok


SPACE = yaml.safe_load("""
archforge: 1
name: space
input: {shape: [3, 16, 16]}
params: {width: {choice: [8, 16], label: width}, depth: {choice: [1, 2, 3]}}
define:
  pair:
    params: {kernel: {choice: [3, 5]}}
    nodes:
      - {id: a, block: conv, args: {channels: $width, kernel: $kernel}}
nodes:
  - {id: stem, block: conv, args: {channels: {choice: [8, "${width * 2}"]}, act: {choice: [relu, gelu], label: act}}}
  - {id: body, block: pair, repeat: {choice: [1, 2]}, args: {kernel: {choice: [3, 7]}}}
  - {id: mixer, block: {choice: [conv, batch_norm]}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {strategy: random, budget: 8, objectives: [accuracy, params]}
""")


def parse_space(data):
    from archforge.search import parse_space

    return parse_space(yaml.safe_dump(data, sort_keys=False))


def test_search_space_schema_accepts_choices_and_the_search_section(space_schema, spec_schema):
    assert not problems(space_schema, SPACE)
    assert problems(spec_schema, SPACE)
    parse_space(SPACE)  # and archforge.search agrees


def first_candidate(value):
    """The plain spec that takes the first option (or the low end) of every choice point."""
    if isinstance(value, dict):
        for kind in ("choice", "int", "float"):
            if kind in value:
                return first_candidate(value[kind][0])
        return {k: first_candidate(v) for k, v in value.items() if k != "search"}
    if isinstance(value, list):
        return [first_candidate(v) for v in value]
    return value


@pytest.mark.parametrize("change, path", [
    (lambda d: d["nodes"][0]["args"].update(act={"choice": ["rleu", "relu"]}), ["nodes", 0, "args", "act"]),  # options checked
    (lambda d: d["nodes"][2].update(block={"choice": ["3x3", "conv"]}), ["nodes", 2, "block"]),
    (lambda d: d["nodes"][0]["args"].update(channels={"int": [-8, 8]}), ["nodes", 0, "args", "channels"]),
])
def test_choice_options_are_checked_against_the_args(change, path, space_schema):
    # archforge.search finds these when it builds the candidate; the schema flags them while typing.
    data = copy.deepcopy(SPACE)
    change(data)
    assert_fails_at(space_schema, data, path)
    with pytest.raises(archforge.SpecError):
        archforge.validate(archforge.Spec.from_dict(first_candidate(data)))


@pytest.mark.parametrize("change, path", [
    (lambda d: d["nodes"][0]["args"].update(channels={"choice": []}), ["nodes", 0, "args", "channels"]),
    (lambda d: d["params"].update(width={"choice": [8], "lable": "w"}), ["params", "width"]),
    (lambda d: d["params"].update(width={"choice": 8}), ["params", "width"]),
    (lambda d: d.update(searhc={}), []),
    (lambda d: d.update(search=[1, 2]), ["search"]),
    (lambda d: d["search"].update(strategy="annealing"), ["search", "strategy"]),
    (lambda d: d["search"].update(budjet=3), ["search"]),
    (lambda d: d["params"].update(depth={"int": [1, 2.5]}), ["params", "depth"]),
    (lambda d: d["params"].update(depth={"int": [1, 3], "step": 0}), ["params", "depth"]),
    (lambda d: d["params"].update(depth={"float": [0.1, 0.5], "per_copy": "yes"}), ["params", "depth"]),
    (lambda d: d["params"].update(depth={"choice": [1, 2], "label": "9lives"}), ["params", "depth"]),
    (lambda d: d["nodes"][2].update(repeat=2, continues={"choice": ["9body", None]}), ["nodes", 2, "continues"]),
    (lambda d: d["nodes"][2].update(repeat=2, continues={"int": [1, 2]}), ["nodes", 2, "continues"]),
    (lambda d: d["nodes"][3].update({"in": {"choice": [3, "stem"]}}), ["nodes", 3, "in"]),
    (lambda d: d["nodes"][3].update({"in": {"choice": [["stem", {"choice": ["body", "mixer"]}]]}}), ["nodes", 3, "in"]),  # nested
    (lambda d: d["nodes"][2].update({"id": {"choice": ["mixer", "mix"]}}), ["nodes", 2, "id"]),
    (lambda d: d.update(output={"choice": [{"node": "head"}]}), ["output"]),
])
def test_malformed_search_spaces_fail(change, path, space_schema):
    data = copy.deepcopy(SPACE)
    change(data)
    assert_fails_at(space_schema, data, path)
    with pytest.raises(archforge.SpecError):  # archforge.search refuses them too
        parse_space(data)


@pytest.mark.parametrize("change", [
    lambda d: d["params"].update(depth={"int": [1, 3], "step": 1, "log": False, "label": "stage.depth"}),
    lambda d: d["nodes"][0]["args"].update(channels={"int": [8, 32], "step": 8}, kernel={"choice": [3, "$k"]}),
    lambda d: d["nodes"][1].update(repeat=3, block={"choice": ["pair", "conv"], "per_copy": True}),
    lambda d: d["nodes"][3]["args"].update(dropout={"float": [0.0, 0.5], "step": 0.1}),
    lambda d: d["search"].update(pruner="hyperband", proxy="synflow", objectives="accuracy"),  # shorthands
    lambda d: d["search"].update(constraints={"max_params": 2e5, "max_flops": 3.0e7}, train={"lr": 0.01}),
    lambda d: d["nodes"][2].update(repeat=2, continues={"choice": ["body", None]}),
    lambda d: d["nodes"][2].update(repeat=2, continues={"choice": ["body", None]}, block={"choice": ["conv", "pair"], "per_copy": True}),
    lambda d: d["nodes"][3].update({"in": {"choice": ["stem", ["mixer"], None]}}),
    lambda d: d["nodes"][3].update({"in": [{"choice": ["stem", "mixer"]}]}),
    lambda d: d.update(output={"choice": ["head", "mixer"]}),
    lambda d: d["define"]["pair"].update(output={"choice": ["a", None]}),
])
def test_search_space_forms(change, space_schema):
    data = copy.deepcopy(SPACE)
    change(data)
    assert not problems(space_schema, data)
    parse_space(data)


def test_choice_points_in_the_schema_are_the_models_of_the_search_space_parser(space_schema):
    from archforge.schema import CHOICE_KINDS
    from archforge.search.choices import POINT_MODELS

    grammar = {  # the language as documented: each kind with its optional keys
        "choice": {"choice", "label", "per_copy"},
        "int": {"int", "step", "log", "label", "per_copy"},
        "float": {"float", "step", "log", "label", "per_copy"},
    }
    assert {kind: set(keys) for kind, keys in CHOICE_KINDS.items()} == grammar
    assert {kind: {f.alias or name for name, f in model.model_fields.items()} for kind, model in POINT_MODELS.items()} == grammar
    assert space_schema["$defs"]["choice_point"] == {"anyOf": [{"$ref": f"#/$defs/choice_point.{kind}"} for kind in grammar]}
    for kind, keys in grammar.items():
        generated = space_schema["$defs"][f"choice_point.{kind}"]
        assert (set(generated["properties"]), generated["required"], generated["additionalProperties"]) == (keys, [kind], False)


def choice_point_problems(space_schema, point):
    """What the space schema says about ``point`` as a choice point (its ``$defs.choice_point``)."""
    return problems({"$defs": space_schema["$defs"], "$ref": "#/$defs/choice_point"}, point)


@pytest.mark.parametrize("point, ok", [
    ({"choice": [1, "a", [2, 3]]}, True),
    ({"int": [1, 9], "step": 2, "log": False, "label": "stage.depth", "per_copy": True}, True),
    ({"float": [1e-4, 1e-2], "log": True, "label": None}, True),
    ({"float": [0, 1], "step": 0.25}, True),
    ({"choice": []}, False),
    ({"choice": 3}, False),
    ({"choice": [1], "lable": "x"}, False),
    ({"choice": [1], "label": "9lives"}, False),
    ({"choice": [1], "per_copy": "yes"}, False),
    ({"choice": [1, 2], "int": [1, 2]}, False),
    ({"int": [1, 2.5]}, False),
    ({"int": [1, 2, 3]}, False),
    ({"int": [True, 3]}, False),
    ({"int": [1, 9007199254740993]}, False),
    ({"int": [1, 3], "step": 0}, False),
    ({"int": [1, 3], "step": 1.5}, False),
    ({"float": ["0", 1.0]}, False),
    ({"float": [0.0, 1.0], "step": -0.5}, False),
    ({"float": [0.1, 1.0], "log": "yes"}, False),
])
def test_the_schema_of_a_choice_point_refuses_what_its_model_refuses(point, ok, space_schema):
    from pydantic import ValidationError

    from archforge.search.choices import KINDS, POINT_MODELS

    model = POINT_MODELS[next(kind for kind in KINDS if kind in point)]
    try:
        model.model_validate(point)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == ok
    assert (not choice_point_problems(space_schema, point)) == ok


def run_cli(*argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_cli_schema_writes_the_schema(tmp_path, capsys):
    out = tmp_path / "editor" / "spec.schema.json"
    assert run_cli("schema", "-o", out) == 0
    assert json.loads(out.read_text()) == spec_json_schema()
    assert "wrote" in capsys.readouterr().out
    assert run_cli("schema", "--search") == 0
    assert json.loads(capsys.readouterr().out) == spec_json_schema(search=True)


def test_shapes_are_not_the_schemas_business():
    # A shape error passes the schema (it only knows the language): archforge validate reports it.
    data = mutate(lambda d: d["nodes"][0]["args"].update(kernel=99, padding=0))
    assert not problems(spec_json_schema(), data)
    with pytest.raises(archforge.SpecError, match="does not fit"):
        archforge.validate(archforge.Spec.from_dict(data))


class ShadowedSE(Block):
    """A plugin block named like the built-in 'se': reachable by its qualified name only."""

    name = "se"
    layout = "map"

    class Args(BlockArgs):
        gain: float = 1.0

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        raise NotImplementedError  # never built here


def test_a_plugin_block_hidden_by_a_builtin_is_offered_by_its_qualified_name():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shadowing warning is the registry's business
        registry = registry_with(ShadowedSE, name="shadow")
    schema = spec_json_schema(registry)
    offered = {option.get("const") for option in schema["$defs"]["NodeSpec"]["properties"]["block"]["anyOf"]}
    assert {"se", "shadow:se"} <= offered
    node = {"archforge": 1, "name": "n", "input": {"shape": [8, 4, 4]}, "nodes": [{"block": "shadow:se", "args": {"gain": 2.0}}]}
    assert problems(schema, node) == []
    node["nodes"][0]["args"] = {"gain": "loud"}  # the plugin's args, not the built-in's, are checked
    assert problems(schema, node) != []
