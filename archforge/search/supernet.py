"""A weight-sharing supernet over the candidates of a search space (single-path one-shot).

Guo, Zhang, Mu, Heng, Liu, Wei & Sun 2020, "Single Path One-Shot Neural Architecture Search
with Uniform Sampling" (SPOS); Chu, Zhang & Xu 2021, "FairNAS: Rethinking Evaluation Fairness
of Weight Sharing Neural Architecture Search".

Every *path* of the supernet is one candidate of the space, built by :func:`archforge.build`
exactly as it is built stand-alone (same modules, same parameter names), so any block, a
plugin's included, takes part without knowing it. What a path does not own are its
parameters: each is a slice of a *shared tensor*, keyed by

    (parameter name, the defines that expanded its node, the node's block)

so two paths share a weight exactly when the same block, reached through the same defines,
stands at the same place:

* a stage that is a ``conv_unit`` in one path and an ``attention_unit`` in another has one set
  of weights per unit (SPOS's choice block: each candidate operation its own weights), even
  where both units have a node of the same id and block (their shortcuts);
* what every path has (stem, head) is one tensor trained by every step;
* a width decision shares one tensor between widths, each path using its leading slice
  ``W[:out, :in]`` (the weight sharing of Once-for-All's elastic width); only the first two
  dimensions (output and input channels or features) are sliced, so a parameter whose other
  dimensions differ between paths (a 3×3 and a 5×5 kernel) gets one tensor per shape;
* a depth decision shares the layers the shallower path has.

A forward of the supernet runs its :attr:`Supernet.active` path with
``torch.func.functional_call``: the path's module with the shared slices in place of its own
parameters, so gradients reach the shared tensors. Buffers (BatchNorm's running statistics)
are each path's own; they mean little after training with shared weights, and
:meth:`Supernet.recalibrate` re-estimates them per path on training batches before the path
is evaluated (SPOS §3.3).

:class:`PathSchedule` says which paths train at a step: ``uniform`` draws one path (SPOS);
``fair`` draws ``m`` paths such that every value of every decision is used equally often, with
their gradients averaged into one update (FairNAS's strict fairness; ``m`` is the largest
number of values a decision has).

A parameter that packs several projections (attention's ``qkv``, ``[3C, C]``) is sliced as
one tensor: a narrower path's key rows are rows of a wider path's queries. Each path still
computes exactly its stand-alone network; only what widths share is less aligned than
AutoFormer's per-projection slicing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
from torch import nn

from archforge.search.choices import canonical_json

Sampling = Literal["uniform", "fair"]
SAMPLINGS: tuple[Sampling, ...] = ("uniform", "fair")
#: How many leading dimensions a shared tensor is sliced in (output and input channels).
SLICED_DIMS = 2
#: Fair sampling balances decisions with at most this many values among the paths.
FAIR_MAX_VALUES = 8


@dataclass
class Path:
    """One candidate as a path of the supernet: its module (parameters unused, buffers its own) and its slices."""

    values: dict[str, Any]  # the decisions that made it
    module: nn.Module
    slots: dict[str, tuple[int, tuple[int, ...]]]  # parameter name → (shared tensor index, the path's shape)
    params: int  # parameters of the candidate built stand-alone

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for name, (_, shape) in self.slots.items()}


class Supernet(nn.Module):
    """The paths' modules over one set of shared tensors; see the module docstring.

    Args:
        modules: one built network per path (:func:`archforge.build` of each candidate, on
            the device and with the initialisation training uses); the shared tensors start
            from their values (the largest path's where paths overlap) and the modules' own
            parameters are released.
        values: the decisions of each path, in the same order.
    """

    def __init__(self, modules: Sequence[nn.Module], values: Sequence[Mapping[str, Any]]):
        super().__init__()
        if not modules or len(modules) != len(values):
            raise ValueError("a supernet needs one or more paths, each with its decisions")
        keyed = [_keys(module) for module in modules]
        shapes: dict[str, list[tuple[int, ...]]] = {}
        dtypes: dict[str, torch.dtype] = {}
        for keys, module in zip(keyed, modules):
            for name, p in module.named_parameters():
                shapes.setdefault(keys[name], []).append(tuple(p.shape))
                dtypes[keys[name]] = p.dtype
        groups = _group_by_sliceable_shape(shapes)
        #: One descriptive name per shared tensor: ``stage.0.mix.conv.weight @ conv_unit/conv`` (and a shape when split).
        self.shared_names: list[str] = []
        index: dict[tuple[str, tuple[int, ...]], int] = {}
        largest: list[tuple[int, ...]] = []
        kinds: list[torch.dtype] = []
        for key, by_rest in groups.items():
            for rest, members in by_rest.items():
                top = tuple(max(s[d] for s in members) for d in range(len(members[0])))
                for s in members:
                    index[(key, s)] = len(largest)
                largest.append(top)
                kinds.append(dtypes[key])
                self.shared_names.append(key if len(by_rest) == 1 else f"{key} {list(rest)}")
        first = next(iter(modules[0].parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        self.shared = nn.ParameterList(
            nn.Parameter(torch.zeros(shape, device=device, dtype=dtype)) for shape, dtype in zip(largest, kinds))
        self.paths: list[Path] = []
        with torch.no_grad():
            for module, keys, decisions in sorted(zip(modules, keyed, values), key=lambda t: _numel(t[0])):
                slots = {}
                for name, p in module.named_parameters():
                    i = index[(keys[name], tuple(p.shape))]
                    slots[name] = (i, tuple(p.shape))
                    self.shared[i][_slices(p.shape)].copy_(p)  # smallest path first: the largest writes last
                    self.shared[i].requires_grad_(p.requires_grad)
                self.paths.append(Path(dict(decisions), module, slots, _numel(module)))
        order = {id(m): k for k, m in enumerate(modules)}
        self.paths.sort(key=lambda path: order[id(path.module)])  # back to the caller's order
        for path in self.paths:
            _release_parameters(path.module)
        #: The path a forward runs.
        self.active = 0

    # The paths' modules are not submodules: their own (released) parameters must not reach an
    # optimizer or a state dict. Moving them is this class's job.
    def _apply(self, fn: Any, recurse: bool = True) -> "Supernet":
        super()._apply(fn, recurse)
        for path in self.paths:
            path.module._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> "Supernet":
        super().train(mode)
        for path in self.paths:
            path.module.train(mode)
        return self

    def parameters_of(self, path: int) -> dict[str, torch.Tensor]:
        """The parameters path ``path`` runs with, by its own names: views of the shared tensors."""
        return {name: self.shared[i][_slices(shape)] for name, (i, shape) in self.paths[path].slots.items()}

    def forward(self, x: torch.Tensor) -> Any:
        path = self.paths[self.active]
        return torch.func.functional_call(path.module, self.parameters_of(self.active), (x,))

    def state_dict_of(self, path: int) -> dict[str, torch.Tensor]:
        """Path ``path`` as a plain state dict (its inherited weights and its own buffers), for the stand-alone network."""
        state = {name: t.detach().clone() for name, t in self.parameters_of(path).items()}
        module = self.paths[path].module
        state.update({name: b.detach().clone() for name, b in module.named_buffers() if _persistent(module, name)})
        return state

    @torch.no_grad()
    def recalibrate(self, path: int, batches: Iterable[torch.Tensor]) -> int:
        """Re-estimate the BatchNorm statistics of ``path`` on ``batches`` (their plain average); how many norms there were.

        The statistics are reset and accumulated with ``momentum=None`` (a cumulative average,
        not an exponential one), in training mode and without gradients; every other buffer and
        every parameter is left as it is. Any module with running statistics counts
        (``track_running_stats`` and ``reset_running_stats``: torch's BatchNorm and look-alikes).
        """
        norms = [m for m in self.paths[path].module.modules()
                 if getattr(m, "track_running_stats", False) and callable(getattr(m, "reset_running_stats", None))]
        if not norms:
            return 0
        momenta = [m.momentum for m in norms]
        was_training = self.training
        previous, self.active = self.active, path
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            self.train()
            for x in batches:
                self(x)
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            self.train(was_training)
            self.active = previous
        return len(norms)


class PathSchedule:
    """Which paths train at each step; see the module docstring.

    Args:
        paths: the decisions of each path.
        sampling: ``uniform`` (one path per step) or ``fair`` (``m`` paths per step, every
            decision's values used equally often within the step).
        seed: the draws' seed.

    ``fair`` balances the decisions with at most :data:`FAIR_MAX_VALUES` values among the
    paths (block choices, a few widths); a decision with more (an integer or float range) is
    left to chance, or every path would train at every step. With a pool that is not the whole
    grid (a sample of a large space, or with some candidates rejected), a step's combination of
    values may not be a path: a path that agrees with it on the most decisions stands in, so
    fairness then holds only approximately.
    """

    def __init__(self, paths: Sequence[Mapping[str, Any]], sampling: Sampling, seed: int):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if not paths:
            raise ValueError("no path to schedule")
        self.sampling = sampling
        self.rng = random.Random(seed)
        keys = [{name: canonical_json(v) for name, v in values.items()} for values in paths]
        self._count = len(keys)
        domains = {name: sorted({k[name] for k in keys if name in k}) for name in sorted({n for k in keys for n in k})}
        #: The decisions fair sampling balances, with their values.
        self.balanced = {name: d for name, d in domains.items() if 1 < len(d) <= FAIR_MAX_VALUES}
        self._having: dict[tuple[str, str], list[int]] = {}  # (decision, value) → the paths with it
        for i, k in enumerate(keys):
            for name in self.balanced:
                if name in k:
                    self._having.setdefault((name, k[name]), []).append(i)
        #: Paths per step: 1 for uniform; for fair, the most values a balanced decision has.
        self.per_step = 1 if sampling == "uniform" else max([len(d) for d in self.balanced.values()] or [1])

    def next(self) -> list[int]:
        """The paths of the next step."""
        if self.sampling == "uniform" or not self.balanced:
            return [self.rng.randrange(self._count)]
        columns = {}
        for name, domain in self.balanced.items():
            # Each value as often as the others, the remainder drawn at random so that no value is favoured over steps.
            column = domain * (self.per_step // len(domain)) + self.rng.sample(domain, self.per_step % len(domain))
            self.rng.shuffle(column)
            columns[name] = column
        return [self._path_for({name: column[j] for name, column in columns.items()}) for j in range(self.per_step)]

    def _path_for(self, target: dict[str, str]) -> int:
        """A path with the target's values, else one agreeing on the most; among several, one at random."""
        agree: dict[int, int] = {}
        for item in target.items():
            for i in self._having.get(item, ()):
                agree[i] = agree.get(i, 0) + 1
        if not agree:
            return self.rng.randrange(self._count)
        best = max(agree.values())
        closest = [i for i, n in agree.items() if n == best]
        return closest[0] if len(closest) == 1 else self.rng.choice(closest)


# --------------------------------------------------------------------------- helpers


def _keys(module: nn.Module) -> dict[str, str]:
    """Each parameter's sharing key: ``name @ define/.../block`` from the graph the module was built from."""
    graph = getattr(module, "meta", {}).get("archforge_graph")
    nodes = graph.nodes if graph is not None else {}
    keys = {}
    for name, _ in module.named_parameters():
        owner = _owner(name, nodes)
        if owner is None:
            keys[name] = name
        else:
            node = nodes[owner]
            keys[name] = f"{name} @ {'/'.join((*node.defines, node.block))}"
    return keys


def _owner(name: str, nodes: Mapping[str, Any]) -> str | None:
    """The graph node a parameter name belongs to: its longest dotted prefix that is a node."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):  # the full name too: a node that is itself a parameter (class_token)
        prefix = ".".join(parts[:end])
        if prefix in nodes:
            return prefix
    return None


def _group_by_sliceable_shape(shapes: Mapping[str, list[tuple[int, ...]]]) -> dict[str, dict[tuple[int, ...], list[tuple[int, ...]]]]:
    """Per key, its shapes grouped by what may not be sliced: rank and the dimensions after the first two."""
    groups: dict[str, dict[tuple[int, ...], list[tuple[int, ...]]]] = {}
    for key, found in shapes.items():
        by_rest: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for shape in dict.fromkeys(found):
            by_rest.setdefault((len(shape), *shape[SLICED_DIMS:]), []).append(shape)
        groups[key] = by_rest
    return groups


def _slices(shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _release_parameters(module: nn.Module) -> None:
    """Free a path module's own parameter storage (the shared tensors stand in for it at every forward)."""
    for p in module.parameters():
        p.data = torch.empty(0, device=p.device, dtype=p.dtype)


def _persistent(module: nn.Module, name: str) -> bool:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    return leaf not in getattr(owner, "_non_persistent_buffers_set", set())
