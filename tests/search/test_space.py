"""Search spaces: choice points, labels, per-copy placement, constraints, located errors, candidate hashes."""

from __future__ import annotations

import hashlib
import json
import textwrap
import warnings
from types import SimpleNamespace

import pytest

import archforge
from archforge import SpecError
from archforge.search import candidate_hash, parse_space, search
from archforge.search.settings import Constraints

HEADER = """\
archforge: 1
name: s
input: {shape: [1, 8, 8]}
"""


def space(body: str, header: str = HEADER):
    return parse_space(header + textwrap.dedent(body), "space.yaml")


def first_values(sp):
    return {n: d.values()[0] for n, d in sp.decisions.items()}


# --------------------------------------------------------------------------- counting


def test_counts_choice_int_and_float_steps():
    sp = space("""
        params:
          width: {choice: [4, 8, 16]}
          kernel: {int: [1, 5], step: 2}
          drop: {float: [0.0, 0.5], step: 0.1}
        nodes:
          - {id: c, block: conv, args: {channels: $width, kernel: $kernel}}
          - {id: head, block: classifier, args: {classes: 10, dropout: $drop}}
    """)
    assert {n: d.size for n, d in sp.decisions.items()} == {"width": 3, "kernel": 3, "drop": 6}
    assert sp.decisions["kernel"].values() == [1, 3, 5]
    assert sp.decisions["drop"].values() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert sp.size == 54
    assert len(list(sp.assignments())) == 54
    assert len(sp.distinct_candidates()) == 54


def test_continuous_range_makes_the_space_infinite():
    sp = space("""
        nodes:
          - {id: head, block: classifier, args: {classes: 10, dropout: {float: [0.0, 0.5]}}}
    """)
    assert sp.size is None and sp.distinct_candidates() is None
    import random

    value = sp.sample(random.Random(0))["head.dropout"]
    assert 0.0 <= value <= 0.5


def test_decisions_are_named_after_where_they_stand():
    sp = space("""
        params: {width: {choice: [4, 8]}}
        define:
          unit:
            params: {channels: {choice: [4, 8]}}
            nodes:
              - {id: conv1, block: conv, args: {channels: $channels, kernel: {choice: [1, 3]}}}
        nodes:
          - {id: stem, block: conv, args: {channels: $width, act: {choice: [relu, gelu]}}}
          - {id: body, block: unit, repeat: {int: [1, 2]}}
          - {block: {choice: [identity, act]}}
          - {id: head, block: classifier, args: {classes: 10}}
    """)
    assert list(sp.decisions) == ["width", "unit.channels", "unit.conv1.kernel", "stem.act", "body.repeat", "nodes[2].block"]


# --------------------------------------------------------------------------- labels


def test_labels_share_one_decision():
    sp = space("""
        nodes:
          - {id: a, block: conv, args: {channels: {choice: [4, 8], label: width}}}
          - {id: b, block: conv, args: {channels: {choice: [4, 8], label: width}}}
          - {id: head, block: classifier, args: {classes: 10}}
    """)
    assert list(sp.decisions) == ["width"]
    assert len(sp.decisions["width"].locations) == 2
    assert sp.size == 2
    for values in sp.assignments():
        nodes = sp.concretize(values).data["nodes"]
        assert nodes[0]["args"]["channels"] == nodes[1]["args"]["channels"] == values["width"]


def test_a_label_with_other_options_is_a_located_error():
    with pytest.raises(SpecError) as info:
        space("""
            nodes:
              - {id: a, block: conv, args: {channels: {choice: [4, 8], label: width}}}
              - {id: b, block: conv, args: {channels: {choice: [4, 16], label: width}}}
        """)
    assert str(info.value).startswith("space.yaml:7:")
    assert "label 'width' is shared with space.yaml:6:" in info.value.message


# --------------------------------------------------------------------------- per-copy placement


PLACEMENT = """
    nodes:
      - {id: stem, block: conv, args: {channels: 8}}
      - {id: stage, block: {choice: [conv, identity_unit], per_copy: true}, repeat: 3, args: {channels: {choice: [4, 8]}}}
      - {block: act}
      - {id: head, block: classifier, in: stage, args: {classes: 10}}
    output: head
    define:
      identity_unit:
        params: {channels: 8}
        nodes:
          - {id: skip, block: identity}
"""


