"""The command line's help: every command names what its argument accepts, shows examples that parse, and starts without torch."""

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import PurePath

import pytest

from archforge.cli import main, parser
from archforge.spec.zoo import list_models

#: Every command with the metavar of its positional argument (None: it has none).
COMMANDS = {
    "validate": "SPEC", "summary": "SPEC", "build": "SPEC", "graph": "SPEC", "models": "PATTERN",
    "plugins": None, "schema": None, "space": "SPACE", "search": "SPACE", "worker": None, "report": "RUN",
}
#: What a bare word in the positional of an example must name.
BUNDLED = {"SPEC": lambda: list_models(), "SPACE": lambda: list_models(spaces=True)}
#: Modules that no help may import: each command imports what it needs when it runs.
HEAVY = ("torch", "optuna", "matplotlib", "rich")


def help_text(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--help"]) == 0
    return out.getvalue()


def examples(text: str) -> list[list[str]]:
    """The command lines under ``examples:`` at the end of a help text."""
    assert "\nexamples:\n" in text, text
    return [shlex.split(line) for line in text.split("\nexamples:\n", 1)[1].splitlines() if line.strip()]


def test_the_top_level_help_lists_every_command():
    listed = re.findall(r"^    (\w+)  ", help_text(), flags=re.MULTILINE)
    assert sorted(listed) == sorted(COMMANDS)


@pytest.mark.parametrize("command, metavar", COMMANDS.items())
def test_each_command_names_its_argument_and_shows_examples_that_parse(command, metavar):
    text = help_text(command)
    usage = text.split("\n\n", 1)[0]
    if metavar is not None:
        assert re.search(rf"\b{metavar}\b", usage), usage
        assert re.search(rf"^  {metavar}  +\S", text, flags=re.MULTILINE), f"{command}: {metavar} has no help line"
    if metavar in BUNDLED:
        assert "YAML file" in text and "bundled" in text
    lines = examples(text)
    assert 1 <= len(lines) <= 3
    for argv in lines:
        assert argv[:2] == ["archforge", command], argv
        args = parser().parse_args(argv[1:])  # a usage error would raise SystemExit here
        assert args.command == command
        source = getattr(args, "spec", None)
        if metavar in BUNDLED and source is not None and not PurePath(source).suffix and "/" not in source:
            assert source in BUNDLED[metavar](), f"{shlex.join(argv)}: no bundled {metavar.lower()} '{source}'"


def test_the_search_flags_are_in_its_help_and_parse():
    # They are added when `search` is the command given (their choices come from the search settings).
    text = help_text("search")
    for flag in ("--strategy", "--budget", "--train", "--device", "--runs", "--no-progress", "--report"):
        assert re.search(rf"(?<![\w-]){flag}(?![\w-])", text), flag
    args = parser().parse_args(["search", "cnn_mnist", "--strategy", "tpe", "--train", "lr=0.01", "--top", "0"])
    assert (args.spec, args.strategy, args.train, args.top) == ("cnn_mnist", "tpe", [("lr", 0.01)], 0)


def test_a_bad_value_of_a_search_flag_is_still_a_usage_error(capsys):
    assert main(["search", "cnn_mnist", "--strategy", "anneal"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archforge search: error: argument --strategy: invalid choice: 'anneal'") and err.count("\n") == 1


def test_help_imports_no_torch_and_no_other_heavy_library():
    code = (
        "import contextlib, io, sys\n"
        "from archforge.cli import main\n"
        "for argv in (['--help'], *([c, '--help'] for c in sys.argv[1:])):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv) == 0, argv\n"
        f"print(' '.join(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    light = [command for command in COMMANDS if command != "search"]  # search's flags need the search settings
    result = subprocess.run([sys.executable, "-c", code, *light], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported by the help: {result.stdout.strip()}"
