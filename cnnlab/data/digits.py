"""The embedded offline dataset: scikit-learn's bundled 8x8 handwritten digits as a TFDS dataset.

UCI "Optical Recognition of Handwritten Digits" (1,797 images, 10 classes, pixel values 0..16),
which ships inside scikit-learn. Written once as TFDS array_record files into `data_dir`, then read
back through `tfds.data_source` like any other TFDS dataset. No network, no TensorFlow.
"""

import numpy as np
import tensorflow_datasets as tfds

NAME = "cnnlab_digits"
N_TRAIN = 1500  # of 1,797; the remaining 297 are the test split


class CnnlabDigits(tfds.core.GeneratorBasedBuilder):
    """sklearn digits, images scaled to uint8 0..255, shape (8, 8, 1); a fixed seeded split."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

    def _generate_examples(self, split):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
        order = np.random.default_rng(0).permutation(len(images))
        for i in order[:N_TRAIN] if split == "train" else order[N_TRAIN:]:
            yield int(i), {"image": images[i], "label": int(digits.target[i])}


def prepare(data_dir: str) -> None:
    """Write the dataset into data_dir (a no-op when it is already there)."""
    write_quietly(CnnlabDigits, data_dir)


def write_quietly(builder_cls, data_dir: str) -> None:
    """builder.download_and_prepare() without TFDS's progress bars and its "Downloading and
    preparing dataset ... Unknown size" lines (nothing is downloaded); one line says where the
    data went. Safe when several processes share data_dir: TFDS writes into an incomplete.*
    directory and renames it; a process that loses the race finds the dataset there."""
    import contextlib
    import io
    import logging
    import sys

    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # "Variant folder ... has no dataset_info.json": not yet
    tfds.display_progress_bar(False)
    try:
        builder = builder_cls(data_dir=data_dir, file_format="array_record")
        if builder.is_prepared():
            return
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare()
    except FileExistsError:
        return  # another process renamed its finished copy into place first
    finally:
        tfds.display_progress_bar(True)
        absl_log.setLevel(level)
    print(f"prepared {builder.name} in {builder.data_dir} (once)", file=sys.stderr)
