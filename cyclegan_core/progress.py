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
        shown = {k: float(v) for k, v in extra[0].items() if k in SHOWN_LOSSES} if extra and isinstance(
            extra[0], dict) else {}
        if shown:
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
        self.moved(name, done, total)
        self.described(name, describe(name, done, total, bar.format_dict.get("elapsed", 0.0), shown))
        if done >= total:
            bar.close()

    def started(self, name: str) -> None:
        """Called once per name, when its bar opens (a hook for subclasses)."""

    def moved(self, name: str, done: int, total: int) -> None:
        """Called on every update (a hook for subclasses)."""

    def described(self, name: str, text: str) -> None:
        """Called on every update with :func:`describe`'s line (a hook for subclasses)."""


def describe(name: str, done: int, total: int, elapsed_s: float, losses: dict[str, float] | None = None) -> str:
    """One line for people: "train: 300 of 1,500 (20%), 30.0 s, about 2.0 min left; G 1.23, D_A 0.0512"."""
    text = f"{name}: {done:,} of {total:,} ({100 * done / max(total, 1):.0f}%), {_duration(elapsed_s)}"
    if 0 < done < total and elapsed_s > 0:
        text += f", about {_duration(elapsed_s * (total - done) / done)} left"
    if losses:
        text += "; " + ", ".join(f"{k} {v:.3g}" for k, v in losses.items())
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 5400:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
