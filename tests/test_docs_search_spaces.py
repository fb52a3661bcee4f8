"""docs/search-spaces.md, tested: the manual of the search-space language says what the code does.

Every fenced block of the manual is an example checked here:

* ```yaml: a complete space (with ``archforge: 1``) or a fragment (top-level spec keys only, embedded
  into a minimal space: a name, an 8×8 input, a classifier head when it has no nodes). It loads with
  :func:`parse_space`, and the HTML comment after it states what must hold:
  ``<!-- decisions: a, b; size: 8; candidates: 8; valid: 8; ids: stem, stage_0 -->`` (``valid``: candidates
  the shape checker accepts; ``ids``: the node ids of the first candidate), ``<!-- error: text -->``
  (loading fails with a message containing ``text``) or ``<!-- search-error: text -->`` (loading works,
  starting the search fails). A space that loads has a first candidate the shape checker accepts.
* ```python: compiles; marked ``<!-- run -->`` it runs (in a temporary folder).
* ```bash: every ``archforge`` command line uses flags its command has, on files that exist.

Tables announced by ``<!-- table: NAME -->`` are compared with the code: the keys of the ``search:``
section and of ``train:`` (and their defaults), the objectives and their directions, the strategies, the
pruners, and the bounds of :mod:`archforge.search.limits`. Links between sections lead somewhere.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shlex
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import archforge
from archforge import SpecError, SpecWarning
from archforge.search import limits
from archforge.search.settings import OBJECTIVES, STRATEGIES, Constraints, PrunerSettings, SearchSettings
from archforge.search.space import candidate_hash, parse_space
from archforge.search.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "search-spaces.md"
TEXT = DOC.read_text(encoding="utf-8")

#: Top-level keys a YAML example may have: a spec's, and the search section.
SPACE_KEYS = {"archforge", "name", "description", "input", "params", "define", "nodes", "output", "search"}
#: What the comment after an example may state.
FACT_KEYS = {"decisions", "size", "candidates", "valid", "ids", "error", "search-error", "run"}
#: What a search run from the tests may cost: the smallest data set, one candidate, one epoch.
TINY_SEARCH = {"dataset": "digits", "limit": 200, "budget": 1, "epochs": 1, "storage": "memory", "progress": False}


@dataclass(frozen=True)
class Example:
    """One fenced block of the manual and the facts stated in the comments right after it."""

    lang: str
    text: str
    line: int
    facts: dict[str, str]

    @property
    def where(self) -> str:
        return f"{DOC.name}:{self.line}"


def _facts(comment: str, line: int) -> dict[str, str]:
    key, _, rest = comment.partition(":")
    key = key.strip()
    if key in ("error", "search-error"):  # a message may hold any character: the rest of the comment is it
        return {key: rest.strip()}
    facts = {}
    for part in comment.split(";"):
        name, _, value = part.partition(":")
        facts[name.strip()] = value.strip()
    unknown = set(facts) - FACT_KEYS
    assert not unknown, f"{DOC.name}:{line}: unknown fact(s) {sorted(unknown)}; write one of {sorted(FACT_KEYS)}"
    return facts


def read_examples(text: str) -> list[Example]:
    """The fenced blocks of ``text``, each with the facts of the HTML comments that follow it."""
    lines = text.splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        assert fence.group(1), f"{DOC.name}:{i + 1}: a fenced block without a language"
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        facts: dict[str, str] = {}
        k = end + 1
        while k < len(lines) and (comment := re.match(r"^<!--\s*(.*?)\s*-->\s*$", lines[k])):
            facts.update(_facts(comment.group(1), k + 1))
            k += 1
        found.append(Example(fence.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1, facts))
        i = k
    return found


EXAMPLES = read_examples(TEXT)
YAML = [e for e in EXAMPLES if e.lang == "yaml"]
PYTHON = [e for e in EXAMPLES if e.lang == "python"]
BASH = [e for e in EXAMPLES if e.lang == "bash"]


def ids(examples: list[Example]) -> list[str]:
    return [f"line{e.line}" for e in examples]


def space_text(example: Example) -> str:
    """A complete example as written; a fragment inside a minimal space."""
    data = yaml.safe_load(example.text)
    assert isinstance(data, dict) and set(data) <= SPACE_KEYS, \
        f"{example.where}: a YAML example is a mapping of top-level spec keys, got {sorted(data) if isinstance(data, dict) else data!r}"
    if "archforge" in data:
        return example.text
    head = "archforge: 1\n" + ("" if "name" in data else "name: example\n") + ("" if "input" in data else "input: {shape: [1, 8, 8]}\n")
    tail = "" if "nodes" in data else "nodes:\n  - {id: head, block: classifier, args: {classes: 10}}\n"
    return head + example.text + tail


def names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


# --------------------------------------------------------------------------- YAML examples


def test_the_manual_has_examples_of_every_kind():
    assert len(YAML) >= 20 and len(PYTHON) >= 3 and BASH
    assert sum("error" in e.facts for e in YAML) >= 5
    assert sum("decisions" in e.facts for e in YAML) >= 10


@pytest.mark.parametrize("example", [e for e in YAML if "error" not in e.facts], ids=ids([e for e in YAML if "error" not in e.facts]))
def test_yaml_example_loads_with_the_decisions_it_states(example):
    space = parse_space(space_text(example), example.where)
    facts = example.facts
    if "decisions" in facts:
        assert list(space.decisions) == names(facts["decisions"])
    if "size" in facts:
        expected = None if facts["size"] == "infinite" else int(facts["size"])
        assert space.size == expected
        if expected is not None:  # the size is the product of the decisions' numbers of values
            assert math.prod(len(d.values()) for d in space.decisions.values()) == expected
    if "candidates" in facts:
        assert len(space.distinct_candidates()) == int(facts["candidates"])
    first = space.concretize({name: d.first() for name, d in space.decisions.items()})
    if "ids" in facts:
        assert [node["id"] for node in first.data["nodes"]] == names(facts["ids"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)  # an example may leave a node unused on purpose
        assert space.check(first, Constraints()) is None
        if "valid" in facts:  # candidates the shape checker accepts
            assert sum(space.check(c, Constraints()) is None for c in space.distinct_candidates()) == int(facts["valid"])
    # a candidate is a plain spec: it reads back as one, to the same hash
    assert candidate_hash(archforge.parse_spec(first.to_yaml())) == first.hash


@pytest.mark.parametrize("example", [e for e in YAML if "error" in e.facts], ids=ids([e for e in YAML if "error" in e.facts]))
def test_yaml_example_fails_with_the_error_it_states(example):
    with pytest.raises(SpecError) as info:
        parse_space(space_text(example), example.where)
    assert example.facts["error"] in str(info.value)
    assert str(info.value).startswith(f"{example.where}:")  # located in the example


@pytest.mark.parametrize("example", [e for e in YAML if "search-error" in e.facts], ids=ids([e for e in YAML if "search-error" in e.facts]))
def test_yaml_example_fails_to_start_a_search_with_the_error_it_states(example):
    space = parse_space(space_text(example), example.where)
    with pytest.raises(Exception) as info:
        archforge.search(space, **TINY_SEARCH)
    assert example.facts["search-error"] in str(info.value)


# --------------------------------------------------------------------------- Python examples


@pytest.mark.parametrize("example", PYTHON, ids=ids(PYTHON))
def test_python_example_compiles(example):
    compile(example.text, example.where, "exec")


RUN = [pytest.param(e, id=f"line{e.line}") for e in PYTHON if "run" in e.facts]


@pytest.mark.parametrize("example", RUN)
def test_python_example_runs(example, tmp_path, monkeypatch):
    (tmp_path / "archforge").symlink_to(ROOT / "archforge")  # what an example reads is the repository's; what it writes stays here
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", SpecWarning)
        exec(compile(example.text, example.where, "exec"), {"__name__": "docs_example"})


# --------------------------------------------------------------------------- command lines


def help_text(command: str) -> str:
    from archforge.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main([command, "--help"])
    assert status == 0
    return out.getvalue()


def command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for example in BASH:
        for offset, line in enumerate(example.text.splitlines(), start=1):
            argv = shlex.split(line, comments=True)
            if argv:
                found.append((f"{DOC.name}:{example.line + offset}", argv))
    return found


def test_command_lines_use_flags_the_commands_have():
    helps: dict[str, str] = {}
    for where, argv in command_lines():
        assert argv[0] == "archforge" and len(argv) > 1, f"{where}: {shlex.join(argv)}"
        command = argv[1]
        if command not in helps:
            helps[command] = help_text(command)
        for token in argv[2:]:
            if token.startswith("-"):
                flag = token.split("=")[0]
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[command]), f"{where}: 'archforge {command}' has no {flag}"
            elif token.endswith(".yaml"):
                assert (ROOT / token).is_file(), f"{where}: no file {token}"


# --------------------------------------------------------------------------- tables


def table(name: str) -> list[list[str]]:
    """The body rows of the table announced by ``<!-- table: name -->``, as lists of cells."""
    lines = TEXT.splitlines()
    start = lines.index(f"<!-- table: {name} -->") + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(rows) > 2, f"table {name} has no rows"
    return rows[2:]  # after the header and the |---| line


def code(cell: str) -> str | None:
    """The value of a cell that is one literal in backticks, else ``None``."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    return match.group(1) if match else None


