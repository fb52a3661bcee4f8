"""Expansion: a :class:`Spec` (params, defines, repeats) becomes a flat list of block instances.

Every node of the spec gets a *handle*, its module path (``local.3.attn``). A plain
block node becomes a :class:`GraphNode` under its handle; a define or a ``repeat``
becomes an *alias* from its handle to the handle of whatever produces its output, so
that other nodes can refer to it before or after it is expanded.

Along the way every name and value is checked where it is written: ids that the
generated ``forward`` could not use (keywords, a top-level ``self``, attributes of torch
modules), block args of the wrong kind (see :mod:`archforge.graph.strict`), params that
an expression could not tell from a literal, and the bounds below, each of which its
error message names.
"""

from __future__ import annotations

import functools
import keyword
import re
from typing import Any

from pydantic import ValidationError

from archforge.errors import PLUGIN_FAULTS, Location, PluginError, SpecError, SpecWarning, describe_exception, did_you_mean
from archforge.graph.model import INPUT, GraphNode
from archforge.graph.strict import strictness_problem
from archforge.registry import Registry
from archforge.spec.expressions import ExpressionError, resolve_value
from archforge.spec.load import dotted, short_value, validation_error
from archforge.spec.node_ids import default_node_id
from archforge.spec.schema import NodeSpec, Spec, is_block_name

MAX_REPEAT = 10_000
#: Name under which a repeated node's args see the copy number (0-based).
REPEAT_INDEX = "index"
#: Nodes (and define instances) a spec may expand to. The largest reference model has a few hundred;
#: every node is built twice (once on ``meta``, once for real), so 10^5 nodes took minutes.
MAX_NODES = 10_000
#: How deep defines may use defines: each level is a few Python frames of expansion.
MAX_DEFINE_DEPTH = 50
#: Names an expression reads as literals, so a param cannot take them.
RESERVED_PARAMS = frozenset({"true", "false", "True", "False", "None"})
_INDEX_NAME = re.compile(rf"(?<![A-Za-z0-9_$]){REPEAT_INDEX}(?![A-Za-z0-9_])|\${REPEAT_INDEX}(?![A-Za-z0-9_])")


