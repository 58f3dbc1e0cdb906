"""What every conv inside a block takes from the block."""

from cnnlab.layers import conv_bias


def conv_kwargs(block) -> dict:
    """A bias only where no norm follows to bring the offset (norm='none'), the block's kernel
    initialisation (`kernel_init`, from the model's `conv_init`), and its `padding` where it is
    not the default 'SAME' ('SYMMETRIC': PyTorch's, for ported torchvision weights)."""
    out = {"use_bias": conv_bias(block.norm), "kernel_init": block.kernel_init}
    if getattr(block, "padding", "SAME") != "SAME":
        out["padding"] = block.padding
    return out
