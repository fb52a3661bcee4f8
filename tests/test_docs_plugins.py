"""docs/plugins.md, tested: the plugin guide's examples do what it says.

* ```python blocks run, each on its own in a fresh namespace and a temporary folder, and the
  ``test_*`` functions they define pass. A block preceded by ``<!-- not run -->`` is a fragment:
  it only has to compile (keep those few).
* ```yaml blocks are complete specs that validate with the installed plugins.
* ```toml blocks declare an entry point in the ``archforge`` group and depend on ``archforge-nn``.
* The hooks example, registered as a plugin, provides what it claims without a warning.
* The names the guide imports from ``archforge.plugin`` exist there, the tables list the hooks and
  the registry's attributes as the code has them, and relative links lead somewhere.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import archforge
import archforge.plugin
from archforge.registry import MetricContext, Registry, load_registry
from archforge.registry.manager import HOOKS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
TEXT = DOC.read_text(encoding="utf-8")
NOT_RUN = "<!-- not run -->"


@dataclass(frozen=True)
class Example:
    """One fenced block of the guide."""

    lang: str
    text: str
    line: int
    run: bool

    @property
    def where(self) -> str:
        return f"{DOC.name}:{self.line}"


def read_examples(text: str) -> list[Example]:
    """The fenced blocks of ``text``; a block right after ``<!-- not run -->`` is marked as a fragment."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        found.append(Example(fence.group(1) or "text", "\n".join(lines[i + 1:end]) + "\n", i + 1, before != NOT_RUN))
        i = end + 1
    return found


EXAMPLES = read_examples(TEXT)
PYTHON = [e for e in EXAMPLES if e.lang == "python"]
YAML = [e for e in EXAMPLES if e.lang == "yaml"]
TOML = [e for e in EXAMPLES if e.lang == "toml"]


def ids(examples: list[Example]) -> list[str]:
    return [f"line{e.line}" for e in examples]


def run_example(example: Example) -> dict:
    """Execute one block as a module of its own (importable while it runs, as a plugin's module is); return its
    namespace after its ``test_*`` functions passed."""
    module = types.ModuleType(f"plugins_md_line{example.line}")
    sys.modules[module.__name__] = module
    try:
        exec(compile(example.text, example.where, "exec"), module.__dict__)
        for name, value in list(module.__dict__.items()):
            if name.startswith("test_") and callable(value):
                value()
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "template" / "src"))  # the template's block, as the guide says


def test_the_guide_has_examples_of_every_kind_and_few_fragments():
    assert len(PYTHON) >= 6 and YAML and TOML
    assert sum(not e.run for e in PYTHON) <= 3, "keep the fragments few: make examples complete enough to run"


@pytest.mark.parametrize("example", [e for e in PYTHON if e.run], ids=ids([e for e in PYTHON if e.run]))
def test_python_example_runs(example, in_tmp):
    torch.manual_seed(0)
    run_example(example)


@pytest.mark.parametrize("example", PYTHON, ids=ids(PYTHON))
def test_python_example_compiles(example):
    compile(example.text, example.where, "exec")  # fragments included


@pytest.mark.parametrize("example", YAML, ids=ids(YAML))
def test_yaml_example_is_a_spec_that_validates(example):
    graph = archforge.validate(archforge.parse_spec(example.text, example.where))
    assert graph is not None


@pytest.mark.parametrize("example", TOML, ids=ids(TOML))
def test_toml_example_declares_an_entry_point_and_depends_on_archforge_nn(example):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads(example.text)["project"]
    assert any(re.match(r"archforge-nn\b", dependency) for dependency in project["dependencies"]), example.where
    for name, value in project["entry-points"]["archforge"].items():
        assert re.fullmatch(r"[A-Za-z_]\w*", name) and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", value), example.where


def test_the_hooks_example_is_a_plugin_that_provides_what_it_claims(in_tmp):
    example = next(e for e in PYTHON if "def archforge_metrics" in e.text)
    namespace = run_example(example)
    plugin = types.SimpleNamespace(**{name: value for name, value in namespace.items() if name.startswith("archforge_")},
                                   ARCHFORGE_PLUGIN_API=namespace["ARCHFORGE_PLUGIN_API"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a problem in the example would be a warning
        registry = load_registry([("example", plugin)], entry_points=False)
    assert registry.problems == []
    assert sorted(registry.qualified) == ["example:halo_attention", "example:lambda_layer"]

    data = registry.datasets["my_digits"][0].load(limit=20)
    assert data.images.shape == (20, 1, 8, 8) and data.labels.dtype == torch.int64
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1 and int(data.labels.max()) < len(data.classes)

    metric = registry.metrics["latency_ms_batch1"][0]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    with torch.no_grad():
        value = metric.compute(model, MetricContext(input_dims=(1, 8, 8), device=torch.device("cpu")))
    assert metric.goal == "minimize" and isinstance(value, float) and value >= 0


def test_names_imported_from_the_plugin_module_exist_there():
    imported = set()
    for match in re.finditer(r"from archforge\.plugin import ([\w, ]+)", TEXT):
        imported |= {name.strip() for name in match.group(1).split(",")}
    assert {"Block", "BlockArgs", "Shape", "ShapeError", "hookimpl", "ParameterNode"} <= imported
    assert imported <= set(archforge.plugin.__all__), imported - set(archforge.plugin.__all__)
    # The plugin API is imported from archforge.plugin throughout, never from the package root.
    assert not re.search(r"from archforge import .*\b(Block|BlockArgs|Shape|ShapeError|hookimpl)\b", TEXT)
    assert "@archforge.hookimpl" not in TEXT


def test_the_guide_points_at_the_manual():
    assert "(../archforge/plugin.py)" in TEXT and (ROOT / "archforge" / "plugin.py").is_file()


def test_the_hook_table_lists_every_hook_of_the_plugin_module():
    rows = re.findall(r"^\| `(archforge_\w+)\(\) -> ", TEXT, flags=re.MULTILINE)
    specs = [name for name in vars(archforge.plugin) if name.startswith("archforge_")]
    assert rows == list(HOOKS) and sorted(specs) == sorted(HOOKS)


def test_the_registry_table_lists_what_a_registry_has():
    section = TEXT[TEXT.index("## The registry"):TEXT.index("## Plugin API versions")]
    documented = re.findall(r"^\| `(\w+)(?:\(name\))?` \|", section, flags=re.MULTILINE)
    fields = {f.name for f in dataclasses.fields(Registry)}
    assert set(documented) == fields | {"block"}, set(documented) ^ (fields | {"block"})
    assert callable(Registry().block)


def test_links_lead_somewhere():
    anchors = {re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", TEXT, flags=re.MULTILINE)}
    for target in re.findall(r"\]\(([^)]+)\)", TEXT):
        if target.startswith("#"):
            assert target[1:] in anchors, target
        elif not re.match(r"\w+://", target):
            assert (DOC.parent / target).exists(), target
