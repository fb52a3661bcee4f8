"""How diagnostics quote values: short, one line. The lowest spec module; it imports nothing of archforge."""

from __future__ import annotations

from typing import Any

#: The longest quoted value a diagnostic shows, "..." included.
SHORT_WIDTH = 40


def short_value(value: Any, width: int = SHORT_WIDTH) -> str:
    """``value`` as a diagnostic quotes it: its repr, cut to ``width`` characters; a collection by its kind."""
    if isinstance(value, (dict, list, tuple)):
        return type_name(value)
    text = repr(value)
    if len(text) <= width:
        return text
    if not isinstance(value, str):
        return text[: width - 3] + "..."
    # Cut the string itself, not its repr: the closing quote stays and no escape such as \x00 is split.
    keep = min(len(value), width)
    while keep and len(repr(value[:keep])) > width - 3:
        keep -= 1
    text = repr(value[:keep])
    return text[:-1] + "..." + text[-1]


def type_name(value: Any) -> str:
    """What a diagnostic calls the kind of ``value``: 'a mapping', 'a number', 'null', ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if hasattr(value, "isoformat"):  # what YAML 1.1 reads 2001-12-14 as
        return "a date"
    return f"a {type(value).__name__}"
