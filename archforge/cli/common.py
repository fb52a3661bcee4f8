"""What every command of the ``archforge`` command line shares: exit statuses, consoles, flag types, error lines.

One place for it, so that every command prints problems, counts and tables the same way
and a flag means the same thing in every command.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import textwrap
import typing
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from archforge.errors import PluginWarning, SpecWarning, describe_exception, one_line

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK = 0
#: What was checked is wrong: a spec, a space, a checkpoint, a plugin, an output file...
EXIT_ERROR = 1
#: The command line itself is wrong (argparse's own status).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Kept for callers of the first release; a spec error is now :data:`EXIT_ERROR`.
EXIT_SPEC_ERROR = EXIT_ERROR

FORCE_HINT = "add --force to overwrite"

#: Width of tables written into a file or a pipe: a log keeps its columns instead of folding them into 80.
PIPE_WIDTH = 160


# --------------------------------------------------------------------------- consoles
# rich is imported when a command prints, not when the command line starts: `archforge --help` needs none of it.


def stdout_console() -> Console:
    """The console of results: the terminal's width, :data:`PIPE_WIDTH` into a pipe unless ``COLUMNS`` says otherwise."""
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, soft_wrap=True, emoji=False, width=PIPE_WIDTH if piped else None)


def stderr_console() -> Console:
    """The console of problems: one line each, never wrapped into the terminal's width."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def error(message: str) -> None:
    """Print ``error: message`` on stderr, as one line whatever the message holds."""
    stderr_console().print(f"error: {one_line(message)}", markup=False)


def fail(message: str, status: int = EXIT_ERROR) -> int:
    """Print ``error: message`` and return ``status``: ``return fail(...)`` ends a command."""
    error(message)
    return status


def usage_error(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as argparse words a usage error, on one line; return :data:`EXIT_USAGE`."""
    stderr_console().print(f"{prog}: error: {one_line(message)} (see {prog} --help)", markup=False)
    return EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """argparse's parser with usage errors on one line (a command's usage spans many lines),
    and arguments that can be added when the parser is first used (:meth:`defer`).
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")

    def defer(self, add_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call ``add_arguments(self)`` when this parser first parses or prints its help, not now.

        A command whose flags need a heavy import (their choices come from the search settings)
        then costs nothing to ``archforge --help`` and to the other commands.
        """
        self.__dict__.setdefault("_deferred", []).append(add_arguments)

    def _add_deferred(self) -> None:
        for add_arguments in self.__dict__.pop("_deferred", []):
            add_arguments(self)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_deferred()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()


def defer_arguments(parser: argparse.ArgumentParser, add_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    """:meth:`Parser.defer` on archforge's parser; on any other parser, add the arguments now."""
    if isinstance(parser, Parser):
        parser.defer(add_arguments)
    else:
        add_arguments(parser)


#: The positional argument of the commands that read one spec.
SPEC_HELP = "a spec: a YAML file, or the name of a bundled model such as convit_tiny (`archforge models` lists them)"
#: The positional argument of the commands that read a search space.
SPACE_HELP = ("a search space: a YAML file (a spec with choice points), or the name of a bundled space such as "
              "placement_mnist (`archforge models --spaces` lists them)")


def command_help(description: str, *examples: str) -> dict[str, Any]:
    """The ``description``, ``epilog`` and ``formatter_class`` of a command's parser (keywords of ``add_parser``).

    The epilog lists ``examples``, one command line each, as written; the description is
    filled to the terminal's width here, since a formatter that keeps the examples' lines
    keeps the description's too.
    """
    width = max(min(shutil.get_terminal_size().columns - 2, 100), 40)
    lines = ["examples:", *(f"  {example}" for example in examples)] if examples else []
    return {
        "description": textwrap.fill(description, width),
        "epilog": "\n".join(lines) or None,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def print_warnings(items: Sequence[SpecWarning]) -> None:
    """Each warning of a spec as one located line on stderr (no console, so no rich, when there is none)."""
    if not items:
        return
    console = stderr_console()
    for warning in items:
        console.print(str(warning), markup=False)


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` while a command runs: plugin problems as one ``warning: ...`` line."""
    if issubclass(category, PluginWarning):
        stderr_console().print(f"warning: {message}", markup=False)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def os_error_text(exc: OSError) -> str:
    """``'path': what``: one line naming the file, whatever raised it."""
    reason = exc.strerror or describe_exception(exc, named=False)
    if exc.filename is None:
        return reason
    where = f"'{os.fsdecode(exc.filename)}'" + (f" → '{os.fsdecode(exc.filename2)}'" if exc.filename2 else "")
    return f"{where}: {reason}"


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines off while a command runs: the command reports every trial itself."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def human(n: int) -> str:
    """``1.23G``; exact integer arithmetic, so no count is too large to print."""
    for unit, scale in (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= scale:
            hundredths = (int(n) * 100 + scale // 2) // scale
            return f"{hundredths // 100:,}.{hundredths % 100:02d}{unit}"
    return str(int(n))


# --------------------------------------------------------------------------- flag types
# argparse reports a ValueError/ArgumentTypeError from a type= function as a usage error (exit 2).


def _whole(text: str) -> int:
    """An integer, also written as ``2e9`` or ``1_000``."""
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not math.isfinite(value) or not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'")
    return int(value)


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number from ``low`` to ``high`` (inclusive)."""

    def parse(text: str) -> int:
        value = _whole(text)
        if value < low or (high is not None and value > high):
            bound = f"from {low:,} to {high:,}" if high is not None else f"at least {low:,}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}, got '{text}'")
        return value

    parse.__name__ = "count"  # argparse names the type in some messages
    return parse


non_negative_int = int_range(0)
positive_int = int_range(1)
#: Seeds go to NumPy and Optuna samplers, which take 0 .. 2**32 - 1.
seed_int = int_range(0, 2**32 - 1)


def positive_number(text: str) -> float:
    """An argparse ``type=``: a finite number greater than 0 (``2e5``, ``0.01``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got '{text}'")
    return value


def fraction(text: str) -> float:
    """An argparse ``type=``: a number in (0, 1]."""
    value = positive_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction greater than 0 and at most 1, got '{text}'")
    return value


def key_value(text: str) -> tuple[str, Any]:
    """An argparse ``type=``: ``KEY=VALUE`` with VALUE read as YAML (``lr=0.01``, ``amp=false``, ``augment={hflip: true}``)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not YAML"
        raise argparse.ArgumentTypeError(f"the value of '{key}' is not a YAML value ({problem}): '{raw}'") from None
    if value is None:
        raise argparse.ArgumentTypeError(f"'{key}' has no value: write {key}=VALUE")
    return key, value


__all__ = [
    "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SPEC_ERROR", "EXIT_USAGE", "FORCE_HINT", "PIPE_WIDTH", "Parser",
    "SPACE_HELP", "SPEC_HELP", "command_help", "defer_arguments", "error", "fail", "fraction", "human", "int_range", "key_value",
    "non_negative_int", "os_error_text", "positive_int", "positive_number", "print_warnings", "quiet_optuna", "seed_int",
    "show_warning", "stderr_console", "stdout_console", "usage_error",
]
