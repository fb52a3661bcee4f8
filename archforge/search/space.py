"""Search spaces: a spec with choice points, read into named decisions, and the candidates they make.

A search space is written in the spec language itself, with choice points where values or
block names stand (their grammar: :mod:`archforge.search.choices`; deciding per copy of a
repeated node: :mod:`archforge.search.unroll`). An optional top-level ``search:`` section
holds the defaults of ``archforge search`` (:mod:`archforge.search.settings`); it is not part
of any candidate.

Every choice point is one *decision*, named after where it stands (``width`` for a param,
``stem.channels`` for an arg of node ``stem``, ``stage.block`` for a node's block,
``basic.conv1.kernel`` inside define ``basic``) unless it has a ``label``: all choice points
with the same label share one decision (and must offer the same options). A choice point
inside a define is one decision for every use of the define; to decide per use, make it a
param of the define and put the choice in each node's args.

A *candidate* is the plain spec left when every decision has a value. It is identified by
:func:`candidate_hash`: sha256 of its canonical JSON, first 12 hex digits.

Nothing a space file writes can make archforge list, allocate or loop over more than the
bounds of :mod:`archforge.search.limits` allow (decisions, assignments, values to enumerate);
each is read and checked before the work it bounds, and its error says which bound to raise.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from archforge.errors import SpecError, SpecWarning, did_you_mean
from archforge.search import limits
from archforge.search.choices import canonical_json, is_choice_point, read_choice_point, value_label
from archforge.search.decision import Decision
from archforge.search.settings import Constraints, settings_from_dict
from archforge.search.unroll import (
    PerCopy, Slot, UnrolledDocument, Unroller, count_values, fill_default_ids, map_tree, may_be_per_copy,
)
from archforge.spec.load import dotted, read_spec_text, spec_from_document
from archforge.spec.located_yaml import LocatedDocument, load_located
from archforge.spec.zoo import resolve_source
from archforge.spec.schema import Spec

PathT = tuple[Any, ...]

#: Decisions whose domain is at most this big are enumerated exactly by :meth:`Space.distinct_candidates`.
ENUMERATE_LIMIT = 5000


def candidate_hash(spec: Spec | Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a concrete spec's plain dict, first 12 hex digits."""
    data = spec.to_dict() if isinstance(spec, Spec) else dict(spec)
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()[:12]


