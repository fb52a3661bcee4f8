"""A search can give a space's params other values (``search.params``, ``--param NAME=VALUE``).

The bundled spaces are written for MNIST's 10 classes; ``params: {classes: 2}`` searches the
same space on a 2-class dataset. The space is read again with the values, so everything
that depends on a param follows, and errors point at the param's line.
"""

from __future__ import annotations

import pytest

import archforge
from archforge.errors import SpecError
from archforge.search import parse_space

SPACE = """\
archforge: 1
name: tiny
input: {shape: [1, 28, 28]}
params: {classes: 10, width: {choice: [4, 8]}, depth: 2}
nodes:
  - id: convs
    block: {choice: [identity, batch_norm], per_copy: true}
    repeat: $depth
    args: {}
  - {id: mix, block: conv, args: {channels: $width, stride: 4}}
  - {id: head, block: classifier, args: {classes: $classes}}
"""


def first(space):
    return space.concretize({name: d.first() for name, d in space.decisions.items()})


def test_a_param_takes_the_value_given_and_the_candidates_change_with_it():
    space = parse_space(SPACE, "tiny.yaml")
    two = space.with_params({"classes": 2})
    assert first(two).spec.params["classes"] == 2 and first(space).spec.params["classes"] == 10
    assert first(two).hash != first(space).hash  # another network, another result
    assert two.fingerprint == space.fingerprint  # the same text: the values are settings of the run
    assert space.with_params({}) is space


def test_a_per_copy_repeat_follows_its_param():
    space = parse_space(SPACE, "tiny.yaml")
    assert len(space.decisions) == 3  # width and one block per copy of convs
    assert len(space.with_params({"depth": 3}).decisions) == 4


@pytest.mark.parametrize("values, message, line", [
    ({"clases": 2}, "params.clases (search.params, --param): the space has no param 'clases' to set (did you mean 'classes'?); its params are "
                    "classes, width, depth", 4),
    ({"width": 16}, "params.width (search.params, --param) is a decision of the space (a choice point): it cannot be set to one value", 4),
    ({"classes": {"choice": [2, 3]}}, "params.classes (search.params, --param): a value given to a param is one value, not a choice point", 4),
])
def test_what_cannot_be_set_is_a_located_error(values, message, line):
    with pytest.raises(SpecError) as info:
        parse_space(SPACE, "tiny.yaml").with_params(values)
    assert info.value.message == message and info.value.location.line == line


def test_a_search_runs_a_10_class_space_on_a_2_class_dataset(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    options = dict(dataset="long_range", limit=200, epochs=1, budget=1, strategy="random", storage="memory", progress=False,
                   train={"batch_size": 50, "latency_repeats": 0})
    result = archforge.search(path, params={"classes": 2}, **options)
    assert result.table[0]["status"] == "complete" and result.best_spec.params["classes"] == 2
    failed = archforge.search(path, **{**options, "storage": "memory"})
    assert failed.failed and "--param classes=2" in failed.failed[0]["error"]  # the hint names the fix


def test_the_space_s_own_search_params_apply_and_a_given_value_wins():
    space = parse_space(SPACE + "search: {params: {classes: 3}}\n", "tiny.yaml")
    assert first(space).spec.params["classes"] == 3
    assert first(space.with_params({"classes": 2})).spec.params["classes"] == 2
    assert space.settings.merged(params={"depth": 3}).params == {"classes": 3, "depth": 3}  # updated, as a section is


def test_a_run_does_not_resume_with_other_params(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    options = dict(dataset="long_range", limit=200, epochs=1, budget=1, strategy="random", progress=False,
                   storage=f"sqlite:///{tmp_path}/study.db", train={"batch_size": 50, "latency_repeats": 0})
    archforge.search(path, params={"classes": 2}, **options)
    with pytest.raises(archforge.search.SearchError, match=r"params \{'classes': 2\} → \{'classes': 2, 'depth': 3\}"):
        archforge.search(path, params={"classes": 2, "depth": 3}, **options)


def test_archforge_space_takes_params_and_a_dataset(tmp_path, capsys):
    from archforge.cli import main

    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    assert main(["space", str(path), "--param", "depth=3", "--dataset", "long_range", "-n", "0", "--check", "1", "--json"]) == 0
    info = __import__("json").loads(capsys.readouterr().out)
    assert len(info["decisions"]) == 4 and info["valid"] == 1
