"""Bounds on what a dataset file can make archforge read or allocate, each checked before the work it bounds.

Every loader takes the bound as a keyword of the same name in lower case (``max_bytes=``,
``max_classes=``, ...), which :func:`archforge.data.load_dataset` passes through; without
one, the module attribute here applies, so ``archforge.data.limits.MAX_BYTES = 8 * 2**30``
raises a bound for the whole process.
"""

from __future__ import annotations

#: Decompressed bytes of the arrays read from one ``.npz`` (what the archive declares, checked before reading).
MAX_BYTES = 2 * 1024**3
#: Elements of one image array (images × channels × height × width): 1 GiB once converted to float32.
MAX_ELEMENTS = 256 * 1024**2
#: Classes of a dataset (largest integer label + 1, distinct string labels, or class names).
MAX_CLASSES = 100_000
#: Image files of an image folder, and samples a dataset read item by item may hold.
MAX_IMAGES = 1_000_000
#: Pixels of one image of an image folder, read from its header before it is decoded.
MAX_IMAGE_PIXELS = 4096 * 4096


def resolve(name: str, value: int | None) -> int:
    """``value`` when given, else the module's current ``MAX_<NAME>``."""
    if value is None:
        return int(globals()[f"MAX_{name.upper()}"])
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        from archforge.data.errors import DatasetError

        raise DatasetError(f"max_{name} must be a non-negative integer, got {value!r}")
    return value


def how_to_raise(name: str, value: int) -> str:
    """The end of a message: which bound was hit and how to raise it."""
    return (f"more than max_{name} = {value:,} (pass max_{name}=... to load_dataset, "
            f"or set archforge.data.limits.MAX_{name.upper()})")
