"""Named models: `create(name, **overrides)`, `available()`, `spec(name)`.

Each entry is a module class or `functools.partial` of one, the input shape it was published for,
and the reference whose parameter count it reproduces (checked in tests/test_models.py).
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]  # (H, W, C) the reference uses
    reference: str  # where its parameter count / MACs come from
    fixed: tuple[str, ...] = ()  # fields that define the named model: create() refuses changes


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, build, input_shape, reference: str, fixed=None) -> None:
    """`fixed`: the fields `create(name, ...)` may not change (default: every keyword `build`'s
    partial sets, e.g. resnet20's depth), so that a named model stays the model it names."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if fixed is None:
        fixed, b = [], build
        while isinstance(b, functools.partial):
            fixed, b = [*fixed, *b.keywords], b.func
    _REGISTRY[name] = ModelSpec(name, build, tuple(input_shape), reference, tuple(fixed))


def available() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def _module_class(build) -> type:
    while isinstance(build, functools.partial):
        build = build.func
    return build


def fields(name: str) -> list[str]:
    """The fields `create(name, ...)` accepts as overrides."""
    cls = _module_class(spec(name).build)
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def defaults(name: str) -> dict:
    """{field: default} of a named model (its partial's keywords over the class defaults)."""
    build = spec(name).build
    out = {
        f.name: f.default
        for f in dataclasses.fields(_module_class(build))
        if f.default is not dataclasses.MISSING and f.name not in ("parent", "name")
    }
    while isinstance(build, functools.partial):
        out = {**out, **build.keywords}
        build = build.func
    return out


def unread(name: str, kwargs: dict) -> set[str]:
    """The fields of `name` that a model built with `kwargs` (over its defaults) never reads, as
    its family declares them (a class's `unread(kwargs)`; none declared: every field is read)."""
    kwargs = {**defaults(name), **kwargs}
    declared = getattr(_module_class(spec(name).build), "unread", None)
    return set(declared(kwargs)) & set(fields(name)) if declared else set()


def create(name: str, **overrides) -> nn.Module:
    """Build a registered model, e.g. `create('resnet20', skip=False, side_taps=('stage1',))`."""
    s = spec(name)
    allowed = fields(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} has no field {unknown}; allowed: {', '.join(allowed)}")
    given = defaults(name)
    changed = sorted(k for k in s.fixed if k in overrides and overrides[k] != given[k])
    if changed:
        cls = _module_class(s.build)
        family = [n for n, other in _REGISTRY.items() if other.build is cls]
        wanted = ", ".join(f"{k}={overrides[k]!r}" for k in changed)
        how = f"create({family[0]!r}, {wanted})" if family else f"models.{cls.__name__}(...)"
        raise ValueError(
            f"model {name!r} is defined by {', '.join(f'{k}={given[k]!r}' for k in changed)}; "
            f"{wanted} is another model: use its registered name or {how}"
        )
    return s.build(**overrides)
