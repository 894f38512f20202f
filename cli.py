"""Thin entry point: ``python cli.py ...`` runs the ``retrieval`` command line.

The commands live in :mod:`retrieval.cli`; installed, the same command line is
the ``retrieval`` console script and ``python -m retrieval``.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from retrieval.cli import app, main  # noqa: E402

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
