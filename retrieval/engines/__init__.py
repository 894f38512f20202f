"""Where a build encodes its items once the models are fitted.

``local`` (the default) encodes in the building process, as ever. ``ray``
hands the fitted models to the actors of a Ray cluster and gets every
method's codes and the novelty scores back in item order
(:mod:`retrieval.engines.ray`); the index written is the same. Ray is an
optional extra (``pip install -e '.[ray]'``), imported by that module only.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..config import ENGINES
from ..errors import InputError


@dataclass
class Encoded:
    """An engine's answer for a batch of items, in item order.

    Attributes:
        codes: The codes of every method the engine was given.
        scores: The novelty scores (:func:`retrieval.novelty.item_novelty`).
        seconds: Wall time of the encode pass (workers' start-up included).
        info: Figures of the run (workers, chunks).
    """

    codes: dict[str, np.ndarray]
    scores: np.ndarray
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


@contextmanager
def open_engine(name: str = ENGINES[0], *, address: str | None = None,
                workers: int | None = None) -> Iterator[object | None]:
    """The engine called ``name``, started for the block and stopped after it.

    Args:
        name: One of :data:`retrieval.config.ENGINES`.
        address: The Ray cluster to join (``ray://HOST:PORT`` or ``HOST:PORT``;
            ``None``: start a local Ray on this machine).
        workers: Encoding actors (default: the cluster's CPUs).

    Yields:
        ``None`` for the local engine (the build encodes in-process), else the
        started engine, to pass as ``build_index(..., engine=)``.

    Raises:
        InputError: An unknown engine, or Ray options given to the local engine.
        EngineError: Ray is missing, does not start or cannot be reached.
    """
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    if name == ENGINES[0]:
        for option, value in (("--address", address), ("--workers", workers)):
            if value is not None:
                raise InputError(f"{option} is an option of the Ray engine; add --engine ray or leave {option} out")
        yield None
        return
    from .ray import RayEngine

    with RayEngine(address=address, workers=workers) as engine:
        yield engine


__all__ = ["Encoded", "open_engine"]
