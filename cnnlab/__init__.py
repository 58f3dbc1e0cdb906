"""cnnlab: a JAX/Flax research framework for convolutional networks."""

from cnnlab import layers, summary  # summary: a module you can call, cnnlab.summary(model, x)
from cnnlab.summary import Row, Summary

__all__ = ["Row", "Summary", "layers", "summary"]
__version__ = "0.1.0"
