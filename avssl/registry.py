"""Name -> builder registries (as timm's ``create_model``).

Every public builder (``build_encoder``, ``build_loss``, ``build_method``) is a :class:`Registry`.
Unknown names raise ``KeyError`` listing the known ones (and the closest match).
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to builder callables.

    >>> ENC = Registry("encoder")
    >>> @ENC.register("tiny")
    ... def tiny(**kw): ...

    ``derived`` (optional) returns more entries, computed when asked for: names that another registry owns
    and this one serves with a builder of its own (every pretext task is also a method). Registered names win.
    """

    def __init__(self, kind: str, derived: Optional[Callable[[], Mapping[str, Callable[..., T]]]] = None) -> None:
        self.kind = kind
        self._builders: Dict[str, Callable[..., T]] = {}
        self._derived = derived

    def _all(self) -> Dict[str, Callable[..., T]]:
        return {**(self._derived() if self._derived else {}), **self._builders}

    def register(self, name: Optional[str] = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__
            if key in self._builders and self._builders[key] is not fn:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._builders[key] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        builders = self._all() if name not in self._builders else self._builders
        if name not in builders:
            known = sorted(builders)
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known)}")
        return builders[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self, sort: bool = True) -> List[str]:
        """The known names, sorted (or in the order they were registered)."""
        return sorted(self._all()) if sort else list(self._all())

    def __contains__(self, name: object) -> bool:
        return name in self._builders or name in self._all()

    def __len__(self) -> int:
        return len(self._all())
