"""Class subsets and few-shot splits: pre-train on some classes, fine-tune on others.

`subset(ds, classes=(5, 6, 7, 8, 9), train_per_class=10, val_per_class=20, seed=0)` keeps those
classes relabelled 0..k-1 in the order given, holds `val_per_class` training examples per class
out as a validation split (for early stopping; never the test split), and keeps
`train_per_class` of the rest (0: all). The draw is a pure function of `seed`.
"""

import dataclasses

import numpy as np

from cnnlab.data.sources import DataError, Dataset


class Subset:
    """Random-access view of `source` at `indices`, labels mapped through `label_map`."""

    def __init__(self, source, indices, label_map: dict[int, int]):
        self.source, self.indices, self.label_map = source, np.asarray(indices), label_map

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        example = dict(self.source[int(self.indices[int(i)])])
        example["label"] = self.label_map[int(example["label"])]
        return example


def labels_of(source) -> np.ndarray:
    """Every example's label (reads the whole split once)."""
    return np.array([int(source[i]["label"]) for i in range(len(source))])


def subset(
    ds: Dataset,
    classes=(),
    train_per_class: int = 0,
    val_per_class: int = 0,
    seed: int = 0,
) -> Dataset:
    """`ds` restricted to `classes` (all when empty), with a few-shot train and a val split."""
    classes = tuple(int(k) for k in classes) or tuple(range(ds.num_classes))
    bad = [k for k in classes if not 0 <= k < ds.num_classes]
    if bad or len(set(classes)) != len(classes):
        raise DataError(
            f"config.data.classes={list(classes)} must be distinct labels of {ds.name!r} "
            f"(0..{ds.num_classes - 1})"
        )
    if not train_per_class and not val_per_class and classes == tuple(range(ds.num_classes)):
        return ds
    label_map = {k: i for i, k in enumerate(classes)}
    rng = np.random.default_rng(seed)
    labels = labels_of(ds.train)
    train, val = [], []
    for k in classes:
        idx = rng.permutation(np.flatnonzero(labels == k))
        need = val_per_class + train_per_class
        if len(idx) < max(need, val_per_class + 1):
            lower = "config.data.val_per_class" + (
                " or config.data.train_per_class" if train_per_class else ""
            )  # only a setting in use: train_per_class=0 takes all that is left
            raise DataError(
                f"class {k} of {ds.name!r} has {len(idx)} training examples; "
                f"val_per_class={val_per_class} + train_per_class={train_per_class} need more. "
                f"Lower {lower}"
            )
        val.extend(idx[:val_per_class])
        train.extend(idx[val_per_class : need if train_per_class else None])
    test_labels = labels_of(ds.test)
    test = np.flatnonzero(np.isin(test_labels, classes))
    return dataclasses.replace(
        ds,
        train=Subset(ds.train, np.sort(train), label_map),
        val=Subset(ds.train, np.sort(val), label_map) if val else None,
        test=Subset(ds.test, test, label_map),
        num_classes=len(classes),
        class_names=tuple(ds.class_names[k] for k in classes) if ds.class_names else (),
    )
