"""Per-copy choice points on repeats that ``continues:`` a series: candidates number and name their copies as the plain spec does."""

from __future__ import annotations

import textwrap

import pytest

import archforge
from archforge import SpecError
from archforge.search import parse_space

HEADER = """\
archforge: 1
name: s
input: {shape: [1, 8, 8]}
"""


def space(body: str):
    return parse_space(HEADER + textwrap.dedent(body), "space.yaml")


def plain(body: str):
    return archforge.parse_spec(HEADER + textwrap.dedent(body), "plain.yaml")


def parameter_shapes(spec) -> dict[str, list[int]]:
    return {name: list(p.shape) for name, p in archforge.build(spec, device="meta").named_parameters()}


def candidates(sp):
    return [sp.concretize(values) for values in sp.assignments()]


def conv_unit(name: str, channels_in: int, channels: int, kernel: int) -> dict[str, list[int]]:
    """The parameters of a `conv` block (conv without bias, then a norm)."""
    return {f"{name}.conv.weight": [channels, channels_in, kernel, kernel],
            f"{name}.norm.weight": [channels], f"{name}.norm.bias": [channels]}


HEAD = {"head.fc.weight": [10, 4], "head.fc.bias": [10]}

#: Two copies of `a`, two more numbered on after them by `b`: a.0 ... a.3 (kernel 3 everywhere).
PLAIN_CONTINUED = """
    nodes:
      - {id: a, block: conv, repeat: 2, args: {channels: 4}}
      - {id: b, block: conv, repeat: 2, continues: a, args: {channels: 4}}
      - {id: head, block: classifier, in: b, args: {classes: 10}}
"""
PLAIN_NAMES = [
    "a.0.conv.weight", "a.0.norm.weight", "a.0.norm.bias",
    "a.1.conv.weight", "a.1.norm.weight", "a.1.norm.bias",
    "a.2.conv.weight", "a.2.norm.weight", "a.2.norm.bias",
    "a.3.conv.weight", "a.3.norm.weight", "a.3.norm.bias",
    "head.fc.weight", "head.fc.bias",
]


@pytest.mark.parametrize("per_copy_node", ["a", "b", "both"])
def test_candidates_have_the_parameter_names_of_the_plain_spec(per_copy_node):
    per_copy_kernel = "args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}"
    body = PLAIN_CONTINUED
    if per_copy_node in ("a", "both"):
        body = body.replace("repeat: 2, args: {channels: 4}}", "repeat: 2, " + per_copy_kernel)
    if per_copy_node in ("b", "both"):
        body = body.replace("continues: a, args: {channels: 4}}", "continues: a, " + per_copy_kernel)
    sp = space(body)
    assert sp.size == (16 if per_copy_node == "both" else 4)
    assert list(parameter_shapes(plain(PLAIN_CONTINUED))) == PLAIN_NAMES
    for candidate in candidates(sp):
        assert sp.check(candidate) is None
        assert list(parameter_shapes(candidate.spec)) == PLAIN_NAMES


def test_each_copy_gets_its_own_decision_at_its_place_in_the_series():
    sp = space("""
        nodes:
          - {id: a, block: conv, repeat: 2, args: {channels: 4}}
          - {id: b, block: conv, repeat: 2, continues: a, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
          - {id: head, block: classifier, in: b, args: {classes: 10}}
    """)
    assert list(sp.decisions) == ["b.kernel[0]", "b.kernel[1]"]
    shapes = parameter_shapes(sp.concretize({"b.kernel[0]": 1, "b.kernel[1]": 3}).spec)
    expected = {**conv_unit("a.0", 1, 4, 3), **conv_unit("a.1", 4, 4, 3), **conv_unit("a.2", 4, 4, 1), **conv_unit("a.3", 4, 4, 3), **HEAD}
    assert shapes == expected


def test_index_in_args_counts_the_copies_of_the_node_itself():
    # `index` is 0, 1 for b's own copies, though they are a.2 and a.3 of the series.
    body = """
        nodes:
          - {id: a, block: conv, repeat: 2, args: {channels: 4}}
          - {id: b, block: BLOCK, repeat: 2, continues: a, args: {channels: "${8 * (index + 1)}"}}
          - {id: head, block: classifier, in: b, args: {classes: 10}}
    """
    sp = space(body.replace("BLOCK", "{choice: [conv, conv_act], per_copy: true}") + """
        define:
          conv_act:
            params: {channels: 4}
            nodes:
              - {id: conv, block: conv, args: {channels: $channels}}
              - {id: act, block: act}
    """)
    stem = {**conv_unit("a.0", 1, 4, 3), **conv_unit("a.1", 4, 4, 3), **conv_unit("a.2", 4, 8, 3)}
    head = {"head.fc.weight": [10, 16], "head.fc.bias": [10]}
    expected = {**stem, **conv_unit("a.3", 8, 16, 3), **head}
    assert parameter_shapes(plain(body.replace("BLOCK", "conv"))) == expected
    assert parameter_shapes(sp.concretize({"b.block[0]": "conv", "b.block[1]": "conv"}).spec) == expected
    mixed = sp.concretize({"b.block[0]": "conv", "b.block[1]": "conv_act"})
    assert parameter_shapes(mixed.spec) == {**stem, **conv_unit("a.3.conv", 8, 16, 3), **head}


