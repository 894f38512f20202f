"""Modules imported on first use, so that a command pays only for what it runs."""
from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


class LazyModule:
    """Stands for a module; imports it on first attribute access.

    Unlike ``importlib.util.LazyLoader`` nothing is put in ``sys.modules``
    before the first use, so ``'httpx' in sys.modules`` still tells whether
    a command really loaded it.

    Args:
        name: The module's absolute name.
        before: Called once before the import (TensorFlow's quiet start-up before Keras).
    """

    def __init__(self, name: str, before: Callable[[], None] | None = None) -> None:
        self._name, self._before = name, before

    def __getattr__(self, attr: str):
        if self._before is not None:
            self._before()
        return getattr(import_module(self._name), attr)