def flags(cell: str) -> list[str]:
    return re.findall(r"`(--[a-z-]+)", cell)


@pytest.mark.parametrize("name, model, left_out", [
    ("search", SearchSettings, set()),
    ("train", TrainConfig, {"epochs", "seed"}),  # the search section sets these itself
])
def test_settings_tables_list_every_key_with_its_default(name, model, left_out):
    rows = table(name)
    keys = [code(row[0]) for row in rows]
    assert sorted(keys) == sorted(set(model.model_fields) - left_out)
    defaults = model().model_dump(mode="json")
    search_help = help_text("search")
    for row in rows:
        key, default = code(row[0]), code(row[2])
        if default is not None:
            assert yaml.safe_load(default) == defaults[key], f"table {name}: default of {key}"
        for flag in flags(row[3]):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", search_help), f"table {name}: no flag {flag}"


def test_objectives_table_gives_each_objective_its_direction():
    assert {code(row[0]): row[1] for row in table("objectives")} == OBJECTIVES


def test_strategies_and_pruners_tables_list_them_all():
    assert [code(row[0]) for row in table("strategies")] == list(STRATEGIES)
    kinds = [re.match(r"`(\w+)`", row[0]).group(1) for row in table("pruners")]
    assert kinds == list(typing.get_args(PrunerSettings.model_fields["kind"].annotation))


