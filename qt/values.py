"""Fast positional constructors for frozen value types made once per symbol-bar on hot paths.

Why: a frozen dataclass's ``__init__`` sets every field through ``object.__setattr__`` (its own
``__setattr__`` refuses), which costs about twice what the object is worth when a backtest makes
one ``Bar``, ``Signal`` and ``Decision`` per symbol per stepped bar. ``positional_maker(cls)``
returns a function taking every field in declaration order that sets the slots directly, through
the slots' own descriptors: the same object (equal, still frozen afterwards), no default filled in
and no ``__post_init__`` run - so it is refused for a class that has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any


def positional_maker(cls: type) -> Callable[..., Any]:
    """``make(field_1, ..., field_n) -> cls`` for a frozen, slotted dataclass without ``__post_init__``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a frozen slots dataclass without __post_init__; construct it normally")
    names = [f.name for f in fields(cls)]
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    scope.update({f"_set_{n}": cls.__dict__[n].__set__ for n in names})
    body = "".join(f"    _set_{n}(obj, {n})\n" for n in names)
    exec(f"def make({', '.join(names)}):\n    obj = _new(_cls)\n{body}    return obj\n", scope)  # noqa: S102
    make = scope["make"]
    make.__doc__ = f"{cls.__name__}({', '.join(names)}), every field given, positionally."
    return make
