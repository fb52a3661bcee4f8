"""Saving a built network as its spec plus weights, and loading it back safely.

A checkpoint is a dict ``{"spec": <YAML text>, "state_dict": ...}`` written with
``torch.save``; loading uses ``weights_only=True``, so a checkpoint can carry tensors
and strings but never code, and the network is rebuilt from the spec.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import fx

from archforge.builder.network import build
from archforge.registry import Registry
from archforge.spec.load import parse_spec


def save_checkpoint(model: fx.GraphModule, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (built by :func:`archforge.build` from a spec) with its spec."""
    graph = model.meta.get("archforge_graph")
    if graph is None or graph.spec is None:
        raise ValueError("save_checkpoint needs a model built by archforge.build from a spec")
    path = Path(path)
    torch.save({"spec": graph.spec.to_yaml(), "state_dict": model.state_dict()}, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    registry: Registry | None = None,
) -> fx.GraphModule:
    """Rebuild the network of a checkpoint from its spec and load its weights."""
    data = torch.load(path, map_location=device or "cpu", weights_only=True)
    if not isinstance(data, dict) or not {"spec", "state_dict"} <= set(data):
        raise ValueError(f"{path} is not an archforge checkpoint (expected keys 'spec' and 'state_dict')")
    model = build(parse_spec(data["spec"], file=f"{path}:spec"), device=device, registry=registry)
    model.load_state_dict(data["state_dict"], strict=True)
    return model
