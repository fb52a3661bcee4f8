"""What the spec language means, when the spec is right: params and expressions, defines and their scopes,
repeat, references, merges, outputs, default ids, YAML anchors, and the names of the built parameters."""

from __future__ import annotations

import textwrap
import warnings

import pytest
import torch

import archforge
from archforge import Shape, SpecError, SpecWarning
from archforge.spec.expressions import ExpressionError, evaluate, resolve_value
from conftest import SPECS


def compile_text(text: str, *, allow_warnings: bool = False) -> archforge.Graph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if allow_warnings else "error", SpecWarning)
        return archforge.validate(archforge.parse_spec(textwrap.dedent(text).lstrip("\n"), file="spec.yaml"))


def error_of(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        compile_text(text, allow_warnings=True)
    return info.value


def paths(graph: archforge.Graph) -> list[str]:
    return [node.path for node in graph.nodes.values()]


def node(graph: archforge.Graph, path: str):
    return next(n for n in graph.nodes.values() if n.path == path)


# ---------------------------------------------------------------------- params and expressions

def test_params_and_expressions_resolve_in_order():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 16, 16]}
        params:
          width: 8
          wide: "${width * 2}"             # a param may use the ones before it
          heads: "${max(1, wide // 8)}"
          kernel: "${3 if wide > 8 else 1}"
          ratio: 1.5
        nodes:
          - {id: a, block: conv, args: {channels: $wide, kernel: $kernel}}
          - {id: b, block: conv, args: {channels: "${int(wide * ratio)}", stride: "${heads * 2}"}}
          - {id: c, block: conv, args: {channels: "${round(width / 3) + floor(2.7) + ceil(0.1) + abs(-1)}"}}
        """)
    assert node(graph, "a").args.channels == 16 and node(graph, "a").args.kernel == 3
    assert node(graph, "b").args.channels == 24 and node(graph, "b").args.stride == 4
    assert node(graph, "c").args.channels == 3 + 2 + 1 + 1
    assert graph.output_shape == Shape.map(7, 4, 4)  # 16×16, stride 4


def test_a_whole_value_reference_keeps_its_type():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {fn: gelu, norm: none, sizes: [4, 8]}
        nodes:
          - {id: a, block: conv, args: {channels: "${max(sizes)}", norm: $norm, act: $fn}}
        """)
    args = node(graph, "a").args
    assert (args.channels, args.norm, args.act) == (8, "none", "gelu")


