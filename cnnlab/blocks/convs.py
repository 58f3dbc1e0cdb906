"""What every conv inside a block takes from the block."""

from cnnlab.layers import conv_bias


def conv_kwargs(block) -> dict:
    """A bias only where no norm follows to bring the offset (norm='none'), and the block's
    kernel initialisation (`kernel_init`, from the model's `conv_init`)."""
    return {"use_bias": conv_bias(block.norm), "kernel_init": block.kernel_init}