def test_per_copy_unrolls_the_repeat_into_named_copies():
    sp = space(PLACEMENT)
    assert list(sp.decisions) == ["stage.channels", "stage.block[0]", "stage.block[1]", "stage.block[2]"]
    assert sp.size == 2 * 2 ** 3
    assert [d.copy_of for d in sp.decisions.values()] == [None, ("stage", 0), ("stage", 1), ("stage", 2)]
    values = {"stage.channels": 4, "stage.block[0]": "conv", "stage.block[1]": "identity_unit", "stage.block[2]": "conv"}
    data = sp.concretize(values).data
    nodes = {n["id"]: n for n in data["nodes"]}
    assert [n["id"] for n in data["nodes"]] == ["stem", "stage", "stage_1", "stage_2", "act_2", "head"]
    assert [nodes[k]["block"] for k in ("stage", "stage_1", "stage_2")] == ["conv", "identity_unit", "conv"]
    # one-copy repeats, each numbered on from the one before it
    assert "in" not in nodes["stage"] and "continues" not in nodes["stage"]
    assert [(nodes[k]["in"], nodes[k]["continues"]) for k in ("stage_1", "stage_2")] == [("stage", "stage"), ("stage_1", "stage_1")]
    assert all(nodes[k]["repeat"] == 1 for k in ("stage", "stage_1", "stage_2"))
    assert nodes["head"]["in"] == "stage_2"  # whatever read the repeated node reads its last copy
    assert all(nodes[k]["args"] == {"channels": 4} for k in ("stage", "stage_1", "stage_2"))  # not per copy: shared
    # parameter names are those of the plain repeat, the same for every candidate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", archforge.SpecWarning)  # the act node is left unused on purpose
        model = archforge.build(sp.concretize(values).spec, device="meta")
    assert {name.rsplit(".", 1)[0] for name, _ in model.named_parameters()} == {"stem.conv", "stem.norm", "stage.0.conv", "stage.0.norm",
                                                                              "stage.2.conv", "stage.2.norm", "head.fc"}


def test_per_copy_keeps_default_ids_and_reads_repeat_from_a_param():
    sp = space("""
        params: {n: 2}
        nodes:
          - {block: conv, args: {channels: 4}}
          - {id: stage, block: {choice: [conv, batch_norm], per_copy: true}, repeat: $n, args: {}}
          - {block: classifier, args: {classes: 10}}
    """)
    assert list(sp.decisions) == ["stage.block[0]", "stage.block[1]"]
    data = sp.concretize({"stage.block[0]": "batch_norm", "stage.block[1]": "batch_norm"}).data
    assert [n["id"] for n in data["nodes"]] == ["conv_0", "stage", "stage_1", "classifier_2"]
    archforge.validate(sp.concretize({"stage.block[0]": "batch_norm", "stage.block[1]": "batch_norm"}).spec)


def test_unrolling_names_nodes_without_id_as_plain_expansion_does():
    # A qualified block name (builtin:conv) gives the id of its short name, as in any plain spec.
    sp = space("""
        nodes:
          - {block: builtin:conv, args: {channels: 4}}
          - {id: stage, block: {choice: [act, batch_norm], per_copy: true}, repeat: 2, args: {}}
          - {block: $head, args: {classes: 10}}
        params: {head: classifier}
    """)
    candidate = sp.concretize({"stage.block[0]": "act", "stage.block[1]": "batch_norm"})
    assert [n["id"] for n in candidate.data["nodes"]] == ["conv_0", "stage", "stage_1", "head_2"]
    plain = archforge.parse_spec(HEADER + textwrap.dedent("""
        params: {head: classifier}
        nodes:
          - {block: builtin:conv, args: {channels: 4}}
          - {id: stage, block: batch_norm, repeat: 2}
          - {block: $head, args: {classes: 10}}
    """))
    assert {name.split(".")[0] for name, _ in archforge.build(plain).named_parameters()} == {"conv_0", "stage", "head_2"}


@pytest.mark.parametrize("body, message, line", [
    ("""
        nodes:
          - {id: stage, block: {choice: [conv, act], per_copy: true}, args: {}}
     """, "fixed 'repeat' of at least 1", 6),
    ("""
        nodes:
          - {block: {choice: [conv, act], per_copy: true}, repeat: 2}
     """, "needs an 'id'", 6),
    ("""
        params: {w: {choice: [1, 2], per_copy: true}}
        nodes:
          - {id: head, block: classifier, args: {classes: 10}}
     """, "'per_copy' applies to a choice point", 5),
    ("""
        params: {n: {choice: [1, 2]}}
        nodes:
          - {id: s, block: {choice: [conv, act], per_copy: true}, repeat: $n}
     """, "fixed 'repeat'", 7),
])
def test_per_copy_misuse_is_located(body, message, line):
    with pytest.raises(SpecError) as info:
        space(body)
    assert message in info.value.message
    assert info.value.location.line == line


# --------------------------------------------------------------------------- malformed choice points


