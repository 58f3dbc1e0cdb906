"""Network blocks, one family per file. Blocks with a shortcut have `skip` (False: plain twin)."""

from cnnlab.blocks.inverted import InvertedResidual, SqueezeExcite
from cnnlab.blocks.mobile import DepthwiseSeparableBlock, Fire
from cnnlab.blocks.residual import BasicBlock, BatchNorm, Bottleneck
from cnnlab.blocks.shortcut import SHORTCUTS
from cnnlab.blocks.shuffle import ShuffleUnit

__all__ = [
    "SHORTCUTS",
    "BasicBlock",
    "BatchNorm",
    "Bottleneck",
    "DepthwiseSeparableBlock",
    "Fire",
    "InvertedResidual",
    "ShuffleUnit",
    "SqueezeExcite",
]
