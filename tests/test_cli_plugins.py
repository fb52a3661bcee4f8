"""``archforge plugins``: the table of every installed block fits the terminal and cuts no block or arg name."""

import re

import pytest

from archforge.cli import main
from archforge.cli.plugin_commands import MIN_ARGS_WIDTH, block_table, wrap
from archforge.registry import default_registry


def installed_blocks() -> dict[str, list[str]]:
    """Every block as the table names it (a shadowed plugin block by its qualified name) → its arg names, in order."""
    registry = default_registry()
    return {(entry.name if registry.blocks.get(entry.name) is entry else entry.qualified_name): list(entry.block.Args.model_fields)
            for entry in registry.qualified.values()}


@pytest.mark.parametrize("columns", [80, 160])
def test_every_block_and_arg_name_is_whole_and_every_line_fits(columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    starts = [line.split(" ", 1)[0] for line in lines]
    blocks = installed_blocks()
    for block, args in blocks.items():
        assert block in starts, f"block {block} is not at the start of a line"
        # Its args follow, up to the next block, in order, each starting a line of its own: `name: type[ = default]`.
        first = starts.index(block)
        end = next((i for i in range(first + 1, len(lines)) if starts[i] in blocks or starts[i] in ("datasets:", "metrics:")), len(lines))
        named = re.findall(r"(?:^|  )([A-Za-z_]\w*): ", "\n".join(lines[first:end]), flags=re.MULTILINE)
        assert named == args, f"{block}: {named} != {args}"
    # then the datasets and metrics the plugins provide
    datasets = next(i for i, line in enumerate(lines) if line.startswith("datasets: "))
    assert lines[-1].startswith("metrics: ") and "mnist (archforge-nn)" in " ".join(lines[datasets:-1])


def test_the_layout_changes_with_the_width():
    rows = [{"name": "conv", "short": True, "qualified": "builtin:conv", "distribution": "archforge-nn", "version": "0.1.0",
             "layout": "map", "family": "conv",
             "args": [{"name": "channels", "type": "int", "required": True, "default": None},
                      {"name": "act", "type": "relu|gelu|silu", "required": False, "default": "relu"}]}]
    wide = [line for line, _ in block_table(rows, 120)]
    assert wide == [
        "block  plugin              layout  family  args",
        "conv   archforge-nn 0.1.0  map     conv    channels: int",
        "                                           act: relu|gelu|silu = 'relu'",
    ]
    assert 120 - len("conv   archforge-nn 0.1.0  map     conv    ") >= MIN_ARGS_WIDTH
    narrow = [line for line, _ in block_table(rows, 50)]
    assert narrow == [
        "block  plugin              layout  family",
        "    args",
        "conv   archforge-nn 0.1.0  map     conv",
        "    channels: int",
        "    act: relu|gelu|silu = 'relu'",
    ]
    tiny = [line for line, _ in block_table(rows, 24)]
    # Too narrow to align: block, plugin, layout and family wrap at spaces, the block name first and whole.
    assert tiny == ["block  plugin  layout", "    family", "    args", "conv  archforge-nn 0.1.0", "    map  conv",
                    "    channels: int", "    act: relu|gelu|silu", "      = 'relu'"]


@pytest.mark.parametrize("text, width, expected", [
    ("fn: relu|gelu|silu = 'relu'", 40, ["fn: relu|gelu|silu = 'relu'"]),
    ("fn: relu|gelu|silu = 'relu'", 15, ["fn: relu|gelu|", "  silu = 'relu'"]),
    ("fn: relu|gelu|silu = 'relu'", 14, ["fn: relu|gelu|", "  silu =", "  'relu'"]),
    ("fn: relu|gelu|silu = 'relu'", 8, ["fn:", "  relu|", "  gelu|", "  silu =", "  'relu'"]),
    ("a_very_long_argument_name: int", 10, ["a_very_long_argument_name:", "  int"]),  # never cut, even when it does not fit
])
def test_wrap_breaks_after_spaces_and_bars_only(text, width, expected):
    assert wrap(text, width, indent=2) == expected
