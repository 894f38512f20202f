"""Progress reporting hooks shared by the library and the CLI.

The library never prints: long steps call a ``Progress`` callback, which the
CLI renders with rich progress bars and tests leave as ``None``.
"""
from __future__ import annotations

from collections.abc import Callable

#: ``progress(task, done, total, info)``: ``task`` names the step (e.g.
#: ``"ae: epoch"``), ``done``/``total`` count units, ``info`` carries figures
#: such as the epoch's losses.
Progress = Callable[[str, int, int, dict], None]


def report(progress: Progress | None, task: str, done: int, total: int, **info) -> None:
    """Call ``progress`` when there is one."""
    if progress is not None:
        progress(task, done, total, info)


class RichProgress:
    """A :data:`Progress` callback drawing one rich progress bar per task.

    Use as a context manager; ``pause``/``resume`` let tables print between
    bars.

    Args:
        console: The rich console to draw on (stderr in the CLI).
    """

    def __init__(self, console=None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as _Progress, TextColumn, \
            TimeElapsedColumn

        self._bars = _Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                               console=console, transient=False,
                               # Bars are for people at a terminal; logs and pipes get results only.
                               disable=console is not None and not console.is_terminal)
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "RichProgress":
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def pause(self) -> None:
        """Stop drawing (to print something else)."""
        self._bars.stop()

    def resume(self) -> None:
        """Draw again."""
        self._bars.start()

    def __call__(self, task: str, done: int, total: int, info: dict) -> None:
        text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        if task not in self._tasks:
            self._tasks[task] = self._bars.add_task(task, total=total, info=text)
        self._bars.update(self._tasks[task], completed=done, total=total, info=text)

    def crawl_callback(self):
        """An ``on_progress(pages, images)`` callback for the crawler."""
        def update(pages: int, images: int) -> None:
            self("crawl: pages", pages, max(pages, 1), {"images": images})
        return update
