"""Name -> factory registries (timm style): methods, models, datasets and protocols.

An unknown name fails with the list of valid names and the closest match.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small ordered mapping from names to objects with helpful lookup errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` adds the decorated object under ``name``."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(self._entries)
        message = f"Unknown {self.kind} {name!r}. Valid: {valid}"
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return message

    def names(self, pattern: str = "*") -> list[str]:
        return [name for name in self._entries if fnmatch.fnmatch(name, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