@dataclass
class Candidate:
    """A concrete spec picked from a space, with the decisions that made it."""

    values: dict[str, Any]
    spec: Spec
    hash: str
    params: int | None = None
    flops: int | None = None

    @property
    def data(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def to_yaml(self) -> str:
        return self.spec.to_yaml()

    def label(self, names: Sequence[str] | None = None) -> str:
        """``name=value, ...`` for the decisions ``names`` (all by default)."""
        names = names if names is not None else list(self.values)
        return ", ".join(f"{n}={value_label(self.values[n], 24)}" for n in names if n in self.values)


#: How per-copy choice points unroll, which names the candidates' parameters and so sets their
#: hashes: 2 = a chain of one-copy repeats named like a plain repeat's copies (``stage.1``).
#: A stored run of such a space made under another naming is not resumed.
PER_COPY_NAMING = 2


class Space:
    """A parsed search space. Create one with :func:`load_space` or :func:`parse_space`."""

    def __init__(self, document: LocatedDocument, text: str, params: Mapping[str, Any] | None = None):
        self.text = text
        self.file = document.file
        data = document.data
        if data is None or not isinstance(data, dict):
            raise SpecError("a search space must be a mapping (a spec with choice points)", document.locate(()))
        self.settings = settings_from_dict(data.get("search"), document)
        #: The values given to some of the space's params (its ``search.params``, then ``params``), applied below.
        self.params: dict[str, Any] = {**self.settings.params, **(params or {})}
        if self.params:
            document = _with_param_values(document, self.params)
            data = document.data
        self.document = document
        self.decisions: dict[str, Decision] = {}
        body = {k: v for k, v in data.items() if k != "search"}
        unroller = Unroller(document, self.decisions, self._register)
        self.template = unroller.unroll(self._walk(body, ()))
        self._index_maps = unroller.index_maps
        self._template_values = count_values(self.template)
        self.name = body.get("name") if isinstance(body.get("name"), str) else "space"
        self._check_size()
        self._check_structure()

    # -- parsing ---------------------------------------------------------------
    def error(self, message: str, path: PathT, *, key: bool = False) -> SpecError:
        return SpecError(message, self.document.locate(path, key=key))

    def _walk(self, value: Any, path: PathT) -> Any:
        """The template: ``value`` with each choice point replaced by the :class:`Slot` of its decision."""
        if isinstance(value, dict):
            if not _is_name_mapping(path) and is_choice_point(value):
                return self._choice_point(value, path)
            return {k: self._walk(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v, path + (i,)) for i, v in enumerate(value)]
        return value

    def _choice_point(self, written: dict[str, Any], path: PathT) -> Slot | PerCopy:
        if len(path) >= 3 and path[-1] == "id" and path[-3] == "nodes":
            # Ids name the parameters; a choice of names is the same network under other names and hashes.
            raise self.error("a node's id cannot be a choice point: choose its block or args instead", path)
        point = read_choice_point(written, self.document, path)
        decision = Decision.of(point, point.label or self._default_name(path), self.document.locate(path))
        if point.per_copy:
            if not may_be_per_copy(path):
                raise self.error("'per_copy' applies to a choice point in the block or args of a node with a repeat",
                                 path + ("per_copy",), key=True)
            return PerCopy(decision, path)
        return Slot(self._register(decision, path))

    def _register(self, decision: Decision, path: PathT) -> str:
        """Add ``decision`` (or join the one of the same label); its name."""
        existing = self.decisions.get(decision.name)
        if existing is None:
            if len(self.decisions) >= limits.MAX_DECISIONS:
                raise self.error(f"more than {limits.bound_text('MAX_DECISIONS')} decisions: share decisions through labels, "
                                 "or raise the bound", path)
            self.decisions[decision.name] = decision
            return decision.name
        if decision.label is None or existing.label != decision.label:
            raise self.error(f"decision name '{decision.name}' is already used at {existing.locations[0]}: give one of them a 'label'", path)
        if not existing.same_domain(decision):
            raise self.error(f"label '{decision.label}' is shared with {existing.locations[0]}, which offers other values "
                             f"({existing.describe()})", path)
        existing.locations.extend(decision.locations)
        return existing.name

    def _default_name(self, path: PathT) -> str:
        """The name of an unlabelled decision: where it stands (``stem.channels``, ``unit.conv1.kernel``, ``width``)."""
        data = self.document.data
        parts: list[str] = []
        rest = list(path)
        if rest[:1] == ["params"] and len(rest) >= 2:
            parts, rest = [str(rest[1])], rest[2:]
        elif rest[:1] == ["define"] and len(rest) >= 3 and rest[2] == "params":
            parts, rest = [f"{rest[1]}.{rest[3]}" if len(rest) > 3 else str(rest[1])], rest[4:]
        elif rest[:1] == ["define"] and len(rest) >= 4 and rest[2] == "nodes":
            parts, rest = [str(rest[1]), _node_label(data["define"][rest[1]]["nodes"][rest[3]], rest[3])], rest[4:]
        elif rest[:1] == ["nodes"] and len(rest) >= 2:
            parts, rest = [_node_label(data["nodes"][rest[1]], rest[1])], rest[2:]
        if rest[:1] == ["args"]:
            rest = rest[1:]
        return dotted((*parts, *rest)) or "value"

    # -- checks ------------------------------------------------------------------
    def _check_size(self) -> None:
        """Refuse a space with more than MAX_ASSIGNMENTS assignments (multiplied out, never listed)."""
        total = 1
        for d in self.decisions.values():
            total *= d.size or 1
            if total > limits.MAX_ASSIGNMENTS:
                raise SpecError(f"the space has more than {limits.bound_text('MAX_ASSIGNMENTS')} decision assignments "
                                f"(at decision '{d.name}'): share decisions through labels, or raise the bound", d.locations[0])

    def with_params(self, values: Mapping[str, Any]) -> "Space":
        """This space with some of its top-level ``params`` given other values (``search.params``, ``--param``).

        The space is read again with those values, so that everything that depends on them
        (a per-copy ``repeat: $depth``, the decisions) follows; errors point at the param's
        line. Only a param the space declares can be set, not one that is a decision, and not to
        a choice point. The fingerprint stays that of the text: the values are search settings,
        stored with the run (and part of its result key).
        """
        if not values or all(self.params.get(k, _UNSET) == v for k, v in values.items()):
            return self
        return Space(load_located(self.text, self.file), self.text, {**self.params, **values})

    def _check_structure(self) -> None:
        """Validate the spec structure once, with the first value of every decision."""
        self.concretize({name: d.first() for name, d in self.decisions.items()})

    # -- candidates --------------------------------------------------------------
    @property
    def size(self) -> int | None:
        """Number of decision assignments (the grid); ``None`` when a decision is continuous."""
        total = 1
        for d in self.decisions.values():
            if d.size is None:
                return None
            total *= d.size
        return total

    @property
    def fingerprint(self) -> str:
        """sha256 of the space file's text (and, for a space with per-copy choice points, of how
        they unroll: :data:`PER_COPY_NAMING`), first 16 hex digits."""
        prefix = f"per-copy naming {PER_COPY_NAMING}\n" if self._index_maps else ""
        return hashlib.sha256((prefix + self.text).encode("utf-8")).hexdigest()[:16]

    def concretize(self, values: Mapping[str, Any]) -> Candidate:
        """The candidate for decision ``values`` (every decision needs one)."""
        missing = [n for n in self.decisions if n not in values]
        if missing:
            raise KeyError(f"no value for decision(s) {', '.join(missing)}")
        data = map_tree(self.template, lambda v: copy.deepcopy(values[v.name]) if isinstance(v, Slot) else v)
        fill_default_ids(data)
        spec = spec_from_document(UnrolledDocument(data, self.document, self._index_maps))
        return Candidate(values={n: values[n] for n in self.decisions}, spec=spec, hash=candidate_hash(spec))

    def assignments(self) -> Iterator[dict[str, Any]]:
        """Every decision assignment, in grid order (finite spaces only)."""
        names = list(self.decisions)
        domains = [self.decisions[n].values() for n in names]
        for combo in itertools.product(*domains):
            yield dict(zip(names, combo))

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """A value for every decision, drawn from ``rng``."""
        return {name: d.sample(rng) for name, d in self.decisions.items()}

    def distributions(self) -> dict[str, Any]:
        """The Optuna distribution of every decision, by name."""
        return {name: d.distribution() for name, d in self.decisions.items()}

    def encode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Decision values as Optuna stores them."""
        return {name: self.decisions[name].encode(v) for name, v in values.items()}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Decision values from the params Optuna stored."""
        return {name: self.decisions[name].decode(params[name]) for name in self.decisions}

    def distinct_candidates(self, limit: int = ENUMERATE_LIMIT) -> list[Candidate] | None:
        """Every distinct candidate (first assignment per hash), or ``None`` for an infinite or too large space.

        Too large: more than ``limit`` assignments, or more than ``archforge.search.limits.MAX_ENUMERATION_WORK``
        assignments × values of the space to concretise.
        """
        size = self.size
        if size is None or size > limit or size * self._template_values > limits.MAX_ENUMERATION_WORK:
            return None
        seen: dict[str, Candidate] = {}
        for values in self.assignments():
            candidate = self.concretize(values)
            seen.setdefault(candidate.hash, candidate)
        return list(seen.values())

    def candidate_pool(self, limit: int, seed: int) -> tuple[list[Candidate], bool]:
        """Candidates to score or rank: every distinct one of a space with at most ``limit``, else a sample
        of up to ``limit`` drawn with ``seed``; and whether it is a sample."""
        every = self.distinct_candidates(limit=limit)
        if every is not None:
            return every, False
        return self.draw_distinct(random.Random(seed), limit, draws_each=20), True

    def draw_distinct(self, rng: random.Random, wanted: int, *, draws_each: int) -> list[Candidate]:
        """Up to ``wanted`` distinct candidates drawn from ``rng``, in at most ``wanted × draws_each`` draws
        (bounded: a space with fewer distinct candidates than wanted ends the loop)."""
        seen: dict[str, Candidate] = {}
        for _ in range(wanted * draws_each):
            candidate = self.concretize(self.sample(rng))
            seen.setdefault(candidate.hash, candidate)
            if len(seen) >= wanted:
                break
        return list(seen.values())

    def passing(self, candidates: Sequence[Candidate], constraints: Constraints | None = None) -> tuple[list[Candidate], int]:
        """The ``candidates`` :meth:`check` accepts, in order, and how many it rejected (its spec warnings silenced:
        they are a space author's news, shown by ``archforge space``, not once per candidate)."""
        kept: list[Candidate] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            for candidate in candidates:
                if self.check(candidate, constraints) is None:
                    kept.append(candidate)
        return kept, len(candidates) - len(kept)

    def check(self, candidate: Candidate, constraints: Constraints | None = None, *, registry: Any = None) -> str | None:
        """Why ``candidate`` is rejected before training (shape checker, then constraints), or ``None``.

        Fills ``candidate.params`` and ``candidate.flops`` when constraints need them.
        """
        from archforge.builder import summarize
        from archforge.graph import compile_graph

        constraints = constraints if constraints is not None else self.settings.constraints
        try:
            if constraints.active():
                summary = summarize(candidate.spec, registry=registry)
                candidate.params, candidate.flops = summary.params, summary.flops
            else:
                compile_graph(candidate.spec, registry)
        except SpecError as exc:
            return exc.format()
        if constraints.active():
            return constraints.violation(candidate.params or 0, candidate.flops or 0)
        return None

    def __repr__(self) -> str:
        return f"Space({self.name!r}, {len(self.decisions)} decisions, size={self.size})"


_UNSET = object()


def _with_param_values(document: LocatedDocument, values: Mapping[str, Any]) -> LocatedDocument:
    """``document`` with some of its top-level params replaced (see :meth:`Space.with_params`)."""
    data = document.data
    declared = data.get("params") if isinstance(data.get("params"), dict) else {}
    for name, value in values.items():
        where = document.locate(("params", name) if name in declared else ("params",))
        if name not in declared:
            known = f"; its params are {', '.join(map(str, declared))}" if declared else "; it declares none"
            raise SpecError(f"params.{name} (search.params, --param): the space has no param '{name}' to set"
                            f"{did_you_mean(str(name), declared)}{known}", where)
        if isinstance(declared[name], dict) and is_choice_point(declared[name]):
            raise SpecError(f"params.{name} (search.params, --param) is a decision of the space (a choice point): it "
                            "cannot be set to one value", where)
        if isinstance(value, dict) and is_choice_point(value):
            raise SpecError(f"params.{name} (search.params, --param): a value given to a param is one value, not a "
                            "choice point", where)
    return dataclasses.replace(document, data={**data, "params": {**declared, **copy.deepcopy(dict(values))}})


def _is_name_mapping(path: PathT) -> bool:
    """Mappings whose keys are names (params, args): never a choice point themselves."""
    if path in (("params",),):
        return True
    if len(path) == 3 and path[0] == "define" and path[2] == "params":
        return True
    return bool(path) and path[-1] == "args"


def _node_label(node: Any, index: int) -> str:
    node_id = node.get("id") if isinstance(node, dict) else None
    return node_id if isinstance(node_id, str) else f"nodes[{index}]"


def parse_space(text: str, file: str = "<space>") -> Space:
    """Parse a search space given as YAML text; errors are :class:`SpecError` with file:line:col."""
    return Space(load_located(text, file), text)


def load_space(source: str | os.PathLike[str] | Space) -> Space:
    """Read a search space file (a spec with choice points and an optional ``search:`` section).

    ``source`` is a path, or the name of a bundled search space (``"placement_mnist"``);
    how one is told from the other is the rule of :mod:`archforge.spec.zoo`.
    """
    if isinstance(source, Space):
        return source
    path = Path(resolve_source(source, "search space"))
    text = read_spec_text(path, "search space")
    return parse_space(text, file=str(path))