def _mentions_index(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("$") and bool(_INDEX_NAME.search(value))
    if isinstance(value, list):
        return any(_mentions_index(item) for item in value)
    if isinstance(value, dict):
        return any(_mentions_index(item) for item in value.values())
    return False


@functools.cache
def _module_attributes(top_level: bool) -> frozenset[str]:
    """Names a node id cannot take: the builder installs nodes as submodules of an ``fx.GraphModule``
    (top level) and of plain ``nn.Module``s, where ``forward``, ``train``, ``graph`` ... already mean something."""
    from torch import fx, nn

    names = dir(nn.Module())
    if top_level:
        names += dir(fx.GraphModule(nn.Module(), fx.Graph()))
    return frozenset(names)


class Expansion:
    """The result: graph nodes in expansion order, and aliases between handles."""

    def __init__(self) -> None:
        self.nodes: dict[str, GraphNode] = {}
        self.aliases: dict[str, str] = {}
        self.warnings: list[SpecWarning] = []
        self.alias_paths: dict[str, tuple[str, Location]] = {}
        self.output: str = INPUT


def expand(spec: Spec, registry: Registry) -> Expansion:
    """Resolve params and expand defines and repeats; see the module docstring."""
    try:
        return _Expander(spec, registry).run()
    except RecursionError:  # a safety net: MAX_DEFINE_DEPTH keeps specs well inside Python's stack
        raise SpecError("the spec nests too deeply to expand", spec.document.locate(())) from None


class _Expander:
    def __init__(self, spec: Spec, registry: Registry):
        self.spec = spec
        self.doc = spec.document
        self.registry = registry
        self.result = Expansion()
        self.instances = 0

    def error(self, message: str, path: tuple[Any, ...], node: str | None = None, *, key: bool = False) -> SpecError:
        return SpecError(message, self.doc.locate(path, key=key), node)

    def run(self) -> Expansion:
        self.check_names()
        params: dict[str, Any] = {}
        for name, value in self.spec.params.items():  # a param may use the ones before it
            params[name] = self.resolve(value, params, ("params", name), None, f" in param '{name}'")
        self.global_params = params
        self.result.output = self.expand_list(
            self.spec.nodes, ("nodes",), params, ["input"], [INPUT], "", "", (), self.spec.output, ("output",), None
        )
        return self.result

    def check_names(self) -> None:
        """Params that expressions could not tell from a literal, and define inputs given twice."""
        sections = [(("params",), self.spec.params)]
        sections += [(("define", name, "params"), define.params) for name, define in self.spec.define.items()]
        for path, params in sections:
            for key in params:
                if key in RESERVED_PARAMS:
                    raise self.error(f"param name '{key}' is reserved (a literal in expressions): choose another name", path + (key,), key=True)
        for name in self.spec.define:
            entry = self.registry.blocks.get(name)
            if entry is not None:  # the define wins over the block of the same short name: say so once, at the define
                self.result.warnings.append(SpecWarning(
                    f"define '{name}' hides the block '{name}' (from '{entry.plugin.distribution}'): nodes writing '{name}' get the define; "
                    f"rename the define, or write '{entry.qualified_name}' for the block",
                    self.doc.locate(("define", name), key=True),
                ))
        for name, define in self.spec.define.items():
            seen: set[str] = set()
            for j, input_name in enumerate(define.inputs):
                if input_name in seen:
                    raise self.error(f"input '{input_name}' is listed twice in define '{name}'", ("define", name, "inputs", j))
                seen.add(input_name)

    def resolve(self, value: Any, params: dict[str, Any], path: tuple[Any, ...], node: str | None, where: str = "") -> Any:
        try:
            return resolve_value(value, params)
        except ExpressionError as exc:
            where = f" in node '{node}'" if node else where
            raise self.error(f"{exc.message}{where}{exc.hint}", path, node) from None

    def expand_list(
        self,
        node_specs: list[NodeSpec],
        yaml_path: tuple[Any, ...],
        params: dict[str, Any],
        input_names: list[str],
        input_handles: list[str],
        module_prefix: str,
        display_prefix: str,
        stack: tuple[str, ...],
        output_id: str | None,
        output_path: tuple[Any, ...],
        init: str | None,
    ) -> str:
        """Expand one list of nodes (the top level or a define's body); return the output handle.

        ``init`` is the initialisation the caller of a define set (None: none), inherited by the
        nodes of the list that set none themselves.
        """
        local: dict[str, str] = dict(zip(input_names, input_handles))
        ids: list[str] = []
        for i, node_spec in enumerate(node_specs):
            node_id = node_spec.id or default_node_id(node_spec.block, i)
            if node_id in local:
                what = "an input name" if node_id in input_names else "already used by another node"
                raise self.error(f"duplicate id '{node_id}': {what} in this list", yaml_path + (i, "id"), display_prefix + node_id)
            if keyword.iskeyword(node_id) or (node_id == "self" and not module_prefix):
                # The builder's generated forward reads `self.<id>`: `self.class` is a SyntaxError, and a
                # top-level `self` becomes a local variable that hides the module itself.
                what = "a Python keyword" if node_id != "self" else "the name of the module in its generated forward"
                raise self.error(
                    f"id '{node_id}' is {what} in node '{display_prefix + node_id}': choose another id (e.g. '{node_id}_')",
                    yaml_path + (i, "id"), display_prefix + node_id,
                )
            if node_id in _module_attributes(top_level=not module_prefix):
                raise self.error(
                    f"id '{node_id}' is reserved (an attribute of torch modules) in node '{display_prefix + node_id}': choose another id",
                    yaml_path + (i, "id"), display_prefix + node_id,
                )
            local[node_id] = module_prefix + node_id
            ids.append(node_id)

        previous = input_handles[0]
        # For each repeated node of this list: the id its copies are named after and the next copy number.
        series: dict[str, list[Any]] = {}
        for i, (node_spec, node_id) in enumerate(zip(node_specs, ids)):
            path = yaml_path + (i,)
            handle, display = module_prefix + node_id, display_prefix + node_id
            inputs = self.input_handles(node_spec, local, previous, path, display)
            block = self.block_name(node_spec, params, path, display)
            count = self.repeat_count(node_spec, params, path, display)
            node_init = node_spec.init or init
            if count is None:
                if node_spec.continues is not None:
                    raise self.error(f"node '{display}' continues '{node_spec.continues}' but has no 'repeat': only repeated "
                                     "copies can be numbered on", path + ("continues",), display)
                self.instantiate(block, node_spec, path, params, inputs, handle, display, stack, node_init)
            else:
                if len(inputs) != 1:
                    raise self.error(f"node '{display}' repeats a block with {len(inputs)} inputs; a repeat chains its copies, so it needs exactly one", path + ("repeat",), display)
                if REPEAT_INDEX in params:
                    self.check_index_not_hidden(node_spec, path, display)
                counter = self.continued_series(node_spec, series, ids[:i], path, display) or [node_id, 0]
                series[node_id] = counter
                name, start = counter
                current = inputs
                for k in range(count):
                    # Each copy's args see `index`, its position in the chain: `stride: "${2 if index == 0 else 1}"`.
                    scope = {**params, REPEAT_INDEX: k}
                    copy = start + k
                    current = [self.instantiate(block, node_spec, path, scope, current, f"{module_prefix}{name}.{copy}",
                                                f"{display_prefix}{name}[{copy}]", stack, node_init)]
                counter[1] = start + count
                self.alias(handle, current[0], display, path)
            previous = handle

        output = output_id if output_id is not None else ids[-1]
        if output not in local:
            if output_path[0] == "define":  # name the define and the instance that expanded it
                instance = display_prefix.rstrip(".")
                raise self.error(
                    f"unknown output '{output}' of define '{output_path[1]}' in node '{instance}'{did_you_mean(output, [*input_names, *ids])}",
                    output_path, instance,
                )
            raise self.error(f"unknown output '{output}'{did_you_mean(output, ids)}", output_path, None)
        return local[output]

    def input_handles(self, node_spec: NodeSpec, local: dict[str, str], previous: str, path: tuple[Any, ...], display: str) -> list[str]:
        if node_spec.in_ is None:
            return [previous]
        refs = [node_spec.in_] if isinstance(node_spec.in_, str) else node_spec.in_
        if not refs:
            raise self.error(f"node '{display}' has an empty 'in' list", path + ("in",), display)
        handles = []
        for j, ref in enumerate(refs):
            if ref not in local:
                ref_path = path + ("in",) if isinstance(node_spec.in_, str) else path + ("in", j)
                raise self.error(f"unknown input '{ref}' in node '{display}'{did_you_mean(ref, local)}", ref_path, display)
            handles.append(local[ref])
        return handles

    def block_name(self, node_spec: NodeSpec, params: dict[str, Any], path: tuple[Any, ...], display: str) -> str:
        block = self.resolve(node_spec.block, params, path + ("block",), display)
        if not is_block_name(block):
            raise self.error(f"block of node '{display}' must be a block name, got {block!r}", path + ("block",), display)
        return block

    def repeat_count(self, node_spec: NodeSpec, params: dict[str, Any], path: tuple[Any, ...], display: str) -> int | None:
        if node_spec.repeat is None:
            return None
        count = self.resolve(node_spec.repeat, params, path + ("repeat",), display)
        if isinstance(count, float) and count.is_integer():
            count = int(count)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_REPEAT:
            bound = " (archforge.graph.expand.MAX_REPEAT; raise it there if this is intended)" if isinstance(count, int) and count > MAX_REPEAT else ""
            raise self.error(f"repeat of node '{display}' must be an integer from 0 to {MAX_REPEAT}, got {short_value(count)}{bound}", path + ("repeat",), display)
        return count

    def continued_series(self, node_spec: NodeSpec, series: dict[str, list[Any]], earlier: list[str],
                         path: tuple[Any, ...], display: str) -> list[Any] | None:
        """The numbering a ``continues:`` node carries on (shared with the node it continues), or None."""
        target = node_spec.continues
        if target is None:
            return None
        if target not in series:
            if target in earlier:
                why = f"'{target}' is not repeated"
            else:
                why = f"no earlier repeated node of this list is called '{target}'{did_you_mean(target, list(series))}"
            raise self.error(f"node '{display}' continues '{target}': {why}", path + ("continues",), display)
        return series[target]

    def check_index_not_hidden(self, node_spec: NodeSpec, path: tuple[Any, ...], display: str) -> None:
        # Inside a repeated node's args `index` is the copy number; a param of that name would silently
        # stop meaning what it says there.
        for key, value in node_spec.args.items():
            if _mentions_index(value):
                raise self.error(
                    f"'{REPEAT_INDEX}' in the args of repeated node '{display}' is the copy number, which hides the param "
                    f"'{REPEAT_INDEX}': rename the param",
                    path + ("args", key), display,
                )

    def alias(self, handle: str, target: str, display: str, path: tuple[Any, ...]) -> None:
        self.result.aliases[handle] = target
        self.result.alias_paths[handle] = (display, self.doc.locate(path))

    def instantiate(
        self,
        block: str,
        node_spec: NodeSpec,
        path: tuple[Any, ...],
        params: dict[str, Any],
        inputs: list[str],
        handle: str,
        display: str,
        stack: tuple[str, ...],
        init: str | None,
    ) -> str:
        # Every instance counts, not only blocks: a define that passes its input through makes
        # no node, yet repeats of repeats of it would otherwise expand without bound.
        self.instances += 1
        if self.instances > MAX_NODES:
            raise self.error(f"the spec expands to more than {MAX_NODES:,} nodes (archforge.graph.expand.MAX_NODES; raise it there if this is intended)", path, display)
        if block in self.spec.define:
            return self.instantiate_define(block, node_spec, path, params, inputs, handle, display, stack, init)
        try:
            entry = self.registry.block(block)
        except PluginError as exc:
            message = str(exc)
            # a short name the registry does not know gets a did-you-mean; a qualified or ambiguous one keeps the registry's word
            if ":" not in block and block not in self.registry.conflicts and self.registry.blocks:
                message = f"unknown block '{block}' in node '{display}'{did_you_mean(block, [*self.registry.blocks, *self.spec.define])}"
            raise self.error(message, path + ("block",), display) from None

        args = {key: self.resolve(value, params, path + ("args", key), display) for key, value in node_spec.args.items()}
        problem = strictness_problem(entry.block.Args, args)
        if problem is not None:
            where = path + ("args",) + problem.path
            raise self.error(f"{dotted(where)}: {problem.message} in node '{display}'{problem.hint}", where, display)
        try:
            validated = entry.block.Args.model_validate(args)
        except ValidationError as exc:
            raise validation_error(exc, self.doc, path + ("args",), node=display, model=entry.block.Args, block_args=True) from None
        except PLUGIN_FAULTS as exc:  # a plugin's own validator failing: the plugin's bug, said so
            raise self.error(
                f"block '{block}' from plugin '{entry.plugin.distribution}' failed to check the args of node '{display}': "
                f"{describe_exception(exc)}",
                path + ("args",), display,
            ) from None

        arity = entry.block.inputs
        if arity is None and len(inputs) < 2:
            where = path + ("in",) if node_spec.in_ is not None else path
            raise self.error(f"block '{block}' in node '{display}' merges two or more inputs, got {len(inputs)}: list them in 'in'", where, display)
        if arity is not None and len(inputs) != arity:
            raise self.error(f"block '{block}' in node '{display}' takes {arity} input{'s' if arity > 1 else ''}, got {len(inputs)}", path + ("in",), display)

        if len(self.result.nodes) >= MAX_NODES:
            raise self.error(f"the spec expands to more than {MAX_NODES:,} nodes (archforge.graph.expand.MAX_NODES; raise it there if this is intended)", path, display)
        self.result.nodes[handle] = GraphNode(
            name=handle, path=display, entry=entry, args=validated, inputs=list(inputs),
            location=self.doc.locate(path), order=len(self.result.nodes), init=init, defines=stack,
        )
        return handle

    def instantiate_define(
        self,
        name: str,
        node_spec: NodeSpec,
        path: tuple[Any, ...],
        params: dict[str, Any],
        inputs: list[str],
        handle: str,
        display: str,
        stack: tuple[str, ...],
        init: str | None,
    ) -> str:
        if name in stack:
            chain = " → ".join([*stack[stack.index(name):], name])
            raise self.error(f"define '{name}' uses itself ({chain})", path + ("block",), display)
        if len(stack) >= MAX_DEFINE_DEPTH:
            raise self.error(
                f"defines nested more than {MAX_DEFINE_DEPTH} deep in node '{display}' "
                "(archforge.graph.expand.MAX_DEFINE_DEPTH; raise it there if this is intended)",
                path + ("block",), display,
            )
        define = self.spec.define[name]
        for key in node_spec.args:
            if key not in define.params:
                raise self.error(
                    f"unknown param '{key}' for define '{name}' in node '{display}'{did_you_mean(str(key), define.params)}",
                    path + ("args", key), display, key=True,
                )
        if len(inputs) != len(define.inputs):
            raise self.error(f"define '{name}' takes {len(define.inputs)} input(s) ({', '.join(define.inputs)}), node '{display}' gives {len(inputs)}", path + ("in",), display)
        # Lexical scope: the body sees the spec's params and its own, never the caller's.
        inner = dict(self.global_params)
        for key, default in define.params.items():
            if key in node_spec.args:
                inner[key] = self.resolve(node_spec.args[key], params, path + ("args", key), display)
            else:
                inner[key] = self.resolve(default, inner, ("define", name, "params", key), display)
        output = self.expand_list(
            define.nodes, ("define", name, "nodes"), inner, define.inputs, inputs,
            handle + ".", display + ".", stack + (name,), define.output, ("define", name, "output"), init,
        )
        self.alias(handle, output, display, path)
        return handle
