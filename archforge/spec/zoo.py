"""The bundled models and search spaces, by name: ``archforge.build("convit_tiny")``, ``archforge search placement_mnist``.

The reference models are the files ``archforge/zoo/models/NAME.yaml`` and the example
search spaces ``archforge/zoo/spaces/NAME.yaml``, shipped inside the package (they are found
through :func:`importlib.resources.files`, so a wheel install and an editable one read the same).
:func:`list_models` lists their names the way ``timm.list_models("convit*")`` does.

Wherever archforge reads a spec or a space, the source is resolved by one rule
(:func:`resolve_source`), decided by how the source is written, never by what happens to be
on disk, except for the last fallback:

1. a :class:`~pathlib.Path` (any ``os.PathLike``) is a path;
2. a string containing a path separator, or ending in ``.yaml`` or ``.yml``, is a path;
3. any other string (a bare word) is a bundled name when one of that kind exists;
4. otherwise it is a path, so that an existing extension-less file still works.

A bare word naming a bundled model always means the bundled one: write ``./convit_tiny`` to
read a file of that name instead. A bare word that is neither a bundled name nor a file is
one located error saying so, with the closest bundled name; a model named where a space is
expected (or the other way round) says which it is, and a path to a missing ``NAME.yaml``
whose NAME is bundled says to write the name alone. Errors in a bundled file are located in
the file itself (``.../archforge/zoo/models/convit_tiny.yaml:12:5``), so an editor opens it.
"""

from __future__ import annotations

import fnmatch
import os
from importlib import resources
from pathlib import Path
from typing import Literal

from archforge.errors import Location, SpecError, did_you_mean

#: What a source is read as; the words are those of the "cannot read ..." errors.
Kind = Literal["spec", "search space"]

_FOLDERS: dict[str, str] = {"spec": "models", "search space": "spaces"}
#: What one bundled file of each kind is called in messages.
_NOUNS: dict[str, str] = {"spec": "model", "search space": "search space"}
_SUFFIXES = (".yaml", ".yml")


def _catalog(kind: Kind) -> dict[str, Path]:
    """Name → file of every bundled file of ``kind``."""
    folder = resources.files("archforge") / "zoo" / _FOLDERS[kind]
    if not folder.is_dir():
        return {}
    # Package data of an installed or editable package is a directory on disk; Path() keeps the
    # real location, which error messages print so that an editor can open the file.
    return {entry.name[: -len(".yaml")]: Path(str(entry))
            for entry in folder.iterdir() if entry.name.endswith(".yaml") and entry.is_file()}


def list_models(pattern: str = "*", *, spaces: bool = False) -> list[str]:
    """Sorted names of the bundled models (of the search spaces with ``spaces=True``) matching ``pattern``.

    ``pattern`` is a shell-style wildcard matched against the whole name, case-sensitively:
    ``"convit*"``, ``"resnet?8"``, ``"*_224"``.
    """
    return sorted(name for name in _catalog("search space" if spaces else "spec") if fnmatch.fnmatchcase(name, pattern))


def bundled_path(name: str, kind: Kind = "spec") -> Path:
    """The file of the bundled model (``kind="spec"``) or search space (``kind="search space"``) ``name``.

    Raises :class:`SpecError` naming the closest bundled name when there is none called ``name``.
    """
    catalog = _catalog(kind)
    if name not in catalog:
        raise SpecError(f"no bundled {_NOUNS[kind]} '{name}'{did_you_mean(name, catalog)}; "
                        f"archforge.list_models({'spaces=True' if kind == 'search space' else ''}) lists them")
    return catalog[name]


def is_path_like(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is read as a path whatever bundled names exist (rules 1 and 2 of the module docstring)."""
    if not isinstance(source, str):
        return True
    separators = {"/", os.sep, os.altsep or os.sep}
    if source == "" or "\0" in source:  # no name; the file reader says what is wrong with such a path
        return True
    return any(sep in source for sep in separators) or source.lower().endswith(_SUFFIXES)


def resolve_source(source: str | os.PathLike[str], kind: Kind) -> str | os.PathLike[str]:
    """The file to read for ``source``: ``source`` itself when it is a path, the bundled file when it is a bundled name.

    The rule is in the module docstring. A bare word that is neither a bundled name nor an
    existing file raises a :class:`SpecError` located at ``source``: no such file, no bundled
    name (the closest one suggested), or a bundled name of the other kind.
    """
    if not isinstance(source, str) or is_path_like(source):
        _check_moved(source, kind)
        return source
    catalog = _catalog(kind)
    if source in catalog:
        return catalog[source]
    if os.path.lexists(source):
        return source
    where = Location(source, 1, 1)
    other: Kind = "search space" if kind == "spec" else "spec"
    if source in _catalog(other):
        if kind == "spec":
            how = f"search it with `archforge search {source}`, or read it with archforge.search.load_space"
        else:
            how = f"the bundled search spaces are {', '.join(list_models(spaces=True))}"
        raise SpecError(f"cannot read {kind}: '{source}' is a bundled {_NOUNS[other]}, not a {_NOUNS[kind]} ({how})", where)
    raise SpecError(f"cannot read {kind}: no file '{source}' and no bundled {_NOUNS[kind]} of that name"
                    f"{did_you_mean(source, catalog)}", where)


def _check_moved(source: str | os.PathLike[str], kind: Kind) -> None:
    """A missing ``.../resnet50.yaml`` (a copy of a bundled file that is not there, an old location): point to the name."""
    path = Path(source)
    if "\0" in str(path):
        return  # the file reader reports it
    if path.suffix.lower() in _SUFFIXES and not os.path.lexists(path) and path.stem in _catalog(kind):
        raise SpecError(f"cannot read {kind}: no file '{path}'; the bundled {_NOUNS[kind]} of that name is "
                        f"read by its name alone: '{path.stem}'", Location(str(path), 1, 1))


__all__ = ["Kind", "bundled_path", "is_path_like", "list_models", "resolve_source"]
