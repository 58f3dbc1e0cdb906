"""grain input pipelines: seeded shuffling, per-process sharding, host-side augmentation.

Training: MapDataset.range(examples) -> per-epoch shuffle(seed) -> random_map (each example's
crop offsets and flip) -> batch(drop_remainder) -> every n-th batch for process i of n -> read,
pad-and-crop, flip and normalise the batch at once -> iterator whose state saves with the
checkpoint (grain.checkpoint). Evaluation: the split in order, padded to full
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
    """uint8 images -> float32 normalised (H, W, C), optionally augmented.

    A batch at a time: `draw(rng)` takes one example's augmentation from its generator
    (crop offsets, then the flip, in that order) and `batch(images, draws)` applies every
    example's in one gather (the window of the zero-padded image, columns reversed when
    flipped) and one lookup in a 256-entry table per channel holding (v / 255 - mean) / std of
    every byte value v, computed in float32 as that formula is (bitwise the same values).
    `pre(example, rng)` is the same for one example."""

    def __init__(self, ds: Dataset, image_size: int | None, augment: bool):
        self.hw = (image_size, image_size) if image_size else ds.image_shape[:2]
        mean = np.asarray(ds.spec.mean, np.float32)
        std = np.asarray(ds.spec.std, np.float32)
        values = np.arange(256, dtype=np.uint8)[:, None].astype(np.float32)
        self.table = (values / 255.0 - mean) / std  # (256, channels)
        self.channel = np.arange(self.table.shape[1])
        self.pad = ds.spec.crop_pad if augment else 0
        self.flip = ds.spec.flip and augment

    def draw(self, rng: np.random.Generator | None) -> tuple[int, int, bool]:
        """(dy, dx, flip): the window's offsets in the padded image and whether to flip."""
        dy = dx = self.pad
        if self.pad and rng is not None:
            dy, dx = (int(d) for d in rng.integers(0, 2 * self.pad + 1, size=2))
        return dy, dx, bool(self.flip and rng is not None and rng.random() < 0.5)

    def image(self, example: dict) -> np.ndarray:
        """One example's uint8 image at the pipeline's size."""
        return _resize(np.asarray(example["image"]), self.hw)

    def batch(self, images: np.ndarray, dy, dx, flip) -> np.ndarray:
        """(B, H, W, C) uint8 images, each example's draw -> (B, H, W, C) float32."""
        (h, w), p = self.hw, self.pad
        if p or np.any(flip):
            padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
            cols = np.where(np.asarray(flip)[:, None], np.arange(w - 1, -1, -1), np.arange(w))
            rows = np.asarray(dy)[:, None] + np.arange(h)
            cols = np.asarray(dx)[:, None] + cols
            b = np.arange(len(images))[:, None, None]
            images = padded[b, rows[:, :, None], cols[:, None, :]]
        return self.table[images, self.channel]

    def __call__(self, example: dict, rng: np.random.Generator | None = None) -> dict:
        dy, dx, flip = self.draw(rng)
        image = self.batch(self.image(example)[None], [dy], [dx], [flip])[0]
        return {"image": image, "label": np.int32(example["label"])}


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

    grain draws, per example, its place in a seeded permutation of every epoch and its
    augmentation (`Preprocess.draw`, from the example's own generator, reseeded every epoch);
    the reader then decodes and preprocesses a batch of them at once. Every process walks the
    same seeded global order and takes every process_count-th batch of B, so the global batch
    (process 0's rows, then process 1's, ...) holds the same examples and augmentations
    whatever the number of processes. Each process reads only its own rows.
    """
    pre = Preprocess(ds, image_size, augment)
    source = ds.train
    if len(source) < batch_size * process_count:
        raise DataError(
            f"config.data.batch_size={batch_size * process_count} exceeds the {len(source)} "
            f"training examples of {ds.name!r}; lower it or use more data "
            f"(config.data.train_per_class)"
        )

    def read(drawn) -> dict:
        index, dy, dx, flip = drawn
        examples = [source[int(i)] for i in index]
        images = np.stack([pre.image(e) for e in examples])
        labels = np.asarray([e["label"] for e in examples], np.int32)
        return {"image": pre.batch(images, dy, dx, flip), "label": labels}

    drawn = (
        grain.MapDataset.range(len(source))
        .seed(seed)
        .shuffle()  # a permutation of the epoch...
        .random_map(lambda i, rng: (i, *pre.draw(rng)))
        .repeat()  # ...reseeded every epoch, as are the augmentations
        .batch(batch_size, drop_remainder=True)
    )
    if process_count > 1:  # global batch g = local batches g*n ... g*n + n-1
        drawn = drawn[process_index::process_count]
    # One reader thread, two batches ahead (the elements here are batches). grain's default
    # (16 threads, 500 elements ahead) competes with the train step for the cores: on 2 CPU
    # cores a ResNet-8 step took 7.6x longer (python -m benchmarks.input_pipeline).
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
    return iter(drawn.map(read).to_iter_dataset(options))


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
