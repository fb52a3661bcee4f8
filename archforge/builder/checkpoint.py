"""Saving a built network as its spec plus weights, and loading it back safely.

A checkpoint is a dict ``{"spec": <YAML text>, "state_dict": ...}`` written with
``torch.save``; loading uses ``weights_only=True``, so a checkpoint can carry tensors
and strings but never code, and the network is rebuilt from the spec. Every way a file
can fail to be a checkpoint is a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import fx

from archforge.builder.network import build, check_device
from archforge.builder.probe import MAX_PARAMS_ENV, max_params_bound
from archforge.errors import CheckpointError, describe_exception
from archforge.files import OVERWRITE_HINT, atomic_output
from archforge.registry import Registry
from archforge.spec.load import MAX_SPEC_BYTES, parse_spec

_ZIP_MAGIC = b"PK\x03\x04"
_LISTED = 5  # keys named in a mismatch message
_OVERHEAD_BYTES = 16 * 1024 * 1024  # pickle, key names, torch's records


def save_checkpoint(model: fx.GraphModule, path: str | os.PathLike[str], *, overwrite: bool = False,
                    hint: str = OVERWRITE_HINT) -> Path:
    """Write ``model`` (built by :func:`archforge.build` from a spec) with its spec.

    The file is written atomically (a failed write leaves no partial file). An existing
    ``path`` is not replaced unless ``overwrite=True`` (a :class:`FileExistsError` says so,
    ending with ``hint``: how the caller's user asks to overwrite); write failures are
    :class:`OSError` naming ``path``.
    """
    graph = model.meta.get("archforge_graph")
    if graph is None or graph.spec is None:
        raise ValueError("save_checkpoint needs a model built by archforge.build from a spec")
    payload = {"spec": graph.spec.to_yaml(), "state_dict": model.state_dict()}
    # A file object of our own: torch reports write failures on it as the OSError (ENOSPC...),
    # on a path as an opaque RuntimeError.
    with atomic_output(path, overwrite=overwrite, hint=hint) as temp, open(temp, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    registry: Registry | None = None,
    max_params: int | None = None,
) -> fx.GraphModule:
    """Rebuild the network of a checkpoint from its spec and load its weights.

    Raises :class:`CheckpointError` for a file that is not a sound archforge checkpoint
    (missing, empty, truncated, not written by ``torch.save``, holding Python objects,
    a spec over :data:`~archforge.spec.load.MAX_SPEC_BYTES`, weights that do not fit the
    network), and :class:`SpecError` located at ``PATH:spec:line:col`` for a problem in
    the spec it carries. ``max_params`` bounds the rebuilt network as in :func:`archforge.build`;
    a ``device`` that cannot be used is a :class:`~archforge.errors.SettingError` before the file is read.
    """
    check_device(device)
    name = str(path).replace("\0", "\\0")  # a NUL would cut the message short in a terminal
    data = _read(Path(path), name, max_params)
    spec_text, state = _contents(data, name)
    model = build(parse_spec(spec_text, file=f"{name}:spec"), device=device, registry=registry, max_params=max_params)
    _check_state(model.state_dict(), state, name)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(name, f"has weights that cannot be loaded into its network: {_describe(exc)}") from None
    return model


def _check_size(path: Path, name: str, max_params: int | None) -> None:
    """Bound what torch.load would unpack by what a network within ``max_params`` can hold (8 bytes a weight)."""
    limit = max_params_bound(max_params) * 8 + MAX_SPEC_BYTES + _OVERHEAD_BYTES
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(name, f"is truncated or damaged: {_describe(exc)}") from None
    if unpacked > limit:
        raise CheckpointError(name, f"holds {unpacked:,} bytes of data, more than a network within max_params can need "
                                    f"({limit:,}); raise the bound with load_checkpoint(..., max_params=N) or {MAX_PARAMS_ENV}=N")


def _read(path: Path, name: str, max_params: int | None) -> Any:
    if "\0" in str(path):  # os functions would raise a bare ValueError
        raise CheckpointError(name, "cannot be read: the name contains a NUL character")
    try:
        if path.is_dir():
            raise CheckpointError(name, "is a directory, not a checkpoint file")
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a pipe or a device would be read forever
            raise CheckpointError(name, "is not a regular file (a device, pipe or socket)")
        size = info.st_size
        with path.open("rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise CheckpointError(name, "does not exist") from None
    except OSError as exc:
        raise CheckpointError(name, f"cannot be read: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(name, "is empty (0 bytes): it was not written completely, or not by 'archforge build -o FILE.pt'")
    if head != _ZIP_MAGIC:
        raise CheckpointError(name, "is not a PyTorch checkpoint: expected the zip archive that torch.save and 'archforge build -o FILE.pt' write")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(name, f"is truncated or damaged: its zip directory is missing ({size:,} bytes)")
    _check_size(path, name, max_params)
    try:
        # Always onto the CPU first: the network is built on `device` and the weights copied there.
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            name, f"is refused: it holds Python objects other than tensors and plain data{what}; "
                  "archforge loads checkpoints with torch.load(weights_only=True) and never runs code from a file",
        ) from None
    except (Exception, SystemExit) as exc:  # torch's reader: RuntimeError, EOFError without message, ValueError...
        raise CheckpointError(name, f"is truncated or damaged: {_describe(exc)}") from None


def _contents(data: Any, name: str) -> tuple[str, dict[str, torch.Tensor]]:
    if not isinstance(data, dict):
        raise CheckpointError(name, f"holds a {type(data).__name__}, not an archforge checkpoint (a dict with 'spec' and 'state_dict')")
    missing = [key for key in ("spec", "state_dict") if key not in data]
    if missing:
        raise CheckpointError(name, f"is not an archforge checkpoint: missing {' and '.join(repr(k) for k in missing)}")
    spec, state = data["spec"], data["state_dict"]
    if not isinstance(spec, str):
        raise CheckpointError(name, f"has a {type(spec).__name__} as 'spec', not the spec's YAML text")
    # Bounded before parsing: parsing time grows with the text, and a checkpoint is not a spec file.
    if len(spec) > MAX_SPEC_BYTES or len(spec.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise CheckpointError(name, f"has a spec of {len(spec):,} characters, more than the {MAX_SPEC_BYTES:,} bytes a spec may have")
    if not isinstance(state, Mapping):
        raise CheckpointError(name, f"has a {type(state).__name__} as 'state_dict', not a dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(name, f"has a 'state_dict' that is not a dict of tensors: key {_short(key)} is a {type(key).__name__}, not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(name, f"has a 'state_dict' that is not a dict of tensors: the value of key {_short(key)} is a {type(value).__name__}")
    return spec, dict(state)


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating"
    return "bool" if dtype == torch.bool else "integer"


def _check_state(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], name: str) -> None:
    """Which keys are missing, unexpected, of another shape or another kind of dtype, before torch's multi-line message would.

    ``load_state_dict`` casts silently: int8 weights would load as whole numbers and complex
    ones lose their imaginary part. Only casts within a kind (float16/bfloat16/float32/float64,
    or between integer widths) are let through.
    """
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    retyped = [k for k in expected if k in state and _kind(state[k].dtype) != _kind(expected[k].dtype)]
    if missing:
        problems.append(f"missing {_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {_keys(unexpected)}")
    if reshaped:
        shown = ", ".join(f"{_short(k)} is {list(state[k].shape)} in the file, {list(expected[k].shape)} in the network"
                          for k in reshaped[:_LISTED])
        problems.append(f"shape mismatch: {shown}" + (f" (+{len(reshaped) - _LISTED} more)" if len(reshaped) > _LISTED else ""))
    if retyped:
        shown = ", ".join(f"{_short(k)} is {_kind(state[k].dtype)} ({str(state[k].dtype).removeprefix('torch.')}) in the file, "
                          f"{_kind(expected[k].dtype)} ({str(expected[k].dtype).removeprefix('torch.')}) in the network"
                          for k in retyped[:_LISTED])
        problems.append(f"dtype mismatch: {shown}" + (f" (+{len(retyped) - _LISTED} more)" if len(retyped) > _LISTED else "")
                        + "; only casts between floating types (float16, bfloat16, float32, float64) are made")
    if problems:
        raise CheckpointError(name, f"has weights that do not fit the network of its spec: {'; '.join(problems)}")


def _keys(keys: list[str]) -> str:
    shown = ", ".join(_short(k) for k in keys[:_LISTED])
    more = f" (+{len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
    return f"key{'s' if len(keys) > 1 else ''} {shown}{more}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    """:func:`~archforge.errors.describe_exception` without torch's advice to load with weights_only=False (never safe here)."""
    return describe_exception(exc, 200, keep=lambda line: "weights_only" not in line)