@pytest.mark.parametrize("point, message, column", [
    ("{choice: []}", "'choice' needs a non-empty list of options", 52),
    ("{choice: 3}", "'choice' needs a non-empty list of options", 52),
    ("{int: [5, 1]}", "empty int range [5, 1]: low must be below high", 49),
    ("{int: [1, 2.5]}", "'int' needs a range [low, high] of two integers", 49),
    ("{float: [0.5, 0.5]}", "empty float range", 51),
    ("{int: [1, 6], step: 2}", "step 2 does not divide the range [1, 6]", 63),
    ("{float: [0, 1], log: true}", "a log range needs a positive low end", 51),
    ("{choice: [1, 2], lable: x}", "unknown key 'lable' in a 'choice' choice point (did you mean 'label'?)", 60),
    ("{choice: [1, 1]}", "option 1 is listed twice", 56),
    ("{choice: [1, {choice: [2, 3]}]}", "cannot contain another choice point", 56),
    ("{choice: [1, 2], int: [1, 2]}", "not 'choice' and 'int'", 60),
])
def test_malformed_choice_points_are_located(point, message, column):
    text = HEADER + f"nodes:\n  - {{id: c, block: conv, args: {{channels: {point}}}}}\n"
    with pytest.raises(SpecError) as info:
        parse_space(text, "space.yaml")
    assert message in info.value.message
    assert (info.value.location.file, info.value.location.line, info.value.location.column) == ("space.yaml", 5, column)


def test_structure_errors_point_into_the_space_file():
    with pytest.raises(SpecError) as info:
        space("""
            nodes:
              - {id: stage, block: {choice: [conv, act], per_copy: true}, repeat: 2, blok: 3}
        """)
    assert info.value.location.line == 6
    assert "unknown key 'blok' in node 'stage'" in info.value.message


@pytest.mark.parametrize("section, message, line", [
    ("search: {stratgy: grid}", "unknown key 'stratgy' in 'search' (did you mean 'strategy'?)", 6),
    ("search:\n  constraints: {max_param: 3}", "unknown key 'max_param' in 'search.constraints' (did you mean 'max_params'?)", 7),
    ("search: {objectives: [accuracy, 'acu racy']}", "unknown objective 'acu racy'", 6),
    ("search: {strategy: annealing}", "search.strategy", 6),
    ("search: {pruner: sometimes}", "unknown pruner 'sometimes'", 6),
    ("search: {train: {epochs: 3}}", "set 'epochs' in the search section itself", 6),
])
def test_search_section_errors_are_located(section, message, line):
    text = HEADER + "nodes:\n  - {id: head, block: classifier, args: {classes: 10}}\n" + section + "\n"
    with pytest.raises(SpecError) as info:
        parse_space(text, "space.yaml")
    assert message in info.value.message
    assert info.value.location.line == line


def test_search_section_defaults_and_shorthands():
    sp = space("""
        nodes:
          - {id: head, block: classifier, args: {classes: 10}}
        search: {proxy: synflow, constraints: {max_params: 2e5}, objectives: [accuracy, params]}
    """)
    s = sp.settings
    assert s.proxy.score == "synflow" and s.proxy.keep == 0.25
    assert s.constraints.max_params == 2e5
    assert s.directions == ["maximize", "minimize"]
    assert (s.strategy, s.epochs, s.seeds, s.dataset) == ("grid", 2, 1, "mnist")
    pruned = space("""
        nodes:
          - {id: head, block: classifier, args: {classes: 10}}
        search: {pruner: sh}
    """).settings.pruner
    assert pruned.kind == "successive_halving" and pruned.reduction_factor == 3


# --------------------------------------------------------------------------- candidates


def test_candidate_hash_is_sha256_of_canonical_json():
    sp = space("""
        params: {width: {choice: [4, 8]}}
        nodes:
          - {id: c, block: conv, args: {channels: $width}}
          - {id: head, block: classifier, args: {classes: 10}}
    """)
    candidate = sp.concretize({"width": 8})
    plain = candidate.spec.to_dict()
    expected = hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert candidate.hash == expected == candidate_hash(candidate.spec)
    # the concrete spec is a plain spec: it reads back to the same hash and builds
    again = archforge.parse_spec(candidate.to_yaml())
    assert candidate_hash(again) == candidate.hash
    archforge.build(again)
    assert sp.concretize({"width": 4}).hash != candidate.hash
    assert space("""
        params: {width: {choice: [4, 8]}}
        nodes:
          - {id: c, block: conv, args: {channels: $width}}
          - {id: head, block: classifier, args: {classes: 10}}
    """).concretize({"width": 8}).hash == candidate.hash


def test_shape_invalid_candidates_are_rejected_with_the_checkers_message():
    sp = space("""
        nodes:
          - {id: embed, block: patch_embed, args: {patch: {choice: [2, 3, 4]}, dim: 8}}
          - {id: head, block: classifier, args: {classes: 10}}
    """)
    reasons = {v["embed.patch"]: sp.check(sp.concretize(v)) for v in sp.assignments()}
    assert reasons[2] is None and reasons[4] is None
    assert "patch size 3 does not divide the 8×8 input" in reasons[3]
    assert reasons[3].startswith("space.yaml:6:5: node 'embed'")  # located in the space file


