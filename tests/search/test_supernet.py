"""The weight-sharing supernet: which parameters share a tensor, exactness of every path, width slices,
gradients, BatchNorm recalibration, and the fair path schedule; checked against hand counts and plain torch."""

from __future__ import annotations

import collections
import time

import pytest
import torch
from torch import nn

import archforge
from archforge.plugin import Block, Shape
from archforge.registry import hookimpl, load_registry
from archforge.search import parse_space
from archforge.search.supernet import FAIR_MAX_VALUES, PathSchedule, Supernet

# Two stages, each a conv_unit or an other_unit chosen per copy; both units have a node `mix` and a node
# `shortcut` of block conv, and their shortcuts have the very same shapes.
PER_COPY = """\
archforge: 1
name: per_copy
input: {shape: [1, 8, 8]}
define:
  conv_unit:
    params: {channels: 4}
    nodes:
      - {id: mix, block: conv, args: {channels: $channels, act: none}}
      - {id: shortcut, block: conv, in: input, args: {channels: $channels, kernel: 1, act: none}}
      - {id: sum, block: add, in: [shortcut, mix]}
  other_unit:
    params: {channels: 4}
    nodes:
      - {id: mix, block: conv, args: {channels: $channels, kernel: 1, act: none}}
      - {id: shortcut, block: conv, in: input, args: {channels: $channels, kernel: 1, act: none}}
      - {id: sum, block: add, in: [shortcut, mix]}
nodes:
  - {id: stem, block: conv, args: {channels: 4}}
  - id: stage
    block: {choice: [conv_unit, other_unit], per_copy: true}
    repeat: 2
    args: {channels: 4}
  - {id: head, block: classifier, args: {classes: 2}}
"""

WIDTHS = """\
archforge: 1
name: widths
input: {shape: [1, 8, 8]}
params: {w1: {choice: [4, 8]}, w2: {choice: [4, 8]}}
nodes:
  - {id: a, block: conv, args: {channels: $w1}}
  - {id: b, block: conv, args: {channels: $w2}}
  - {id: head, block: classifier, args: {classes: 2}}
"""

KERNELS = """\
archforge: 1
name: kernels
input: {shape: [1, 8, 8]}
params: {kernel: {choice: [3, 5]}}
nodes:
  - {id: a, block: conv, args: {channels: 4, kernel: $kernel}}
  - {id: head, block: classifier, args: {classes: 2}}
"""

DEPTH = """\
archforge: 1
name: depth
input: {shape: [1, 8, 8]}
nodes:
  - {id: stem, block: conv, args: {channels: 4}}
  - {id: stage, block: conv, repeat: {choice: [1, 2]}, args: {channels: 4}}
  - {id: head, block: classifier, args: {classes: 2}}
"""


def candidates(text: str):
    return parse_space(text, "space.yaml").distinct_candidates()


def built(cands, *, seed: int = 0, registry=None, randomize: bool = True) -> list[nn.Module]:
    """Each candidate built stand-alone; with ``randomize``, every parameter and BatchNorm statistic drawn at random
    (the reference init makes every BatchNorm γ 1 and β 0, which would hide which path's values won)."""
    torch.manual_seed(seed)
    modules = [archforge.build(c.spec, registry=registry) for c in cands]
    if randomize:
        with torch.no_grad():
            for m in modules:
                for p in m.parameters():
                    p.normal_()
                for name, b in m.named_buffers():
                    if name.endswith("running_mean"):
                        b.normal_()
                    elif name.endswith("running_var"):
                        b.uniform_(0.5, 2.0)
    return modules


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def shared_index(net: Supernet, t: torch.Tensor) -> int:
    """Which shared tensor ``t`` is a view of (exactly one)."""
    found = [k for k, s in enumerate(net.shared) if same_storage(t, s)]
    assert len(found) == 1, found
    return found[0]


def numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def x_batch(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- sharing


def test_per_copy_units_get_their_own_tensors_and_stem_and_head_are_one_tensor_for_every_path():
    cands = candidates(PER_COPY)
    assert len(cands) == 4
    net = Supernet(built(cands), [c.values for c in cands])
    # By hand: stem (conv weight, BN γ, β) 3 + head (fc weight, bias) 2 + for each of 2 stages and each of 2 units,
    # mix and shortcut with 3 each: 2 * 2 * 6 = 24.
    assert len(net.shared) == 3 + 2 + 24
    assert len(net.shared_names) == len(net.shared)

    by_units = {(c.values["stage.block[0]"], c.values["stage.block[1]"]): i for i, c in enumerate(cands)}
    views = {units: net.parameters_of(i) for units, i in by_units.items()}
    for name in ("stem.conv.weight", "stem.norm.weight", "stem.norm.bias", "head.fc.weight", "head.fc.bias"):
        index = {shared_index(net, v[name]) for v in views.values()}
        assert len(index) == 1  # one tensor under every path
        (k,) = index
        assert all(same_storage(v[name], net.shared[k]) for v in views.values())
    for name in ("stage.0.shortcut.conv.weight", "stage.0.shortcut.norm.weight", "stage.0.mix.norm.bias"):
        conv_unit = shared_index(net, views["conv_unit", "conv_unit"][name])
        other_unit = shared_index(net, views["other_unit", "conv_unit"][name])
        assert conv_unit != other_unit  # same name, same block, same shape: still one tensor per unit
        assert shared_index(net, views["conv_unit", "other_unit"][name]) == conv_unit
        assert shared_index(net, views["other_unit", "other_unit"][name]) == other_unit
    # The same unit at another stage is another place: not shared with stage 0.
    assert (shared_index(net, views["conv_unit", "conv_unit"]["stage.1.shortcut.conv.weight"])
            != shared_index(net, views["conv_unit", "conv_unit"]["stage.0.shortcut.conv.weight"]))
    # Every parameter of every path is backed by a shared tensor, and the modules' own are released.
    for i, c in enumerate(cands):
        assert sum(p.numel() for p in net.parameters_of(i).values()) == numel(archforge.build(c.spec))
        assert all(p.numel() == 0 for p in net.paths[i].module.parameters())
    # Only the shared tensors are parameters of the supernet (what an optimizer gets).
    assert sum(p.numel() for p in net.parameters()) == sum(s.numel() for s in net.shared)


def test_the_larger_path_values_win_where_paths_overlap():
    cands = candidates(PER_COPY)
    modules = built(cands)
    before = [{n: p.detach().clone() for n, p in m.named_parameters()} for m in modules]
    sizes = [numel(m) for m in modules]
    x = x_batch()
    outputs = []
    with torch.no_grad():
        for m in modules:
            outputs.append(m.eval()(x))
    net = Supernet(modules, [c.values for c in cands]).eval()
    largest = max(range(len(cands)), key=sizes.__getitem__)
    assert sizes.count(sizes[largest]) == 1
    net.active = largest
    with torch.no_grad():
        torch.testing.assert_close(net(x), outputs[largest], rtol=0, atol=1e-6)
    # Each shared tensor holds the values of the largest path (by parameter count) that uses it.
    users: dict[int, list[int]] = collections.defaultdict(list)
    names: dict[tuple[int, int], str] = {}
    for i in range(len(cands)):
        for name, view in net.parameters_of(i).items():
            k = shared_index(net, view)
            users[k].append(i)
            names[k, i] = name
    for k, who in users.items():
        top = max(who, key=sizes.__getitem__)
        assert [sizes[i] for i in who].count(sizes[top]) == 1
        assert torch.equal(net.shared[k].detach(), before[top][names[k, top]])


def test_the_largest_path_keeps_its_values_in_a_pool_without_the_all_wide_path():
    # (w1, w2) = (4, 8) and (8, 4) only, as a sample or constraints leave it: (8, 4) has more parameters (394 > 366),
    # but its head reads 4 channels where (4, 8)'s reads 8.
    cands = [c for c in candidates(WIDTHS) if c.values["w1"] != c.values["w2"]]
    modules = built(cands)
    sizes = [numel(m) for m in modules]
    assert sizes == [366, 394]
    x = x_batch()
    with torch.no_grad():
        expected = modules[1].eval()(x)
    net = Supernet(modules, [c.values for c in cands]).eval()
    net.active = 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-6)


