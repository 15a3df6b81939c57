"""Classes that files name (layers, losses, optimizers), registered by qualified name.

A model file or checkpoint names each class twice: ``"type"``, its short name (``"GELU"``),
and ``"class"``, its qualified name ``module.QualName``
(``"deepnet.layers.activations.GELU"``).  Loading picks among the classes this program has
defined or imported, and never imports a module a file names (no code comes from files):

* a built-in (a class of a ``deepnet.`` module) always loads as the built-in, even when a
  program defines its own class of the same short name, and even if a later deepnet moves
  it to another module;
* any other class loads only under the qualified name it was saved with (``__main__.MyLayer``
  matches a class ``MyLayer`` defined in the script being run, not ``mylayers.MyLayer``);
  ``classes={"saved.Name": cls}`` names another class explicitly;
* a file that has only short names (written before qualified names were recorded) loads
  the built-in of that name, else the one class of that name the program defines; two or
  more are an error naming each of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: qualified names of deepnet's own classes start with this
BUILTIN_PREFIX = "deepnet."


class ClassLookupError(LookupError):
    """A file names a class this program cannot pick unambiguously; the message says why."""


class ClassNotDefinedError(ClassLookupError):
    """The class a file names is not defined in this program (it may define others of that
    short name, which are never taken in its place)."""


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class (e.g. ``deepnet.layers.activations.GELU``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def setting_name(cls: type) -> str:
    """How a run's settings name a class: a built-in by its short name (as checkpoints always
    have), any other class by its qualified name, so that two classes never read the same."""
    name = qualified_name(cls)
    return cls.__name__ if is_builtin_name(name) else name


def same_setting_name(saved: str, given: str, registry: ClassRegistry) -> bool:
    """Whether ``saved`` (a checkpoint's) and ``given`` name the same class; a checkpoint written
    before qualified names were recorded names a program's own class by its short name only
    (never taken for a program's class when deepnet has a built-in of that name)."""
    if saved == given:
        return True
    return ("." not in saved and not is_builtin_name(given) and given.endswith("." + saved)
            and registry.builtin(saved) is None)


def is_builtin_name(name: str) -> bool:
    """Whether a qualified name is one of deepnet's own classes."""
    return name.startswith(BUILTIN_PREFIX)


class ClassRegistry(Mapping[str, type]):
    """Classes of one kind (``"layer"``, ``"loss"``, ``"optimizer"``) by qualified name.

    Registering a class under a qualified name already taken (a notebook cell run again,
    a module reloaded) replaces the earlier class."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    # -- Mapping -------------------------------------------------------------------
    def __getitem__(self, name: str) -> type:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    # -- registration ---------------------------------------------------------------
    def add(self, cls: type) -> None:
        self._classes[qualified_name(cls)] = cls

    def remove(self, cls: type) -> None:
        """Forget ``cls`` (if it is the class registered under its name)."""
        if self._classes.get(qualified_name(cls)) is cls:
            del self._classes[qualified_name(cls)]

    def builtin(self, short: str) -> type | None:
        """deepnet's own class of this short name, if any."""
        found = [c for n, c in self._classes.items() if is_builtin_name(n) and c.__name__ == short]
        return found[0] if len(found) == 1 else None

    def user_classes(self, short: str) -> list[str]:
        """Qualified names of the non-deepnet classes of this short name, sorted."""
        return sorted(n for n, c in self._classes.items() if not is_builtin_name(n) and c.__name__ == short)

    # -- lookup ----------------------------------------------------------------------
    def resolve(self, short: Any, qualified: Any = None,
                classes: Mapping[str, type] | None = None) -> tuple[type, str | None]:
        """The class a file names: ``(class, note)``; ``note`` (else None) says that a short
        name alone was taken as the built-in although the program defines a class of that
        name too.  Raises :class:`ClassLookupError` when no single class fits."""
        if not isinstance(short, str) or not (qualified is None or isinstance(qualified, str)):
            raise ClassLookupError(f"malformed {self.kind} name {short!r} / {qualified!r}: expected strings")
        chosen = self._chosen(short, qualified, classes or {})
        if chosen is not None:
            return chosen, None
        if qualified is not None:
            return self._by_qualified(short, qualified), None
        return self._by_short(short)

    def _chosen(self, short: str, qualified: str | None, classes: Mapping[str, type]) -> type | None:
        """The class the caller named for this file's name (``classes``), checked."""
        key = qualified if qualified in classes else short if short in classes else None
        if key is None:
            return None
        cls = classes[key]
        if not isinstance(cls, type) or self._classes.get(qualified_name(cls)) is not cls:
            raise ClassLookupError(f"classes[{key!r}] must be a {self.kind} class, got {cls!r}")
        return cls

    def _by_qualified(self, short: str, qualified: str) -> type:
        cls = self._classes.get(qualified)
        if cls is not None:
            if cls.__name__ != short:
                raise ClassLookupError(f"{self.kind} type {short!r} does not match its class {qualified!r}")
            return cls
        if is_builtin_name(qualified):          # a built-in that moved between deepnet versions
            builtin = self.builtin(short)
            if builtin is not None:
                return builtin
            raise ClassLookupError(f"unknown {self.kind} class {qualified!r}: this deepnet has no built-in "
                                   f"{short!r} (written by a newer deepnet?)")
        others = self.user_classes(short) + ([qualified_name(b)] if (b := self.builtin(short)) else [])
        if others:
            raise ClassNotDefinedError(
                f"{self.kind} class {qualified!r} is not defined in this program, which defines "
                f"{_names(others)}: a class loads only under the name it was saved with (define or import "
                f"{qualified!r}, or name the class to use: classes={{{qualified!r}: <class>}})")
        raise ClassNotDefinedError(f"unknown {self.kind} class {qualified!r} (import the module that defines it "
                               "before loading; deepnet never imports a module a file names)")

    def _by_short(self, short: str) -> tuple[type, str | None]:
        builtin, users = self.builtin(short), self.user_classes(short)
        if builtin is not None:
            note = None if not users else (
                f"the file names only {short!r} (written before deepnet recorded qualified class names): loading "
                f"deepnet's {qualified_name(builtin)}, not {_names(users)} (classes={{{short!r}: <class>}} picks one)")
            return builtin, note
        if len(users) == 1:
            return self._classes[users[0]], None
        if users:
            raise ClassLookupError(
                f"{self.kind} type {short!r} is ambiguous: this program defines {_names(users)} and the file "
                f"does not say which (it has no qualified class name); name it: classes={{{short!r}: <class>}}")
        raise ClassNotDefinedError(f"unknown {self.kind} type {short!r} (import the module that defines it before "
                               "loading; deepnet never imports a module a file names)")


def _names(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
