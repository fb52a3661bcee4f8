"""Known-answer tasks: two synthetic datasets whose best conv/attention placement is known in advance.

A placement search (where should convolutions end and attention begin?) is only worth
trusting if it can find *either* answer. These two tasks are built so that the answer
follows from how the image is made, not from what any network happened to learn; the
tests in ``tests/search/test_known_answers.py`` check that the search recovers them.
Both are 1×28×28 in ``[0, 1]``, like MNIST, so that one placement space runs on all three.
Both are generated from a fixed seed with numpy (same images on every machine, nothing
downloaded) in a few tens of milliseconds, and held once per process.

``local_texture`` (3 classes, 5,000 images, balanced): junction textures (after Julesz's
texture-discrimination stimuli). The image is tiled by 4×4 cells of 7×7 pixels; each cell holds
one 5×5 motif at a random offset, in a random one of its four 90° rotations, at a random
brightness in [0.5, 1], over Gaussian noise (std 0.2). Every motif of an image is of the
image's class: two 5-pixel strokes, one horizontal and one vertical, crossing at both centres
(``plus``), meeting at one's end and the other's centre (``tee``), or at both ends (``ell``).
Every motif carries the label, and every 11×11 window holds a whole motif; but all three
classes have the same ink (9 pixels per motif) and, over the rotations, the same horizontal and
vertical stroke content, so the label is in how strokes meet: a local conjunction, which a
stack of small convolutions detects and global averaging of single-pixel or single-stroke
features does not.
Expected answer: convolution is not beaten (see the docs for what was measured: the margin
over attention is small; every placement that keeps a convolution can learn the junctions).

``long_range`` (2 classes, ``different`` and ``same``, 5,000 images, balanced): two marks,
each one of two 5×5 glyphs (plus, cross), one in the left part of the image
(top-left corner column 0–4) and one in the right part (columns 19–23), each at an
independent random row, among sparse distractor specks and Gaussian noise; the label is
whether the two glyphs are the same. Their centres are at least 15 pixels apart (the
nearest pixels of the two at least 10 columns apart), at random vertical offsets.
Expected answer: attention in the last stage wins. Why: a classifier head is global
average pooling + a linear map. While no unit sees both marks, the pooled features are a
sum ``f_L(i) + f_R(j)`` of what each mark contributes alone, and no linear function of such
a sum tells ``i = j`` from ``i ≠ j`` (from ``w·f_L(k) + w·f_R(k) > t`` for two glyphs ``k, m``
follows ``w·f_L(k) + w·f_R(m) > t`` or ``w·f_L(m) + w·f_R(k) > t``): at best about 75%.
The comparison has to happen inside the network, by a unit that mixes both marks'
features: global self-attention does this by content wherever the marks are; a stack of
3×3 convolutions only once its receptive field spans both, at a position that depends on
their random offset, i.e. only in the last stage of a small network, if at all. Measured in
``placement_grid`` (5 epochs, 4,000 training images, lr 0.01, seeds 0-2): conv/conv/attention
0.999, 0.997, 0.520 (reference init) and 0.997, 0.963, 0.998 (pytorch init); conv/conv/conv
0.50-0.54 for all six. The comparison is learned suddenly, within 2-4 epochs, and one run in six
(seed 2, reference init) did not learn it in 5 epochs.

Both tasks are registered as built-in datasets (``dataset: local_texture``,
``--dataset long_range``) by :mod:`archforge.data.sources`.
"""

from __future__ import annotations

import numpy as np
import torch

from archforge.registry import ImageData

SIDE = 28
#: Images per task (the size of the MNIST subset, so that ``limit`` means the same on all three).
SIZE = 5000
SEED = 20240612

#: Junction motifs, one class each: two 5-pixel strokes, one horizontal and one vertical, crossing
#: at both centres (plus), meeting at one's end and the other's centre (tee), or at both ends (ell).
TEXTURE_CLASSES = ["plus", "tee", "ell"]
MOTIF = 5                      # motif side in pixels
CELL = 7                       # the image is tiled by 4×4 cells of 7×7, one motif in each at a random offset
TEXTURE_NOISE = 0.2
MARK = 5                       # glyph side in pixels
#: Columns of a mark's left edge: left mark and right mark (``MIN_MARK_DISTANCE`` apart at least).
LEFT_COLUMNS = (0, 4)
RIGHT_COLUMNS = (19, 23)
MIN_MARK_DISTANCE = RIGHT_COLUMNS[0] - LEFT_COLUMNS[1]   # 15 pixels between the marks' centres, horizontally
LONG_RANGE_CLASSES = ["different", "same"]
SPECKS = (4, 8)                # distractor specks per image (1×1 or 2×2, anywhere)
LONG_RANGE_NOISE = 0.08


def _glyphs() -> np.ndarray:
    """The two 5×5 binary marks: plus and cross.

    Two, not more: with four glyphs the comparison is learned far more slowly (0.66 validation
    accuracy after 6 epochs on 4,000 images, where two reach 0.997), too slowly for a CPU search.
    """
    plus = np.zeros((MARK, MARK))
    plus[2, :] = plus[:, 2] = 1
    cross = np.eye(MARK) + np.fliplr(np.eye(MARK))
    return (np.stack([plus, cross]) > 0).astype(np.float32)


GLYPHS = _glyphs()


def _balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels, each class ``n // classes`` or one more times, in random order."""
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


def _motifs() -> np.ndarray:
    """``(classes, 4, 5, 5)`` binary motifs: plus, tee, ell, each in its four 90° rotations."""
    m, c = MOTIF, MOTIF // 2
    plus = np.zeros((m, m))
    plus[c, :] = plus[:, c] = 1
    tee = np.zeros((m, m))
    tee[0, :] = tee[:, c] = 1
    ell = np.zeros((m, m))
    ell[m - 1, :] = ell[:, 0] = 1
    return (np.stack([np.stack([np.rot90(b, k) for k in range(4)]) for b in (plus, tee, ell)]) > 0).astype(np.float32)


