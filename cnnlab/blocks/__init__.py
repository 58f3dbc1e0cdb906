"""Network blocks, one family per file. Blocks with a shortcut have `skip` (False: plain twin).

Every block takes `norm` (default `cnnlab.layers.BatchNorm`; any `layers.norm_layer(kind)`),
`act` and its k x k conv as a field: `conv` in the residual blocks and Fire, `depthwise` in the
depthwise families (InvertedResidual, DepthwiseSeparableBlock, ShuffleUnit). The blocks with a
norm also take `kernel_init` for every conv they build (`layers.kernel_init('he' | 'lecun')`);
their convs get a bias only with norm 'none' (`blocks.convs.conv_kwargs`)."""

from cnnlab.blocks.inverted import InvertedResidual, SqueezeExcite
from cnnlab.blocks.mobile import DepthwiseSeparableBlock, Fire
from cnnlab.blocks.residual import BasicBlock, Bottleneck
from cnnlab.blocks.shortcut import SHORTCUTS
from cnnlab.blocks.shuffle import ShuffleUnit
from cnnlab.layers import BatchNorm  # re-exported: blocks and models share it

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
