"""Every public class, function, method and property in engine/ and strategies/ has a docstring.

The rule is checked on the imported objects rather than on the source text so that it sees
what a reader of `help()` sees: a method overriding a documented base method (a strategy's
`evaluate`, `lookback`, `describe`, `on_load`) inherits its docstring through
`inspect.getdoc` and counts as documented. A class that only satisfies a `typing.Protocol`
structurally inherits nothing, so its methods need their own. Class docstrings are never
inherited: a pydantic model, exception or dataclass without one would otherwise borrow its
base's text (or the dataclass-generated signature) and pass.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import inspect
import pkgutil
import sys
import types
from collections.abc import Iterator
from typing import Any

import engine
import strategies

PACKAGES = (engine, strategies)


def _walk_modules() -> list[types.ModuleType]:
    """Import every module of the checked packages; an import failure fails the test, not skips it."""

    def fail(name: str) -> None:
        raise ImportError(f"cannot import {name} while walking packages for docstrings")

    modules: list[types.ModuleType] = []
    for package in PACKAGES:
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.", onerror=fail):
            modules.append(importlib.import_module(info.name))
    return modules


def _is_generated_class_doc(cls: type, doc: str) -> bool:
    """True for the `Name(field, ...)` text that dataclasses and NamedTuple write when none is given."""
    if dataclasses.is_dataclass(cls):
        try:
            generated = cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            generated = None
        if doc == generated:
            return True
    fields = getattr(cls, "_fields", None)
    if issubclass(cls, tuple) and isinstance(fields, tuple):
        return doc == f"{cls.__name__}({', '.join(fields)})"
    return False


def _class_has_doc(cls: type) -> bool:
    """The class's own docstring, ignoring inherited and generated ones."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or not doc.strip():
        return False
    return not _is_generated_class_doc(cls, doc)


def _member_function(raw: Any) -> Any | None:
    """The function behind a class-dict entry that is a method or property, else None.

    Anything else (pydantic's `model_config` and fields, enum members, constants, nested
    classes) is not a method and is not checked here.
    """
    if isinstance(raw, staticmethod | classmethod):
        return raw.__func__
    if isinstance(raw, property):
        return raw.fget
    if isinstance(raw, functools.cached_property):
        return raw.func
    if inspect.isfunction(raw):
        return raw
    return None


def _member_doc(cls: type, name: str, raw: Any) -> str | None:
    """`inspect.getdoc` of the member as the class exposes it, so overrides inherit base docs."""
    if isinstance(raw, property):
        doc = inspect.getdoc(raw)
    elif isinstance(raw, classmethod):
        doc = inspect.getdoc(getattr(cls, name))
    elif isinstance(raw, staticmethod):
        doc = inspect.getdoc(raw.__func__)
    else:
        doc = inspect.getdoc(raw)
    if doc:
        return doc
    # inspect.getdoc does not look up the MRO for cached_property; do it the same way it
    # does for methods and properties.
    for base in cls.__mro__[1:]:
        if name in base.__dict__:
            inherited = inspect.getdoc(base.__dict__[name])
            if inherited:
                return inherited
    return None


def _class_offenders(cls: type, where: str) -> Iterator[str]:
    """Offenders within one public class: the class itself, its methods, its nested classes."""
    if not _class_has_doc(cls):
        yield f"{where}:{cls.__qualname__} (class)"
    for name, raw in vars(cls).items():
        if name.startswith("_") or isinstance(raw, enum.Enum):
            continue
        if inspect.isclass(raw):
            if raw.__module__ == cls.__module__ and raw.__qualname__ == f"{cls.__qualname__}.{name}":
                yield from _class_offenders(raw, where)
            continue
        func = _member_function(raw)
        if func is None or not getattr(func, "__qualname__", "").startswith(f"{cls.__qualname__}."):
            continue  # not a method, or one assigned from elsewhere (checked where it is defined)
        if not _member_doc(cls, name, raw):
            kind = "property" if isinstance(raw, property | functools.cached_property) else "method"
            yield f"{where}:{cls.__qualname__}.{name} ({kind})"


def _module_offenders(module: types.ModuleType) -> Iterator[str]:
    """Public classes and functions defined in `module` (not imported into it) lacking docstrings."""
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            yield from _class_offenders(obj, module.__name__)
        elif inspect.isroutine(obj) and not inspect.getdoc(obj):
            yield f"{module.__name__}:{getattr(obj, '__qualname__', name)} (function)"


def _offenders(modules: list[types.ModuleType]) -> list[str]:
    return sorted({o for module in modules for o in _module_offenders(module)})


def test_every_public_class_function_and_method_has_a_docstring() -> None:
    modules = _walk_modules()
    names = {m.__name__ for m in modules}
    # The walk must reach nested packages and private modules, or the check proves nothing.
    assert {"engine.plugins.base", "engine.sinks.webhook", "strategies._common", "strategies.volume"} <= names
    offenders = _offenders(modules)
    assert not offenders, f"{len(offenders)} public objects without a docstring:\n" + "\n".join(offenders)


def test_the_checker_catches_what_it_should_and_spares_what_it_should() -> None:
    source = '''
import dataclasses, enum, functools
from typing import Protocol
from pydantic import BaseModel

class Base:
    """Documented base."""
    def run(self) -> None:
        """Documented contract."""
    @property
    def size(self) -> int:
        """Documented property."""
        return 1

class Proto(Protocol):
    """Documented protocol."""
    def run(self) -> None:
        """Documented contract."""

class Child(Base):
    """Inherits method docs."""
    def run(self) -> None: ...
    @property
    def size(self) -> int: return 2
    def extra(self) -> None: ...
    def _private(self) -> None: ...

class Structural:
    """Implements Proto without subclassing it."""
    def run(self) -> None: ...

class Model(BaseModel):
    x: int = 0

@dataclasses.dataclass
class Data:
    x: int

class Colour(enum.Enum):
    """Documented enum."""
    RED = 1

class Cached:
    """Has a cached property."""
    @functools.cached_property
    def value(self) -> int: return 1

def bare() -> None: ...
def _hidden() -> None: ...
'''
    module = types.ModuleType("docstring_probe")
    sys.modules[module.__name__] = module  # inspect.getdoc resolves method owners via sys.modules
    try:
        exec(compile(source, "<docstring_probe>", "exec"), module.__dict__)
        found = _offenders([module])
    finally:
        del sys.modules[module.__name__]
    assert found == [
        "docstring_probe:Cached.value (property)",
        "docstring_probe:Child.extra (method)",
        "docstring_probe:Data (class)",
        "docstring_probe:Model (class)",
        "docstring_probe:Structural.run (method)",
        "docstring_probe:bare (function)",
    ]
