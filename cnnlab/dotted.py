"""Dotted config keys ('model.kwargs.depth'): walk, get and the short name, in one place."""


def walk(config, key: str):
    """-> (the node at dotted `key`, None), or (the deepest node found, the first missing part)."""
    node = config
    for part in key.split(".") if key else []:
        if not hasattr(node, "keys") or part not in node:
            return node, part
        node = node[part]
    return node, None


def get(config, key: str, default=None):
    """config.<key>, or `default` where any part of it is absent."""
    parent, _, leaf = key.rpartition(".")
    node, missing = walk(config, parent)
    return default if missing is not None or not hasattr(node, "get") else node.get(leaf, default)


def short(key: str) -> str:
    """'model.kwargs.depth' -> 'depth': how cell names, tables and reports name an axis."""
    return key.rsplit(".", 1)[-1]


def first_difference(old, new, prefix: str = "", ignore=()):
    """The first dotted key where two nested dicts (JSON) differ, as (key, old value, new value)
    with '<absent>' for a missing key; None when they are equal. Keys in `ignore` (dotted, e.g.
    'train.steps') are not compared."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            key = f"{prefix}.{k}" if prefix else str(k)
            if key in ignore:
                continue
            if k not in old or k not in new:
                return key, old.get(k, "<absent>"), new.get(k, "<absent>")
            found = first_difference(old[k], new[k], key, ignore)
            if found:
                return found
        return None
    return None if old == new else (prefix, old, new)
