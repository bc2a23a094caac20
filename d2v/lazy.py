"""Packages whose names are imported from their modules on first use.

`d2v.model`, `d2v.export`, `d2v.server` and `d2v.tokenizer` re-export names from modules that need
torch, onnxruntime, FastAPI or numpy, while parts of each package must be importable without them
(the command line, the onnxruntime server). Each package lists where its names live, and
`lazy_exports` gives it the module-level `__getattr__` and `__dir__` (PEP 562) that import a name's
module when the name is first read and keep the value in the package.
"""

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: dict[str, Iterable[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, given {module: names it defines}.

    Usage, in the package's `__init__.py`: `__getattr__, __dir__ = lazy_exports(__name__, {...})`."""
    module_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return __getattr__, __dir__
