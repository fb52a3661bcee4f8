"""Parameters and FLOPs against closed forms written out by hand."""

import torch

import archforge
from archforge.builder import count_flops
from conftest import SPECS

RESNET_TINY = SPECS / "models" / "resnet_tiny.yaml"


def conv_flops(cin, cout, k, hw):
    return 2 * cout * cin * k * k * hw


def conv_bn_params(cin, cout, k):
    return cout * cin * k * k + 2 * cout


def test_resnet_tiny_params_and_flops_equal_the_closed_form():
    w = 16
    params = (
        conv_bn_params(3, w, 3)
        + 2 * 2 * conv_bn_params(w, w, 3)
        + conv_bn_params(w, 2 * w, 3) + conv_bn_params(2 * w, 2 * w, 3) + conv_bn_params(w, 2 * w, 1)
        + 2 * conv_bn_params(2 * w, 2 * w, 3)
        + conv_bn_params(2 * w, 4 * w, 3) + conv_bn_params(4 * w, 4 * w, 3) + conv_bn_params(2 * w, 4 * w, 1)
        + 2 * conv_bn_params(4 * w, 4 * w, 3)
        + 4 * w * 10 + 10
    )
    flops = (
        conv_flops(3, w, 3, 32 * 32)
        + 4 * conv_flops(w, w, 3, 32 * 32)
        + conv_flops(w, 2 * w, 3, 16 * 16) + conv_flops(2 * w, 2 * w, 3, 16 * 16) + conv_flops(w, 2 * w, 1, 16 * 16)
        + 2 * conv_flops(2 * w, 2 * w, 3, 16 * 16)
        + conv_flops(2 * w, 4 * w, 3, 8 * 8) + conv_flops(4 * w, 4 * w, 3, 8 * 8) + conv_flops(2 * w, 4 * w, 1, 8 * 8)
        + 2 * conv_flops(4 * w, 4 * w, 3, 8 * 8)
        + 2 * 4 * w * 10
    )
    summary = archforge.summarize(RESNET_TINY)
    model = archforge.build(RESNET_TINY)
    assert summary.params == params == sum(p.numel() for p in model.parameters())
    assert summary.flops == flops
    assert summary.macs == flops // 2
    # Per-node counting on the meta device agrees with counting the whole real model.
    assert count_flops(model.eval(), torch.randn(1, 3, 32, 32)) == flops


def test_node_rows_report_real_output_shapes():
    model = archforge.build(RESNET_TINY).eval()
    seen = {}
    for name, module in model.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, list(o.shape[1:])))
    model(torch.randn(1, 3, 32, 32))
    for row in archforge.summarize(RESNET_TINY).nodes:
        assert seen[row.module] == row.shape, row.path


def test_linear_on_tokens_counts_every_token():
    spec = archforge.parse_spec("""
archforge: 1
name: tok
input: {shape: [8, 5, 7]}
nodes:
  - {id: proj, block: linear, args: {features: 12}}
  - {id: head, block: classifier, args: {classes: 3}}
""")
    rows = {row.path: row for row in archforge.summarize(spec).nodes}
    assert rows["proj"].flops == 2 * 35 * 8 * 12
    assert rows["proj"].params == 8 * 12 + 12
    assert rows["proj"].shape == [35, 12]
    assert rows["head"].flops == 2 * 12 * 3