# A tokens network whose `tok` node is a learned position embedding or a class token. Both blocks' modules are
# themselves parameters (ParameterNodes) named like the node, `tok`: (1, 4, 8) and (1, 1, 8) for 4x4 patches of an
# 8x8 image at width 8. The attention mixes the class token into the grid tokens the pool averages.
TOKENS = """\
archforge: 1
name: tokens
input: {shape: [1, 8, 8]}
nodes:
  - {id: patch, block: patch_embed, args: {patch: 4, dim: 8}}
  - {id: tok, block: {choice: [learned_pos_embed, class_token]}}
  - {id: attn, block: mhsa, args: {heads: 2}}
  - {id: pool, block: global_pool}
  - {id: head, block: linear, args: {features: 2}}
"""

# Two defines, each with a node `pos` of block learned_pos_embed: in either path the parameter is `stage.pos`, (1, 4, 8).
POS_UNITS = """\
archforge: 1
name: pos_units
input: {shape: [1, 8, 8]}
define:
  norm_unit:
    nodes:
      - {id: pos, block: learned_pos_embed}
      - {id: norm, block: layer_norm}
  linear_unit:
    nodes:
      - {id: pos, block: learned_pos_embed}
      - {id: mix, block: linear, args: {features: 8}}
nodes:
  - {id: patch, block: patch_embed, args: {patch: 4, dim: 8}}
  - {id: stage, block: {choice: [norm_unit, linear_unit]}}
  - {id: attn, block: mhsa, args: {heads: 2}}
  - {id: pool, block: global_pool}
  - {id: head, block: linear, args: {features: 2}}
"""


def assert_paths_equal_stand_alone(net: Supernet, cands) -> None:
    net.eval()
    for i, c in enumerate(cands):
        alone = archforge.build(c.spec)
        alone.load_state_dict(net.state_dict_of(i))  # strict
        net.active = i
        with torch.no_grad():
            torch.testing.assert_close(net(x_batch()), alone.eval()(x_batch()), rtol=1e-6, atol=1e-6)


def test_a_class_token_and_a_position_embedding_at_one_place_are_two_tensors_not_one_sliced():
    cands = candidates(TOKENS)
    assert [c.values["tok.block"] for c in cands] == ["learned_pos_embed", "class_token"]
    modules = built(cands)
    own = [m.get_parameter("tok").detach().clone() for m in modules]
    assert [tuple(t.shape) for t in own] == [(1, 4, 8), (1, 1, 8)]
    net = Supernet(modules, [c.values for c in cands])
    pos, cls = net.parameters_of(0), net.parameters_of(1)
    kp, kc = shared_index(net, pos["tok"]), shared_index(net, cls["tok"])
    assert kp != kc  # keyed with its block: the class token is not the first row of the position embedding
    assert tuple(net.shared[kp].shape) == (1, 4, 8) and tuple(net.shared[kc].shape) == (1, 1, 8)
    assert torch.equal(pos["tok"], own[0]) and torch.equal(cls["tok"], own[1])  # each kept its own values
    # Everything else is the same block at the same place in both paths: one tensor each.
    assert set(pos) == set(cls)
    for name in set(pos) - {"tok"}:
        assert shared_index(net, pos[name]) == shared_index(net, cls[name]), name
    # By hand: patch (weight, bias) 2 + attention (qkv and proj, weight and bias) 4 + head (weight, bias) 2, shared,
    # and one tensor per token block: 10.
    assert len(net.shared) == 2 + 4 + 2 + 2
    # A step through the class-token path leaves the position embedding without a gradient.
    net.train()
    net.active = 1
    nn.functional.cross_entropy(net(x_batch()), torch.tensor([0, 1, 1, 0, 1])).backward()
    assert net.shared[kc].grad is not None and net.shared[kc].grad.abs().sum() > 0
    assert net.shared[kp].grad is None
    assert_paths_equal_stand_alone(net, cands)


