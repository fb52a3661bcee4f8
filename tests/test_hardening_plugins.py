"""Hostile plugins (issue class 5): every fault is one warning or one located error naming the plugin, never a crash.

The corpus is organised by class; each case carries a one-line reason. Every case checks
that the built-in blocks and an unrelated good plugin keep working.
"""

from __future__ import annotations

import signal
import sys
import textwrap
import threading
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from torch import nn

import archforge
from archforge import Block, BlockArgs, PluginError, Shape, SpecError
from archforge.errors import PluginWarning
from archforge.registry import DatasetSource, Metric, hookimpl, load_registry
from archforge.registry.block import FAMILIES, LAYOUTS, contract_problems

GOOD = '''
import archforge
from torch import nn

class Good(archforge.Block):
    """A block that keeps its contract."""
    name = "good_block"
    def infer(self, x, args): return x
    def build(self, x, args, *, device=None, dtype=None): return nn.Identity()

@archforge.hookimpl
def archforge_blocks():
    return [Good]
'''

BLOCK = '''
import archforge
from torch import nn

class Twice(archforge.Block):
    """Identity under another name."""
    name = "{name}"
    def infer(self, x, args): return x
    def build(self, x, args, *, device=None, dtype=None): return nn.Identity()
'''


def make_distribution(root, dist: str, module: str, source: str, version: str = "1.0", value: str | None = None) -> None:
    """A minimal installed distribution: a module plus dist-info with an archforge entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[archforge]\n{module} = {value or module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    make_distribution(tmp_path, "plugin-good", "af_good", GOOD)
    yield tmp_path
    # The cases reuse module names: forget the ones imported from this folder.
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def load_with_warnings() -> tuple[archforge.Registry, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = load_registry()
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert messages == registry.problems
    return registry, messages


def assert_others_work(registry: archforge.Registry) -> None:
    assert registry.block("conv").builtin
    assert registry.block("good_block").plugin.distribution == "plugin-good"


def only_message(messages: list[str], plugin: str) -> str:
    mine = [m for m in messages if plugin in m]
    assert len(mine) == 1, messages
    assert "\n" not in mine[0] and "Traceback" not in mine[0]
    return mine[0]


# --- 1. the plugin module cannot be imported ---------------------------------------------------

IMPORT_FAULTS = [
    ("raise ImportError('missing dependency frobnicate')\n", "failed to load and is skipped: ImportError: missing dependency frobnicate",
     "a missing dependency"),
    ("import sys\nsys.exit(3)\n", "failed to load and is skipped: SystemExit: sys.exit(3) was called", "sys.exit at import must not end the process"),
    ("raise SystemExit\n", "failed to load and is skipped: SystemExit: sys.exit(None) was called", "a bare SystemExit"),
    ("raise KeyboardInterrupt\n", "failed to load and is skipped: KeyboardInterrupt", "the plugin's own KeyboardInterrupt, not a Ctrl-C"),
    ("raise GeneratorExit\n", "failed to load and is skipped: GeneratorExit", "another BaseException"),
    ("def f(): return f()\nf()\n", "failed to load and is skipped: RecursionError", "unbounded recursion at import"),
    ("x = (\n", "failed to load and is skipped: SyntaxError", "a syntax error"),
    ("class E(Exception):\n    def __str__(self): raise RuntimeError('no')\nraise E()\n", "failed to load and is skipped: E: <",
     "an exception whose __str__ raises"),
    ("raise RuntimeError('line one\\nline two')\n", "RuntimeError: line one; line two", "a multi-line message stays one line"),
    ("raise RuntimeError('x' * 10000)\n", "RuntimeError: xxx", "a huge message is cut"),
    ("def __getattr__(name): raise RuntimeError('lazy attribute ' + name)\n", "failed to load and is skipped: RuntimeError: lazy attribute",
     "a module __getattr__ that raises while archforge inspects it"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_blocks(config):\n    return []\n", "failed to load and is skipped: PluginValidationError",
     "a hook whose signature does not match the spec"),
    ("ARCHFORGE_PLUGIN_API = '1'\n", "is refused: its ARCHFORGE_PLUGIN_API is '1', not an int; declare the major it targets, e.g. ARCHFORGE_PLUGIN_API = 1",
     "an API version of the wrong type"),
    ("ARCHFORGE_PLUGIN_API = 2\n", "is refused: it targets plugin API 2, this archforge provides 1", "another API major"),
]


@pytest.mark.parametrize("source, expected, reason", IMPORT_FAULTS, ids=[c[2] for c in IMPORT_FAULTS])
def test_a_plugin_that_fails_at_import_is_one_warning_and_the_rest_keep_working(site, source, expected, reason):
    make_distribution(site, "plugin-bad", "af_bad", source)
    registry, messages = load_with_warnings()
    message = only_message(messages, "af_bad")
    assert message.startswith("plugin 'af_bad' from 'plugin-bad'"), message
    assert expected in message, (reason, message)
    assert len(message) < 600, "a message stays readable"
    assert_others_work(registry)


def test_a_malformed_entry_point_value_is_named(site):
    make_distribution(site, "plugin-typo", "af_typo", GOOD, value="af typo!!")
    registry, messages = load_with_warnings()
    assert only_message(messages, "af_typo") == (
        "plugin 'af_typo' from 'plugin-typo' is skipped: its value 'af typo!!' is not 'package.module' or "
        "'package.module:attribute'; fix it in the [project.entry-points.archforge] table")
    assert_others_work(registry)


def test_an_entry_point_naming_none_is_skipped(site):
    make_distribution(site, "plugin-none", "af_none", "PLUGIN = None\n", value="af_none:PLUGIN")
    registry, messages = load_with_warnings()
    assert "its entry point resolves to None" in only_message(messages, "af_none")
    assert_others_work(registry)


def test_a_distribution_without_a_name_does_not_break_the_ordering(site):
    # importlib.metadata gives dist.name None; sorting None among strings used to raise TypeError.
    (site / "af_anon.py").write_text(GOOD.replace("good_block", "anon_block"))
    info = site / "anon-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[archforge]\naf_anon = af_anon\n")
    registry, _ = load_with_warnings()
    assert registry.block("anon_block").plugin.distribution == "?"
    assert_others_work(registry)


def test_a_real_ctrl_c_during_plugin_import_still_interrupts(site):
    # A SIGINT that really arrives is the user's, not the plugin's: it must propagate.
    make_distribution(site, "plugin-slow", "af_slow", "import signal\nsignal.raise_signal(signal.SIGINT)\n")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        load_registry()
    assert signal.getsignal(signal.SIGINT) is before, "the SIGINT handler is restored"


def test_a_keyboard_interrupt_raised_in_another_thread_is_the_plugins_fault(site):
    make_distribution(site, "plugin-bad", "af_bad", "raise KeyboardInterrupt\n")
    result: dict = {}

    def run():
        result["registry"], result["messages"] = load_with_warnings()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert "failed to load and is skipped: KeyboardInterrupt" in only_message(result["messages"], "af_bad")
    assert_others_work(result["registry"])


# --- 2. hooks that raise or return the wrong type -----------------------------------------------

HOOK_FAULTS = [
    (BLOCK.format(name="twice") + "@archforge.hookimpl\ndef archforge_blocks():\n    return Twice\n",
     "archforge_blocks() must return a list of Block classes, got the class <class 'af_bad.Twice'> (return [Twice]); it is ignored",
     "a class instead of a list"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    return 'conv'\n",
     "archforge_blocks() must return a list of Block classes, got str 'conv'", "a string is not a list of names"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    return {'a': 1}\n",
     "archforge_blocks() must return a list of Block classes, got dict", "a mapping"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    yield from ()\n",
     "archforge_blocks() must return a list of Block classes, got generator", "a generator"),
    (BLOCK.format(name="twice") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice()]\n",
     "archforge_blocks() returned an instance of Twice; return the class Twice itself", "an instance instead of the class"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    return [42]\n",
     "archforge_blocks() returned int 42, which is not a Block subclass", "an item that is no class"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    return [dict]\n",
     "archforge_blocks() returned the class <class 'dict'>, which is not a Block subclass", "a class that is no Block"),
    ("import archforge, sys\n@archforge.hookimpl\ndef archforge_blocks():\n    sys.exit(2)\n",
     "raised in archforge_blocks() and is skipped: SystemExit: sys.exit(2) was called", "sys.exit in a hook"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    raise KeyboardInterrupt\n",
     "raised in archforge_blocks() and is skipped: KeyboardInterrupt", "the hook's own KeyboardInterrupt"),
    ("import archforge\nclass L(list):\n    def __iter__(self): raise RuntimeError('bad list')\n"
     "@archforge.hookimpl\ndef archforge_blocks():\n    return L([1])\n",
     "raised in archforge_blocks() and is skipped: RuntimeError: bad list", "a list that cannot be iterated"),
    ("import archforge\n@archforge.hookimpl(hookwrapper=True)\ndef archforge_blocks():\n    yield\n",
     "archforge_blocks() is declared as a hook wrapper, which archforge does not support", "a hook wrapper"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_datasets():\n    return ['mnist']\n",
     "archforge_datasets() returned str 'mnist', not a DatasetSource; it is ignored", "a dataset name instead of a DatasetSource"),
    ("import archforge\nfrom archforge.registry import DatasetSource\n@archforge.hookimpl\ndef archforge_datasets():\n"
     "    return [DatasetSource('toy', None)]\n",
     "archforge_datasets() returned DatasetSource 'toy' whose load is None, not a function; it is ignored", "a dataset without a loader"),
    ("import archforge\nfrom archforge.registry import DatasetSource\n@archforge.hookimpl\ndef archforge_datasets():\n"
     "    return [DatasetSource(5, lambda: None)]\n",
     "archforge_datasets() returned a DatasetSource whose name is 5; give it a non-empty string name", "a dataset whose name is no string"),
    ("import archforge\nfrom archforge.registry import Metric\n@archforge.hookimpl\ndef archforge_metrics():\n"
     "    return [Metric('speed', lambda m, c: 1.0, goal='up')]\n",
     "archforge_metrics() returned metric 'speed' with goal 'up'; use 'minimize' or 'maximize'; it is ignored", "a metric with an unknown goal"),
    ("import archforge\n@archforge.hookimpl\ndef archforge_metrics():\n    return {'speed': 1}\n",
     "archforge_metrics() must return a list of Metric objects, got dict", "a mapping of metrics"),
]


@pytest.mark.parametrize("source, expected, reason", HOOK_FAULTS, ids=[c[2] for c in HOOK_FAULTS])
def test_a_hook_fault_is_one_warning_naming_plugin_and_hook(site, source, expected, reason):
    make_distribution(site, "plugin-bad", "af_bad", source)
    registry, messages = load_with_warnings()
    message = only_message(messages, "af_bad")
    assert message.startswith("plugin 'af_bad' from 'plugin-bad'"), message
    assert expected in message, (reason, message)
    assert_others_work(registry)
    assert set(registry.datasets) >= {"mnist", "digits"}


def test_the_good_items_of_a_partly_wrong_hook_still_register(site):
    source = BLOCK.format(name="twice") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice, 'junk']\n"
    make_distribution(site, "plugin-mixed", "af_mixed", source)
    registry, messages = load_with_warnings()
    assert "returned str 'junk', which is not a Block subclass" in only_message(messages, "af_mixed")
    assert registry.block("twice").plugin.distribution == "plugin-mixed"
    assert_others_work(registry)


def test_a_hook_returning_none_provides_nothing_silently(site):
    make_distribution(site, "plugin-none", "af_nothing", "import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    return None\n")
    registry, messages = load_with_warnings()
    assert messages == [] and "af_nothing" in [p.name for p in registry.plugins]


# --- 3. blocks that break the contract -----------------------------------------------------------

def _block(**attrs):
    """A Block subclass with the given class attributes (a working one by default)."""
    body = {"name": "broken", "__doc__": "A block.", "infer": lambda self, x, args: x,
            "build": lambda self, x, args, *, device=None, dtype=None: nn.Identity()}
    body.update(attrs)
    return type("Broken", (Block,), body)


class _RaisingMeta(type):
    def __getattribute__(cls, item):
        if item in ("name", "layout", "Args"):
            raise RuntimeError(f"no {item} for you")
        return super().__getattribute__(item)


_HOSTILE_META = _RaisingMeta("Hostile", (Block,), {"infer": lambda self, x, a: x, "build": lambda self, x, a, **k: nn.Identity()})


def _init_raises(self):
    raise RuntimeError("needs a GPU")


def _init_exits(self):
    raise SystemExit(1)


def _init_renames(self):
    self.name = "renamed"


CONTRACT_FAULTS = [
    (_block(name=5), "Broken.name must be an identifier", "a name that is no string"),
    (_block(name="größe"), "Broken.name must be an identifier ([A-Za-z_][A-Za-z0-9_]*, as written in a spec's 'block:'), got 'größe'",
     "a non-ASCII name no spec can write"),
    (_block(name="halo:attn"), "Broken.name must be an identifier", "':' is reserved for qualified names"),
    (_block(name=""), "Broken.name must be an identifier", "an empty name"),
    (type("Broken", (Block,), {"infer": lambda self, x, args: x, "build": lambda self, x, args, *, device=None, dtype=None: nn.Identity()}),
     "Broken.name must be an identifier ([A-Za-z_][A-Za-z0-9_]*, as written in a spec's 'block:'), got None",
     "no name at all: Block only annotates it"),
    (_block(layout=5), "Broken.layout must be 'any', one of ('map', 'tokens', 'vector') or a non-empty tuple of them, got 5", "a number as layout"),
    (_block(layout="maps"), "Broken.layout must be", "a misspelt layout"),
    (_block(layout=()), "Broken.layout must be", "no layout at all"),
    (_block(layout=("map", "any")), "Broken.layout must be", "'any' inside a tuple"),
    (_block(layout=[["map"]]), "Broken.layout must be", "an unhashable layout item"),
    (_block(Args=3), "Broken.Args must be a pydantic BaseModel subclass (subclass archforge.BlockArgs), got 3", "Args that is no class"),
    (_block(Args=dict), "Broken.Args must be a pydantic BaseModel subclass", "Args that is no model"),
    (_block(Args=BlockArgs()), "Broken.Args must be a pydantic BaseModel subclass", "an Args instance"),
    (_block(inputs="2"), "Broken.inputs must be a positive int (the number of inputs) or None (two or more), got '2'", "inputs as a string"),
    (_block(inputs=0), "Broken.inputs must be a positive int", "no inputs"),
    (_block(inputs=True), "Broken.inputs must be a positive int", "a bool is not a count"),
    (_block(family="convolution"), "Broken.family must be one of", "an unknown family"),
    (_block(family=["conv"]), "Broken.family must be one of", "an unhashable family"),
    (_block(infer=Block.infer), "Broken must implement infer()", "infer not implemented"),
    (_block(build=5), "Broken must implement build()", "build that is not callable"),
    (_block(__doc__=5), "Broken.__doc__ must be a string or None, got 5", "a docstring that is no string"),
    (_block(accepted_layouts=classmethod(lambda cls: "map")), "Broken.accepted_layouts() must return a non-empty tuple of",
     "an overridden accepted_layouts returning the wrong type"),
    (_block(accepted_layouts=classmethod(lambda cls: 1 / 0)), "Broken.accepted_layouts() cannot be read: ZeroDivisionError",
     "an overridden accepted_layouts that raises"),
    (_HOSTILE_META, "Hostile.name cannot be read: RuntimeError: no name for you", "a metaclass whose attribute access raises"),
    (_block(__init__=_init_raises), "block 'broken' (Broken) is skipped: its constructor raised RuntimeError: needs a GPU; "
     "archforge creates blocks with no arguments, so __init__ must need none", "a constructor that raises"),
    (_block(__init__=_init_exits), "its constructor raised SystemExit: sys.exit(1) was called", "a constructor that exits"),
    (_block(__init__=lambda self, channels: None), "its constructor raised TypeError", "a constructor that needs arguments"),
    (_block(__init__=_init_renames), "its constructor changes name; set them as class attributes only", "a constructor that renames the block"),
    (_block(__new__=lambda cls: 5), "Broken() returned int 5, not an instance of it", "a __new__ returning something else"),
]


@pytest.mark.parametrize("cls, expected, reason", CONTRACT_FAULTS, ids=[c[2] for c in CONTRACT_FAULTS])
def test_a_block_breaking_the_contract_is_refused_naming_plugin_and_block(cls, expected, reason):
    class Plugin:
        @hookimpl
        def archforge_blocks(self):
            return [cls, GoodBlock]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = load_registry([("plugin-bad", Plugin())])
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    message = only_message(messages, "plugin-bad")
    assert message.startswith("plugin 'plugin-bad' from 'plugin-bad': archforge_blocks() "), message
    assert expected in message, (reason, message)
    assert "broken" not in registry.blocks and "Hostile" not in message.split(":")[0]
    assert registry.block("conv").builtin and registry.block("good_block").plugin.name == "plugin-bad"


class GoodBlock(Block):
    """The good block of a plugin that also returns a broken one."""

    name = "good_block"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return nn.Identity()


# An independent oracle of the contract, written from docs/plugins.md.
_NAME_CHARS = "abcXYZ_09:-é "


def _valid_name(v):
    return type(v) is str and v != "" and (v[0].isascii() and (v[0].isalpha() or v[0] == "_")) and all(
        c.isascii() and (c.isalnum() or c == "_") for c in v)


def _valid_layout(v):
    if type(v) is str:
        return v in ("any", "map", "tokens", "vector")
    return isinstance(v, (tuple, list)) and len(v) > 0 and all(type(i) is str and i in ("map", "tokens", "vector") for i in v)


def _valid_inputs(v):
    return v is None or (type(v) is int and v >= 1)


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.text(_NAME_CHARS, max_size=6), st.sampled_from(LAYOUTS + ("any",)),
                    st.sampled_from(FAMILIES), st.lists(st.sampled_from(LAYOUTS + ("any", "x")), max_size=3).map(tuple),
                    st.builds(lambda: [1]), st.just(BlockArgs), st.just(3.5))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_values, layout=_values, inputs=_values, family=_values, args=_values)
def test_contract_problems_never_raises_and_agrees_with_the_documented_contract(name, layout, inputs, family, args):
    cls = _block(name=name, layout=layout, inputs=inputs, family=family, Args=args)
    problems = contract_problems(cls)
    assert isinstance(problems, list) and all(isinstance(p, str) and "\n" not in p for p in problems)
    expected = {
        "name": _valid_name(name),
        "layout": _valid_layout(layout),
        "inputs": _valid_inputs(inputs),
        "family": type(family) is str and family in FAMILIES,
        "Args": isinstance(args, type) and issubclass(args, BaseModel),
    }
    for attribute, valid in expected.items():
        flagged = any(p.startswith(f"Broken.{attribute} ") for p in problems)
        assert flagged != valid, (attribute, problems)


@settings(max_examples=150, deadline=None)
@given(result=st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just(GoodBlock), st.just(Block), st.just(GoodBlock()),
              st.just(DatasetSource("x", print)), st.just(Metric("m", print)), st.just(_block(name=5))),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=8,
))
def test_whatever_a_hook_returns_loading_survives(result):
    class Plugin:
        @hookimpl
        def archforge_blocks(self):
            return result

        @hookimpl
        def archforge_datasets(self):
            return result

        @hookimpl
        def archforge_metrics(self):
            return result

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry = load_registry([("plugin-any", Plugin()), ("plugin-good", _GoodPlugin())], entry_points=False)
    assert registry.block("other_good").plugin.name == "plugin-good"
    assert all("\n" not in p and p.startswith(("plugin '", "dataset '", "metric '")) for p in registry.problems)


class _OtherGood(GoodBlock):
    """Another good block, from another plugin."""

    name = "other_good"


class _GoodPlugin:
    @hookimpl
    def archforge_blocks(self):
        return [_OtherGood]


# --- 4. hooks that are never called ---------------------------------------------------------------

def test_a_misspelt_hook_is_named_with_the_right_spelling(site):
    make_distribution(site, "plugin-typo", "af_typo", BLOCK.format(name="twice") + "@archforge.hookimpl\ndef archforge_block():\n    return [Twice]\n")
    registry, messages = load_with_warnings()
    assert only_message(messages, "af_typo") == (
        "plugin 'af_typo' from 'plugin-typo' implements unknown hook 'archforge_block' (did you mean 'archforge_blocks'?), "
        "which is never called; archforge's hooks are archforge_blocks, archforge_datasets, archforge_metrics")
    assert "twice" not in registry.blocks
    assert_others_work(registry)


def test_a_hook_without_hookimpl_is_named(site):
    make_distribution(site, "plugin-bare", "af_bare", BLOCK.format(name="twice") + "def archforge_blocks():\n    return [Twice]\n")
    registry, messages = load_with_warnings()
    assert only_message(messages, "af_bare") == (
        "plugin 'af_bare' from 'plugin-bare' defines archforge_blocks() without @archforge.hookimpl, so it is never called; decorate it")
    assert_others_work(registry)


def test_a_module_with_no_hooks_at_all_asks_about_hookimpl(site):
    make_distribution(site, "plugin-empty", "af_empty", BLOCK.format(name="twice"))
    registry, messages = load_with_warnings()
    assert only_message(messages, "af_empty") == "plugin 'af_empty' from 'plugin-empty' registered no hooks: did you forget @archforge.hookimpl?"
    assert_others_work(registry)


def test_an_optional_unknown_hook_is_the_authors_choice(site):
    # pluggy's own opt-out of check_pending: a hook for a future archforge, marked optional.
    source = GOOD.replace("good_block", "own_block") + "@archforge.hookimpl(optionalhook=True)\ndef archforge_future():\n    return []\n"
    make_distribution(site, "plugin-future", "af_future", source)
    registry, messages = load_with_warnings()
    assert messages == [] and registry.block("own_block")


# --- 5. names: built-ins first, qualified names for the rest --------------------------------------

SPEC = "archforge: 1\nname: t\ninput: {{shape: [3, 4, 4]}}\nnodes:\n  - {{id: d, block: {block}}}\n"


def test_a_plugin_block_named_like_a_builtin_warns_once_and_the_builtin_keeps_its_name(site):
    make_distribution(site, "plugin-se", "af_se", BLOCK.format(name="se") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice]\n")
    registry, messages = load_with_warnings()
    assert only_message(messages, "af_se") == (
        "plugin 'af_se' from 'plugin-se': block 'se' has the name of a built-in block, which specs writing 'se' keep getting; "
        "write 'af_se:se' for this one, or rename it")
    assert registry.block("se").builtin and registry.block("builtin:se").builtin
    assert registry.block("af_se:se").plugin.distribution == "plugin-se"
    assert "se" not in registry.conflicts
    graph = archforge.validate(archforge.parse_spec(SPEC.format(block="se")), registry=registry)
    assert graph.nodes["d"].entry.builtin
    assert_others_work(registry)


def test_an_entry_point_named_builtin_in_another_distribution_is_refused_and_the_builtins_keep_working(site):
    # Its 'builtin:<name>' would clash with the built-ins' qualified names and hide them from listings.
    make_distribution(site, "plugin-usurper", "af_usurper", BLOCK.format(name="conv") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice]\n")
    info = site / "plugin_usurper-1.0.dist-info"
    (info / "entry_points.txt").write_text("[archforge]\nbuiltin = af_usurper\n")
    registry, messages = load_with_warnings()
    assert only_message(messages, "plugin-usurper") == (
        "plugin 'builtin' from 'plugin-usurper' is refused: the entry-point name 'builtin' is reserved for archforge's built-in "
        "blocks; rename the entry point in the [project.entry-points.archforge] table of 'plugin-usurper'")
    assert "af_usurper" not in sys.modules, "refused before its module is imported"
    assert registry.block("builtin:conv").builtin and registry.block("conv").builtin
    assert not registry.conflicts
    assert "builtin:conv" in registry.qualified_names()
    assert all(info.distribution != "plugin-usurper" for info in registry.plugins)
    assert_others_work(registry)


def test_a_local_plugin_named_builtin_is_refused_too():
    class Plugin:
        @hookimpl
        def archforge_blocks(self):
            return []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = load_registry([("builtin", Plugin())])
    assert [str(w.message) for w in caught if issubclass(w.category, PluginWarning)] == [
        "plugin 'builtin' from 'builtin' is refused: the entry-point name 'builtin' is reserved for archforge's built-in "
        "blocks; rename the entry point in the [project.entry-points.archforge] table of 'builtin'"]
    assert registry.block("builtin:conv").builtin and not registry.conflicts


def test_the_same_class_registered_twice_is_one_block_without_warning():
    from archforge.blocks.se import SqueezeExcitation  # a built-in class

    class Plugin:
        @hookimpl
        def archforge_blocks(self):
            return [SqueezeExcitation]

    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        registry = load_registry([("test-blocks", Plugin())])
    assert registry.block("se").builtin


def test_a_name_two_plugins_share_is_an_error_only_when_used_and_names_both_qualified_names(site):
    make_distribution(site, "plugin-a", "af_a", BLOCK.format(name="dup") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice]\n")
    make_distribution(site, "plugin-b", "af_b", BLOCK.format(name="dup") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice]\n")
    registry, messages = load_with_warnings()
    assert messages == []
    with pytest.raises(PluginError) as info:
        registry.block("dup")
    assert str(info.value) == ("block 'dup' is provided by several plugins: 'plugin-a' (af_a) and 'plugin-b' (af_b); "
                               "write 'af_a:dup' or 'af_b:dup' to choose one")
    assert registry.block("af_a:dup").plugin.distribution == "plugin-a"
    assert registry.block("af_b:dup").plugin.distribution == "plugin-b"
    assert_others_work(registry)


def test_unknown_qualified_names_say_what_exists():
    registry = load_registry()
    with pytest.raises(PluginError, match=r"^unknown block 'builtin:cnov': plugin 'builtin' provides no block 'cnov' \(did you mean 'conv'\?\)$"):
        registry.block("builtin:cnov")
    with pytest.raises(PluginError, match=r"^unknown block 'bulitin:conv': no plugin is called 'bulitin' \(did you mean 'builtin'\?\)"):
        registry.block("bulitin:conv")


def test_a_spec_can_choose_a_clashing_block_by_its_qualified_name(site):
    make_distribution(site, "plugin-a", "af_a", BLOCK.format(name="dup") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice]\n")
    make_distribution(site, "plugin-b", "af_b", BLOCK.format(name="dup") + "@archforge.hookimpl\ndef archforge_blocks():\n    return [Twice]\n")
    registry = load_registry()
    spec = archforge.parse_spec("archforge: 1\nname: t\ninput: {shape: [3, 4, 4]}\nnodes:\n  - {block: 'af_b:dup'}\n")
    graph = archforge.validate(spec, registry=registry)
    (node,) = graph.nodes.values()
    assert node.entry.plugin.distribution == "plugin-b" and node.name == "dup_0"


# --- 6. faults at use time: a located error naming plugin, block and node --------------------------

ONE_NODE = "archforge: 1\nname: one\ninput: {shape: [4, 4, 4]}\nnodes:\n  - {id: n, block: faulty}\n"


def _faulty(**methods):
    body = {"name": "faulty", "layout": "map", "infer": lambda self, x, args: x,
            "build": lambda self, x, args, *, device=None, dtype=None: nn.Identity()}
    body.update(methods)
    return type("Faulty", (Block,), body)


def _exits(*args, **kwargs):
    raise SystemExit(0)


def _lies(self, x, args, *, device=None, dtype=None):
    return nn.Conv2d(x.channels, x.channels // 2, 1, device=device, dtype=dtype)


class _BuggyArgs(BlockArgs):
    @classmethod
    def model_validate(cls, obj, **kwargs):
        raise RuntimeError("validator bug")


USE_FAULTS = [
    (_faulty(infer=lambda self, x, args: 1 / 0), "failed in shape inference of node 'n': ZeroDivisionError", "validate",
     "infer raising an arbitrary exception"),
    (_faulty(build=lambda self, x, args, **kw: 1 / 0), "failed to build node 'n': ZeroDivisionError", "build",
     "build raising an arbitrary exception"),
    (_faulty(build=_exits), "failed to build node 'n': SystemExit", "build", "build calling sys.exit"),
    (_faulty(build=_lies), "infers [1, 4, 4, 4] for node 'n' but its module returns [1, 2, 4, 4]", "build",
     "infer lying about the output shape: build must not return (nor -o m.pt write) the broken network"),
    (_faulty(infer=_exits), "failed in shape inference of node 'n': SystemExit", "validate", "infer calling sys.exit"),
    (_faulty(Args=_BuggyArgs), "node 'n'", "validate", "an Args model whose validation raises"),
]


@pytest.mark.parametrize("cls, expected, stage, reason", USE_FAULTS, ids=[c[3] for c in USE_FAULTS])
def test_a_block_failing_at_use_time_is_a_located_error_naming_plugin_block_and_node(cls, expected, stage, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        registry = load_registry([("plugin-faulty", _Provider(cls))])
    spec = archforge.parse_spec(ONE_NODE, file="one.yaml")
    with pytest.raises(SpecError) as info:
        if stage == "validate":
            archforge.validate(spec, registry=registry)
        else:
            archforge.build(spec, registry=registry)
    message = str(info.value)
    assert message.startswith("one.yaml:5:5: block 'faulty' from plugin 'plugin-faulty' "), message
    assert expected in message and "\n" not in message, (reason, message)


class _Provider:
    def __init__(self, cls):
        self.cls = cls

    @hookimpl
    def archforge_blocks(self):
        return [self.cls]


def test_a_correct_plugin_block_still_builds():
    registry = load_registry([("plugin-faulty", _Provider(_faulty()))])
    model = archforge.build(archforge.parse_spec(ONE_NODE), registry=registry)
    assert model.meta["archforge_graph"].output_shape == Shape.map(4, 4, 4)


def test_one_plugin_returning_two_blocks_with_one_name_keeps_the_first_with_a_warning():
    other = type("OtherGood", (GoodBlock,), {"__doc__": "Same name, other class."})

    class Plugin:
        @hookimpl
        def archforge_blocks(self):
            return [GoodBlock, other]

    with pytest.warns(PluginWarning, match=r"^plugin 'twice-named' from 'twice-named': archforge_blocks\(\) returns several blocks named "
                                           r"'good_block' \(GoodBlock, OtherGood\); only the first is used: rename the others$"):
        registry = load_registry([("twice-named", Plugin())], entry_points=False)
    assert type(registry.block("good_block").block) is GoodBlock and not registry.conflicts


def test_a_metric_name_provided_twice_keeps_the_first_with_a_warning():
    class Plugin:
        def __init__(self, goal):
            self.goal = goal

        @hookimpl
        def archforge_metrics(self):
            return [Metric("speed", lambda m, c: 1.0, goal=self.goal)]

    with pytest.warns(PluginWarning, match=r"metric 'speed' from 'plugin-b' ignored: already provided by 'plugin-a'"):
        registry = load_registry([("plugin-a", Plugin("minimize")), ("plugin-b", Plugin("maximize"))], entry_points=False)
    assert registry.metrics["speed"][0].goal == "minimize"


def test_check_block_names_the_contract_problems_the_registry_would_skip_a_block_for():
    from archforge.testing import check_block

    with pytest.raises(AssertionError, match=r"the registry would skip this block: Broken.family must be one of"):
        check_block(_block(family="convolution"), Shape.map(2, 2, 2))


class _EqRaises:
    """A plugin object whose comparison raises (pluggy compares plugins with ==)."""

    def __eq__(self, other):
        raise RuntimeError("no comparing")

    __hash__ = object.__hash__

    @hookimpl
    def archforge_blocks(self):
        return [GoodBlock]


class _DirRaises:
    """A plugin object that cannot be listed (pluggy walks dir(plugin))."""

    def __dir__(self):
        raise RuntimeError("no listing")


@pytest.mark.parametrize("plugin, expected", [(_EqRaises(), "RuntimeError: no comparing"), (_DirRaises(), "RuntimeError: no listing")],
                         ids=["== raises", "dir() raises"])
def test_a_plugin_object_that_resists_inspection_is_one_warning(plugin, expected):
    with pytest.warns(PluginWarning) as record:
        registry = load_registry([("plugin-odd", plugin), ("plugin-good", _GoodPlugin())])
    messages = [str(w.message) for w in record]
    assert any(m.startswith("plugin 'plugin-odd' from 'plugin-odd'") and expected in m for m in messages), messages
    assert registry.block("conv").builtin and registry.block("other_good")


def test_validate_of_an_unrelated_spec_survives_a_plugin_that_exits_at_import(site, tmp_path):
    # The first example, end to end: the command does its job and says which plugin is broken.
    import os
    import subprocess

    make_distribution(site, "plugin-exit", "af_exit", "import sys\nsys.exit(1)\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("archforge: 1\nname: t\ninput: {shape: [3, 8, 8]}\nnodes:\n  - {block: conv, args: {channels: 4}}\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "archforge", "validate", str(spec)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ok: t" in result.stdout
    assert "warning: plugin 'af_exit' from 'plugin-exit' failed to load and is skipped: SystemExit: sys.exit(1) was called" in result.stderr
    assert "Traceback" not in result.stderr
