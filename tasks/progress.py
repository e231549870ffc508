"""Progress for long steps in the flow: the terminal bars of ``cyclegan_core.progress`` and a Prefect
progress artifact for the same work."""

from __future__ import annotations

import time
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from cyclegan_core.progress import Bars


class StepProgress(Bars):
    """:class:`Bars` that also update a progress artifact, at most every ``interval`` seconds."""

    def __init__(self, key: str, interval: float = 2.0):
        super().__init__()
        self.key, self.interval = key, interval
        self.artifacts: dict[str, Any] = {}
        self.last: dict[str, float] = {}
        self.fraction: tuple[str, float, bool] = ("", 0.0, False)

    def started(self, name: str) -> None:
        self.artifacts[name] = create_progress_artifact(
            0.0, key=f"{self.key}-{name.replace(' ', '-').lower()}", description=f"CycleAug {name}"
        )
        self.last[name] = 0.0

    def moved(self, name: str, done: int, total: int) -> None:
        self.fraction = (name, 100.0 * done / max(total, 1), done >= total)

    def described(self, name: str, text: str) -> None:
        """The artifact's bar and its description ("train: 300 of 1,500 (20%), 30 s, about 2 min left; G ...")."""
        now = time.monotonic()
        _, percent, finished = self.fraction
        if finished or now - self.last[name] >= self.interval:
            update_progress_artifact(self.artifacts[name], percent, description=f"CycleAug {text}")
            self.last[name] = now
