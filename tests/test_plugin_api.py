"""The plugin API module: what it loads, what it exports, and the typed Block contract.

Import costs are checked in fresh interpreters, since this process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pluggy
import pytest
import torch
from pydantic import Field
from torch import nn

import archforge
import archforge.plugin
import archforge.registry
import archforge.search
from archforge.plugin import Block, BlockArgs, ParameterNode, Shape, ShapeError, hookimpl
from archforge.registry import hookspecs
from archforge.registry.manager import HOOKS
from archforge.testing import check_block, registry_with

#: What a block plugin must not pay for. ``torch.fx`` is not listed: ``import torch`` loads it itself
#: (checked below), so no import of archforge can avoid it.
HEAVY = ("archforge.builder", "archforge.graph", "archforge.search", "archforge.data", "archforge.spec",
         "optuna", "matplotlib", "networkx", "rich")


def fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON value as its last line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_plugin_import_loads_none_of_the_builder_graph_search_or_their_dependencies():
    loaded = fresh(f"""
        import json, sys
        import torch
        fx_by_torch = "torch.fx" in sys.modules
        from archforge.plugin import Block, BlockArgs, Shape, ShapeError, hookimpl
        print(json.dumps([fx_by_torch, [name for name in {HEAVY!r} if name in sys.modules]]))
    """)
    assert loaded == [True, []]


def test_the_package_import_is_as_light_and_search_is_a_callable_package():
    # `archforge.search` is the package, whatever was imported first, and calling it runs the search.
    result = fresh(f"""
        import json, sys
        import archforge
        light = [name for name in {HEAVY!r} if name in sys.modules]
        from archforge.search.space import parse_space
        import archforge.search.run as run
        from archforge.search import SearchSettings, load_space
        run.search = lambda space, **options: ["called", space, options]   # what archforge.search(...) calls
        called = archforge.search("placement_mnist", seeds=2)
        print(json.dumps([light, called, archforge.search.__name__, archforge.search.SearchSettings.__name__,
                          SearchSettings.__name__, "optuna" in sys.modules]))
    """)
    assert result == [[], ["called", "placement_mnist", {"seeds": 2}], "archforge.search", "SearchSettings", "SearchSettings", False]


@pytest.mark.parametrize("module", [archforge, archforge.registry, archforge.plugin, sys.modules["archforge.search"]],
                         ids=["archforge", "registry", "plugin", "search"])
def test_every_public_name_resolves_and_is_listed(module):
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))


def test_the_facade_keeps_its_public_names():
    assert set(archforge.__all__) == {
        "Block", "BlockArgs", "CheckpointError", "Graph", "Location", "PluginError", "Registry", "SearchResult", "SettingError",
        "Shape", "ShapeError", "Spec", "SpecError", "SpecWarning", "Summary", "build", "hookimpl", "list_models",
        "load_checkpoint", "load_spec", "parse_spec", "search", "summarize", "validate",
    }
    assert archforge.Block is Block and archforge.hookimpl is hookimpl and archforge.registry.Block is Block
    assert archforge.errors.ShapeError is ShapeError  # a subpackage reached as an attribute
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        archforge.no_such_name  # noqa: B018


def test_the_registry_registers_exactly_the_hooks_written_in_the_plugin_module():
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    assert sorted(name for name in vars(manager.hook) if not name.startswith("_")) == sorted(HOOKS)
    for name in HOOKS:
        spec = getattr(archforge.plugin, name)
        assert getattr(hookspecs, name) is spec
        assert "Returns:" in spec.__doc__ and "Contract:" in spec.__doc__


def test_the_manual_covers_the_rules():
    manual = " ".join(archforge.plugin.__doc__.split())  # the docstring wraps lines anywhere
    for topic in ("entry point in the ``archforge`` group", "ShapeError", "``device``", "``dtype``", "Determinism",
                  "No downloads", "``map``", "``tokens``", "``vector``", "extra_tokens", "ARCHFORGE_PLUGIN_API", "Initialisation",
                  "init: reference"):
        assert topic in manual, topic
    for method in (Block.infer, Block.build, Block.init_weights, Block.accepted_layouts, Block.contract_problems):
        assert method.__doc__, method.__name__


def test_parameter_node_is_the_registry_one():
    from archforge.registry.parameter_node import ParameterNode as home

    assert ParameterNode is home


class ScaleArgs(BlockArgs):
    init: float = Field(1.0, gt=0)


class Scale(Block[ScaleArgs]):
    """``x * γ`` per channel."""

    name = "typed_scale"
    layout = ("map", "tokens")
    Args = ScaleArgs

    def infer(self, x: Shape, args: ScaleArgs) -> Shape:
        return x

    def build(self, x: Shape, args: ScaleArgs, *, device=None, dtype=None) -> nn.Module:
        return _Scale(x.channels, x.layout == "map", args.init, device=device, dtype=dtype)


class _Scale(nn.Module):
    def __init__(self, channels: int, channels_first: bool, init: float, *, device=None, dtype=None):
        super().__init__()
        self.channels_first = channels_first
        self.gamma = nn.Parameter(torch.full((channels,), init, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma[:, None, None] if self.channels_first else self.gamma
        return x * gamma.to(x.dtype)


class Untyped(Block):
    """A block written without the type parameter, as the built-ins are."""

    name = "untyped_identity"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return nn.Identity()


def test_a_typed_block_keeps_the_contract_and_builds_in_a_spec():
    assert Scale.contract_problems() == [] and Untyped.contract_problems() == []
    assert issubclass(Scale, Block) and Scale.Args is ScaleArgs and Untyped.Args is BlockArgs
    module = check_block(Scale, Shape.map(4, 2, 2), {"init": 0.5}, expected_params=4)
    x = torch.randn(2, 4, 2, 2)
    torch.testing.assert_close(module(x), 0.5 * x)

    registry = registry_with(Scale, Untyped, name="typed-blocks", entry_points=False)
    assert registry.problems == []
    assert registry.block("typed_scale").block.Args is ScaleArgs and registry.block("untyped_identity").qualified_name == "typed-blocks:untyped_identity"


def test_block_is_subscriptable_with_a_forward_reference():
    class Nested(Block["Nested.Args"]):
        """Arguments nested in the class, named by a string in the base."""

        name = "nested_args"

        class Args(BlockArgs):
            k: int = 1

        def infer(self, x, args):
            return x

        def build(self, x, args, *, device=None, dtype=None):
            return nn.Identity()

    assert Nested.contract_problems() == [] and Nested.Args(k=2).k == 2


def test_the_search_package_pickles_and_copies_as_itself():
    import copy
    import functools
    import pickle

    partial = pickle.loads(pickle.dumps(functools.partial(archforge.search, "placement_mnist", seeds=2)))
    assert partial.func is sys.modules["archforge.search"] and partial.keywords == {"seeds": 2}
    assert copy.copy(archforge.search) is archforge.search and copy.deepcopy(archforge.search) is archforge.search
