"""cnnlab: a JAX/Flax research framework for convolutional networks."""

from cnnlab import layers
from cnnlab.summary import Row, Summary, summary

__all__ = ["Row", "Summary", "layers", "summary"]
__version__ = "0.1.0"
