"""Every module of the ``parley`` package states its public surface in a sorted ``__all__``.

Modelled on httpx's ``tests/test_exported_members.py``, and applied to every module found by
``pkgutil.walk_packages`` (``parley.__main__``, the entry point, is skipped). "Sorted" is the
order ruff's RUF022 (unsorted-dunder-all, enforced by ``make lint``) wants, so the two never
disagree: SCREAMING_SNAKE_CASE names first, then CamelCase, then everything else, each group in
natural order (``v2`` before ``v10``). ``ruff check --select RUF022 --fix`` sorts a list.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import parley
import pytest

SKIPPED = {"__main__"}


def _raise(name: str) -> None:
    raise ImportError(f"cannot import {name} while walking the parley package")


def _module_names() -> list[str]:
    names = [parley.__name__]
    for info in pkgutil.walk_packages(parley.__path__, prefix=f"{parley.__name__}.", onerror=_raise):
        if info.name.rpartition(".")[2] not in SKIPPED:
            names.append(info.name)
    return sorted(names)


MODULES = _module_names()


def _ruff_order(name: str) -> tuple[int, list[str | int]]:
    """Sort key of RUF022's "isort-style" order: the casing group, then a natural sort."""
    if len(name) > 1 and name.isupper():
        group = 0  # CONSTANT
    elif name[:1].isupper():
        group = 1  # Class
    else:
        group = 2  # function, variable, __dunder__
    return group, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _exports(module: ModuleType) -> list[str]:
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} does not define __all__"
    assert isinstance(exported, (list, tuple)), f"{module.__name__}.__all__ is a {type(exported).__name__}"
    assert all(isinstance(name, str) for name in exported), f"{module.__name__}.__all__ holds non-strings"
    return list(exported)


@pytest.mark.parametrize("name", MODULES)
def test_module_defines_all(name: str) -> None:
    _exports(importlib.import_module(name))


@pytest.mark.parametrize("name", MODULES)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [member for member in _exports(module) if not hasattr(module, member)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted(name: str) -> None:
    exported = _exports(importlib.import_module(name))
    expected = sorted(exported, key=_ruff_order)
    assert exported == expected, f"{name}.__all__ is not sorted; expected {expected}"