def test_evaluator_arithmetic_and_logic():
    scope = {"dim": 64, "heads": 4, "name": "vit"}
    assert evaluate("dim * 4 // heads", scope) == 64
    assert evaluate("dim ** 0.5", scope) == 8.0
    assert evaluate("2 ** 59", scope) == 2**59
    assert evaluate("dim % 3 == 1 and heads < 8", scope) is True
    assert evaluate("not (1 < heads <= 4)", scope) is False
    assert evaluate("name + '_small'", scope) == "vit_small"
    assert evaluate("[dim, heads * 2]", scope) == [64, 8]
    assert evaluate("log2(dim) + sqrt(heads)", scope) == 8.0
    assert resolve_value({"a": ["$dim", "${heads + 1}"], "b": "plain $text"}, scope) == {"a": [64, 5], "b": "plain $text"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os')", "function '__import__' is not available"),
        ("__import__('os').system('true')", "attribute access ('.system') is not allowed"),
        ("dim.__class__", "attribute access ('.__class__') is not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "is not allowed"),
        ("open('/etc/passwd')", "function 'open' is not available"),
        ("eval('1')", "function 'eval' is not available"),
        ("getattr(dim, 'real')", "function 'getattr' is not available"),
        ("[1, 2][0]", "indexing is not allowed"),
        ("[x for x in [1]]", "a comprehension is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("f'{dim}'", "an f-string is not allowed"),
        ("(x := 1)", "assignment (:=) is not allowed"),
        ("{'a': 1}", "a mapping is not allowed"),
        ("dim in [1]", "comparison 'In' is not allowed"),
        ("~dim", "operator 'Invert' is not allowed"),
        ("dim << 70", "operator 'LShift' is not allowed"),
        ("2 ** 10 ** 10", "2 ** 10000000000 is too large"),
        ("9 ** 9 ** 9", "is too large"),
        ("10 ** 18 * 10 ** 18", "number too large"),
        ("1e308 * 10", "number too large"),  # refused at 1e308 already: MAX_NUMBER bounds every number
        ("float('inf')", "not a finite number"),
        ("float('nan')", "not a finite number"),
        ("(-8) ** 0.5", "not a real number"),
        ("round(5, -10 ** 9)", "out of range"),
        ("int('nine')", "cannot evaluate"),
        ("1 / 0", "division by zero"),
        ("max()", "cannot evaluate"),
        ("sqrt(-1)", "math domain error"),
        ("'a' * 3", "arithmetic needs numbers"),
        ("min(dim, key=abs)", "keyword arguments are not allowed"),
        ("nope + 1", "unknown param 'nope'"),
        ("dim +", "invalid expression"),
        ("x" * 600, "expression longer than 500 characters"),
    ],
)
def test_evaluator_refusals(source, message):
    with pytest.raises(ExpressionError, match=None) as info:
        evaluate(source, {"dim": 64})
    assert message in str(info.value)


def test_evaluator_bounds_values_built_from_params():
    # Each param doubles the one before; without a bound, comparing or printing them never ends.
    scope = {"p0": [0, 0]}
    with pytest.raises(ExpressionError, match="value with more than 10000 items"):
        for i in range(1, 64):
            scope[f"p{i}"] = evaluate(f"[p{i - 1}, p{i - 1}]", scope)
    assert 10 <= len(scope) <= 14
    scope = {"s": "x" * 6000}
    with pytest.raises(ExpressionError, match="string longer than 10000"):
        evaluate("s + s", scope)


def test_param_expression_errors_are_located_at_the_param():
    error = error_of("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 8, depth: "${width / 0}"}
        nodes:
          - {id: a, block: act}
        """)
    assert (error.location.line, error.location.column) == (4, 27)
    assert error.message == "cannot evaluate '${width / 0}': division by zero in param 'depth'"


# ---------------------------------------------------------------------- defines

NESTED = """
    archforge: 1
    name: t
    input: {shape: [3, 8, 8]}
    params: {width: 4, k: 3}
    define:
      inner:
        params: {c: 8, hidden: "${c * 2}"}   # a default may use the params before it
        nodes:
          - {id: expand, block: conv, args: {channels: $hidden, kernel: $k}}   # k: the spec's param
          - {id: project, block: conv, args: {channels: $c, kernel: 1}}
      outer:
        params: {c: 16, k: 5}                  # this k is outer's own: inner does not see it
        nodes:
          - {id: first, block: inner, args: {c: $c}}
          - {id: second, block: inner, args: {c: "${c // 2}", hidden: $k}}
    nodes:
      - {id: net, block: outer, args: {c: "${width * 4}"}}
    """


def test_nested_defines_have_their_own_params_and_lexical_scope():
    graph = compile_text(NESTED)
    assert paths(graph) == ["net.first.expand", "net.first.project", "net.second.expand", "net.second.project"]
    channels = {n.path: (n.args.channels, n.args.kernel) for n in graph.nodes.values()}
    assert channels == {
        "net.first.expand": (32, 3),     # hidden = c * 2 with the c the caller passed (16), kernel = the spec's k
        "net.first.project": (16, 1),
        "net.second.expand": (5, 3),     # hidden given explicitly: outer's k, resolved where the call is written
        "net.second.project": (8, 1),
    }
    assert list(graph.nodes) == ["net.first.expand", "net.first.project", "net.second.expand", "net.second.project"]


def test_a_define_body_does_not_see_its_callers_params():
    error = error_of("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          inner:
            nodes:
              - {id: c, block: conv, args: {channels: $secret}}
          outer:
            params: {secret: 4}
            nodes:
              - {id: i, block: inner}
        nodes:
          - {id: net, block: outer}
        """)
    assert (error.location.line, error.node) == (7, "net.i.c")
    assert error.message == "unknown param 'secret' in node 'net.i.c'"


def test_define_output_and_several_inputs():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          fuse:
            params: {c: 8}
            inputs: [main, side]
            nodes:
              - {id: mix, block: conv, in: side, args: {channels: $c}}
              - {id: sum, block: add, in: [main, mix]}
              - {id: unused_tail, block: act, in: main}     # after the output: the output is 'sum'
            output: sum
        nodes:
          - {id: a, block: conv, args: {channels: 8}}
          - {id: b, block: conv, in: input, args: {channels: 4}}
          - {id: f, block: fuse, in: [a, b]}
          - {id: head, block: classifier, args: {classes: 3}}
        """, allow_warnings=True)
    mix, total = node(graph, "f.mix"), node(graph, "f.sum")
    assert mix.inputs == ["b"] and total.inputs == ["a", "f.mix"]  # main ← a, side ← b, in that order
    assert node(graph, "head").inputs == ["f.sum"]                  # 'f' stands for its output
    assert [w.node for w in graph.warnings] == ["f.unused_tail"]


def test_a_define_can_pass_its_input_through():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          skip:
            nodes:
              - {id: nothing, block: act, repeat: 0}
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: s, block: skip, repeat: 3}
          - {id: head, block: conv, args: {channels: 2}}
        """)
    assert paths(graph) == ["stem", "head"]
    assert node(graph, "head").inputs == ["stem"]


