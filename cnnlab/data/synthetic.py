"""Synthetic images of any shape and class count, for speed tests and smoke runs.

Example i has label i % num_classes and an image of seeded noise plus a class-specific pattern,
so it is learnable; every example is a pure function of (seed, index).
"""

import numpy as np


class SyntheticSource:
    """Random-access source: len() and [i] -> {'image': uint8 (H, W, C), 'label': int}."""

    def __init__(self, num_examples=1024, image_shape=(32, 32, 3), num_classes=10, seed=0):
        self.num_examples, self.image_shape, self.num_classes = (
            num_examples,
            image_shape,
            num_classes,
        )
        self.seed = seed
        patterns = np.random.default_rng(seed).uniform(0, 255, (num_classes, *image_shape))
        self._patterns = patterns.astype(np.float32)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        noise = np.random.default_rng((self.seed, i)).uniform(0, 255, self.image_shape)
        label = i % self.num_classes
        image = 0.5 * noise + 0.5 * self._patterns[label]
        return {"image": image.astype(np.uint8), "label": label}
