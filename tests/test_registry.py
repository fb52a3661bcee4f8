"""Plugin discovery through entry points: clashes, broken plugins, contract checks, listing."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import archforge
from archforge import PluginError, SpecError
from archforge.errors import PluginWarning
from archforge.registry import load_registry

BLOCK_MODULE = '''
import archforge
from archforge import Block, BlockArgs
from torch import nn

class Twice(Block):
    """Multiply by two."""
    name = "{block}"
    layout = "any"

    class Args(BlockArgs):
        factor: int = 2

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return nn.Identity()

@archforge.hookimpl
def archforge_blocks():
    return [Twice]
'''


def make_distribution(root, dist: str, module: str, source: str, version: str = "1.0") -> None:
    """A minimal installed distribution: a module plus dist-info with an archforge entry point."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[archforge]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    # Plugin modules made here must not be found, cached, by a later test that reuses the name.
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_builtin_blocks_come_through_the_entry_point_of_archforge():
    registry = load_registry()
    assert registry.blocks["conv"].plugin.distribution == "archforge-nn"
    assert registry.blocks["conv"].plugin.name == "builtin"


def test_without_entry_points_no_block_exists_and_the_error_says_why():
    registry = load_registry(entry_points=False)
    with pytest.raises(PluginError, match="no blocks are registered at all"):
        registry.block("conv")


def test_third_party_block_is_found_and_usable(site):
    make_distribution(site, "archforge-twice", "af_twice", BLOCK_MODULE.format(block="twice"), version="2.3")
    registry = load_registry()
    entry = registry.block("twice")
    assert (entry.plugin.distribution, entry.plugin.version) == ("archforge-twice", "2.3")
    spec = archforge.parse_spec("archforge: 1\nname: t\ninput: {shape: [3, 4, 4]}\nnodes:\n  - {block: twice}\n")
    assert archforge.validate(spec, registry=registry).output_shape == archforge.Shape.map(3, 4, 4)


def test_two_plugins_with_the_same_block_name_are_an_error_naming_both(site):
    make_distribution(site, "plugin-a", "af_plugin_a", BLOCK_MODULE.format(block="dup"))
    make_distribution(site, "plugin-b", "af_plugin_b", BLOCK_MODULE.format(block="dup"))
    registry = load_registry()
    with pytest.raises(PluginError, match=r"block 'dup' is provided by several plugins: 'plugin-a' .* and 'plugin-b'"):
        registry.block("dup")
    spec = archforge.parse_spec("archforge: 1\nname: t\ninput: {shape: [3, 4, 4]}\nnodes:\n  - {id: d, block: dup}\n", file="s.yaml")
    with pytest.raises(SpecError, match=r"^s.yaml:5:20: block 'dup' is provided by several plugins: 'plugin-a'.*'plugin-b'"):
        archforge.validate(spec, registry=registry)
    assert registry.block("conv")  # everything else still works


def test_a_plugin_that_fails_to_import_is_named_and_the_rest_keep_working(site):
    make_distribution(site, "plugin-broken", "af_broken", "raise ImportError('missing dependency frobnicate')\n")
    with pytest.warns(PluginWarning, match=r"plugin 'af_broken' from 'plugin-broken' failed to load and is skipped: ImportError: missing dependency frobnicate"):
        registry = load_registry()
    assert registry.block("conv")


def test_a_hook_that_raises_is_isolated(site):
    make_distribution(site, "plugin-raises", "af_raises", "import archforge\n@archforge.hookimpl\ndef archforge_blocks():\n    raise ValueError('oops')\n")
    with pytest.warns(PluginWarning, match=r"plugin 'af_raises' from 'plugin-raises' raised in archforge_blocks\(\) and is skipped: ValueError: oops"):
        registry = load_registry()
    assert registry.block("conv")


def test_blocks_that_break_the_contract_are_skipped_with_a_reason(site):
    source = textwrap.dedent('''
        import archforge
        from archforge import Block

        class Nameless(Block):
            def infer(self, x, args): return x
            def build(self, x, args, *, device=None, dtype=None): return None

        class NoBuild(Block):
            name = "no_build"

        @archforge.hookimpl
        def archforge_blocks():
            return [Nameless, NoBuild, "not a class"]
    ''')
    make_distribution(site, "plugin-sloppy", "af_sloppy", source)
    with pytest.warns(PluginWarning) as record:
        registry = load_registry()
    messages = " | ".join(str(w.message) for w in record)
    assert "Nameless.name must be an identifier" in messages
    assert "NoBuild must implement infer() and build()" in messages
    assert "'not a class', which is not a Block subclass" in messages
    assert "no_build" not in registry.blocks


def _cli(site, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "archforge", *args], capture_output=True, text=True, env=env, timeout=120)


def test_plugins_command_lists_blocks_with_source_layout_and_args(site):
    make_distribution(site, "archforge-twice", "af_twice", BLOCK_MODULE.format(block="twice"), version="2.3")
    result = _cli(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["blocks"]}
    assert rows["twice"]["distribution"] == "archforge-twice" and rows["twice"]["version"] == "2.3"
    assert rows["twice"]["args"] == [{"name": "factor", "type": "int", "required": False, "default": 2, "description": ""}]
    conv = {a["name"]: a for a in rows["conv"]["args"]}
    assert conv["channels"]["required"] and conv["kernel"]["default"] == 3
    assert rows["conv"]["layout"] == "map" and rows["add"]["inputs"] == "2+"
    assert {"name": "af_twice", "distribution": "archforge-twice", "version": "2.3"} in data["plugins"]


def test_plugins_command_reports_clashes_and_fails(site):
    make_distribution(site, "plugin-a", "af_plugin_a", BLOCK_MODULE.format(block="dup"))
    make_distribution(site, "plugin-b", "af_plugin_b", BLOCK_MODULE.format(block="dup"))
    result = _cli(site, "plugins")
    assert result.returncode == 1
    assert "error: block 'dup' is provided by several plugins: plugin-a 1.0, plugin-b 1.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_for_another_api_version_is_refused_clearly(site):
    make_distribution(site, "plugin-future", "af_future", "ARCHFORGE_PLUGIN_API = 2\n" + BLOCK_MODULE.format(block="future"), version="9.0")
    with pytest.warns(PluginWarning, match=r"plugin 'af_future' from 'plugin-future' 9.0 is refused: it targets plugin API 2, this archforge provides 1"):
        registry = load_registry()
    assert "future" not in registry.blocks and registry.block("conv")


def test_the_registry_api_is_importable_from_the_package_and_its_old_module():
    # The block names moved to archforge.registry.names; both old import paths keep working.
    from archforge.registry import BUILTIN_DISTRIBUTION, BlockEntry, PluginInfo, Registry
    from archforge.registry import manager, names

    assert (manager.BlockEntry, manager.PluginInfo, manager.BUILTIN_DISTRIBUTION) == (BlockEntry, PluginInfo, BUILTIN_DISTRIBUTION)
    assert issubclass(Registry, names.BlockNames)
    registry = load_registry()
    assert registry.block("builtin:conv") is registry.block("conv") and registry.block("conv").plugin.name == names.BUILTIN_PLUGIN