# ---------------------------------------------------------------------- repeat

def test_repeat_names_copies_and_chains_them():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {depth: 3}
        define:
          unit:
            nodes:
              - {id: conv, block: conv, args: {channels: 4}}
              - {id: relu, block: act}
        nodes:
          - {id: stage, block: unit, repeat: "${depth - 1}"}
          - {id: plain, block: act, repeat: 2}
          - {id: after, block: add, in: [stage, plain]}
        """)
    assert paths(graph) == [
        "stage[0].conv", "stage[0].relu", "stage[1].conv", "stage[1].relu", "plain[0]", "plain[1]", "after",
    ]
    assert list(graph.nodes)[:4] == ["stage.0.conv", "stage.0.relu", "stage.1.conv", "stage.1.relu"]
    assert node(graph, "stage[1].conv").inputs == ["stage.0.relu"]
    assert node(graph, "plain[0]").inputs == ["stage.1.relu"] and node(graph, "plain[1]").inputs == ["plain.0"]
    assert node(graph, "after").inputs == ["stage.1.relu", "plain.1"]  # a repeat stands for its last copy


def test_repeat_zero_is_a_passthrough():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: extra, block: conv, repeat: 0, args: {channels: 99}}
          - {id: head, block: conv, args: {channels: 2}}
          - {id: sum, block: concat, in: [extra, head]}
        """)
    assert paths(graph) == ["stem", "head", "sum"]
    assert node(graph, "head").inputs == ["stem"] and node(graph, "sum").inputs == ["stem", "head"]
    assert graph.output_shape == Shape.map(6, 8, 8)


def test_a_spec_can_be_the_identity():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: nothing, block: conv, repeat: 0, args: {channels: 4}}
        """)
    assert graph.nodes == {} and graph.output == "input" and graph.output_shape == Shape.map(3, 8, 8)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(archforge.build(graph)(x), x)


def test_repeat_accepts_a_whole_float():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {depth: 4}
        nodes:
          - {id: a, block: act, repeat: "${depth / 2}"}
        """)
    assert paths(graph) == ["a[0]", "a[1]"]


# ---------------------------------------------------------------------- references, merges, outputs

def test_forward_references_and_merges():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: sum, block: add, in: [left, right, middle]}   # all three come later
          - {id: left, block: conv, in: input, args: {channels: 4}}
          - {id: right, block: conv, in: input, args: {channels: 4, kernel: 5}}
          - {id: middle, block: conv, in: input, args: {channels: 4, kernel: 1}}
          - {id: cat, block: concat, in: [sum, left]}
          - {id: gate_source, block: global_pool, in: input}
          - {id: gate, block: linear, args: {features: 8}}
          - {id: gated, block: mul, in: [cat, gate], args: {gate: sigmoid}}
        output: gated
        """)
    order = list(graph.nodes)
    assert order.index("left") < order.index("sum") and order.index("middle") < order.index("sum")
    assert node(graph, "sum").inputs == ["left", "right", "middle"]
    assert node(graph, "cat").shape == Shape.map(8, 8, 8)
    assert graph.output_shape == Shape.map(8, 8, 8)
    model = archforge.build(graph).eval()
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 8, 8, 8)


def test_spec_output_picks_a_node_and_the_rest_is_unreachable():
    text = """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: features, block: conv, args: {channels: 4}}
          - {id: head, block: classifier, args: {classes: 3}}
        output: features
        """
    with pytest.warns(SpecWarning, match="node 'head' does not reach the output 'features'"):
        graph = archforge.validate(archforge.parse_spec(textwrap.dedent(text)))
    assert graph.output == "features" and graph.output_shape == Shape.map(4, 8, 8)
    assert [n.name for n in graph.live_nodes()] == ["features"]


def test_layouts_are_converted_automatically():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: embed, block: patch_embed, args: {patch: 2, dim: 8}}
          - {id: norm, block: layer_norm}
          - {id: conv, block: conv, args: {channels: 8}}      # tokens → map
          - {id: proj, block: linear, args: {features: 4}}    # map → tokens
        """)
    assert node(graph, "conv").conversions == ["map"] and node(graph, "proj").conversions == ["tokens"]
    assert graph.output_shape == Shape.tokens(4, (4, 4))