def test_bounds_table_gives_the_values_of_the_limits_module():
    rows = table("bounds")
    internal = {"MAX_TEXT"}  # how much of a stored trial is read back: nothing a space file sets
    assert sorted(code(row[0]) for row in rows) == sorted(name for name in vars(limits) if name.startswith("MAX_") and name not in internal)
    for row in rows:
        text = row[1].replace(",", "").replace("\\", "")
        base, _, exponent = text.partition("**")
        value = int(base) ** int(exponent) if exponent else int(base)
        assert getattr(limits, code(row[0])) == value, row[0]


def test_constraint_messages_quoted_are_the_ones_given():
    quoted = re.findall(r"`((params|flops) ([\d,]+) ([<>]) ((?:max|min)_\2) ([\d,]+))`", TEXT)
    assert quoted
    for message, _, value, _, bound, limit in quoted:
        violation = Constraints(**{bound: float(limit.replace(",", ""))}).violation(
            *((int(value.replace(",", "")), 0) if bound.endswith("params") else (0, int(value.replace(",", "")))))
        assert violation == message


# --------------------------------------------------------------------------- links


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_lead_somewhere():
    anchors = {slug(m) for m in re.findall(r"^#+ (.*)$", TEXT, flags=re.M)}
    for target in re.findall(r"\]\(([^)]+)\)", TEXT):
        path, _, anchor = target.partition("#")
        if path:
            assert (DOC.parent / path).is_file(), target
        elif anchor:
            assert anchor in anchors, target