def test_constraints_check_params_and_flops():
    sp = space("""
        params: {width: {choice: [4, 64]}}
        nodes:
          - {id: c, block: conv, args: {channels: $width}}
          - {id: head, block: classifier, args: {classes: 10}}
    """)
    small, big = (sp.concretize({"width": w}) for w in (4, 64))
    assert sp.check(small, Constraints(max_params=1000)) is None and small.params < 1000
    reason = sp.check(big, Constraints(max_params=1000))
    assert reason == f"params {big.params:,} > max_params 1,000"
    assert big.params > 1000
    assert "max_flops" in sp.check(big, Constraints(max_flops=1000))
    assert "min_params" in sp.check(small, Constraints(min_params=1e6))


CALLS: list[str] = []


def counting_evaluator(spec, data, config, on_epoch=None):
    CALLS.append(candidate_hash(spec))
    return SimpleNamespace(accuracy=0.5, epochs=config.epochs, history=[0.5] * config.epochs, stopped_early=False,
                           params=1, flops=1, latency_ms=1.0, peak_memory_mb=1.0, train_time_s=0.0)


def test_constraints_prune_before_any_evaluation(tmp_path):
    sp = space("""
        params: {width: {choice: [2, 4, 64, 128]}}
        nodes:
          - {id: c, block: conv, args: {channels: $width}}
          - {id: head, block: classifier, args: {classes: 10}}
        search: {constraints: {max_params: 1000}, epochs: 1}
    """)
    CALLS.clear()
    data = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
    result = search(sp, dataset=data, storage="memory", evaluator=counting_evaluator, runs_dir=tmp_path, progress=False)
    rejected = {r.hash: r.error for r in result.trials if r.status == "rejected"}
    evaluated = {r.hash for r in result.trials if r.status == "complete"}
    assert len(rejected) == 2 and len(evaluated) == 2
    assert set(CALLS) == evaluated  # never trained a rejected candidate
    assert all("> max_params 1,000" in reason for reason in rejected.values())


def test_space_command_counts_and_samples(capsys):
    from archforge.cli.search_commands import cmd_space

    args = SimpleNamespace(spec="archforge/zoo/spaces/placement_mnist.yaml", samples=2, check=8, seed=0, json=True, dataset=None,
                           param=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cmd_space(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["candidates"] == 8 and info["assignments"] == 8
    assert [d["name"] for d in info["decisions"]] == ["stage.block[0]", "stage.block[1]", "stage.block[2]"]
    assert info["decisions"][0]["where"][0].startswith("archforge/zoo/spaces/placement_mnist.yaml:")
    assert info["checked"] == 8 and info["valid"] + info["rejected_by_constraint"] + info["do_not_fit"] == 8
    assert len(info["samples"]) == 2
    for sample in info["samples"]:
        spec = archforge.Spec.from_dict(sample["spec"])
        assert candidate_hash(spec) == sample["hash"]


PER_COPY_INDEX = """\
archforge: 1
name: index
input: {shape: [1, 16, 16]}
define:
  wide: {params: {channels: 8, stride: 1}, nodes: [{id: c, block: conv, args: {channels: $channels, stride: $stride}}]}
  thin: {params: {channels: 8, stride: 1}, nodes: [{id: c, block: conv, args: {channels: $channels, stride: $stride, kernel: 1}}]}
nodes:
  - {id: stage, block: {choice: [wide, thin], per_copy: true}, repeat: 3, args: {channels: 8, stride: "${2 if index == 0 else 1}"}}
  - {id: head, block: classifier, args: {classes: 10}}
"""


def test_per_copy_copies_see_their_index_as_a_repeat_does():
    """Unrolled copy k reads `index` = k, as copy k of the same repeat does in a plain spec (stride 2 only in the first)."""
    import archforge

    space = parse_space(PER_COPY_INDEX)
    candidate = space.concretize({name: d.first() for name, d in space.decisions.items()})
    assert space.check(candidate) is None
    unrolled = [n.shape for n in archforge.summarize(candidate.spec).nodes if n.block == "conv"]
    plain = PER_COPY_INDEX.replace("{choice: [wide, thin], per_copy: true}", "wide")
    repeated = [n.shape for n in archforge.summarize(archforge.parse_spec(plain)).nodes if n.block == "conv"]
    assert unrolled == repeated == [[8, 8, 8]] * 3


def test_a_node_id_cannot_be_a_choice_point():
    text = PER_COPY_INDEX.replace("- {id: head,", "- {id: {choice: [head, top]},")
    with pytest.raises(SpecError, match="a node's id cannot be a choice point") as info:
        parse_space(text, "ids.yaml")
    assert info.value.location.line == 9
