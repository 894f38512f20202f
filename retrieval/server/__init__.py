"""``retrieval serve``: the HTTP API (FastAPI on uvicorn) and the web page over it.

Importing this package is cheap: FastAPI and uvicorn load with
:func:`create_app` and :func:`serve`, so ``retrieval --help`` never pays for them.
"""
from __future__ import annotations

from importlib import import_module

__all__ = ["create_app", "serve"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module(".app", __name__), name)
    raise AttributeError(f"module 'retrieval.server' has no attribute {name!r}")
