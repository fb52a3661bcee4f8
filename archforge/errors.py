"""Errors that say where and what.

Every problem a user can cause (a malformed spec, an unknown block, a shape that
does not fit, a plugin that breaks) surfaces as one :class:`SpecError` that carries
the file, line and column it comes from and the path of the node involved, so that
the command line can print it the way a compiler prints a diagnostic.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Iterable

#: What archforge catches around plugin code (a block's ``infer``, ``build``, ``forward``, its args
#: validators) and reports as that plugin's fault: any exception, a stray ``sys.exit()``
#: (``SystemExit``) and a ``GeneratorExit`` raised outside a generator. ``KeyboardInterrupt``
#: is left out on purpose: it is almost always a real Ctrl-C, and must still stop the command.
PLUGIN_FAULTS: tuple[type[BaseException], ...] = (Exception, SystemExit, GeneratorExit)


@dataclass(frozen=True)
class Location:
    """A position in a spec file: 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SpecError(Exception):
    """A spec that cannot be turned into a network.

    Attributes:
        message: one line saying what is wrong.
        location: where in the YAML file (``None`` only when no file position applies).
        node: the node path, e.g. ``local[3].attn`` (``None`` for spec-level problems).
    """

    def __init__(self, message: str, location: Location | None = None, node: str | None = None):
        self.message = one_line(message)
        self.location = location
        self.node = node
        super().__init__(self.format())

    def format(self) -> str:
        prefix = f"{self.location}: " if self.location is not None else ""
        return f"{prefix}{self.message}"


class ShapeError(ValueError):
    """Raised by a block's ``infer`` when its input shapes do not fit its arguments.

    The core turns it into a :class:`SpecError` that adds the node, the YAML line and
    the names and shapes of the nodes feeding it; the block only says what is wrong.
    """


class PluginError(Exception):
    """A plugin that cannot be used: it clashes with another one or breaks the block contract."""


class SearchError(SpecError):
    """A search that cannot run as asked (settings, storage, an incompatible run to resume)."""

    def format(self) -> str:
        return super().format() if self.location is not None else f"error: {self.message}"


class SettingError(ValueError):
    """A setting archforge cannot use: a keyword argument or an environment variable with a bad value."""


class CheckpointError(ValueError):
    """A file that :func:`archforge.load_checkpoint` cannot turn back into a network, or weights that do not fit one.

    The message names the file and says what is wrong with it (missing, empty, truncated,
    not written by ``torch.save``, holding code, weights that do not fit the spec...).
    Problems inside the spec it carries are :class:`SpecError` located at ``FILE:spec:line:col``.

    Attributes:
        path: the checkpoint or weights file (empty for a state_dict given in memory).
    """

    def __init__(self, path: str, problem: str, what: str = "checkpoint"):
        self.path = path
        self.problem = one_line(problem)
        super().__init__(f"{what} '{one_line(path)}' {self.problem}" if path else f"{what} {self.problem}")


class SpecWarning(UserWarning):
    """Something legal but probably unintended, such as a node that never reaches the output."""

    def __init__(self, message: str, location: Location | None = None, node: str | None = None):
        self.message = one_line(message)
        self.location = location
        self.node = node
        prefix = f"{location}: " if location is not None else ""
        super().__init__(f"{prefix}warning: {self.message}")


_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode("ascii") for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: str) -> str:
    """``message`` with line breaks escaped: a diagnostic is one line, whatever names a spec contains."""
    return message.translate(_LINE_BREAKS)


def describe_exception(exc: BaseException, limit: int = 300, *, named: bool = True,
                       keep: Callable[[str], bool] | None = None) -> str:
    """``Type: first line of the message`` of ``exc``, at most ``limit`` characters of message; never raises.

    Only the first non-blank line (among those ``keep`` accepts, when given): torch's reasons
    span pages, and their first line says what went wrong. ``named=False`` leaves the type
    name out. When the exception has no message, or its ``__str__`` itself fails (plugin
    code may define any), the result is the type name alone.
    """
    name = type(exc).__name__
    try:
        raw = str(exc)
    except PLUGIN_FAULTS:
        raw = ""
    lines = [line.strip() for line in raw.splitlines() if line.strip() and (keep is None or keep(line))]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    if not text:
        return name
    return f"{name}: {text}" if named else text


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class PluginWarning(UserWarning):
    """A plugin that could not be loaded; every other plugin keeps working."""
