"""Running plugin code so that whatever it raises is that plugin's problem, never archforge's.

A plugin module may raise anything while it is imported or while its hooks run, including
``SystemExit`` (a stray ``sys.exit()``), ``GeneratorExit`` and ``KeyboardInterrupt``.
:func:`call` turns all of them into a :class:`PluginFault` that the registry reports as a
warning naming the plugin, with one exception: a *real* Ctrl-C.

A ``KeyboardInterrupt`` raised by a plugin and one raised by Python's SIGINT handler look
the same, so :func:`watching_interrupts` (active while the registry loads plugins) wraps
the SIGINT handler to count real interrupts: a ``KeyboardInterrupt`` is re-raised when a
SIGINT arrived during the call, and is the plugin's fault otherwise. Outside the main
thread no signal can raise it, so it is always the plugin's; in the main thread outside a
watch nothing can tell, so it is re-raised.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

_MAX_TEXT = 300
_sigints = 0  # real SIGINTs seen while watching
_watching = False


class PluginFault(Exception):
    """Plugin code raised ``cause`` (any ``BaseException`` but a real Ctrl-C)."""

    def __init__(self, cause: BaseException):
        self.cause = cause
        super().__init__(describe(cause))


def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)``; whatever it raises, except a real Ctrl-C, becomes a :class:`PluginFault`."""
    start = _sigints
    try:
        return function(*args, **kwargs)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and _from_signal(start):
            raise
        raise PluginFault(exc) from None


def _from_signal(start: int) -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    return _sigints != start if _watching else True


@contextmanager
def watching_interrupts() -> Iterator[None]:
    """Count real SIGINTs while plugin code runs, so :func:`call` can tell them from a plugin's own ``KeyboardInterrupt``.

    The previous handler still runs (so Ctrl-C behaves as before) and is put back on exit.
    """
    global _watching
    if _watching or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN or SIG_DFL: no KeyboardInterrupt can come from a signal
        _watching = True
        try:
            yield
        finally:
            _watching = False
        return

    def record(signum: int, frame: Any) -> Any:
        global _sigints
        _sigints += 1
        return previous(signum, frame)

    try:
        signal.signal(signal.SIGINT, record)
    except (ValueError, OSError):  # e.g. not the main interpreter: stay conservative
        yield
        return
    _watching = True
    try:
        yield
    finally:
        _watching = False
        if signal.getsignal(signal.SIGINT) is record:  # a plugin that installed its own handler keeps it
            signal.signal(signal.SIGINT, previous)


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, bounded, even when the exception's ``__str__`` itself raises."""
    name = type(exc).__name__
    if isinstance(exc, SystemExit):
        try:
            code = text(call(getattr, exc, "code", None))
        except PluginFault:
            code = "?"
        return f"{name}: sys.exit({code}) was called"
    message = text(exc)
    return f"{name}: {message}" if message else name


def text(value: object) -> str:
    """``str(value)`` on one line and at most a few hundred characters; never raises (but on a real Ctrl-C)."""
    try:
        raw = call(str, value)
    except PluginFault:
        try:
            raw = object.__repr__(value)
        except Exception:  # pragma: no cover - object.__repr__ does not fail on live objects
            raw = "<unprintable>"
    if not isinstance(raw, str):
        raw = "<unprintable>"
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    flat = "; ".join(lines)
    return flat if len(flat) <= _MAX_TEXT else flat[: _MAX_TEXT - 1] + "…"


def show(value: object) -> str:
    """``repr(value)`` the same way as :func:`text`: one line, bounded, never raising."""
    try:
        return text(call(repr, value))
    except PluginFault:
        return text(object.__repr__(value))
