"""``bottleneck``, ``basic_block``, ``stem`` and ``se``: contracts, closed-form parameter counts, torchvision totals."""

from __future__ import annotations

import pydantic
import pytest
import torch
from torch import nn

import archforge
from archforge.blocks.bottleneck import BasicBlock, Bottleneck
from archforge.blocks.se import SqueezeExcitation
from archforge.blocks.stem import Stem
from archforge.registry import Shape, ShapeError
from archforge.testing import check_block, registry_with


def conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cin // groups * cout * k * k


def bn(c: int) -> int:
    return 2 * c


# ----------------------------------------------------------------------------- bottleneck


def test_bottleneck_projection_params():
    # 16 → width 8 → 32, stride 2: projection shortcut conv1×1 + BN
    expected = conv(16, 8, 1) + bn(8) + conv(8, 8, 3) + bn(8) + conv(8, 32, 1) + bn(32) + conv(16, 32, 1) + bn(32)
    check_block(Bottleneck, Shape.map(16, 8, 8), {"channels": 8, "stride": 2}, expected_params=expected, compile=True)


def test_bottleneck_identity_params():
    expected = conv(32, 8, 1) + bn(8) + conv(8, 8, 3) + bn(8) + conv(8, 32, 1) + bn(32)
    check_block(Bottleneck, Shape.map(32, 6, 6), {"channels": 8}, expected_params=expected)


def test_torchvision_layer1_block_sizes():
    # torchvision resnet50.layer1[0] has 75,008 parameters and layer1[1] 70,400
    first = Bottleneck().build(Shape.map(64, 56, 56), Bottleneck.Args(channels=64), device="meta")
    second = Bottleneck().build(Shape.map(256, 56, 56), Bottleneck.Args(channels=64), device="meta")
    assert sum(p.numel() for p in first.parameters()) == 75_008
    assert sum(p.numel() for p in second.parameters()) == 70_400
    names = {n for n, _ in first.named_parameters()}
    assert {"conv1.weight", "bn1.weight", "conv2.weight", "bn2.bias", "conv3.weight", "bn3.weight",
            "downsample.0.weight", "downsample.1.weight"} <= names


def test_bottleneck_se_resnext_avg_down_params():
    # ResNeXt width ⌊16·8/64⌋·4 = 8, grouped 3×3; SE on the 64 outputs with 64/16 = 4 channels
    width, out = 8, 64
    expected = (conv(16, width, 1) + bn(width) + conv(width, width, 3, groups=4) + bn(width)
                + conv(width, out, 1) + bn(out) + (out * 4 + 4 + 4 * out + out) + conv(16, out, 1) + bn(out))
    args = {"channels": 16, "groups": 4, "base_width": 8, "se": 1 / 16, "stride": 2, "downsample": "avg"}
    module = check_block(Bottleneck, Shape.map(16, 7, 7), args, expected_params=expected)
    assert Bottleneck().infer(Shape.map(16, 7, 7), Bottleneck.Args(**args)) == Shape.map(64, 4, 4)
    assert isinstance(module.downsample[0], nn.AvgPool2d)


def test_bottleneck_forward_matches_formula():
    torch.manual_seed(0)
    block = Bottleneck().build(Shape.map(8, 5, 5), Bottleneck.Args(channels=4, stride=2), dtype=torch.float64).eval()
    for m in block.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2), m.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)

    def bn_eval(t, m):
        shape = (1, -1, 1, 1)
        return (t - m.running_mean.view(shape)) / (m.running_var.view(shape) + m.eps).sqrt() * m.weight.view(shape) + m.bias.view(shape)

    f = torch.nn.functional
    y = f.relu(bn_eval(f.conv2d(x, block.conv1.weight), block.bn1))
    y = f.relu(bn_eval(f.conv2d(y, block.conv2.weight, stride=2, padding=1), block.bn2))
    y = bn_eval(f.conv2d(y, block.conv3.weight), block.bn3)
    s = bn_eval(f.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1])
    torch.testing.assert_close(block(x), f.relu(y + s))


def test_zero_init_makes_the_block_relu_of_the_input():
    x = torch.randn(2, 32, 4, 4)
    bottleneck = Bottleneck().build(Shape.map(32, 4, 4), Bottleneck.Args(channels=8, zero_init=True))
    basic = BasicBlock().build(Shape.map(32, 4, 4), BasicBlock.Args(channels=32, zero_init=True))
    assert torch.equal(bottleneck(x), x.relu())
    assert torch.equal(basic(x), x.relu())


def test_bottleneck_shape_errors():
    with pytest.raises(ShapeError, match="no 3×3 channels"):
        Bottleneck().infer(Shape.map(8, 8, 8), Bottleneck.Args(channels=1, base_width=4))
    with pytest.raises(ShapeError, match="average-pool"):
        Bottleneck().infer(Shape.map(8, 1, 8), Bottleneck.Args(channels=4, stride=2, downsample="avg"))
    with pytest.raises(pydantic.ValidationError):
        Bottleneck.Args(channels=0)


# ----------------------------------------------------------------------------- basic block


def test_basic_block_params():
    projection = conv(8, 16, 3) + bn(16) + conv(16, 16, 3) + bn(16) + conv(8, 16, 1) + bn(16)
    check_block(BasicBlock, Shape.map(8, 7, 7), {"channels": 16, "stride": 2}, expected_params=projection, compile=True)
    identity = 2 * (conv(16, 16, 3) + bn(16))
    check_block(BasicBlock, Shape.map(16, 5, 5), {"channels": 16}, expected_params=identity)
    with_se = identity + 16 * 1 + 1 + 1 * 16 + 16
    check_block(BasicBlock, Shape.map(16, 5, 5), {"channels": 16, "se": 1 / 16}, expected_params=with_se)


# ----------------------------------------------------------------------------- stems


STEMS = [
    # (args, input, output, parameters)
    ({"variant": "resnet", "channels": 16}, Shape.map(3, 32, 32), Shape.map(16, 8, 8), conv(3, 16, 7) + bn(16)),
    ({"variant": "deep", "channels": 16}, Shape.map(3, 33, 33), Shape.map(16, 9, 9),
     conv(3, 8, 3) + bn(8) + conv(8, 8, 3) + bn(8) + conv(8, 16, 3) + bn(16)),
    ({"variant": "tiered", "channels": 64}, Shape.map(3, 16, 16), Shape.map(64, 4, 4),
     conv(3, 24, 3) + bn(24) + conv(24, 32, 3) + bn(32) + conv(32, 64, 3) + bn(64)),
    ({"variant": "deep", "channels": 16, "widths": [4, 12]}, Shape.map(3, 8, 8), Shape.map(16, 2, 2),
     conv(3, 4, 3) + bn(4) + conv(4, 12, 3) + bn(12) + conv(12, 16, 3) + bn(16)),
    ({"variant": "patchify", "channels": 16}, Shape.map(3, 16, 16), Shape.map(16, 4, 4), conv(3, 16, 4) + 16 + 2 * 16),
    ({"variant": "patchify", "channels": 16, "kernel": 2, "norm": "batch"}, Shape.map(3, 8, 8), Shape.map(16, 4, 4),
     conv(3, 16, 2) + bn(16)),
]


@pytest.mark.parametrize("args, x, out, params", STEMS)
def test_stem_variants(args, x, out, params):
    assert Stem().infer(x, Stem.Args(**args)) == out
    check_block(Stem, x, args, expected_params=params, compile=args["variant"] == "tiered")


def test_resnet_stem_matches_torchvision():
    stem = Stem().build(Shape.map(3, 224, 224), Stem.Args(), device="meta")
    assert sum(p.numel() for p in stem.parameters()) == 64 * 3 * 7 * 7 + 2 * 64
    assert Stem().infer(Shape.map(3, 224, 224), Stem.Args()) == Shape.map(64, 56, 56)
    assert stem.conv1.conv.kernel_size == (7, 7) and stem.conv1.conv.stride == (2, 2) and stem.conv1.conv.bias is None


def test_patchify_layer_norm_is_over_channels():
    torch.manual_seed(0)
    stem = Stem().build(Shape.map(3, 8, 8), Stem.Args(variant="patchify", channels=6, kernel=4), dtype=torch.float64)
    nn.init.normal_(stem.conv1.norm.weight), nn.init.normal_(stem.conv1.norm.bias)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, stem.conv1.conv.weight, stem.conv1.conv.bias, stride=4)  # (B, C, 2, 2)
    mean, var = y.mean(1, keepdim=True), y.var(1, unbiased=False, keepdim=True)
    expected = (y - mean) / (var + 1e-6).sqrt() * stem.conv1.norm.weight[:, None, None] + stem.conv1.norm.bias[:, None, None]
    torch.testing.assert_close(stem(x), expected)


def test_stem_errors():
    with pytest.raises(ShapeError, match="patch size"):
        Stem().infer(Shape.map(3, 10, 10), Stem.Args(variant="patchify"))
    with pytest.raises(ShapeError, match="empty"):
        Stem().infer(Shape.map(3, 10, 10), Stem.Args(variant="tiered", channels=2))
    with pytest.raises(pydantic.ValidationError, match="widths"):
        Stem.Args(variant="resnet", widths=[8, 8])
    with pytest.raises(pydantic.ValidationError, match="kernel"):
        Stem.Args(variant="deep", kernel=5)


# ----------------------------------------------------------------------------- squeeze-excitation


@pytest.mark.parametrize("args, reduced", [({}, 2), ({"reduced": 5}, 5), ({"ratio": 0.25}, 8), ({"ratio": 0.01}, 1)])
def test_se_params(args, reduced):
    c = 32
    check_block(SqueezeExcitation, Shape.map(c, 4, 4), args, expected_params=c * reduced + reduced + reduced * c + c,
                compile=not args)


def test_se_divisor_rounds_like_timm():
    module = SqueezeExcitation().build(Shape.map(64, 2, 2), SqueezeExcitation.Args(divisor=8))
    assert module.fc1.out_channels == 8  # 64/16 = 4 rounds to timm's minimum of one divisor
    module = SqueezeExcitation().build(Shape.map(200, 2, 2), SqueezeExcitation.Args(divisor=8))
    assert module.fc1.out_channels == 16  # 12.5 → 16


def test_se_matches_formula():
    torch.manual_seed(0)
    module = SqueezeExcitation().build(Shape.map(16, 3, 5), SqueezeExcitation.Args(ratio=0.25), dtype=torch.float64)
    x = torch.randn(2, 16, 3, 5, dtype=torch.float64)
    s = x.mean(dim=(2, 3))  # (B, C)
    z = torch.relu(s @ module.fc1.weight[:, :, 0, 0].T + module.fc1.bias)
    e = torch.sigmoid(z @ module.fc2.weight[:, :, 0, 0].T + module.fc2.bias)
    torch.testing.assert_close(module(x), x * e[:, :, None, None])


# ----------------------------------------------------------------------------- whole networks


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet18_from_basic_blocks_has_torchvision_parameter_count():
    shape = Shape.map(3, 224, 224)
    total = _params(Stem().build(shape, Stem.Args(), device="meta"))
    shape = Stem().infer(shape, Stem.Args())
    for stage, width in enumerate((64, 128, 256, 512)):
        for i in range(2):
            args = BasicBlock.Args(channels=width, stride=2 if stage > 0 and i == 0 else 1)
            total += _params(BasicBlock().build(shape, args, device="meta"))
            shape = BasicBlock().infer(shape, args)
    assert shape == Shape.map(512, 7, 7)
    total += 512 * 1000 + 1000  # fc
    assert total == 11_689_512


RESNET50 = """
archforge: 1
name: resnet50
input: {shape: [3, 224, 224]}
params: {classes: 1000}
define:
  stage:
    params: {width: 64, depth: 3, stride: 2}
    nodes:
      - {id: first, block: bottleneck, args: {channels: $width, stride: $stride}}
      - {id: rest, block: bottleneck, repeat: "${depth - 1}", args: {channels: $width}}
nodes:
  - {id: stem, block: stem, args: {variant: resnet}}
  - {id: layer1, block: stage, args: {width: 64, depth: 3, stride: 1}}
  - {id: layer2, block: stage, args: {width: 128, depth: 4}}
  - {id: layer3, block: stage, args: {width: 256, depth: 6}}
  - {id: layer4, block: stage, args: {width: 512, depth: 3}}
  - {id: head, block: classifier, args: {classes: $classes}}
"""


def test_resnet50_spec_has_torchvision_parameter_count():
    registry = registry_with(Stem, Bottleneck, BasicBlock, SqueezeExcitation)
    spec = archforge.parse_spec(RESNET50)
    graph = archforge.validate(spec, registry=registry)
    assert graph.output_shape == Shape.vector(1000)
    assert archforge.summarize(spec, registry=registry).params == 25_557_032


def test_botnet26t_convolutional_part_matches_timm_total():
    """timm's botnet26t_256 (12,488,672 parameters): tiered stem, bottlenecks with 1×1-conv shortcuts, and three
    bottleneck-attention blocks, whose parameters are written here as closed-form arithmetic (timm's
    SelfAttnBlock: conv1 + BN, qkv 1×1 to 3·mid, 2·(2F−1)·(mid/4) relative embeddings on an F×F grid, BN, conv3 + BN)."""
    shape = Shape.map(3, 256, 256)
    total = _params(Stem().build(shape, Stem.Args(variant="tiered"), device="meta"))
    shape = Stem().infer(shape, Stem.Args(variant="tiered"))
    assert shape == Shape.map(64, 64, 64)
    for width, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2)):
        args = Bottleneck.Args(channels=width, stride=stride)
        total += _params(Bottleneck().build(shape, args, device="meta"))
        shape = Bottleneck().infer(shape, args)
    assert shape == Shape.map(1024, 16, 16)

    def attention_block(cin: int, cout: int, mid: int, grid: int, projection: bool) -> int:
        return (conv(cin, mid, 1) + bn(mid) + conv(mid, 3 * mid, 1) + 2 * (2 * grid - 1) * (mid // 4) + bn(mid)
                + conv(mid, cout, 1) + bn(cout) + (conv(cin, cout, 1) + bn(cout) if projection else 0))

    total += attention_block(1024, 1024, 256, 16, False) + attention_block(1024, 2048, 512, 16, True)
    total += attention_block(2048, 2048, 512, 8, False) + 2048 * 1000 + 1000
    assert total == 12_488_672