MOTIFS = _motifs()


def make_local_texture(n: int = SIZE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, labels, corners)``: junction textures (see the module docstring).

    ``images`` ``(n, 28, 28)`` float32 in [0, 1]; ``labels`` ``(n,)`` int64 (index into ``TEXTURE_CLASSES``);
    ``corners`` ``(n, 16, 2)`` int64, the (row, column) of each motif's top-left pixel, cell by cell.
    """
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(n, len(TEXTURE_CLASSES), rng)
    cells = SIDE // CELL
    images = rng.normal(0.0, TEXTURE_NOISE, (n, SIDE, SIDE)).astype(np.float32)
    corners = np.zeros((n, cells * cells, 2), dtype=np.int64)
    i, m = np.arange(n)[:, None, None], np.arange(MOTIF)
    for cell in range(cells * cells):
        rotation = rng.integers(0, 4, n)
        corners[:, cell] = np.array(divmod(cell, cells)) * CELL + rng.integers(0, CELL - MOTIF + 1, (n, 2))
        brightness = rng.uniform(0.5, 1.0, n).astype(np.float32)
        r = corners[:, cell, 0, None, None] + m[:, None]                      # (n, 5, 1)
        c = corners[:, cell, 1, None, None] + m[None, :]                      # (n, 1, 5)
        images[i, r, c] = np.where(MOTIFS[labels, rotation] > 0, brightness[:, None, None], images[i, r, c])
    return np.clip(images, 0.0, 1.0).astype(np.float32), labels, corners


def make_long_range(n: int = SIZE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, labels, corners)``: two marks, same glyph or not (see the module docstring).

    ``images`` ``(n, 28, 28)`` float32 in [0, 1]; ``labels`` ``(n,)`` int64, 1 = same;
    ``corners`` ``(n, 2, 2)`` int64, the (row, column) of each mark's top-left pixel (left mark first).
    """
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(n, 2, rng)
    k = len(GLYPHS)
    left = rng.integers(0, k, n)
    # "different": one of the other k - 1 glyphs, uniformly, so every glyph is equally common on both sides
    right = np.where(labels == 1, left, (left + rng.integers(1, k, n)) % k)
    rows = rng.integers(0, SIDE - MARK + 1, (n, 2))
    cols = np.stack([rng.integers(LEFT_COLUMNS[0], LEFT_COLUMNS[1] + 1, n),
                     rng.integers(RIGHT_COLUMNS[0], RIGHT_COLUMNS[1] + 1, n)], axis=1)
    images = rng.normal(0.0, LONG_RANGE_NOISE, (n, SIDE, SIDE)).astype(np.float32)
    every = np.arange(n)[:, None, None, None]
    # Distractor specks: up to SPECKS[1] squares of 1×1 or 2×2 pixels per image, anywhere; no glyph
    # is such a square, so they cannot be mistaken for a mark by its shape.
    count = rng.integers(SPECKS[0], SPECKS[1] + 1, (n, 1))
    size = rng.integers(1, 3, (n, SPECKS[1]))
    top = rng.integers(0, SIDE - 1, (n, SPECKS[1], 2))                   # (n, specks, (row, col))
    value = rng.uniform(0.4, 1.0, (n, SPECKS[1])).astype(np.float32)
    d = np.arange(2)
    inside = (d[:, None] < size[..., None, None]) & (d[None, :] < size[..., None, None])  # (n, specks, 2, 2)
    inside &= (np.arange(SPECKS[1]) < count)[..., None, None]
    r = top[..., 0, None, None] + d[:, None]
    c = top[..., 1, None, None] + d[None, :]
    images[every, r, c] = np.where(inside, np.maximum(images[every, r, c], value[..., None, None]), images[every, r, c])
    brightness = rng.uniform(0.6, 1.0, (n, 2)).astype(np.float32)
    m = np.arange(MARK)
    for side, glyph in enumerate((left, right)):
        r = rows[:, side, None, None] + m[:, None]                           # (n, 5, 1)
        c = cols[:, side, None, None] + m[None, :]                           # (n, 1, 5)
        i = np.arange(n)[:, None, None]
        images[i, r, c] = np.where(GLYPHS[glyph] > 0, brightness[:, side, None, None], images[i, r, c])
    corners = np.stack([rows, cols], axis=2).astype(np.int64)  # (n, 2 marks, (row, col))
    return np.clip(images, 0.0, 1.0).astype(np.float32), labels, corners


_memory: dict[str, ImageData] = {}


def load_local_texture() -> ImageData:
    """The ``local_texture`` task: (5000, 1, 28, 28) in [0, 1], 1,666 or 1,667 images per junction class."""
    if "local_texture" not in _memory:
        images, labels, _ = make_local_texture()
        _memory["local_texture"] = ImageData(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), list(TEXTURE_CLASSES))
    return _memory["local_texture"]


def load_long_range() -> ImageData:
    """The ``long_range`` task: (5000, 1, 28, 28) in [0, 1], 2,500 images each of ``different`` and ``same``."""
    if "long_range" not in _memory:
        images, labels, _ = make_long_range()
        _memory["long_range"] = ImageData(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), list(LONG_RANGE_CLASSES))
    return _memory["long_range"]


__all__ = [
    "GLYPHS", "LONG_RANGE_CLASSES", "MIN_MARK_DISTANCE", "MOTIFS", "TEXTURE_CLASSES",
    "load_local_texture", "load_long_range", "make_local_texture", "make_long_range",
]
