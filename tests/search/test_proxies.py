"""Zero-cost proxies against closed forms and constructed cases."""

import math

import pytest
import torch
from pydantic import Field

import archforge
from archforge import Block, BlockArgs
from archforge.data import DataSplit, load_dataset
from archforge.search.evaluate import TrialError
from archforge.search.proxies import naswot, synflow
from archforge.testing import registry_with


def spec(nodes: str, shape: str) -> archforge.Spec:
    return archforge.parse_spec(f"archforge: 1\nname: net\ninput: {{shape: {shape}}}\nnodes:\n{nodes}")


TWO_LINEAR = spec("  - {block: linear, args: {features: 3, bias: false}}\n  - {block: linear, args: {features: 2, bias: false}}\n", "[4]")
TWO_LINEAR_BIAS = spec("  - {block: linear, args: {features: 3}}\n  - {block: linear, args: {features: 2}}\n", "[4]")


def weights(net, seed=0):
    torch.manual_seed(seed)  # the proxy builds its network the same way: seed, then build in float64
    model = archforge.build(net, dtype=torch.float64)
    return [p.detach().abs() for p in model.parameters()]


def test_synflow_of_two_linear_layers_matches_the_closed_form():
    a, b = weights(TWO_LINEAR)  # |W1| (3, 4), |W2| (2, 3)
    ones4, ones2 = torch.ones(4, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    r = ones2 @ b @ a @ ones4  # R = 1ᵀ|W2||W1|1
    # ∂R/∂|W1|_ij = (|W2|ᵀ1)_i and ∂R/∂|W2|_ki = (|W1|1)_i, so each layer's saliencies sum to R
    by_hand = (a * (b.T @ ones2)[:, None]).sum() + (b * (a @ ones4)[None, :]).sum()
    assert by_hand.item() == pytest.approx(2 * r.item(), rel=1e-12)  # Python floats: approx does not take 0-d tensors
    assert synflow(TWO_LINEAR, (4,)) == pytest.approx(float(by_hand), rel=1e-12)


def test_synflow_with_biases_matches_the_closed_form():
    a, c, b, d = weights(TWO_LINEAR_BIAS)  # |W1|, |b1|, |W2|, |b2|
    ones4, ones2 = torch.ones(4, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    # R = 1ᵀ(|W2|(|W1|1 + |b1|) + |b2|); sum of |θ ⊙ ∂R/∂θ| over W1, b1, W2, b2:
    expected = ones2 @ b @ a @ ones4 + ones2 @ b @ c + ones2 @ b @ (a @ ones4 + c) + d.sum()
    assert synflow(TWO_LINEAR_BIAS, (4,)) == pytest.approx(float(expected), rel=1e-12)


def test_synflow_is_deterministic_ignores_signs_and_is_robust():
    conv = spec("  - {block: conv, args: {channels: 8}}\n  - {block: classifier, args: {classes: 10}}\n", "[1, 8, 8]")
    first = synflow(conv, (1, 8, 8))
    assert math.isfinite(first) and first > 0 and synflow(conv, (1, 8, 8)) == first
    assert synflow(conv, (1, 8, 8), seed=1) != first
    assert synflow(spec("  - {block: act}\n", "[4]"), (4,)) == -math.inf  # no parameters at all
    with pytest.raises(TrialError, match=r"\[1, 8, 8\].*\[1, 28, 28\]"):
        synflow(conv, (1, 28, 28))


def _split(rows):
    x = torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, 1, -1)
    y = torch.arange(len(rows)) % 2
    return DataSplit("hand", x, y, x, y, ["a", "b"], (0.0,), (1.0,))


RELU_ON_INPUT = spec("  - {block: act}\n  - {block: classifier, args: {classes: 2}}\n", "[1, 1, 3]")


def test_naswot_matches_the_hamming_kernel_by_hand():
    # codes 101 and 110: N_A = 3, Hamming distance 2, K_H = [[3, 1], [1, 3]], det 8
    assert naswot(RELU_ON_INPUT, _split([[1.0, -1.0, 2.0], [0.5, 3.0, -1.0]]), batch=2) == pytest.approx(math.log(8))
    # identical codes: K_H = [[3, 3], [3, 3]] is singular
    assert naswot(RELU_ON_INPUT, _split([[1.0, -1.0, 2.0], [0.5, -3.0, 1.0]]), batch=2) == -math.inf


class _Shift(Block):
    """Adds a constant: pushes every pre-activation the same way, making codes alike."""

    name = "shift"
    layout = "any"

    class Args(BlockArgs):
        by: float = Field(0.0)

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return _ShiftModule(args.by)


class _ShiftModule(torch.nn.Module):
    def __init__(self, by):
        super().__init__()
        self.by = by

    def forward(self, x):
        return x + self.by


def mlp(shift: float, fn: str = "relu") -> archforge.Spec:
    return spec(
        "  - {block: flatten}\n  - {block: linear, args: {features: 64}}\n"
        f"  - {{block: shift, args: {{by: {shift}}}}}\n  - {{block: act, args: {{fn: {fn}}}}}\n"
        "  - {block: linear, args: {features: 10}}\n", "[1, 8, 8]")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=300)


@pytest.fixture(scope="module")
def shift_registry():
    return registry_with(_Shift)


def test_naswot_is_higher_when_codes_are_more_distinct(digits, shift_registry):
    # The shifts are sized for torch's default linear init (pre-activations of order 1), not for
    # the reference init's std 0.02, under which a shift of 0.5 alone would turn every unit on.
    distinct = naswot(mlp(0.0), digits, batch=32, registry=shift_registry, init="pytorch")
    alike = naswot(mlp(0.5), digits, batch=32, registry=shift_registry, init="pytorch")  # most units on for every image
    assert math.isfinite(distinct) and math.isfinite(alike) and distinct > alike + 5
    assert naswot(mlp(3.0), digits, batch=32, registry=shift_registry, init="pytorch") == -math.inf  # all alike: K_H singular
    assert naswot(mlp(0.0), digits, batch=32, registry=shift_registry, init="pytorch") == distinct  # deterministic
    assert naswot(mlp(0.5), digits, batch=32, registry=shift_registry) == -math.inf  # the init reaches the score


def test_naswot_codes_gelu_like_relu_and_ignores_sigmoid(digits, shift_registry):
    relu = naswot(mlp(0.0, "relu"), digits, batch=32, registry=shift_registry)
    assert naswot(mlp(0.0, "gelu"), digits, batch=32, registry=shift_registry) == relu  # same pre-activations, same codes
    assert naswot(mlp(0.0, "sigmoid"), digits, batch=32, registry=shift_registry) == -math.inf  # no coded activation


def test_naswot_reports_shape_mismatch(digits):
    with pytest.raises(TrialError, match=r"\[1, 1, 3\].*\[1, 8, 8\]"):
        naswot(RELU_ON_INPUT, digits)