def test_the_same_parameter_node_in_two_defines_at_one_place_is_two_tensors():
    cands = candidates(POS_UNITS)
    assert [c.values["stage.block"] for c in cands] == ["norm_unit", "linear_unit"]
    modules = built(cands)
    own = [m.get_parameter("stage.pos").detach().clone() for m in modules]
    assert [tuple(t.shape) for t in own] == [(1, 4, 8), (1, 4, 8)]  # same name, same block, same shape
    net = Supernet(modules, [c.values for c in cands])
    first, second = net.parameters_of(0), net.parameters_of(1)
    k1, k2 = shared_index(net, first["stage.pos"]), shared_index(net, second["stage.pos"])
    assert k1 != k2
    assert torch.equal(first["stage.pos"], own[0]) and torch.equal(second["stage.pos"], own[1])
    for name in ("patch.proj.weight", "head.weight"):
        assert shared_index(net, first[name]) == shared_index(net, second[name])
    # By hand: patch 2 + attention 4 + head 2, shared; per unit its pos and its norm (γ, β) or mix (weight, bias): 2 x 3.
    assert len(net.shared) == 2 + 4 + 2 + 2 * 3
    assert_paths_equal_stand_alone(net, cands)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("text", [PER_COPY, WIDTHS, KERNELS, DEPTH], ids=["per_copy", "widths", "kernels", "depth"])
def test_every_path_equals_its_candidate_built_stand_alone_with_its_state_dict(text):
    cands = candidates(text)
    net = Supernet(built(cands), [c.values for c in cands])
    with torch.no_grad():  # values the initial copy did not choose: whatever the shared tensors hold now
        for s in net.shared:
            s.normal_()
    net.eval()
    x = x_batch()
    for i, c in enumerate(cands):
        alone = archforge.build(c.spec)
        alone.load_state_dict(net.state_dict_of(i))  # strict: every parameter and buffer name, every shape
        alone.eval()
        net.active = i
        with torch.no_grad():
            torch.testing.assert_close(net(x), alone(x), rtol=1e-6, atol=1e-6)
        # The buffers are the path's own (randomised per module above), not the fresh ones of a new build.
        fresh = archforge.build(c.spec).eval()
        fresh.load_state_dict({n: t for n, t in net.state_dict_of(i).items() if "running" not in n}, strict=False)
        with torch.no_grad():
            assert not torch.allclose(fresh(x), alone(x))


# --------------------------------------------------------------------------- widths and kernels


def test_a_width_decision_shares_one_tensor_of_the_largest_shape_and_slices_it():
    cands = candidates(WIDTHS)
    assert [(c.values["w1"], c.values["w2"]) for c in cands] == [(4, 4), (4, 8), (8, 4), (8, 8)]
    net = Supernet(built(cands), [c.values for c in cands])
    # By hand: a (conv, γ, β), b (conv, γ, β), head (weight, bias): one tensor each, whatever the widths.
    assert len(net.shared) == 8
    small = net.parameters_of(0)  # w1 = w2 = 4
    large = net.parameters_of(3)  # w1 = w2 = 8
    for name in small:
        k = shared_index(net, small[name])
        assert shared_index(net, large[name]) == k
        assert tuple(net.shared[k].shape) == tuple(large[name].shape)  # the tensor has the largest shape
    ka = shared_index(net, small["a.conv.weight"])
    kb = shared_index(net, small["b.conv.weight"])
    assert tuple(net.shared[ka].shape) == (8, 1, 3, 3) and tuple(net.shared[kb].shape) == (8, 8, 3, 3)
    assert tuple(small["b.conv.weight"].shape) == (4, 4, 3, 3)
    assert torch.equal(small["b.conv.weight"], net.shared[kb][:4, :4])
    assert small["b.conv.weight"].data_ptr() == net.shared[kb].data_ptr()  # a view at the start, not a copy
    mixed = net.parameters_of(1)  # w1 = 4, w2 = 8: b reads 4 channels and writes 8
    assert torch.equal(mixed["b.conv.weight"], net.shared[kb][:8, :4])
    assert torch.equal(mixed["head.fc.weight"], net.shared[shared_index(net, mixed["head.fc.weight"])][:2, :8])
    assert torch.equal(net.parameters_of(2)["head.fc.weight"], net.shared[shared_index(net, mixed["head.fc.weight"])][:2, :4])


