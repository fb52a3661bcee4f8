"""The reference specs in archforge/zoo/models are the published models: parameter counts equal to
timm's / torchvision's, FLOPs within 1% of the reference MACs, and the same function as the
networks written in plain PyTorch in benchmarks/plain_networks.py (same weights loaded on both sides).

(That their state_dicts are timm's / torchvision's, key for key, is tests/test_pretrained.py's job;
that every spec validates, builds and trains is tests/test_specs.py's.)
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import warnings

import pytest
import torch

import archforge
from conftest import ROOT, SPECS, load_plain_networks

MODELS = SPECS / "models"


plain_networks = load_plain_networks()


@functools.lru_cache(maxsize=None)
def summary(name: str) -> archforge.Summary:
    with warnings.catch_warnings():
        warnings.simplefilter("error", archforge.SpecWarning)
        return archforge.summarize(MODELS / f"{name}.yaml")


# name: (parameters with 1000 classes, MACs at the model's input size) of timm / torchvision
REFERENCE = {
    "resnet18": (11_689_512, 1.81e9),
    "resnet50": (25_557_032, 4.09e9),
    "deit_tiny_patch16_224": (5_717_416, 1.25e9),
    "vit_base_patch16_224": (86_567_656, 17.56e9),
    "convit_tiny": (5_710_512, 1.25e9),
    "convit_small": (27_777_322, 5.75e9),
    "convit_base": (86_540_040, 17.51e9),
    "botnet26t_256": (12_488_672, 3.30e9),
}
CONVIT_HEADS = {"convit_tiny": 4, "convit_small": 9, "convit_base": 16}


def gpsa_positional_path_flops(name: str) -> int:
    """FLOPs the factored ``gpsa`` block spends beyond timm's explicit GPSA, per sample.

    timm mixes the content and positional attention matrices and multiplies the mix by
    the values once (2·N²·C MACs per layer with q·kᵀ). The block computes
    ``(1 − σ)·SDPA(q, k, v) + σ·(A_pos v)``: the positional path ``A_pos v`` is one more
    N²·C MACs per layer (N = 196 tokens, C = 48·heads, 10 GPSA layers).
    """
    tokens, dim = 196, 48 * CONVIT_HEADS[name]
    return 2 * 10 * tokens**2 * dim


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameters_and_flops_match_the_reference(name):
    params, macs = REFERENCE[name]
    s = summary(name)
    assert s.params == params
    flops = s.flops - (gpsa_positional_path_flops(name) if name in CONVIT_HEADS else 0)
    assert abs(flops - 2 * macs) / (2 * macs) < 0.01, f"{name}: {flops / 2e9:.3f}G MACs, reference {macs / 1e9:.2f}G"


@pytest.mark.parametrize("name", sorted(CONVIT_HEADS))
def test_gpsa_layer_flops_are_exactly_the_factored_form(name):
    """Per GPSA layer: linears 4·N·C², content attention 2·N²·C, positional path N²·C, pos_proj 3·h·N² (MACs)."""
    n, h = 196, CONVIT_HEADS[name]
    c = 48 * h
    rows = [r for r in summary(name).nodes if r.block == "gpsa"]
    assert len(rows) == 10
    assert {r.flops for r in rows} == {2 * (4 * n * c * c + 3 * n * n * c + 3 * h * n * n)}


def test_sasa_and_sagan_parameter_counts():
    assert summary("sasa_resnet26").params == 10_366_760  # as stated in the spec's comment
    # SAGAN adds 1.25·C² + 1 per attention block (C = 128 after stage 2, 256 after stage 3) to ResNet-18
    assert summary("resnet18_sagan").params == 11_689_512 + sum(5 * c * c // 4 + 1 for c in (128, 256))


@pytest.mark.parametrize("name", ["convit_micro_32", "convit_micro_28", "resnet_micro_32", "resnet_micro_28"])
def test_micro_models_are_small(name):
    """CPU-sized: 10 classes, under 0.25M parameters and 20M MACs per sample."""
    s = summary(name)
    assert s.output == [10]
    assert s.params < 250_000 and s.macs < 20e6


def _stage_shapes(name: str, paths: list[str]) -> list[list[int]]:
    rows = {r.path: r.shape for r in summary(name).nodes}
    return [rows[p] for p in paths]


def test_stage_output_shapes():
    assert _stage_shapes("resnet18", ["maxpool", "layer1[1]", "layer2[1]", "layer3[1]", "layer4[1]", "fc"]) == [
        [64, 56, 56], [64, 56, 56], [128, 28, 28], [256, 14, 14], [512, 7, 7], [1000]]
    assert _stage_shapes("resnet50", ["layer1[2]", "layer2[3]", "layer3[5]", "layer4[2]"]) == [
        [256, 56, 56], [512, 28, 28], [1024, 14, 14], [2048, 7, 7]]
    assert _stage_shapes("botnet26t_256", ["stem", "stage1[1]", "stage2[1]", "stage3", "stage3_attn.out", "stage4[0].self_attn",
                                           "stage4[1].out"]) == [
        [64, 64, 64], [256, 64, 64], [512, 32, 32], [1024, 16, 16], [1024, 16, 16], [512, 8, 8], [2048, 8, 8]]
    # ConViT: 196 patch tokens through the GPSA layers, 197 with the class token through the MHSA layers
    assert _stage_shapes("convit_tiny", ["blocks[9].res2", "cls_token", "blocks[11].res2", "head"]) == [
        [196, 192], [197, 192], [197, 192], [1000]]
    assert _stage_shapes("deit_tiny_patch16_224", ["patch_embed", "pos_embed", "blocks[11].res2"]) == [
        [196, 192], [197, 192], [197, 192]]


def test_botnet_shortcuts_and_attention_layout():
    """timm's botnet26t_256: stage 3 = bottle, self_attn; stage 4 = self_attn ×2; projection shortcuts exactly
    where the shape changes (conv 1×1 + BN), identity elsewhere; BottleneckAttn 4 heads on the *input* grid."""
    model = archforge.build(MODELS / "botnet26t_256.yaml", device="meta")
    shortcuts = sorted(n for n, _ in model.named_modules() if n.endswith((".downsample", ".shortcut.0")))
    assert shortcuts == ["stage1.0.downsample", "stage2.0.downsample", "stage3.downsample", "stage4.0.shortcut.0"]
    projection = model.get_submodule("stage4.0.shortcut.0")
    assert (projection.conv.kernel_size, projection.conv.stride, projection.act) == ((1, 1), (2, 2), None)
    assert type(projection.norm).__name__ == "BatchNorm2d"
    attn = {n: m for n, m in model.named_modules() if type(m).__name__ == "BottleneckAttention"}
    assert sorted(attn) == ["stage3_attn.self_attn", "stage4.0.self_attn", "stage4.1.self_attn"]
    assert [(m.heads, m.pos_embed.height) for m in attn.values()] == [(4, 16), (4, 16), (4, 8)]


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("resnet50", 64), ("deit_tiny_patch16_224", 224), ("convit_tiny", 224)])
def test_same_function_as_the_plain_network(name, size):
    """The spec's weights load into the plain torchvision/timm-style module as they are (strict) and both compute the same logits.

    One sample; the ResNets at 64×64 (nothing in them depends on the input size), to keep this cheap.
    """
    spec_model = archforge.build(MODELS / f"{name}.yaml")
    with torch.no_grad():  # make every parameter matter: BN statistics, GPSA gates and positional weights off their init
        for key, value in spec_model.state_dict().items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif key.endswith("running_mean"):
                value.normal_(0.0, 0.1)
            elif key.endswith(("gating_param", "pos_proj.weight")):
                value.uniform_(-2.0, 2.0)
    plain = plain_networks.PLAIN[name][0]()
    plain.load_state_dict(spec_model.state_dict(), strict=True)
    spec_model.eval(), plain.eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(spec_model(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_cli_summary_json_reports_the_same_totals():
    """``python -m archforge summary --json`` (a separate process) agrees with summarize."""
    names = ["deit_tiny_patch16_224", "resnet50"]
    procs = {n: subprocess.Popen([sys.executable, "-m", "archforge", "summary", "--json", str(MODELS / f"{n}.yaml")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for n in names}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        data = json.loads(out)
        s = summary(name)
        assert (data["params"], data["flops"], data["macs"]) == (s.params, s.flops, s.macs)
        assert data["params"] == REFERENCE[name][0]
