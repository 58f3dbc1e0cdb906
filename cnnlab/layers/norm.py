"""Normalisation for every block and model: BatchNorm with PyTorch's defaults.

PyTorch's momentum 0.1 (weight of the new batch) is flax's momentum 0.9 (weight of the running
average); epsilon 1e-5 as in PyTorch and torchvision (Keras: 1e-3). Trainable scale and offset
('params'), running mean and variance ('batch_stats', not trained)."""

import functools

import flax.linen as nn

BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
