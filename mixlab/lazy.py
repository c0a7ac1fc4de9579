"""The model stack (torch, safetensors' torch bindings, scipy.stats), imported on first use.

A page that draws a lab's cached scores needs none of it, and importing it costs seconds (torch ≈ 1.2 s,
scipy.stats ≈ 0.8 s on a 2-core machine): the modules that compute with it name it through a
:class:`LazyModule`, which imports the real module the first time one of its attributes is read, then
keeps each attribute it handed out (later reads cost what a plain module attribute does). Nothing is
placed in ``sys.modules`` under the module's name until the real import has run, so ``"torch" in
sys.modules`` still tells whether torch was imported (tests/test_first_paint.py asks exactly that).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType


class LazyModule:
    """Stands for the module ``name``; importing it is deferred to the first attribute read."""

    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        value = getattr(self._load(), attr)
        self.__dict__[attr] = value  # the next read of this attribute skips __getattr__
        return value

    def _load(self) -> ModuleType:
        return importlib.import_module(self.__dict__["_name"])

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_name']!r}>"


torch = LazyModule("torch")
safetensors_torch = LazyModule("safetensors.torch")
stats = LazyModule("scipy.stats")


def no_grad(fn):
    """``@torch.no_grad()`` for a function defined before torch is imported."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper
