"""Per-copy placement: the repeat of a node with per-copy choice points, unrolled into explicit copies.

On a node with a ``repeat``, a choice point marked ``per_copy: true`` is decided separately
for each copy::

    - {id: stage, block: {choice: [conv_unit, attn_unit], per_copy: true}, repeat: 3, args: {channels: 32}}

The repeat is unrolled into a chain of one-copy repeats, ``stage``, ``stage_1``,
``stage_2``, each continuing the series of the one before it (``continues:``), with
decisions ``stage.block[0]``, ``stage.block[1]``, ``stage.block[2]``. The copies are
numbered and named as the copies of the repeat are, so parameter names are those of the
same spec without choice points (``stage.1.attn.qkv.weight``; after the copies of the node
it ``continues``, if it does), the same for every candidate, and concrete specs stay plain
specs. Whatever read ``stage`` (``in``, ``output``) reads the last copy, and each copy's
args read ``index`` = its copy number. Choice points of the node without ``per_copy`` stay
one decision shared by all copies. The repeat count must be a fixed integer (a literal or
a ``$param`` holding one). Other nodes of the list keep the id expansion would have given
them at their written place, and errors in a concrete spec point at the line of the space
file the node came from (:class:`UnrolledDocument`).

Unrolling is bounded before any copy is made: by ``archforge.search.limits.MAX_DECISIONS``
(per-copy decisions count) and ``MAX_UNROLLED_VALUES`` (values the copies add).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from archforge.errors import Location, SpecError
from archforge.search import limits
from archforge.graph.expand import REPEAT_INDEX
from archforge.search.decision import Decision
from archforge.spec.located_yaml import LocatedDocument
from archforge.spec.node_ids import default_node_id

PathT = tuple[Any, ...]
_PARAM_REFERENCE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")
#: ``index`` as an identifier inside an expression (not part of another name, not a ``$param``).
_INDEX_NAME = re.compile(rf"(?<![A-Za-z0-9_$.'\"]){REPEAT_INDEX}(?![A-Za-z0-9_'\"])")


@dataclass(frozen=True)
class Slot:
    """Where the value of decision ``name`` goes in a space's template."""

    name: str


@dataclass
class PerCopy:
    """A per-copy choice point before its node is unrolled; ``decision`` is named, not yet per copy."""

    decision: Decision
    path: PathT


@dataclass(frozen=True)
class DefaultId:
    """The id expansion would give a node without one, at its written ``index`` (its block may still be a choice)."""

    index: int


def may_be_per_copy(path: PathT) -> bool:
    """Whether a choice point at ``path`` may be ``per_copy``: in the block or args of a node (not its id, in, repeat or continues)."""
    node = _node_path(path)
    return node is not None and path[len(node)] not in ("id", "in", "repeat", "continues")


class Unroller:
    """Unrolls the nodes of a template that hold :class:`PerCopy` markers, registering one decision per copy.

    ``register(decision, path)`` adds a decision to the space and returns its name;
    ``decisions`` are those the space has so far (their number is bounded).
    """

    def __init__(self, document: LocatedDocument, decisions: Mapping[str, Decision], register: Callable[[Decision, PathT], str]):
        self.document = document
        self.decisions = decisions
        self.register = register
        self.index_maps: dict[PathT, list[int]] = {}  # per unrolled list: written index of each node
        self.unrolled = 0  # values added by unrolling, bounded by MAX_UNROLLED_VALUES

    def error(self, message: str, path: PathT, *, key: bool = False) -> SpecError:
        return SpecError(message, self.document.locate(path, key=key))

    def unroll(self, template: dict[str, Any]) -> dict[str, Any]:
        """``template`` with every per-copy node unrolled (in place); a per-copy marker left elsewhere is an error."""
        holders: list[tuple[dict[str, Any], PathT]] = []
        if isinstance(template.get("nodes"), list):
            holders.append((template, ()))
        defines = template.get("define")
        if isinstance(defines, dict):
            holders += [(d, ("define", name)) for name, d in defines.items() if isinstance(d, dict) and isinstance(d.get("nodes"), list)]
        for holder, path in holders:
            holder["nodes"], output = self._unroll_list(holder["nodes"], path + ("nodes",), holder.get("output"))
            if output is not None:
                holder["output"] = output
        leftover = find_in(template, lambda v: isinstance(v, PerCopy))
        if leftover is not None:
            raise self.error("'per_copy' applies to a choice point in the block or args of a node with a repeat",
                             leftover.path + ("per_copy",), key=True)
        return template

    def _unroll_list(self, nodes: list[Any], list_path: PathT, output: Any) -> tuple[list[Any], Any]:
        if not any(_has_per_copy(n) for n in nodes):
            return nodes, None
        ids = {n.get("id") for n in nodes if isinstance(n, dict) and isinstance(n.get("id"), str)}
        counts: dict[int, int] = {}  # written index of each per-copy node: its number of copies
        for i, node in enumerate(nodes):
            if _has_per_copy(node):
                if not isinstance(node.get("id"), str):
                    raise self.error("a node with per-copy choices needs an 'id' (its copies are named <id>, <id>_1, <id>_2, ...)",
                                     list_path + (i,))
                counts[i] = self._fixed_repeat(node, list_path + (i,))
        # whatever read a repeated node reads its last copy; the first copy keeps the node's id
        renamed = {nodes[i]["id"]: _copy_id(nodes[i]["id"], n - 1) for i, n in counts.items() if n > 1}
        for i, node in enumerate(nodes):
            if isinstance(node, dict):
                self._refuse_chosen_reference(node.get("in"), renamed, list_path + (i, "in"))
        self._refuse_chosen_reference(output, renamed, list_path[:-1] + ("output",))
        out: list[Any] = []
        index_map: list[int] = []
        for i, node in enumerate(nodes):
            if isinstance(node, dict) and "in" in node:
                node = dict(node, **{"in": _renamed_inputs(node["in"], renamed)})
            if i in counts:
                placed = self._copies(node, list_path + (i,), counts[i], ids)
            elif isinstance(node, dict) and node.get("id") is None:
                placed = [dict(node, id=DefaultId(i))]  # keep the id expansion would have given it
            else:
                placed = [node]
            out += placed
            index_map += [i] * len(placed)
        self.index_maps[list_path] = index_map
        return out, renamed.get(output) if isinstance(output, str) else None

    def _copies(self, node: dict[str, Any], path: PathT, count: int, ids: set[Any]) -> list[dict[str, Any]]:
        """The copies of a per-copy node: one-copy repeats, each continuing the series of the one before it.

        Numbered and named as the copies of the node's repeat are (``stage.0``, ``stage.1``, ...; after
        the copies of the node it ``continues``, if it does), so parameter names are the plain spec's.
        """
        self._check_bounds(node, path, count)
        node_id = node["id"]
        names = [_copy_id(node_id, k) for k in range(count)]
        for name in names[1:]:
            if name in ids:
                raise self.error(f"unrolling '{node_id}' makes a node '{name}', but that id is already used in this list", path + ("id",))
        copies = []
        for k, name in enumerate(names):
            body = map_tree(node, lambda v, k=k: Slot(self._copy_decision(v, node_id, k)) if isinstance(v, PerCopy) else v)
            if isinstance(body.get("args"), dict):  # each copy's args see `index` = k, as the repeat's copies do
                body["args"] = map_tree(body["args"], lambda v, k=k: _with_index(v, k))
            body.update(id=name, repeat=1)
            if k > 0:
                body.update({"in": names[k - 1], "continues": names[k - 1]})
            copies.append(body)
        return copies

    def _refuse_chosen_reference(self, ref: Any, renamed: Mapping[str, str], path: PathT) -> None:
        """Refuse a choice point in an ``in`` or ``output`` with an option naming an unrolled per-copy node.

        A written reference to the node is rewritten to its last copy; an option is the value of a
        decision, which stays as written, and would read the first copy (which keeps the node's id).
        """
        if isinstance(ref, Slot):
            slots = [(path, ref)]
        else:
            slots = [(path + (j,), r) for j, r in enumerate(ref) if isinstance(r, Slot)] if isinstance(ref, list) else []
        for where, slot in slots:
            decision = self.decisions[slot.name]
            for option in decision.options or ():
                for name in option if isinstance(option, list) else [option]:
                    if isinstance(name, str) and name in renamed:
                        raise self.error(
                            f"choice point '{decision.name}' offers '{name}', a node unrolled for its per-copy choices: as an "
                            f"option it would read the first copy, not the last ('{renamed[name]}'); write this reference "
                            "without a choice point", where)

    def _fixed_repeat(self, node: dict[str, Any], path: PathT) -> int:
        repeat = node.get("repeat")
        if isinstance(repeat, str) and _PARAM_REFERENCE.fullmatch(repeat):
            params = self.document.data.get("params") if isinstance(self.document.data, dict) else None
            repeat = params.get(repeat[1:]) if isinstance(params, dict) else None
        if isinstance(repeat, float) and repeat.is_integer():
            repeat = int(repeat)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise self.error("per-copy choices need a fixed 'repeat' of at least 1 (a literal integer or a $param holding one)",
                             path + ("repeat",) if "repeat" in node else path)
        return repeat

    def _check_bounds(self, node: dict[str, Any], path: PathT, count: int) -> None:
        """Refuse a repeat whose copies would exceed the decision or size bounds, before making any copy."""
        markers = 0
        stack: list[Any] = [node]
        while stack:
            value = stack.pop()
            if isinstance(value, PerCopy):
                markers += 1
            elif isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        where = path + ("repeat",) if "repeat" in node else path
        decisions = len(self.decisions) + count * markers
        if decisions > limits.MAX_DECISIONS:
            raise self.error(f"repeat {count:,} with {markers} per-copy choice point(s) makes {decisions:,} decisions, more than "
                             f"{limits.bound_text('MAX_DECISIONS')}: lower the repeat, drop per_copy, or raise the bound", where)
        self.unrolled += count * count_values(node)
        if self.unrolled > limits.MAX_UNROLLED_VALUES:
            raise self.error(f"unrolling repeat {count:,} copies the node into more than {limits.bound_text('MAX_UNROLLED_VALUES')} "
                             "values: lower the repeat, or raise the bound", where)

    def _copy_decision(self, marker: PerCopy, node_id: str, k: int) -> str:
        base = marker.decision
        decision = base.model_copy(update={"name": f"{base.name}[{k}]", "locations": list(base.locations), "copy_of": (node_id, k)})
        return self.register(decision, marker.path)


