"""Datasets: resolution by name, loaders, stratified deterministic splits, normalisation, augmentation."""

import errno
import sys
import types

import numpy as np
import pytest
import torch

import archforge.data.sources
from archforge.data import AugmentConfig, BatchAugment, DatasetError, default_augment, load_dataset
from archforge.data.cache import write_npz_atomic
from archforge.data.loaders import images_from_array
from archforge.registry import DatasetSource, ImageData, hookimpl, load_registry


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.2, seed=0)


def test_builtins_come_through_the_hook():
    registry = load_registry([("archforge-data", archforge.data.sources)], entry_points=False)
    assert {"mnist", "digits"} <= set(registry.datasets)
    split = load_dataset("digits", registry=registry, limit=100)
    assert split.input_shape == (1, 8, 8) and split.num_classes == 10


def test_digits_split_shapes_and_types(digits):
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert len(digits.train_y) + len(digits.val_y) == 1797
    assert len(digits.val_y) == pytest.approx(0.2 * 1797, abs=10)


def test_split_is_stratified_disjoint_and_deterministic(digits):
    train, val = set(digits.train_index.tolist()), set(digits.val_index.tolist())
    assert not train & val and len(train | val) == 1797
    # every class has ~20 % of its samples in validation
    counts_val = torch.bincount(digits.val_y, minlength=10).double()
    counts_all = counts_val + torch.bincount(digits.train_y, minlength=10).double()
    assert torch.all((counts_val / counts_all - 0.2).abs() < 0.01)

    again = load_dataset("digits", val_fraction=0.2, seed=0)
    assert torch.equal(again.val_index, digits.val_index) and torch.equal(again.train_x, digits.train_x)
    other = load_dataset("digits", val_fraction=0.2, seed=1)
    assert not torch.equal(other.val_index, digits.val_index)


def test_normalisation_uses_training_statistics_only(digits):
    raw = archforge.data.sources.load_digits().images  # [0, 1] scale, what the split normalises
    train_raw = raw[digits.train_index]
    mean, std = train_raw.mean().item(), train_raw.std(unbiased=False).item()
    assert digits.mean[0] == pytest.approx(mean, rel=1e-6) and digits.std[0] == pytest.approx(std, rel=1e-6)
    # statistics over all images differ, so using them would be caught
    assert abs(raw.mean().item() - mean) > 1e-5
    assert torch.allclose(digits.train_x, (train_raw - mean) / std, atol=1e-5)
    assert torch.allclose(digits.val_x, (raw[digits.val_index] - mean) / std, atol=1e-5)
    assert digits.train_x.mean().abs() < 1e-5 and abs(digits.train_x.std(unbiased=False).item() - 1) < 1e-4


def test_limit_keeps_class_balance():
    small = load_dataset("digits", limit=200, seed=3)
    labels = torch.cat([small.train_y, small.val_y])
    assert len(labels) == 200
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21  # digits is balanced to within a few images per class
    assert torch.equal(load_dataset("digits", limit=200, seed=3).train_index, small.train_index)


