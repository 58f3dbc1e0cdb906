"""Data: the embedded digits dataset, synthetic images, named TFDS datasets, grain pipelines."""

from cnnlab.data.pipeline import Preprocess, eval_batches, train_iterator
from cnnlab.data.sources import SPECS, DataError, Dataset, default_data_dir, load
from cnnlab.data.subset import Subset, subset
from cnnlab.data.synthetic import SyntheticSource

__all__ = [
    "SPECS",
    "DataError",
    "Dataset",
    "Preprocess",
    "Subset",
    "SyntheticSource",
    "default_data_dir",
    "eval_batches",
    "load",
    "subset",
    "train_iterator",
]
