"""Data sets (torchvision, scikit-learn digits) and input validation."""

from .datasets import DATASETS, DatasetNotFoundError, ImageDataset, default_data_root, load_dataset
from .idx import DatasetCorruptError
from .validation import as_image_tensor, check_num_clusters

__all__ = [
    "DATASETS",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "ImageDataset",
    "as_image_tensor",
    "check_num_clusters",
    "default_data_root",
    "load_dataset",
]
