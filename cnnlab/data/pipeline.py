"""grain input pipelines: seeded shuffling, per-process sharding, host-side augmentation.

Training: MapDataset.source -> per-epoch shuffle(seed) -> random_map (pad-and-crop, flip) ->
normalise -> batch(drop_remainder) -> every n-th batch for process i of n -> iterator whose state
saves with the checkpoint (grain.checkpoint). Evaluation: the split in order, padded to full
batches with a `mask` so every example counts exactly once.
"""

import grain
import numpy as np

from cnnlab.data.sources import DataError, Dataset


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(hw):
        return image
    from PIL import Image

    squeeze = image.shape[-1] == 1
    img = Image.fromarray(image[..., 0] if squeeze else image).resize(hw[::-1], Image.BILINEAR)
    out = np.asarray(img)
    return out[..., None] if squeeze else out


class Preprocess:
    """uint8 image -> float32 normalised (H, W, C), optionally augmented with `rng`.

    Per example, so it runs in grain's reader: the pad-and-crop copies the window's pixels
    into a zero frame and a 256-entry table per channel holds (v / 255 - mean) / std of every
    byte value v, computed in float32 as that formula is (bitwise the same values)."""

    def __init__(self, ds: Dataset, image_size: int | None, augment: bool):
        self.hw = (image_size, image_size) if image_size else ds.image_shape[:2]
        mean = np.asarray(ds.spec.mean, np.float32)
        std = np.asarray(ds.spec.std, np.float32)
        values = np.arange(256, dtype=np.uint8)[:, None].astype(np.float32)
        self.table = (values / 255.0 - mean) / std  # (256, channels)
        self.channel = np.arange(self.table.shape[1])
        self.pad = ds.spec.crop_pad if augment else 0
        self.flip = ds.spec.flip and augment

    def __call__(self, example: dict, rng: np.random.Generator | None = None) -> dict:
        image = _resize(np.asarray(example["image"]), self.hw)
        if self.pad and rng is not None:
            (h, w), p = self.hw, self.pad
            dy, dx = (int(d) - p for d in rng.integers(0, 2 * p + 1, size=2))
            # the window [dy, dy + h) x [dx, dx + w) of the image padded by p zeros
            crop = np.zeros_like(image)
            crop[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = image[
                max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)
            ]
            image = crop
        if self.flip and rng is not None and rng.random() < 0.5:
            image = image[:, ::-1]
        return {"image": self.table[image, self.channel], "label": np.int32(example["label"])}


def train_iterator(
    ds: Dataset,
    batch_size: int,
    seed: int,
    *,
    image_size=None,
    augment=True,
    process_index: int = 0,
    process_count: int = 1,
):
    """Endless iterator of {'image': (B,H,W,C) f32, 'label': (B,) i32}; B is per process.

    Every process walks the same seeded global order and takes every process_count-th batch
    of B, so the global batch (process 0's rows, then process 1's, ...) holds the same examples
    and augmentations whatever the number of processes. Each process reads only its own rows.
    """
    pre = Preprocess(ds, image_size, augment)
    source = grain.MapDataset.source(ds.train)
    if len(source) < batch_size * process_count:
        raise DataError(
            f"config.data.batch_size={batch_size * process_count} exceeds the {len(source)} "
            f"training examples of {ds.name!r}; lower it or use more data "
            f"(config.data.train_per_class)"
        )
    pipeline = (
        source.seed(seed)
        .shuffle()  # a permutation of the epoch...
        .random_map(lambda ex, rng: pre(ex, rng))
        .repeat()  # ...reseeded every epoch, as are the augmentations
        .batch(batch_size, drop_remainder=True)
    )
    if process_count > 1:  # global batch g = local batches g*n ... g*n + n-1
        pipeline = pipeline[process_index::process_count]
    # One reader thread, two batches ahead (the elements here are batches). grain's default
    # (16 threads, 500 elements ahead) competes with the train step for the cores: on 2 CPU
    # cores a ResNet-8 step took 7.6x longer (python -m benchmarks.input_pipeline).
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
    return iter(pipeline.to_iter_dataset(options))


def eval_batches(
    ds: Dataset,
    batch_size: int,
    *,
    image_size=None,
    split: str = "test",
    process_index: int = 0,
    process_count: int = 1,
    limit: int | None = None,
):
    """The split in order (its first `limit` examples if given), in fixed-size batches; padding
    rows have mask 0.

    With several processes each yields its slice, and all yield the same number of batches (the
    last ones may be all padding): every process must take part in every global batch.
    """
    pre = Preprocess(ds, image_size, augment=False)
    source = {"test": ds.test, "val": ds.val, "train": ds.train}[split]
    n_total = len(source) if limit is None else min(limit, len(source))
    indices = np.arange(n_total)[process_index::process_count]
    per_process = -(-n_total // process_count)
    blank = pre(source[0])
    for start in range(0, per_process, batch_size):
        chunk = indices[start : start + batch_size]
        examples = [pre(source[int(i)]) for i in chunk]
        n = len(examples)
        images = np.zeros((batch_size, *np.shape(blank["image"])), np.float32)
        labels = np.zeros(batch_size, np.int32)
        if n:
            images[:n] = np.stack([e["image"] for e in examples])
            labels[:n] = [e["label"] for e in examples]
        mask = (np.arange(batch_size) < n).astype(np.float32)
        yield {"image": images, "label": labels, "mask": mask}
