"""Terminal progress for long steps: one tqdm bar per named piece of work.

A step calls ``progress(name, done, total, *extra)``; training passes its latest losses as ``extra``,
shown beside the bar. The flow's tasks add a Prefect progress artifact on top
(``tasks.progress.StepProgress``); the CLI's step commands use :class:`Bars` as it is.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

SHOWN_LOSSES = ("G", "D_A", "D_B")


class Bars:
    """Callable ``(name, done, total, *extra)``: a bar per name, closed when done reaches total."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, name: str, done: int, total: int, *extra: Any) -> None:
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = tqdm(total=total, desc=name, unit="it", dynamic_ncols=True, mininterval=1.0)
            self.started(name)
        bar.update(done - bar.n)
        if extra and isinstance(extra[0], dict):
            bar.set_postfix({k: f"{v:.3f}" for k, v in extra[0].items() if k in SHOWN_LOSSES}, refresh=False)
        self.moved(name, done, total)
        if done >= total:
            bar.close()

    def started(self, name: str) -> None:
        """Called once per name, when its bar opens (a hook for subclasses)."""

    def moved(self, name: str, done: int, total: int) -> None:
        """Called on every update (a hook for subclasses)."""
