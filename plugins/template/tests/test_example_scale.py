"""Tests of the example block: the contract (check_block), the formula, and use from a spec."""

import pytest
import torch

import archforge
from archforge.plugin import Shape
from archforge.testing import check_block, registry_with
from archforge_myplugin.scale import ExampleScale


@pytest.mark.parametrize("shape", [Shape.map(8, 4, 4), Shape.tokens(8, (2, 2), extra_tokens=1), Shape.vector(8)])
def test_contract(shape):
    # check_block: args validate, infer agrees with the real output on the meta device and
    # in float32/float64, gradients reach the input, parameters honour device and dtype,
    # bf16 autocast works, and the parameter count is the closed form (one γ per channel).
    check_block(ExampleScale, shape, {"value": 0.5}, expected_params=shape.channels)


def test_formula():
    module = ExampleScale().build(Shape.map(3, 2, 2), ExampleScale.Args(value=0.5))
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(module(x), 0.5 * x)


def test_in_a_spec():
    # registry_with: the installed plugins plus this block, so the test runs before `pip install -e .`.
    spec = archforge.parse_spec("""
archforge: 1
name: scaled
input: {shape: [3, 8, 8]}
nodes:
  - {id: stem, block: conv, args: {channels: 8}}
  - {id: scale, block: example_scale, args: {value: 0.1, channels: 8}}
  - {id: head, block: classifier, args: {classes: 10}}
""")
    registry = registry_with(ExampleScale, name="archforge-myplugin")
    model = archforge.build(spec, registry=registry)
    assert "scale.gamma" in dict(model.named_parameters())
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)

    wrong = spec.to_dict()
    wrong["nodes"][1]["args"]["channels"] = 4
    with pytest.raises(archforge.SpecError, match="expected 4 input channels, got 8"):
        archforge.validate(archforge.Spec.from_dict(wrong), registry=registry)
