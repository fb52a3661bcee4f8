"""Loading a state_dict, from a file or a mapping, into a built network.

Reference weights come as a state_dict saved by ``torch.save`` (torchvision's ``.pth``, timm's
``.pth``/``.bin``, DeiT's ``{"model": state_dict}``, a training checkpoint's
``{"state_dict": ...}``) or as ``.safetensors`` (timm's hub files; read with the
``safetensors`` package when it is installed). Files are read with ``torch.load(...,
weights_only=True)``: tensors and plain data, never code. The keys and shapes are compared
with the network's before anything is copied, so a mismatch is one :class:`CheckpointError`
naming the keys (and both shapes), and the network is left as it was.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Union

import torch
from torch import nn

from archforge.builder.probe import MAX_PARAMS_ENV, max_params_bound
from archforge.errors import CheckpointError, describe_exception
from archforge.spec.load import MAX_SPEC_BYTES

#: A weights file path, or a state_dict already in memory.
WeightsSource = Union[str, "os.PathLike[str]", Mapping[str, torch.Tensor]]

#: Keys under which checkpoints written by training scripts keep the state_dict (timm, DeiT, Lightning).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")

_ZIP_MAGIC = b"PK\x03\x04"
#: How the legacy (pre-1.6) torch.save format begins: protocol 2, then torch's magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
_LISTED = 5  # keys named in a mismatch message
_OVERHEAD_BYTES = 16 * 1024 * 1024  # pickle, key names, torch's records


def check_weights_source(source: Any) -> None:
    """Refuse a ``weights`` argument that cannot be a state_dict, before any network is built for it."""
    if isinstance(source, Mapping):
        return
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError("", f"must be a file path or a state_dict (a mapping of tensors), got a {type(source).__name__}: "
                                  f"{short_repr(source)}", what="weights")
    if not str(source):
        raise CheckpointError("", "file name is empty: give the path of a weights file", what="weights")
    with _as_weights_error():
        _check_regular_file(Path(source), str(source).replace("\0", "\\0"))


@contextmanager
def _as_weights_error() -> Iterator[None]:
    """The file readers speak of checkpoints; for weights, say weights file."""
    try:
        yield
    except CheckpointError as exc:
        raise CheckpointError(exc.path, exc.problem, what="weights file" if exc.path else "the state_dict") from None


def load_weights(model: nn.Module, source: WeightsSource, *, max_params: int | None = None) -> None:
    """Load the state_dict ``source`` (a file path or a mapping) into ``model`` with ``strict=True``.

    A file is read as ``.safetensors`` when it is one (by its header, whatever its suffix), else
    with ``torch.load(weights_only=True)`` (the zip format and the legacy one). It may hold the
    state_dict itself or wrap it under one of :data:`WRAPPER_KEYS`; keys that all start with
    ``module.`` (``nn.DataParallel``) lose that prefix unless the network's own keys have it.
    Weights are cast to the network's floating dtypes and copied to its device (on the ``meta``
    device, only names and shapes are checked). Raises :class:`CheckpointError` for a file that
    cannot be read or holds no state_dict, and for keys, shapes or kinds of dtype that do not
    match, naming them; ``model`` is untouched then.
    """
    check_weights_source(source)
    expected = model.state_dict()
    with _as_weights_error():
        if isinstance(source, Mapping):  # a state_dict in memory: its messages name no file
            name, state = "", _state_dict(source, "", expected)
        else:
            name = str(source).replace("\0", "\\0")  # a NUL would cut the message short in a terminal
            path = Path(source)
            data = _read_safetensors(path, name) if _is_safetensors(path, name) else read_torch_file(path, name, max_params)
            state = _state_dict(data, name, expected)
        check_state(expected, state, name, "do not fit the network")
        on_meta = any(t.is_meta for t in expected.values())
        try:
            model.load_state_dict(state, strict=True, assign=on_meta)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(name, f"has weights that cannot be loaded into the network: {describe_file_error(exc)}") from None


def _state_dict(data: Any, name: str, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict in ``data``: itself, or under one wrapper key; every key a string, every value a tensor."""
    if isinstance(data, Mapping) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        wrapped = [key for key in WRAPPER_KEYS if isinstance(data.get(key), Mapping)]
        if not wrapped:
            keys = ", ".join(short_repr(k) for k in list(data)[:_LISTED])
            raise CheckpointError(name, f"holds no state_dict: a dict of {len(data)} entries ({keys}) with no tensors and none of "
                                        f"the keys {', '.join(WRAPPER_KEYS)} that training checkpoints keep it under")
        data = data[wrapped[0]]
    if not isinstance(data, Mapping):
        raise CheckpointError(name, f"holds a {type(data).__name__}, not a state_dict (a dict of tensors)")
    state = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise CheckpointError(name, f"is not a dict of tensors: key {short_repr(key)} is a {type(key).__name__}, not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(name, f"is not a dict of tensors: the value of key {short_repr(key)} is a {type(value).__name__}")
        state[key] = value
    # Saved from nn.DataParallel / DistributedDataParallel: taken off only when that makes the keys the network's
    # (a network may have a node called 'module' of its own).
    if state and all(key.startswith("module.") for key in state) and set(state) != set(expected):
        stripped = {key.removeprefix("module."): value for key, value in state.items()}
        if set(stripped) == set(expected) or not any(key.startswith("module.") for key in expected):
            state = stripped
    return with_current_names(expected, state)


#: Suffixes of keys in files written before a node's own tensors took the node's name.
_FORMER_SUFFIXES = (".cls_token", ".pos_embed", ".conv.weight", ".conv.bias")


def with_current_names(expected: Mapping[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the names older archforge versions wrote renamed to today's, where the network lacks them.

    A ``class_token`` node ``n`` held ``n.cls_token`` (now ``n``), a ``learned_pos_embed`` node
    ``n.pos_embed`` (now ``n``), and a ``conv`` without norm and activation ``n.conv.weight``
    (now ``n.weight``). A key is renamed only when its new name is one the network has and
    the state lacks, so no current key is ever touched.
    """
    renamed = {}
    for key, value in state.items():
        if key not in expected and key.endswith(_FORMER_SUFFIXES):
            head, _, leaf = key.rpartition(".")
            current = head if leaf in ("cls_token", "pos_embed") else f"{head.removesuffix('.conv')}.{leaf}"
            if current in expected and current not in state:
                key = current
        renamed[key] = value
    return renamed


def _is_safetensors(path: Path, name: str) -> bool:
    """A safetensors file starts with the 8-byte length of its JSON header, then ``{``; its suffix says nothing for sure."""
    if path.suffix.lower() == ".safetensors":
        return True
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise CheckpointError(name, f"cannot be read: {exc.strerror or exc}") from None
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    if importlib.util.find_spec("safetensors") is None:
        raise CheckpointError(name, "is a .safetensors file: install the 'safetensors' package to read it (pip install safetensors)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _check_regular_file(path, name)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(name, f"is not a readable .safetensors file: {describe_file_error(exc)}") from None


def _check_regular_file(path: Path, name: str) -> int:
    """The size of ``path``; a missing file, a directory or a device is a CheckpointError."""
    if "\0" in str(path):  # os functions would raise a bare ValueError
        raise CheckpointError(name, "cannot be read: the name contains a NUL character")
    try:
        if path.is_dir():
            raise CheckpointError(name, "is a directory, not a file")
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(name, "does not exist") from None
    except OSError as exc:
        raise CheckpointError(name, f"cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):  # a pipe or a device would be read forever
        raise CheckpointError(name, "is not a regular file (a device, pipe or socket)")
    return info.st_size


def _check_size(path: Path, name: str, max_params: int | None) -> None:
    """Bound what torch.load would unpack by what a network within ``max_params`` can hold (8 bytes a weight)."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(name, f"is truncated or damaged: {describe_file_error(exc)}") from None
    _check_bytes(unpacked, name, max_params)


def _check_bytes(unpacked: int, name: str, max_params: int | None) -> None:
    limit = max_params_bound(max_params) * 8 + MAX_SPEC_BYTES + _OVERHEAD_BYTES
    if unpacked > limit:
        raise CheckpointError(name, f"holds {unpacked:,} bytes of data, more than a network within max_params can need "
                                    f"({limit:,}); raise the bound with max_params=N (archforge.build, load_checkpoint), --max-params N or {MAX_PARAMS_ENV}=N")


def read_torch_file(path: Path, name: str, max_params: int | None) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` onto the CPU; every failure a CheckpointError."""
    size = _check_regular_file(path, name)
    try:
        with path.open("rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError as exc:
        raise CheckpointError(name, f"cannot be read: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(name, "is empty (0 bytes): it was not written completely")
    if head == _LEGACY_MAGIC:  # torch.save before PyTorch 1.6 (or _use_new_zipfile_serialization=False): bounded by its size
        _check_bytes(size, name, max_params)
    elif not head.startswith(_ZIP_MAGIC):
        raise CheckpointError(name, "is not a PyTorch file: expected the zip archive that torch.save writes (or a .safetensors file)")
    elif not zipfile.is_zipfile(path):
        raise CheckpointError(name, f"is truncated or damaged: its zip directory is missing ({size:,} bytes)")
    else:
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
        raise CheckpointError(name, f"is truncated or damaged: {describe_file_error(exc)}") from None


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating"
    return "bool" if dtype == torch.bool else "integer"


def check_state(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], name: str,
                what: str = "do not fit the network") -> None:
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
        shown = ", ".join(f"{short_repr(k)} is {list(state[k].shape)} in the file, {list(expected[k].shape)} in the network"
                          for k in reshaped[:_LISTED])
        problems.append(f"shape mismatch: {shown}" + (f" (+{len(reshaped) - _LISTED} more)" if len(reshaped) > _LISTED else ""))
    if retyped:
        shown = ", ".join(f"{short_repr(k)} is {_kind(state[k].dtype)} ({str(state[k].dtype).removeprefix('torch.')}) in the file, "
                          f"{_kind(expected[k].dtype)} ({str(expected[k].dtype).removeprefix('torch.')}) in the network"
                          for k in retyped[:_LISTED])
        problems.append(f"dtype mismatch: {shown}" + (f" (+{len(retyped) - _LISTED} more)" if len(retyped) > _LISTED else "")
                        + "; only casts between floating types (float16, bfloat16, float32, float64, float8) are made")
    if problems:
        raise CheckpointError(name, f"has weights that {what}: {'; '.join(problems)}")


def _keys(keys: list[str]) -> str:
    shown = ", ".join(short_repr(k) for k in keys[:_LISTED])
    more = f" (+{len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
    return f"key{'s' if len(keys) > 1 else ''} {shown}{more}"


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_file_error(exc: BaseException) -> str:
    """:func:`~archforge.errors.describe_exception` without torch's advice to load with weights_only=False (never safe here)."""
    return describe_exception(exc, 200, keep=lambda line: "weights_only" not in line)