def test_a_step_through_the_narrow_path_changes_only_its_slice():
    cands = candidates(WIDTHS)
    net = Supernet(built(cands), [c.values for c in cands])
    before = [s.detach().clone() for s in net.shared]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    net.active = 0  # w1 = w2 = 4
    net.train()
    y = torch.tensor([0, 1, 1, 0, 1])
    nn.functional.cross_entropy(net(x_batch()), y).backward()
    kb = shared_index(net, net.parameters_of(0)["b.conv.weight"])
    grad = net.shared[kb].grad
    assert grad is not None and grad[:4, :4].abs().sum() > 0
    outside = torch.ones_like(grad, dtype=torch.bool)
    outside[:4, :4] = False
    assert torch.count_nonzero(grad[outside]) == 0
    optimizer.step()
    after = net.shared[kb].detach()
    assert not torch.equal(after[:4, :4], before[kb][:4, :4])
    assert torch.equal(after[outside], before[kb][outside])  # exactly: the wide channels are untouched
    for k, s in enumerate(net.shared):  # the same holds for every tensor: what the path does not read stays
        used = net.parameters_of(0)
        mask = torch.ones_like(s, dtype=torch.bool)
        for view in used.values():
            if same_storage(view, s):
                mask[tuple(slice(0, n) for n in view.shape)] = False
        assert torch.equal(s.detach()[mask], before[k][mask])


def test_a_kernel_decision_gets_one_tensor_per_kernel_and_shares_the_rest():
    cands = candidates(KERNELS)
    net = Supernet(built(cands), [c.values for c in cands])
    # By hand: the 3x3 and the 5x5 conv weight apart; BN γ, β and the head's weight and bias shared: 2 + 2 + 2.
    assert len(net.shared) == 6
    three, five = net.parameters_of(0), net.parameters_of(1)
    assert shared_index(net, three["a.conv.weight"]) != shared_index(net, five["a.conv.weight"])
    assert tuple(three["a.conv.weight"].shape) == (4, 1, 3, 3) and tuple(five["a.conv.weight"].shape) == (4, 1, 5, 5)
    for name in ("a.norm.weight", "a.norm.bias", "head.fc.weight", "head.fc.bias"):
        assert shared_index(net, three[name]) == shared_index(net, five[name])


def test_a_depth_decision_shares_the_layers_the_shallower_path_has():
    cands = candidates(DEPTH)
    assert [c.values["stage.repeat"] for c in cands] == [1, 2]
    net = Supernet(built(cands), [c.values for c in cands])
    assert len(net.shared) == 3 + 3 + 3 + 2  # stem, stage.0, stage.1 (the deep path's own), head
    shallow, deep = net.parameters_of(0), net.parameters_of(1)
    assert set(deep) - set(shallow) == {"stage.1.conv.weight", "stage.1.norm.weight", "stage.1.norm.bias"}
    assert all(shared_index(net, shallow[n]) == shared_index(net, deep[n]) for n in shallow)


def test_the_supernet_state_and_device_moves_are_its_shared_tensors_and_the_paths_buffers():
    cands = candidates(PER_COPY)
    net = Supernet(built(cands), [c.values for c in cands])
    assert list(net.state_dict()) == [f"shared.{k}" for k in range(len(net.shared))]
    net.double()
    assert all(s.dtype == torch.float64 for s in net.shared)
    assert all(b.dtype == torch.float64 for p in net.paths for n, b in p.module.named_buffers() if "running" in n)
    for i in range(len(cands)):
        net.active = i
        assert net(x_batch().double()).dtype == torch.float64


# --------------------------------------------------------------------------- gradients


def test_backward_through_a_path_reaches_only_the_tensors_it_uses():
    cands = candidates(PER_COPY)
    net = Supernet(built(cands), [c.values for c in cands]).train()
    y = torch.tensor([0, 1, 1, 0, 1])
    for i in range(len(cands)):
        net.zero_grad(set_to_none=True)
        net.active = i
        nn.functional.cross_entropy(net(x_batch()), y).backward()
        used = {shared_index(net, v) for v in net.parameters_of(i).values()}
        assert len(used) == 3 + 2 + 12  # stem, head, two units of 6
        for k, s in enumerate(net.shared):
            if k in used:
                assert s.grad is not None and s.grad.abs().sum() > 0, net.shared_names[k]
            else:
                assert s.grad is None, net.shared_names[k]


