"""Helpers for testing blocks, for archforge's own tests and for plugin authors.

``check_block`` verifies the whole block contract in one call::

    from archforge.testing import check_block
    check_block(MyBlock, Shape.map(16, 8, 8), {"channels": 32}, expected_params=4_640)

``registry_with`` gives a registry holding the installed plugins plus some extra
blocks, so a spec using an uninstalled block can be validated and built in a test.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from archforge.builder.node import module_tensors, tensor_change
from archforge.registry import Block, Registry, Shape, hookimpl, load_registry
from archforge.registry.block import contract_problems
from archforge.registry.parameter_node import ParameterNode, parameter_node_problem


class _BlocksPlugin:
    def __init__(self, blocks: Sequence[type[Block]]):
        self.blocks = list(blocks)

    @hookimpl
    def archforge_blocks(self) -> list[type[Block]]:
        return self.blocks


def registry_with(*blocks: type[Block], name: str = "test-blocks", entry_points: bool = True) -> Registry:
    """The installed plugins (unless ``entry_points=False``) plus ``blocks`` from a plugin called ``name``."""
    return load_registry([(name, _BlocksPlugin(blocks))], entry_points=entry_points)


def _as_block(block: Block | type[Block]) -> Block:
    return block() if isinstance(block, type) else block


def _inputs(shapes: Sequence[Shape], batch: int, dtype: torch.dtype, device: Any, grad: bool) -> list[torch.Tensor]:
    return [s.example(batch, device=device, dtype=dtype).requires_grad_(grad) for s in shapes]


def _build_initialised(block: Block, block_input: Any, args: Any, device: Any, dtype: torch.dtype) -> nn.Module:
    """``build`` then ``init_weights`` under seed 0, asserting that the init changed values only."""
    torch.manual_seed(0)
    module = block.build(block_input, args, device=device, dtype=dtype)
    before = module_tensors(module)
    with torch.no_grad():
        block.init_weights(module, block_input, args)
    problem = tensor_change(before, module_tensors(module))
    assert problem is None, f"{block.name}: init_weights {problem}; it may change values only"
    return module


def check_block(
    block: Block | type[Block],
    inputs: Shape | Sequence[Shape],
    args: dict[str, Any] | None = None,
    *,
    batch: int = 2,
    expected_params: int | None = None,
    dtypes: Iterable[torch.dtype] = (torch.float32, torch.float64),
    device: torch.device | str = "cpu",
    autocast: bool = True,
    compile: bool = False,
) -> nn.Module:
    """Assert that a block keeps its contract for the given input shape(s) and args.

    Checks: the class passes the contract checks the registry applies at load (the
    assertion lists the problems); args validate; ``infer`` on the ``meta`` device
    agrees with the module's real output shape; a :class:`ParameterNode` module keeps
    that contract (static ``apply``, only ``tensor``, ``forward`` not overridden);
    ``init_weights`` (the reference initialisation, applied to every module checked here)
    changes values only (no parameter or buffer added, removed, replaced, or given another
    shape, dtype or device) and, under the same seed, gives the same values twice; forward
    and backward run in each of ``dtypes`` with finite outputs and gradients reaching the
    input; parameters land on ``device`` in the requested dtype; the parameter count equals ``expected_params`` (when given);
    under ``torch.autocast`` (bf16) the output is finite; with ``compile=True``,
    ``torch.compile(fullgraph=True)`` gives the eager output. Returns the float32 module.
    """
    problems = contract_problems(block if isinstance(block, type) else type(block))
    assert not problems, f"the registry would skip this block: {'; '.join(problems)}"
    block = _as_block(block)
    shapes = [inputs] if isinstance(inputs, Shape) else list(inputs)
    block_input: Any = shapes[0] if block.inputs == 1 else shapes
    parsed = block.Args.model_validate(args or {})
    inferred = block.infer(block_input, parsed)
    assert isinstance(inferred, Shape), f"{block.name}.infer returned {inferred!r}, not a Shape"
    expected_shape = (batch, *inferred.dims())

    meta = block.build(block_input, parsed, device="meta")
    if isinstance(meta, ParameterNode):
        problem = parameter_node_problem(meta)
        assert problem is None, f"{block.name}: the builder would refuse its module: {problem}"
    meta_out = meta(*_inputs(shapes, batch, torch.float32, "meta", False))
    assert tuple(meta_out.shape) == expected_shape, f"{block.name}: inferred {expected_shape}, meta forward gives {tuple(meta_out.shape)}"

    result: nn.Module | None = None
    for dtype in dtypes:
        module = _build_initialised(block, block_input, parsed, device, dtype)
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            assert tensor.device.type == torch.device(device).type, f"{block.name}: {name} is on {tensor.device}, not {device}"
            if tensor.is_floating_point():
                assert tensor.dtype == dtype, f"{block.name}: {name} is {tensor.dtype}, not {dtype}"
        xs = _inputs(shapes, batch, dtype, device, True)
        out = module(*xs)
        assert tuple(out.shape) == expected_shape, f"{block.name}: inferred {expected_shape}, forward gives {tuple(out.shape)}"
        assert out.dtype == dtype, f"{block.name}: output is {out.dtype} for {dtype} input"
        assert torch.isfinite(out).all(), f"{block.name}: non-finite output in {dtype}"
        (out * torch.randn_like(out)).sum().backward()
        for i, x in enumerate(xs):
            assert x.grad is not None and torch.isfinite(x.grad).all(), f"{block.name}: no finite gradient reaches input {i}"
        if dtype == torch.float32:
            result = module

    module = result if result is not None else _build_initialised(block, block_input, parsed, device, torch.float32)
    first, second = (module_tensors(_build_initialised(block, block_input, parsed, device, torch.float32)) for _ in range(2))
    for name, (tensor, *_) in first.items():  # fresh builds: the forward above has moved running statistics
        assert torch.equal(tensor, second[name][0]), f"{block.name}: init_weights is not deterministic under a seed: {name} differs"
    if expected_params is not None:
        count = sum(p.numel() for p in module.parameters())
        assert count == expected_params, f"{block.name}: {count} parameters, expected {expected_params}"

    xs = _inputs(shapes, batch, torch.float32, device, False)
    if autocast:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            out = module(*xs)
        assert tuple(out.shape) == expected_shape and torch.isfinite(out.float()).all(), f"{block.name}: bad output under bf16 autocast"
    if compile:
        module.eval()
        with torch.no_grad():
            eager = module(*xs)
            compiled = torch.compile(module, fullgraph=True, dynamic=False)(*xs)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    return module
