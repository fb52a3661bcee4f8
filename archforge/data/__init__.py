"""Datasets for the architecture search: loading, stratified splits, normalisation, augmentation.

::

    data = archforge.data.load_dataset("mnist", val_fraction=0.2, seed=0)
    data.train_x.shape      # (4000, 1, 28, 28), normalised with the training mean/std
    data.input_shape        # (1, 28, 28): what a spec's input must be
    data.num_classes        # 10

Names: ``mnist`` and ``digits`` (built in, through the ``archforge_datasets`` hook like
any plugin's datasets), any dataset a plugin provides, a path to an ``.npz`` file or an
image folder, or ``torchvision:<NAME>`` (read from disk, never downloaded).
"""

from archforge.data.augment import AugmentConfig, BatchAugment, default_augment
from archforge.data.errors import DatasetError
from archforge.data.load import available_datasets, load_dataset, load_images
from archforge.data.split import DataSplit, make_split

__all__ = [
    "AugmentConfig", "BatchAugment", "DataSplit", "DatasetError", "available_datasets", "default_augment",
    "load_dataset", "load_images", "make_split",
]
