"""Name -> constructor registries for every pluggable concept (attacks, objectives, defenses, ...).

Adding a component is one file plus a decorator; configs refer to it by its short name. Building from a
config section checks the keys against the constructor's signature, so a typo in a YAML file is an error
that names the key and the valid choices instead of a silent default.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from clipbackdoor.errors import ConfigError, did_you_mean

T = TypeVar("T")



class Registry(Generic[T]):
    """A named collection of constructors.

    Example:
        >>> ATTACKS = Registry("attack")
        >>> @ATTACKS.register("badnet")
        ... class BadNet: ...
        >>> ATTACKS.build({"name": "badnet"})
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def summary(self, name: str) -> str:
        """The first sentence of the entry's own docstring, else of its module's (a plug-in file's docstring
        says what it is): what ``clipbackdoor list`` shows beside the name."""
        entry = self.get(name)
        # entry.__doc__, not inspect.getdoc: an undocumented subclass would show its base class's words.
        doc = entry.__doc__ or getattr(sys.modules.get(entry.__module__), "__doc__", None) or ""
        return first_sentence(inspect.cleandoc(doc))


    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(str(name), self.names())}; "
                f"choose one of: {', '.join(self.names()) or '(none registered)'}"
            ) from None

    def build(self, section: Mapping[str, Any] | str, where: str | None = None, **extra: Any) -> T:
        """Build from a config section ``{"name": ..., **kwargs}`` (or a bare name).

        ``extra`` holds arguments supplied by the program rather than the user (e.g. class names); they
        are passed only if the constructor accepts them. A constructor with a ``where`` parameter
        receives ``where`` (the section's config path, e.g. ``data.validation``) for its error messages.
        """
        where = where or self.kind
        extra = {"where": where, **extra}
        fn, kwargs = self._resolve(section, where)
        params = inspect.signature(fn).parameters
        for key, value in extra.items():
            if key in params and key not in kwargs:
                kwargs[key] = value
        return fn(**kwargs)

    def check(self, section: Mapping[str, Any] | str, where: str | None = None) -> None:
        """The checks of ``build`` (a registered name, keys the constructor accepts) without building: no
        data generated, no file read. Values are checked by the constructor when the run builds it."""
        self._resolve(section, where or self.kind)

    def _resolve(self, section: Mapping[str, Any] | str, where: str) -> tuple[Callable[..., T], dict[str, Any]]:
        if isinstance(section, str):
            section = {"name": section}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: expected a mapping with a 'name', got {section!r}")
        kwargs = dict(section)
        if "name" not in kwargs:
            raise ConfigError(f"{where}: missing 'name' (one of: {', '.join(self.names())})")
        name = kwargs.pop("name")
        fn = self.get(name)
        check_kwargs(fn, kwargs, f"{where} ({name})")
        return fn, kwargs


def accepted_kwargs(fn: Callable[..., Any]) -> list[str]:
    sig = inspect.signature(fn)
    return [
        n
        for n, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"
    ]


def check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError naming each key that ``fn`` does not accept."""
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    valid = accepted_kwargs(fn)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}{did_you_mean(str(unknown[0]), valid)}; "
            f"valid keys: {', '.join(valid)}"
        )


def first_sentence(text: str) -> str:
    """The first sentence of a docstring or description, on one line, without reST's double backquotes."""
    first = " ".join(text.split("\n\n")[0].split())
    # A sentence ends at a full stop before a capital ("et al. 2023" does not end one).
    return re.split(r"\.\s+(?=[A-Z])", first)[0].rstrip(".").replace("``", "")
