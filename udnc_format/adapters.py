"""Framework adapters: how they are found and registered.

An adapter converts one framework's tensors to and from the numpy arrays of udnc_format and
delegates the rest to it: any object (usually a module) with the functions ``save``,
``save_file``, ``load`` and ``load_file``. The project's own, in the package
``udnc_adapters`` (extra ``udnc[adapters]``), are ``torch``, ``tensorflow`` and ``jax``; other
packages declare theirs in the entry point group ``udnc_format.adapters``::

    [project.entry-points."udnc_format.adapters"]
    mlx = "udnc_mlx.adapter"

As in numcodecs, entry points are only read when a name is asked for, and an entry point is
imported only when its adapter is (the project's adapter modules then import their framework
only when one of their functions runs). An adapter registered with :func:`register_adapter`
takes precedence over an entry point of the same name; among entry points of one name, the
first distribution on ``sys.path`` wins.

An adapter may declare ``REQUIRES``, the top-level modules of its framework, and ``INSTALL``,
how to install them: :func:`get_adapter` then reports a framework that is not installed,
without importing it.

>>> {"torch", "tensorflow", "jax"} <= set(available_adapters())
True
>>> get_adapter("no-such-framework")
Traceback (most recent call last):
...
udnc_format.format.errors.AdapterError: no adapter named 'no-such-framework'; available: ...
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

from .format.errors import AdapterError

if TYPE_CHECKING:
    import importlib.metadata

ENTRY_POINT_GROUP = "udnc_format.adapters"
REQUIRED_FUNCTIONS = ("save", "save_file", "load", "load_file")

_registered: dict[str, Any] = {}  # by register_adapter
_loaded: dict[str, Any] = {}  # entry points already imported


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise AdapterError(f"an adapter name must be a non-empty string, got {name!r}")
    return name


def _check_adapter(name: str, adapter: object, origin: str) -> None:
    lacking = [f for f in REQUIRED_FUNCTIONS if not callable(getattr(adapter, f, None))]
    if lacking:
        raise AdapterError(
            f"adapter {name!r} ({origin}) is not an adapter: it lacks {', '.join(lacking)}"
        )


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The group's entry points by name, the first on sys.path for each name."""
    import importlib.metadata  # 10 ms or more: only when an adapter is looked up

    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, entry_point)
    return found


def _installed(module: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: imported already, without a __spec__
        return sys.modules.get(module) is not None


def register_adapter(name: str, adapter: Any) -> None:
    """Register ``adapter`` under ``name``, replacing any adapter of that name (registered or
    from an entry point) for the rest of the process."""
    name = _check_name(name)
    _check_adapter(name, adapter, "registered")
    _registered[name] = adapter


def available_adapters() -> list[str]:
    """The names :func:`get_adapter` knows, registered or declared by an installed
    distribution; a name is listed even when its framework is not installed."""
    return sorted({*_registered, *_loaded, *_entry_points()})


def get_adapter(name: str) -> Any:
    """The adapter called ``name``: registered, or loaded from its entry point on first use.

    Raises AdapterError for an unknown name, an entry point that cannot be imported or is not
    an adapter, and for an adapter whose framework (its ``REQUIRES``) is not installed; the
    message then says what to install (its ``INSTALL``)."""
    name = _check_name(name)
    adapter = _registered.get(name, _loaded.get(name))
    if adapter is None:
        entry_point = _entry_points().get(name)
        if entry_point is None:
            known = ", ".join(available_adapters()) or "none"
            raise AdapterError(f"no adapter named {name!r}; available: {known}")
        origin = f"entry point {entry_point.value}"
        if entry_point.dist is not None:
            origin += f" of {entry_point.dist.name}"
        try:
            adapter = entry_point.load()
        except ImportError as exc:
            raise AdapterError(f"adapter {name!r} ({origin}) cannot be imported: {exc}") from exc
        _check_adapter(name, adapter, origin)
        _loaded[name] = adapter
    requires = getattr(adapter, "REQUIRES", ())
    missing = [module for module in requires if not _installed(module)]
    if missing:
        install = getattr(adapter, "INSTALL", None) or f"install {', '.join(missing)}"
        which = "which is" if len(missing) == 1 else "which are"
        raise AdapterError(
            f"adapter {name!r} needs {' and '.join(missing)}, {which} not installed: {install}"
        )
    return adapter


__all__ = [
    "ENTRY_POINT_GROUP",
    "available_adapters",
    "get_adapter",
    "register_adapter",
]
