"""Lazy package attributes (PEP 562): each public name is imported from its home module on first use.

The facades ``archforge``, ``archforge.registry`` and ``archforge.search`` use it so that importing
them (or a plugin's ``import archforge.plugin``) loads neither the builder nor the search.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(namespace: dict[str, Any], homes: Mapping[str, str], *,
                    subpackages: bool = False) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the package whose globals are ``namespace``.

    ``homes`` maps each public name to the module it is imported from; with ``subpackages``, any
    other public name is tried as a subpackage (``archforge.errors`` after ``import archforge``).
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is not None:
            value = getattr(importlib.import_module(home), name)
        elif not subpackages or name.startswith("_"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        else:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as missing:
                if missing.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return __getattr__, __dir__