# ---------------------------------------------------------------------- ids and block names

def test_default_ids_are_block_and_index():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {op: act}
        nodes:
          - {block: conv, args: {channels: 4}}
          - {block: act}
          - {block: $op}
          - {id: sum, block: add, in: [conv_0, act_1, op_2]}
        """)
    assert paths(graph) == ["conv_0", "act_1", "op_2", "sum"]
    assert node(graph, "op_2").block == "act"


def test_a_param_can_name_a_block_or_a_define():
    text = """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {op: BLOCK}
        define:
          double:
            nodes:
              - {id: a, block: conv, args: {channels: 4}}
              - {id: b, block: conv, args: {channels: 4}}
        nodes:
          - {id: body, block: $op, args: {}}
        """
    assert [n.block for n in compile_text(text.replace("BLOCK", "act")).nodes.values()] == ["act"]
    assert paths(compile_text(text.replace("BLOCK", "double"))) == ["body.a", "body.b"]


def test_the_same_id_may_appear_in_different_lists():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          unit:
            nodes:
              - {id: conv, block: conv, args: {channels: 4}}
        nodes:
          - {id: conv, block: conv, args: {channels: 4}}
          - {id: a, block: unit}
          - {id: b, block: unit}
        """)
    assert list(graph.nodes) == ["conv", "a.conv", "b.conv"]


def test_an_id_that_clashes_with_a_module_attribute_is_refused_before_build():
    for name in ("forward", "train", "graph", "code", "meta", "to", "half"):
        error = error_of(f"""
            archforge: 1
            name: t
            input: {{shape: [3, 8, 8]}}
            nodes:
              - {{id: {name}, block: act}}
            """)
        assert error.message.startswith(f"id '{name}' is reserved"), error


# ---------------------------------------------------------------------- YAML conveniences

def test_anchors_and_merge_keys():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 4}
        nodes:
          - id: a
            block: conv
            args: &base {channels: $width, kernel: 3, act: gelu}
          - id: b
            block: conv
            args:
              <<: *base
              kernel: 5              # a written key overrides the merged one
          - id: c
            block: conv
            args:
              <<: [{kernel: 1, norm: none}, *base]   # the first mapping of the list wins
          - {id: d, block: conv, args: *base}
        """)
    kernels = {n.path: (n.args.channels, n.args.kernel, n.args.act, n.args.norm) for n in graph.nodes.values()}
    assert kernels == {"a": (4, 3, "gelu", "batch"), "b": (4, 5, "gelu", "batch"), "c": (4, 1, "gelu", "none"), "d": (4, 3, "gelu", "batch")}


def test_block_style_and_comments_keep_exact_locations():
    text = """\
        # comment
        archforge: 1
        name: t
        input:
          shape: [3, 8, 8]

        nodes:
          - id: stem      # the stem
            block: conv
            args:
              channels: 4
              kernel: 0
        """
    with pytest.raises(SpecError) as info:
        archforge.validate(archforge.parse_spec(textwrap.dedent(text), file="x.yaml"))
    assert str(info.value) == "x.yaml:12:15: nodes[0].args.kernel: input should be greater than 0 (got 0) in node 'stem'"


# ---------------------------------------------------------------------- the built module

def test_parameter_names_follow_node_ids():
    model = archforge.build(SPECS / "models" / "resnet_tiny.yaml")
    names = [name for name, _ in model.named_parameters()]
    assert names[:4] == ["stem.conv.weight", "stem.norm.weight", "stem.norm.bias", "stage1.0.conv1.conv.weight"]
    assert "stage1.1.conv2.norm.bias" in names and "down2.shortcut.conv.weight" in names and names[-1] == "head.fc.bias"


def test_parameter_names_of_nested_defines_and_repeats():
    model = archforge.build(compile_text(NESTED.replace("- {id: net, block: outer", "- {id: net, block: outer, repeat: 2")))
    names = {name for name, _ in model.named_parameters()}
    assert {"net.0.first.expand.conv.weight", "net.1.second.project.norm.bias"} <= names


def test_spec_round_trips_through_dict_and_yaml():
    spec = archforge.parse_spec(textwrap.dedent(NESTED))
    again = archforge.parse_spec(spec.to_yaml())
    assert again.to_dict() == spec.to_dict()
    assert paths(archforge.validate(again)) == paths(archforge.validate(spec))