def test_references_to_a_continued_per_copy_node_read_its_last_copy():
    sp = space("""
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: a, block: conv, repeat: 3, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
          - {id: side, block: conv, in: stem, args: {channels: 4}}
          - {id: b, block: conv, repeat: 1, continues: a, in: a, args: {channels: 4}}
          - {id: sum, block: add, in: [b, side]}
          - {id: head, block: classifier, in: a, args: {classes: 10}}
        output: a
    """)
    data = sp.concretize({f"a.kernel[{k}]": 3 for k in range(3)}).data
    nodes = {n["id"]: n for n in data["nodes"]}
    assert [n["id"] for n in data["nodes"]] == ["stem", "a", "a_1", "a_2", "side", "b", "sum", "head"]
    assert (nodes["b"]["in"], nodes["b"]["continues"], nodes["head"]["in"], data["output"]) == ("a_2", "a", "a_2", "a_2")
    assert nodes["sum"]["in"] == ["b", "side"]


def test_a_choice_of_continues_on_a_per_copy_node():
    sp = space("""
        nodes:
          - {id: a, block: conv, repeat: 1, args: {channels: 4}}
          - {id: b, block: conv, repeat: 2, continues: {choice: [a, null]}, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
          - {id: head, block: classifier, args: {classes: 10}}
    """)
    assert list(sp.decisions) == ["b.continues", "b.kernel[0]", "b.kernel[1]"]
    continued = sp.concretize({"b.continues": "a", "b.kernel[0]": 3, "b.kernel[1]": 3})
    separate = sp.concretize({"b.continues": None, "b.kernel[0]": 3, "b.kernel[1]": 3})
    head = ["head.fc.weight", "head.fc.bias"]
    unit = ["conv.weight", "norm.weight", "norm.bias"]
    assert list(parameter_shapes(continued.spec)) == [f"a.{k}.{p}" for k in range(3) for p in unit] + head
    assert list(parameter_shapes(separate.spec)) == [f"a.0.{p}" for p in unit] + [f"b.{k}.{p}" for k in range(2) for p in unit] + head


def test_per_copy_repeats_continue_one_another_inside_a_define():
    sp = space("""
        define:
          pair:
            nodes:
              - {id: blocks, block: conv, repeat: 2, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
              - {id: more, block: conv, repeat: 1, continues: blocks, args: {channels: 4}}
        nodes:
          - {id: body, block: pair}
          - {id: head, block: classifier, args: {classes: 10}}
    """)
    assert list(sp.decisions) == ["pair.blocks.kernel[0]", "pair.blocks.kernel[1]"]
    shapes = parameter_shapes(sp.concretize({"pair.blocks.kernel[0]": 1, "pair.blocks.kernel[1]": 3}).spec)
    expected = {**conv_unit("body.blocks.0", 1, 4, 1), **conv_unit("body.blocks.1", 4, 4, 3), **conv_unit("body.blocks.2", 4, 4, 3)}
    assert shapes == {**expected, **HEAD}


@pytest.mark.parametrize("body, message, line", [
    ("""
        nodes:
          - {id: a, block: conv, repeat: 2, args: {channels: 4}}
          - {id: b, block: conv, repeat: 2, continues: {choice: [a, null], per_copy: true}, args: {channels: 4}}
     """, "'per_copy' applies to a choice point in the block or args", 7),
    ("""
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: a, block: conv, repeat: 2, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
          - {id: head, block: classifier, in: {choice: [stem, a]}, args: {classes: 10}}
     """, "choice point 'head.in' offers 'a', a node unrolled for its per-copy choices", 8),
    ("""
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: a, block: conv, repeat: 2, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
        output: {choice: [stem, a]}
     """, "choice point 'output' offers 'a'", 8),
    ("""
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: a, block: conv, repeat: 2, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
          - {id: sum, block: add, in: [stem, {choice: [stem, a]}]}
     """, "choice point 'sum.in[1]' offers 'a'", 8),
])
def test_references_that_cannot_follow_the_unrolling_are_refused_at_load(body, message, line):
    with pytest.raises(SpecError) as info:
        space(body)
    assert message in info.value.message
    assert (info.value.location.file, info.value.location.line) == ("space.yaml", line)


def test_a_per_copy_node_continuing_an_unknown_node_is_located_in_the_space_file():
    sp = space("""
        nodes:
          - {id: a, block: conv, repeat: 2, args: {channels: 4}}
          - {id: b, block: conv, repeat: 2, continues: c, args: {channels: 4, kernel: {choice: [1, 3], per_copy: true}}}
    """)
    problem = sp.check(sp.concretize({"b.kernel[0]": 1, "b.kernel[1]": 1}))
    assert problem is not None and problem.startswith("space.yaml:7:")
    assert "node 'b' continues 'c': no earlier repeated node of this list is called 'c'" in problem
