"""One spelling of a parameter's path: 'stage1_block1/conv1/kernel', from a jax key path of any
container (dict keys, dataclass attributes, sequence indices)."""


def _part(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_str(path) -> str:
    """A key path from `jax.tree_util.tree_flatten_with_path` as 'a/b/c'."""
    return "/".join(_part(entry) for entry in path)