class UnrolledDocument(LocatedDocument):
    """A concrete spec's document whose locations point into the space file (through the unrolling)."""

    def __init__(self, data: Any, source: LocatedDocument, index_maps: dict[PathT, list[int]]):
        super().__init__(data=data, file=source.file, values=source.values, keys=source.keys)
        self._index_maps = index_maps

    def locate(self, path: PathT, *, key: bool = False) -> Location:
        return super().locate(self.original_path(tuple(path)), key=key)

    def original_path(self, path: PathT) -> PathT:
        """Where ``path`` of the unrolled spec is written in the space file."""
        for prefix, mapping in self._index_maps.items():
            n = len(prefix)
            if path[:n] == prefix and len(path) > n and isinstance(path[n], int) and path[n] < len(mapping):
                return prefix + (mapping[path[n]],) + path[n + 1:]
        return path


def fill_default_ids(data: dict[str, Any]) -> None:
    """Give every node marked :class:`DefaultId` the id expansion would have given it, now that its block is known."""
    lists = [data.get("nodes")]
    if isinstance(data.get("define"), dict):
        lists += [d.get("nodes") for d in data["define"].values() if isinstance(d, dict)]
    for nodes in lists:
        for node in nodes if isinstance(nodes, list) else ():
            if isinstance(node, dict) and isinstance(node.get("id"), DefaultId):
                block = node.get("block")
                if isinstance(block, str):
                    node["id"] = default_node_id(block, node["id"].index)
                else:  # no block name to take it from: the spec's own check reports the block
                    del node["id"]


def _copy_id(node_id: str, k: int) -> str:
    """The id of copy ``k`` of an unrolled node: the node's own for the first (it names the series), ``<id>_<k>`` after."""
    return node_id if k == 0 else f"{node_id}_{k}"


def _renamed_inputs(ref: Any, renamed: Mapping[str, str]) -> Any:
    """An ``in`` (one reference or a list) with each reference to a per-copy node replaced by its last copy."""
    if isinstance(ref, str):
        return renamed.get(ref, ref)
    if isinstance(ref, list):
        return [renamed.get(r, r) if isinstance(r, str) else r for r in ref]
    return ref


def _with_index(value: Any, k: int) -> Any:
    """``value`` with the repeat's ``index`` (``$index``, or ``index`` inside ``${...}``) replaced by the copy number ``k``."""
    if not isinstance(value, str) or not value.startswith("$"):
        return value
    if value == f"${REPEAT_INDEX}":
        return k
    return _INDEX_NAME.sub(str(k), value) if value.startswith("${") else value


def map_tree(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to it and then to everything inside what it returns (new mappings and lists)."""
    value = fn(value)
    if isinstance(value, dict):
        return {k: map_tree(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_tree(v, fn) for v in value]
    return value


def find_in(value: Any, predicate: Callable[[Any], bool]) -> Any:
    """The first thing in ``value`` (itself included, depth first) that ``predicate`` accepts, or ``None``."""
    if predicate(value):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        found = find_in(item, predicate)
        if found is not None:
            return found
    return None


def count_values(value: Any) -> int:
    """Scalars, mappings and lists in ``value``, each counted once."""
    if isinstance(value, dict):
        return 1 + sum(count_values(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(count_values(v) for v in value)
    return 1


def _has_per_copy(node: Any) -> bool:
    return isinstance(node, dict) and find_in(node, lambda v: isinstance(v, PerCopy)) is not None


def _node_path(path: PathT) -> PathT | None:
    if len(path) >= 3 and path[0] == "nodes" and isinstance(path[1], int):
        return path[:2]
    if len(path) >= 5 and path[0] == "define" and path[2] == "nodes" and isinstance(path[3], int):
        return path[:4]
    return None