# --------------------------------------------------------------------------- recalibration


def batch_norm_inputs(module: nn.Module, batches: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """The input of every BatchNorm of ``module`` for each batch, in training mode (plain forward hooks)."""
    seen: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
    hooks = [m.register_forward_hook(lambda m, args, out, name=name: seen[name].append(args[0].detach().clone()))
             for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    module.train()
    with torch.no_grad():
        for x in batches:
            module(x)
    for h in hooks:
        h.remove()
    return seen


def test_recalibrate_sets_the_plain_average_of_the_batch_statistics_and_touches_nothing_else():
    cands = candidates(PER_COPY)
    net = Supernet(built(cands), [c.values for c in cands])
    path = 1
    norms = {n: m for n, m in net.paths[path].module.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(norms) == 5  # stem, and mix and shortcut of two units
    norms["stem.norm"].momentum = 0.3  # one unusual momentum, to see it restored
    momenta = {n: m.momentum for n, m in norms.items()}
    batches = [x_batch(6, seed=s) * (1 + s) + s for s in range(3)]
    reference = archforge.build(cands[path].spec)
    reference.load_state_dict(net.state_dict_of(path))
    inputs = batch_norm_inputs(reference, batches)
    shared_before = [s.detach().clone() for s in net.shared]
    others_before = [{n: b.clone() for n, b in p.module.named_buffers()} for p in net.paths]
    net.eval()
    net.active = 3

    assert net.recalibrate(path, batches) == 5

    for name, m in norms.items():
        means = [x.mean(dim=(0, 2, 3)) for x in inputs[name]]
        variances = [x.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for x in inputs[name]]
        torch.testing.assert_close(m.running_mean, sum(means) / len(means), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var, sum(variances) / len(variances), rtol=1e-5, atol=1e-6)
        assert int(m.num_batches_tracked) == len(batches)
        assert m.momentum == momenta[name]
    assert not net.training and all(not p.module.training for p in net.paths)  # the mode is restored
    assert net.active == 3
    assert all(torch.equal(s.detach(), b) for s, b in zip(net.shared, shared_before))
    for i, p in enumerate(net.paths):
        if i != path:
            assert all(torch.equal(b, others_before[i][n]) for n, b in p.module.named_buffers())
    # In training mode, it stays in training mode.
    net.train()
    net.recalibrate(path, batches[:1])
    assert net.training and all(p.module.training for p in net.paths)


def test_recalibrate_without_batch_norms_changes_nothing():
    space = candidates(KERNELS.replace("channels: 4, kernel: $kernel", "channels: 4, kernel: $kernel, norm: none"))
    net = Supernet(built(space), [c.values for c in space])
    assert net.recalibrate(0, [x_batch()]) == 0


# --------------------------------------------------------------------------- the schedule


def grid(**domains) -> list[dict]:
    names = list(domains)
    combos = [[]]
    for n in names:
        combos = [c + [v] for c in combos for v in domains[n]]
    return [dict(zip(names, c)) for c in combos]


def test_uniform_draws_one_path_in_range_and_every_path_in_time():
    paths = grid(a=[1, 2, 3], b=["x", "y"])
    schedule = PathSchedule(paths, "uniform", seed=0)
    assert schedule.per_step == 1
    drawn = [schedule.next() for _ in range(300)]
    assert all(len(step) == 1 and 0 <= step[0] < len(paths) for step in drawn)
    assert {step[0] for step in drawn} == set(range(len(paths)))


def test_fair_on_a_full_binary_grid_uses_every_value_once_per_step():
    paths = grid(a=[0, 1], b=["p", "q"], c=[True, False])
    schedule = PathSchedule(paths, "fair", seed=3)
    assert schedule.per_step == 2
    for _ in range(50):
        step = schedule.next()
        assert len(step) == 2
        for name, domain in (("a", [0, 1]), ("b", ["p", "q"]), ("c", [True, False])):
            assert sorted(map(str, (paths[i][name] for i in step))) == sorted(map(str, domain))


def test_fair_with_three_and_two_values_takes_three_paths_per_step():
    paths = grid(op=["conv", "attention", "mlp"], width=[16, 32])
    schedule = PathSchedule(paths, "fair", seed=1)
    assert schedule.per_step == 3
    for _ in range(50):
        step = schedule.next()
        assert sorted(paths[i]["op"] for i in step) == ["attention", "conv", "mlp"]
        widths = collections.Counter(paths[i]["width"] for i in step)
        assert sorted(widths.values()) == [1, 2] and set(widths) == {16, 32}  # ceil(3/2) and floor(3/2)


def test_fair_with_three_and_two_values_is_fair_over_many_steps():
    paths = grid(op=["conv", "attention", "mlp"], width=[16, 32])
    schedule = PathSchedule(paths, "fair", seed=1)
    widths = collections.Counter(paths[i]["width"] for _ in range(600) for i in schedule.next())
    # 1800 uses; each value's expected share is 900 (std about 21 if the extra use went to either value at random).
    assert abs(widths[16] - widths[32]) < 300, widths


def test_fair_on_a_pool_missing_combinations_stands_in_the_nearest_path():
    # x and y are always equal in the pool, z is free: a step's combination (x, y, z) with x != y is no path; the
    # nearest paths (two decisions agree) are (x, x, z) and (y, y, z), never one with the other z.
    paths = [p for p in grid(x=[0, 1], y=[0, 1], z=["u", "v"]) if p["x"] == p["y"]]
    schedule = PathSchedule(paths, "fair", seed=5)
    assert schedule.per_step == 2
    missing = 0
    for _ in range(100):
        step = schedule.next()
        assert len(step) == 2 and all(0 <= i < len(paths) for i in step)
        assert sorted(paths[i]["z"] for i in step) == ["u", "v"]
        missing += sorted(paths[i]["x"] for i in step) != [0, 1]
    assert missing > 0  # some steps did need a stand-in (x the same in both paths)


def test_the_same_seed_gives_the_same_sequence_and_another_seed_another():
    paths = grid(a=[0, 1, 2], b=[0, 1], c=[0, 1, 2, 3])
    for sampling in ("uniform", "fair"):
        first = PathSchedule(paths, sampling, seed=7)
        second = PathSchedule(paths, sampling, seed=7)
        third = PathSchedule(paths, sampling, seed=8)
        one = [first.next() for _ in range(40)]
        assert one == [second.next() for _ in range(40)]
        assert one != [third.next() for _ in range(40)]


def test_fair_balances_a_block_choice_and_leaves_a_float_range_to_chance():
    floats = [round(0.05 * k, 2) for k in range(20)]
    paths = grid(op=["conv", "attention"], drop=floats)
    schedule = PathSchedule(paths, "fair", seed=2)
    assert set(schedule.balanced) == {"op"}
    assert schedule.per_step == 2  # the block choice's 2 values, not the float's 20
    used = collections.Counter()
    for _ in range(200):
        step = schedule.next()
        assert sorted(paths[i]["op"] for i in step) == ["attention", "conv"]
        used.update(step)
    # 400 uses over 40 paths: the float is drawn at random among the paths with the step's op, so every value comes.
    assert {paths[i]["drop"] for i in used} == set(floats)
    assert set(used) == set(range(len(paths)))


@pytest.mark.parametrize("count", [1, 2, FAIR_MAX_VALUES, FAIR_MAX_VALUES + 1])
def test_a_decision_is_balanced_when_it_has_2_to_fair_max_values_values(count):
    assert FAIR_MAX_VALUES == 8
    paths = grid(width=list(range(count)), op=["a", "b"])
    schedule = PathSchedule(paths, "fair", seed=4)
    balanced = 2 <= count <= 8
    assert set(schedule.balanced) == ({"width", "op"} if balanced else {"op"})
    assert schedule.per_step == (count if balanced else 2)
    for _ in range(30):
        step = schedule.next()
        if balanced:  # a full grid: each width exactly once, each op count / 2 times
            assert sorted(paths[i]["width"] for i in step) == list(range(count))
            assert collections.Counter(paths[i]["op"] for i in step) == {"a": count // 2, "b": count // 2}
        else:
            assert sorted(paths[i]["op"] for i in step) == ["a", "b"]


def test_fair_without_a_balanced_decision_draws_one_path_per_step():
    # A fixed value (one value: nothing to balance) and two decisions of 20 values each.
    paths = [{"fixed": 1, "lr": 0.01 * k, "depth": k} for k in range(1, 21)]
    schedule = PathSchedule(paths, "fair", seed=0)
    assert schedule.balanced == {} and schedule.per_step == 1
    drawn = [schedule.next() for _ in range(400)]
    assert all(len(step) == 1 for step in drawn)
    assert {step[0] for step in drawn} == set(range(20))


def test_fair_on_a_pool_of_1024_paths_is_fast():
    full = grid(a=range(4), b=range(4), c=range(4), d=range(4), e=range(4))
    with_floats = grid(op=["conv", "attention"], drop=[k / 512 for k in range(512)])
    for paths, per_step in ((full, 4), (with_floats, 2)):
        assert len(paths) == 1024
        schedule = PathSchedule(paths, "fair", seed=0)
        assert schedule.per_step == per_step
        started = time.perf_counter()
        steps = [schedule.next() for _ in range(20)]
        assert (time.perf_counter() - started) / 20 < 0.05  # loose: it was quadratic in the paths
        for step in steps:
            for name in schedule.balanced:  # the full grid has every combination: exactly fair
                assert sorted(paths[i][name] for i in step) == sorted({p[name] for p in paths})


def test_schedule_and_supernet_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="sampling must be one of uniform, fair"):
        PathSchedule([{"a": 1}], "greedy", seed=0)
    with pytest.raises(ValueError):
        Supernet([], [])
    assert PathSchedule([{"a": 1}], "fair", seed=0).next() == [0]


# --------------------------------------------------------------------------- a plugin block


class Gain(Block):
    """A learnt gain per channel: ``y = x · g`` (a test block from no package)."""

    name = "test_gain"
    layout = "map"

    def infer(self, x: Shape, args) -> Shape:
        return x

    def build(self, x: Shape, args, *, device=None, dtype=None) -> nn.Module:
        return _GainModule(x.channels, device=device, dtype=dtype)


class _GainModule(nn.Module):
    def __init__(self, channels: int, *, device=None, dtype=None):
        super().__init__()
        self.gain = nn.Parameter(torch.randn(channels, device=device, dtype=dtype))
        # Not part of a state dict: a path's state dict must leave it out, or the stand-alone load (strict) fails.
        self.register_buffer("scratch", torch.zeros(channels, device=device, dtype=dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gain + self.scratch).view(1, -1, 1, 1)


class _Plugin:
    @hookimpl
    def archforge_blocks(self):
        return [Gain]


PLUGIN_SPACE = """\
archforge: 1
name: plugin
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: gain, block: test_gain}
  - {id: head, block: classifier, args: {classes: 2}}
"""


def test_a_plugin_block_shares_and_slices_like_any_other():
    registry = load_registry([("test-gain", _Plugin())])
    cands = candidates(PLUGIN_SPACE)
    modules = built(cands, registry=registry)
    gains = [m.get_parameter("gain.gain").detach().clone() for m in modules]
    net = Supernet(modules, [c.values for c in cands])
    narrow, wide = net.parameters_of(0), net.parameters_of(1)
    k = shared_index(net, narrow["gain.gain"])
    assert shared_index(net, wide["gain.gain"]) == k and tuple(net.shared[k].shape) == (8,)
    assert torch.equal(net.shared[k].detach(), gains[1])  # the wide path's values
    assert torch.equal(narrow["gain.gain"], net.shared[k][:4])
    assert len(net.shared) == 3 + 1 + 2
    net.eval()
    for i, c in enumerate(cands):
        alone = archforge.build(c.spec, registry=registry).eval()
        alone.load_state_dict(net.state_dict_of(i))
        net.active = i
        with torch.no_grad():
            torch.testing.assert_close(net(x_batch()), alone(x_batch()), rtol=0, atol=1e-6)
