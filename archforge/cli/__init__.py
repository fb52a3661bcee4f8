"""The ``archforge`` command line: validate, summary, build, models, plugins, schema, graph, space, search, worker, report.

Exit status: 0 on success; 1 when what was checked is wrong (a spec, a space, a checkpoint,
a plugin, a file that cannot be written...); 2 for usage errors (unknown flags, a count
that is negative, a setting flag with a bad value...); 130 when interrupted. Problems in a
spec are printed like a compiler diagnostic, ``file:line:col: message``; every other
problem as one ``error: ...`` line on stderr, never a traceback, unless
``archforge --debug COMMAND ...`` asks for it.

The commands live in :mod:`archforge.cli.spec_commands` (one spec), :mod:`archforge.cli.model_commands`
(the bundled models and spaces), :mod:`archforge.cli.plugin_commands` (the installed blocks),
:mod:`archforge.cli.tools` (editor schema, diagrams) and :mod:`archforge.cli.search_commands`
(spaces, searches, reports); what they share is :mod:`archforge.cli.common`, and the
ranking tables are :mod:`archforge.cli.tables`.

Starting the command line imports no torch, optuna, pydantic or rich: each command imports
what it needs when it runs, so ``archforge --help`` and ``archforge COMMAND --help`` answer at
once, and ``archforge validate`` costs little more than torch's own import.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Sequence

from archforge.cli.common import (
    EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE, FORCE_HINT, Parser, error, os_error_text, show_warning,
    stderr_console,
)
from archforge.errors import PLUGIN_FAULTS, CheckpointError, PluginError, SettingError, SpecError, SpecWarning, describe_exception

#: The groups of commands, in the order ``archforge --help`` lists them.
_COMMAND_MODULES = ("spec_commands", "model_commands", "plugin_commands", "tools", "search_commands")


def parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    import importlib

    p = Parser(prog="archforge", description="Compose and search neural network architectures from YAML specs.",
                                epilog="Exit status: 0 success, 1 error in what was checked (spec, space, checkpoint, plugin, "
                                       "output file), 2 usage error. `archforge COMMAND --help` shows a command's "
                                       "arguments and examples.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    p.set_defaults(debug=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"archforge.cli.{name}").add_commands(sub)
    return p


def _is_ours(exc: BaseException) -> bool:
    """archforge's own errors say what is wrong in their message; the type name adds nothing."""
    return type(exc).__module__.split(".")[0] == "archforge"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (usage errors included, they are not raised)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    debug: bool = args.debug
    # catch_warnings restores showwarning and the filters when the command returns.
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        # Spec warnings are printed by the commands themselves, located like errors.
        warnings.simplefilter("ignore", SpecWarning)
        try:
            return func(args)
        except KeyboardInterrupt:
            if debug:
                raise
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # e.g. `archforge summary --json x.yaml | head`
            # Python would flush stdout again at exit and complain about the pipe once more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except SystemExit as exc:
            # rich's console meets a closed pipe (`archforge plugins | head`) with sys.exit(1), stdout already on devnull.
            if isinstance(exc.__context__, BrokenPipeError) and not debug:
                return EXIT_OK
            return _plugin_fault(exc, debug)
        except SpecError as exc:
            if debug:
                raise
            stderr_console().print(exc.format(), markup=False)
            return EXIT_ERROR
        except (PluginError, CheckpointError, SettingError) as exc:
            if debug:
                raise
            error(str(exc))
            return EXIT_ERROR
        except OSError as exc:
            if debug:
                raise
            error(os_error_text(exc))
            return EXIT_ERROR
        except PLUGIN_FAULTS as exc:
            return _plugin_fault(exc, debug)


def _plugin_fault(exc: BaseException, debug: bool) -> int:
    """SystemExit, GeneratorExit, any exception: a plugin's stray exit must not end us silently or with a traceback."""
    if debug:
        raise exc
    if isinstance(exc, SystemExit):
        error(f"a plugin or library ended the command with sys.exit({exc.code!r}); run with --debug for the traceback")
    elif _is_ours(exc) and str(exc):
        error(str(exc))
    else:
        error(f"{describe_exception(exc)} (run with --debug for the traceback)")
    return EXIT_ERROR


__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SPEC_ERROR", "EXIT_USAGE", "FORCE_HINT", "main", "parser"]
