"""Zero-cost proxies: scores of an untrained network that predict how well it will train.

synflow (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
conserving synaptic flow"; used for NAS by Abdelfattah et al. 2021, "Zero-cost proxies
for lightweight NAS")
    Replace every parameter by its absolute value, feed one all-ones input (no data),
    and let ``R = sum(f(1))``. The score is ``sum over all parameters θ of |θ ⊙ ∂R/∂θ|``.
    Computed in float64 (R is a product over layers and overflows float32 for deep nets).
    Batch norm is in eval mode with its running statistics reset to mean 0, variance 1,
    so it is the affine map ``x / sqrt(1 + eps) · |γ| + |β|``: the statistics of any
    batch have no influence, as in the proxy's NAS use, where batch norm is disabled.
    Dropout is off (eval mode). All parameters count, biases and norm affine ones too.

naswot (Mellor et al. 2021, "Neural architecture search without training")
    For a mini-batch of ``B`` training images, each sample gets a binary code: for every
    unit of every rectified activation, whether it is active. With ``N_A`` units,
    ``K_H[i, j] = N_A - hamming(c_i, c_j)`` and the score is ``log |det K_H|``. Networks
    whose inputs fall into more distinct linear regions score higher.

    The codes are taken at the input of each activation *module*: ``ReLU``, ``ReLU6``,
    ``LeakyReLU``, ``PReLU``, ``RReLU`` (code: pre-activation > 0, exactly ReLU's on/off
    pattern), and the smooth or gated relatives ``GELU``, ``SiLU``, ``Mish``, ``ELU``,
    ``CELU``, ``SELU``, ``Hardswish``, ``Softplus`` (code: pre-activation > 0, the side of
    the gate the unit is on; this is how the proxy is applied to GELU transformers).
    Saturating ``Sigmoid``/``Tanh`` and activations called functionally inside a
    block's forward are not seen. The network runs in training mode (batch norm uses
    the batch's statistics, as in the paper's code) with dropout off, without
    gradients, in float32; the kernel is accumulated in float64.

Both return ``-inf`` for a degenerate network (no parameters reached by the output,
no activations, identical codes, a non-finite score), and raise :class:`TrialError`
when the spec does not build or run, or does not fit the input.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from archforge.builder import build
from archforge.builder.network import SpecLike, as_graph
from archforge.data.split import DataSplit
from archforge.errors import SpecError
from archforge.graph import Graph
from archforge.registry import Registry
from archforge.search.evaluate import TrialError
from archforge.spec.schema import InitMode

#: Activation modules whose input sign gives naswot's binary code (see the module docstring).
CODED_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU,
    nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.CELU, nn.SELU, nn.Hardswish, nn.Softplus,
)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _graph(spec: SpecLike, input_shape: Sequence[int], registry: Registry | None) -> Graph:
    try:
        graph = as_graph(spec, registry)
    except SpecError as exc:
        raise TrialError(str(exc), kind="spec") from None
    if tuple(graph.input.dims()) != tuple(input_shape):
        raise TrialError(f"the spec's input shape {list(graph.input.dims())} does not match the input shape "
                         f"{list(input_shape)}", kind="shape")
    return graph


def _build(graph: Graph, seed: int, dtype: torch.dtype, init: InitMode | None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # reproducible weights without touching the caller's RNG
        torch.manual_seed(seed)
        try:
            return build(graph, dtype=dtype, init=init).to(dtype)
        except SpecError as exc:
            raise TrialError(str(exc), kind="spec") from None
        except Exception as exc:
            raise TrialError(f"building the network raised {type(exc).__name__}: {exc}") from None


def _run(fn: Any, what: str) -> Any:
    failure: TrialError | None = None
    try:
        return fn()
    except TrialError:
        raise
    except Exception as exc:
        failure = TrialError(f"{what}: the network raised {type(exc).__name__}: {exc}",
                             kind="oom" if "out of memory" in str(exc).lower() else "error")
    raise failure


def synflow(spec: SpecLike, input_shape: Sequence[int], *, seed: int = 0, registry: Registry | None = None,
            init: InitMode | None = None) -> float:
    """The synflow score of the untrained network of ``spec`` (see the module docstring); ``-inf`` if degenerate.

    ``init``: the initial weights, as :func:`archforge.build` takes it (``None``: the spec's own).
    """
    graph = _graph(spec, input_shape, registry)
    model = _build(graph, seed, torch.float64, init)
    model.eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats and module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
        for p in model.parameters():
            p.abs_()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return -math.inf

    def score() -> float:
        x = torch.ones((1, *input_shape), dtype=torch.float64)
        output = model(x)
        total = output.sum()
        if not total.requires_grad:
            return -math.inf
        grads = torch.autograd.grad(total, params, allow_unused=True)
        if all(g is None for g in grads):
            return -math.inf
        value = sum(float((p.detach() * g).abs().sum()) for p, g in zip(params, grads) if g is not None)
        return value if math.isfinite(value) else -math.inf

    return _run(score, "synflow")


def naswot(spec: SpecLike, data: DataSplit, batch: int = 64, seed: int = 0, *, registry: Registry | None = None,
           init: InitMode | None = None) -> float:
    """The NASWOT score ``log|K_H|`` of the untrained network on ``batch`` training images; ``-inf`` if degenerate.

    ``init``: the initial weights, as :func:`archforge.build` takes it (``None``: the spec's own).
    """
    graph = _graph(spec, data.input_shape, registry)
    model = _build(graph, seed, torch.float32, init)
    n = min(batch, len(data.train_y))
    if n < 1:
        return -math.inf
    model.train(n > 1)  # batch statistics need two samples or more
    for module in model.modules():
        if isinstance(module, _DROPOUT):
            module.eval()
    generator = torch.Generator().manual_seed(seed)
    x = data.train_x[torch.randperm(len(data.train_y), generator=generator)[:n]].float()

    kernel = torch.zeros((n, n), dtype=torch.float64)
    units = 0

    def record(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        nonlocal kernel, units
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        codes = (inputs[0].detach() > 0).reshape(inputs[0].shape[0], -1).to(torch.float64)
        kernel = kernel + codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T  # = N_A - Hamming distance
        units += codes.shape[1]

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, CODED_ACTIVATIONS)]
    try:
        if not handles:
            return -math.inf

        def forward() -> None:
            with torch.no_grad():
                model(x)

        _run(forward, "naswot")
    finally:
        for handle in handles:
            handle.remove()
    if units == 0:
        return -math.inf
    sign, logdet = torch.linalg.slogdet(kernel)
    value = float(logdet)
    return value if float(sign) > 0 and math.isfinite(value) else -math.inf
