"""Budgeted training of a candidate: accuracy, determinism, early stopping, failures, measurements, the trained module."""

import math

import pytest
import torch
from torch import nn

import archforge
from archforge import Block
from archforge.data import load_dataset
from archforge.data.augment import AugmentConfig, default_augment
from archforge.search import training
from archforge.search.evaluate import EvalResult, TrainConfig, TrialError, augment_config, evaluate, lr_at, train_model
from archforge.testing import registry_with

TINY = """
archforge: 1
name: tiny
input: {shape: [1, 8, 8]}
nodes:
  - {id: c1, block: conv, args: {channels: 16}}
  - {id: c2, block: conv, args: {channels: 32, stride: 2}}
  - {id: flat, block: flatten}
  - {id: head, block: linear, args: {features: 10}}
"""

FAST = dict(epochs=2, batch_size=64, lr=5e-3, threads=1, latency_repeats=5)


def with_block(block: str) -> archforge.Spec:
    return archforge.parse_spec(TINY.replace("  - {id: flat,", f"  - {{id: bad, block: {block}}}\n  - {{id: flat,"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def small():
    return load_dataset("digits", seed=0, limit=300)


@pytest.fixture(scope="module")
def tiny():
    return archforge.parse_spec(TINY)


@pytest.fixture(scope="module")
def trained(tiny, digits):
    return evaluate(tiny, digits, TrainConfig(**FAST))


def test_learns_digits_well_above_chance(trained):
    assert isinstance(trained, EvalResult) and trained.lr == FAST["lr"] and "lr_range" not in trained.timings
    assert trained.accuracy > 0.5 and trained.epochs == 2 and not trained.stopped_early
    assert len(trained.history) == 2 and trained.accuracy == trained.history[-1]
    assert trained.train_time_s > 0 and trained.timings["train"] == trained.train_time_s


def test_same_seed_same_result_different_seed_different(tiny, digits, trained):
    again = evaluate(tiny, digits, TrainConfig(**FAST))
    assert again.accuracy == trained.accuracy and again.history == trained.history
    other = evaluate(tiny, digits, TrainConfig(**{**FAST, "seed": 1}))
    assert other.history != trained.history


def test_params_and_flops_equal_summarize(tiny, trained):
    summary = archforge.summarize(tiny)
    assert (trained.params, trained.flops) == (summary.params, summary.flops)


def test_latency_and_memory_are_measured(trained):
    assert 0 < trained.latency_ms < 1000 and 0 <= trained.latency_iqr_ms < 1000 and trained.timings["latency"] > 0
    assert trained.peak_memory_mb > trained.params * 4 / 1e6  # at least the weights


def test_on_epoch_can_stop_after_the_first_epoch(tiny, small):
    calls = []

    def stop(epoch, accuracy):
        calls.append((epoch, accuracy))
        return True

    result = evaluate(tiny, small, TrainConfig(**{**FAST, "epochs": 3}), on_epoch=stop)
    assert result.epochs == 1 and result.stopped_early and result.history == [calls[0][1]]
    assert calls == [(1, result.accuracy)]


def test_on_epoch_exceptions_propagate_unchanged(tiny, small):
    class Pruned(Exception):
        pass

    def prune(epoch, accuracy):
        raise Pruned()

    with pytest.raises(Pruned):
        evaluate(tiny, small, TrainConfig(**FAST), on_epoch=prune)


class _NanModule(nn.Module):
    def forward(self, x):
        return x * float("nan")


class _RaiseInTraining(nn.Module):
    def forward(self, x):
        if self.training:
            raise ValueError("kaboom")
        return x


class _OomInTraining(nn.Module):
    def forward(self, x):
        if self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return x


def _block(block_name, module):
    class _Test(Block):
        name = block_name
        layout = "any"

        def infer(self, x, args):
            return x

        def build(self, x, args, *, device=None, dtype=None):
            return module()

    _Test.__name__ = f"Test_{block_name}"
    return _Test


@pytest.fixture(scope="module")
def faulty_registry():
    return registry_with(_block("make_nan", _NanModule), _block("raise_in_training", _RaiseInTraining),
                         _block("oom_in_training", _OomInTraining))


def test_nan_loss_is_a_trial_error(small, faulty_registry):
    with pytest.raises(TrialError, match="NaN at epoch 1 step 1") as info:
        evaluate(with_block("make_nan"), small, TrainConfig(**FAST), registry=faulty_registry)
    assert info.value.kind == "nan" and (info.value.epoch, info.value.step) == (1, 1)
    assert info.value.__context__ is None and info.value.__traceback__ is not None


def test_exception_in_forward_names_block_and_exception(small, faulty_registry):
    with pytest.raises(TrialError) as info:
        evaluate(with_block("raise_in_training"), small, TrainConfig(**FAST), registry=faulty_registry)
    message = str(info.value)
    assert "block 'raise_in_training' (node 'bad') raised ValueError: kaboom" in message
    assert "epoch 1 step 1" in message and "\n" not in message and "Traceback" in info.value.details


def test_out_of_memory_is_reported_as_such(small, faulty_registry):
    with pytest.raises(TrialError, match="^out of memory at epoch 1 step 1") as info:
        evaluate(with_block("oom_in_training"), small, TrainConfig(**FAST), registry=faulty_registry)
    assert info.value.kind == "oom"


def test_wrong_input_shape_names_both_shapes(small):
    spec = archforge.parse_spec(TINY.replace("[1, 8, 8]", "[1, 28, 28]"))
    with pytest.raises(TrialError, match=r"\[1, 28, 28\].*\[1, 8, 8\]") as info:
        evaluate(spec, small, TrainConfig(**FAST))
    assert info.value.kind == "shape"


def test_wrong_number_of_classes(small):
    spec = archforge.parse_spec(TINY.replace("features: 10", "features: 7"))
    with pytest.raises(TrialError, match=r"\[7\].*10 classes"):
        evaluate(spec, small, TrainConfig(**FAST))


def test_spec_error_message_is_kept(small):
    spec = archforge.parse_spec(TINY.replace("block: flatten", "block: flaten"))
    with pytest.raises(archforge.SpecError) as expected:
        archforge.validate(spec)
    with pytest.raises(TrialError) as info:
        evaluate(spec, small, TrainConfig(**FAST))
    assert str(info.value) == str(expected.value) and info.value.kind == "spec"


def test_threads_are_restored(tiny, small):
    before = torch.get_num_threads()
    evaluate(tiny, small, TrainConfig(**{**FAST, "epochs": 1, "threads": 1}))
    assert torch.get_num_threads() == before


def test_schedule_warms_up_then_decays():
    lrs = [lr_at(step, 10, 2, 1.0) for step in range(10)]
    assert lrs[:2] == [0.5, 1.0]
    assert lrs[2] == 1.0 and all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] > 0
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_a_failed_trial_releases_its_model(small):
    import weakref

    alive = []

    class Tracked(_OomInTraining):
        def __init__(self):
            super().__init__()
            alive.append(weakref.ref(self))

    registry = registry_with(_block("tracked_oom", Tracked))
    with pytest.raises(TrialError, match="out of memory"):
        evaluate(with_block("tracked_oom"), small, TrainConfig(**FAST), registry=registry)
    assert alive and all(ref() is None for ref in alive)


def test_augmentation_is_applied_and_configurable(tiny, small):
    base = {**FAST, "epochs": 1, "latency_repeats": 0}
    plain = evaluate(tiny, small, TrainConfig(**{**base, "augment": False}))
    shifted = evaluate(tiny, small, TrainConfig(**base))
    assert plain.history != shifted.history
    as_dict = evaluate(tiny, small, TrainConfig(**{**base, "augment": {"crop_padding": 1, "hflip": False}}))
    assert as_dict.history == shifted.history  # default for 8×8 is a 1-pixel shift, no flip
    assert math.isnan(shifted.latency_ms) and math.isnan(shifted.latency_iqr_ms)  # latency_repeats=0 skips the measurement
    assert "latency" not in shifted.timings


def test_augment_setting_becomes_the_batch_augmentation():
    assert augment_config(True, (3, 32, 32)) == default_augment((3, 32, 32)) == AugmentConfig(crop_padding=4, hflip=False)
    assert not augment_config(False, (1, 8, 8)).enabled
    explicit = training.AugmentSettings(crop_padding=3, hflip=True)
    assert augment_config(explicit, (1, 8, 8)) == AugmentConfig(crop_padding=3, hflip=True)


def test_train_config_is_the_search_settings_model():
    assert TrainConfig is training.TrainConfig


def test_train_model_returns_the_module_it_measured(tiny, small):
    config = TrainConfig(**{**FAST, "epochs": 1, "latency_repeats": 0})
    model, result = train_model(tiny, small, config)
    model.eval()
    with torch.no_grad():
        predicted = model(small.val_x).argmax(dim=1)
    assert result.accuracy == int((predicted == small.val_y).sum()) / len(small.val_y)
    again = evaluate(tiny, small, config)
    assert again.history == result.history and again.params == result.params == sum(p.numel() for p in model.parameters())


def test_lr_auto_trains_exactly_as_the_rate_it_found_given_as_a_number(tiny, small):
    """The range test leaves weights, optimiser, data order, augmentation and RNGs as they were."""
    from archforge.search.lr_range import BOUNDS

    quick = {**FAST, "latency_repeats": 0}
    del quick["lr"]
    model_auto, auto = train_model(tiny, small, TrainConfig(**quick, lr="auto"))
    assert BOUNDS[0] <= auto.lr <= BOUNDS[1] and auto.lr != FAST["lr"]
    assert auto.timings["lr_range"] > 0 and auto.timings["total"] >= auto.timings["lr_range"] + auto.timings["train"]
    model_fixed, fixed = train_model(tiny, small, TrainConfig(**quick, lr=auto.lr))
    assert fixed.history == auto.history and fixed.lr == auto.lr and fixed.peak_memory_mb == auto.peak_memory_mb
    weights = model_fixed.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in model_auto.state_dict().items())
    assert evaluate(tiny, small, TrainConfig(**quick, lr="auto")).lr == auto.lr  # deterministic for a seed


def test_lr_auto_names_the_rate_it_found_when_training_diverges(small, faulty_registry):
    with pytest.raises(TrialError, match=r"loss became NaN at epoch 1 step 1 \(lr 0\.0001 found by the range test"):
        evaluate(with_block("make_nan"), small, TrainConfig(**{**FAST, "lr": "auto"}), registry=faulty_registry)