def test_npz_round_trip_nhwc_uint8_and_nchw_float(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    nhwc = rng.integers(0, 256, size=(30, 6, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=nhwc, y=labels)
    a = load_dataset(str(tmp_path / "a.npz"), val_fraction=0.2)
    assert a.input_shape == (3, 6, 5) and a.num_classes == 3
    # undo the normalisation: the pixels come back exactly, channels first
    restored = a.train_x * torch.tensor(a.std).view(1, 3, 1, 1) + torch.tensor(a.mean).view(1, 3, 1, 1)
    expected = torch.from_numpy(nhwc.transpose(0, 3, 1, 2)[a.train_index.numpy()]).float() / 255
    assert torch.allclose(restored, expected, atol=1e-5)

    nchw = rng.random(size=(30, 2, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "b.npz", images=nchw, labels=labels + 5, classes=np.array(["cat", "dog", "eel"]))
    b = load_dataset(str(tmp_path / "b.npz"))
    assert b.input_shape == (2, 4, 4) and b.classes == ["cat", "dog", "eel"]
    restored = b.val_x * torch.tensor(b.std).view(1, 2, 1, 1) + torch.tensor(b.mean).view(1, 2, 1, 1)
    assert torch.allclose(restored, torch.from_numpy(nchw[b.val_index.numpy()]), atol=1e-5)
    assert torch.equal(b.val_y, torch.from_numpy(labels[b.val_index.numpy()]))  # 5, 6, 7 mapped to 0, 1, 2


def test_npz_grayscale_nhw_and_bad_keys(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.zeros((8, 7, 7), np.uint8), y=np.arange(8) % 2)
    assert load_dataset(str(tmp_path / "g.npz")).input_shape == (1, 7, 7)
    np.savez(tmp_path / "bad.npz", pixels=np.zeros((4, 3, 3)), y=np.arange(4))
    with pytest.raises(DatasetError, match="'x' or 'images'"):
        load_dataset(str(tmp_path / "bad.npz"))
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(str(tmp_path / "missing.npz"))


def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed: the image-folder loader needs it")
    rng = np.random.default_rng(1)
    for name in ("ant", "bee"):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (6, 4), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    split = load_dataset(str(tmp_path), val_fraction=0.4)
    assert split.classes == ["ant", "bee"] and split.input_shape == (1, 6, 4)
    assert sorted(torch.cat([split.train_y, split.val_y]).tolist()) == [0] * 5 + [1] * 5
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "ant" / "odd.png")
    with pytest.raises(DatasetError, match="different sizes"):
        load_dataset(str(tmp_path))
    assert load_dataset(str(tmp_path), size=(6, 4)).input_shape == (3, 6, 4)  # one RGB image: all RGB


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(DatasetError) as info:
        load_dataset("digist")
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert "unknown dataset 'digist'" in message and "did you mean 'digits'" in message and "mnist" in message


class _ToyPlugin:
    @hookimpl
    def archforge_datasets(self):
        def load(scale: float = 1.0):
            labels = torch.arange(40) % 4
            images = (labels.float() * scale / 4).view(40, 1, 1, 1).expand(40, 1, 3, 3).contiguous()
            return ImageData(images, labels, ["a", "b", "c", "d"])

        return [DatasetSource("toy", load, "four constant images")]


def test_plugin_dataset_is_loadable_by_name():
    registry = load_registry([("toy-plugin", _ToyPlugin())], entry_points=False)
    split = load_dataset("toy", registry=registry, val_fraction=0.25, scale=0.5)
    assert split.classes == ["a", "b", "c", "d"] and split.input_shape == (1, 3, 3)
    assert len(split.val_y) == 12 and torch.bincount(split.val_y).tolist() == [3, 3, 3, 3]
    with pytest.raises(DatasetError, match="did you mean 'toy'"):
        load_dataset("tay", registry=registry)


def test_torchvision_reads_from_disk_and_never_downloads(monkeypatch, tmp_path):
    calls = {}

    class FakeSet:
        classes = ["zero", "one"]

        def __init__(self, root, train=True, download=False):
            calls.update(root=root, train=train, download=download)
            if not (tmp_path / "FakeSet").exists():
                raise RuntimeError("Dataset not found. You can use download=True to download it")
            self.data = np.full((6, 4, 4, 3), 255, np.uint8)
            self.targets = [0, 1, 0, 1, 0, 1]

    fake = types.ModuleType("torchvision")
    fake.datasets = types.ModuleType("torchvision.datasets")
    fake.datasets.FakeSet = FakeSet
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    with pytest.raises(DatasetError, match="not found under .*never downloads"):
        load_dataset("torchvision:FakeSet", root=tmp_path)
    assert calls["download"] is False
    (tmp_path / "FakeSet").mkdir()
    split = load_dataset("torchvision:FakeSet", root=tmp_path, val_fraction=0.34)
    assert split.input_shape == (3, 4, 4) and split.classes == ["zero", "one"] and calls["train"] is True
    with pytest.raises(DatasetError, match="did you mean 'FakeSet'"):
        load_dataset("torchvision:FakeSat", root=tmp_path)


def test_cache_is_written_atomically_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHFORGE_CACHE", str(tmp_path))
    archforge.data.sources.clear_memory_cache()
    reads = []
    original = archforge.data.sources._read_digits
    monkeypatch.setattr(archforge.data.sources, "_read_digits", lambda: reads.append(1) or original())
    try:
        first = load_dataset("digits", limit=50)
        assert (tmp_path / "digits-v1.npz").is_file() and not list(tmp_path.glob("*.tmp"))
        archforge.data.sources.clear_memory_cache()
        second = load_dataset("digits", limit=50)
        assert reads == [1] and torch.equal(first.train_x, second.train_x)
    finally:
        archforge.data.sources.clear_memory_cache()


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "sub" / "a.npz"
    assert write_npz_atomic(target, x=np.arange(3))
    assert np.load(target)["x"].tolist() == [0, 1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["a.npz"]


def test_an_unwritable_cache_warns_and_keeps_the_old_file(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="could not cache a.npz"):
        assert not write_npz_atomic(blocker / "a.npz", x=np.arange(3))  # a cache folder under a file
    target = tmp_path / "a.npz"
    assert write_npz_atomic(target, x=np.arange(3))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.warns(RuntimeWarning, match="could not cache a.npz .*No space left on device"):
        assert not write_npz_atomic(target, x=np.arange(5))
    monkeypatch.undo()
    assert np.load(target)["x"].tolist() == [0, 1, 2]  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "file"]  # no temporary file left


def test_images_from_array_scaling():
    assert images_from_array(np.full((2, 3, 3), 255, np.uint8)).max() == 1.0
    floats = images_from_array(np.linspace(0, 255, 2 * 9, dtype=np.float32).reshape(2, 1, 3, 3))
    assert floats.min() == 0.0 and floats.max() == 1.0


def test_augmentation_is_a_batched_shift_with_black_padding():
    mean, std = (0.5,), (0.25,)
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    augment = BatchAugment(AugmentConfig(crop_padding=1), mean, std, seed=0)
    out = augment(x)
    assert out.shape == x.shape
    black = -mean[0] / std[0]
    for i in range(2):  # each sample is its image shifted by (dy, dx) in -1..1, padded with black
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                padded = torch.nn.functional.pad(x[i, 0] - black, (1, 1, 1, 1)) + black
                matches.append(torch.equal(out[i, 0], padded[1 + dy:5 + dy, 1 + dx:5 + dx]))
        assert any(matches)
    again = BatchAugment(AugmentConfig(crop_padding=1), mean, std, seed=0)(x)
    assert torch.equal(out, again)  # reproducible from the seed
    assert default_augment((1, 8, 8)) == AugmentConfig(crop_padding=1, hflip=False)
    flipped = BatchAugment(AugmentConfig(crop_padding=0, hflip=True), mean, std, seed=0)(x.repeat(16, 1, 1, 1))
    mirrored = [torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flipped)]
    assert 0 < sum(mirrored) < 32


# --- Known-answer tasks (archforge.data.known_answer) ---

from archforge.data import known_answer  # noqa: E402


def test_known_answer_tasks_are_registered_mnist_shaped_balanced_and_deterministic():
    registry = load_registry([("archforge-data", archforge.data.sources)], entry_points=False)
    assert {"local_texture", "long_range"} <= set(registry.datasets)
    for name, classes in (("local_texture", 3), ("long_range", 2)):
        data = registry.datasets[name][0].load()
        assert data.images.shape == (5000, 1, 28, 28) and data.images.dtype == torch.float32
        assert 0.0 <= data.images.min() and data.images.max() <= 1.0
        counts = torch.bincount(data.labels).tolist()
        assert len(counts) == classes and sum(counts) == 5000 and max(counts) - min(counts) <= 1
        split = load_dataset(name, limit=400, seed=1)
        assert split.input_shape == (1, 28, 28) and split.num_classes == classes
    first, second = known_answer.make_local_texture(200), known_answer.make_local_texture(200)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    images = first[0]
    assert not np.array_equal(images, known_answer.make_local_texture(200, seed=1)[0])
    first, second = known_answer.make_long_range(200), known_answer.make_long_range(200)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def _junction_class(motif: np.ndarray) -> int:
    """0 plus, 1 tee, 2 ell: how many of the two strokes end (rather than cross) where they meet."""
    row = int(motif.all(axis=1).argmax())     # the horizontal stroke: a fully lit row
    col = int(motif.all(axis=0).argmax())     # the vertical stroke: a fully lit column
    return int(row in (0, 4)) + int(col in (0, 4))


def test_local_texture_is_tiled_by_motifs_of_its_class_with_equal_ink(monkeypatch):
    monkeypatch.setattr(known_answer, "TEXTURE_NOISE", 0.0)
    images, labels, corners = known_answer.make_local_texture(300)
    assert known_answer.TEXTURE_CLASSES == ["plus", "tee", "ell"]
    for i in range(300):
        for cell, (r, c) in enumerate(corners[i]):
            origin = np.array(divmod(cell, 4)) * 7
            assert ((corners[i, cell] - origin) >= 0).all() and ((corners[i, cell] - origin) <= 2).all()
            motif = images[i, r:r + 5, c:c + 5] > 0
            assert motif.sum() == 9 and _junction_class(motif) == labels[i]  # same ink in every class
            # one horizontal and one vertical 5-pixel stroke in every class: the label is in how they
            # meet, not in which orientations are there
            assert (motif[:, :-1] & motif[:, 1:]).sum() == (motif[:-1, :] & motif[1:, :]).sum() == 4
        assert (images[i] > 0).sum() == 16 * 9  # nothing but the 16 motifs


def test_long_range_marks_are_far_apart_and_the_label_says_whether_they_match():
    images, labels, corners = known_answer.make_long_range(1000)
    glyphs = known_answer.GLYPHS.astype(bool)

    def glyph_at(image: np.ndarray, row: int, col: int) -> int:
        patch = image[row:row + 5, col:col + 5]
        # a mark's pixels all hold one brightness of 0.6 or more; noise and specks do not repeat a value
        matches = [k for k, g in enumerate(glyphs) if np.ptp(patch[g]) == 0 and patch[g][0] >= 0.6]
        assert len(matches) == 1, (row, col, matches)
        return matches[0]

    found = np.array([[glyph_at(images[i], *corners[i, side]) for side in (0, 1)] for i in range(len(images))])
    assert np.array_equal(labels, (found[:, 0] == found[:, 1]).astype(np.int64))
    assert abs(labels.mean() - 0.5) < 0.01
    for side in (0, 1):  # every glyph equally common on each side, so a single mark says nothing about the label
        assert np.bincount(found[:, side], minlength=2).min() > 450
    centre_gap = corners[:, 1, 1] - corners[:, 0, 1]  # columns between the marks' centres (same glyph size)
    assert centre_gap.min() >= known_answer.MIN_MARK_DISTANCE == 15
    assert (corners[:, 1, 1] - (corners[:, 0, 1] + 4)).min() >= 11  # 10 columns or more between the marks' nearest pixels
