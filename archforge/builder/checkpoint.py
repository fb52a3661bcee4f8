"""Saving a built network as its spec plus weights, and loading it back safely.

A checkpoint is a dict ``{"spec": <YAML text>, "state_dict": ...}`` written with
``torch.save``; loading uses ``weights_only=True``, so a checkpoint can carry tensors
and strings but never code, and the network is rebuilt from the spec. Every way a file
can fail to be a checkpoint is a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import fx

from archforge.builder.network import build, check_device
from archforge.builder.weights import check_state, describe_file_error, read_torch_file, short_repr, with_current_names
from archforge.errors import CheckpointError
from archforge.files import OVERWRITE_HINT, atomic_output
from archforge.registry import Registry
from archforge.spec.load import MAX_SPEC_BYTES, parse_spec



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
    data = read_torch_file(Path(path), name, max_params)
    spec_text, state = _contents(data, name)
    model = build(parse_spec(spec_text, file=f"{name}:spec"), device=device, registry=registry, max_params=max_params)
    state = with_current_names(model.state_dict(), state)
    check_state(model.state_dict(), state, name, "do not fit the network of its spec")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(name, f"has weights that cannot be loaded into its network: {describe_file_error(exc)}") from None
    return model


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
            raise CheckpointError(name, f"has a 'state_dict' that is not a dict of tensors: key {short_repr(key)} is a {type(key).__name__}, not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(name, f"has a 'state_dict' that is not a dict of tensors: the value of key {short_repr(key)} is a {type(value).__name__}")
    return spec, dict(state)
