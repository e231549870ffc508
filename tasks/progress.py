"""Progress for long steps: a Prefect progress artifact and a terminal bar for the same work."""

from __future__ import annotations

import time
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from tqdm.auto import tqdm


class StepProgress:
    """Callable ``(name, done, total, *extra)``; updates at most every ``interval`` seconds."""

    def __init__(self, key: str, interval: float = 2.0):
        self.key, self.interval = key, interval
        self.artifacts: dict[str, Any] = {}
        self.bars: dict[str, tqdm] = {}
        self.last: dict[str, float] = {}

    def __call__(self, name: str, done: int, total: int, *extra: Any) -> None:
        if name not in self.bars:
            self.bars[name] = tqdm(total=total, desc=name, unit="it", dynamic_ncols=True, mininterval=1.0)
            self.artifacts[name] = create_progress_artifact(
                0.0, key=f"{self.key}-{name.replace(' ', '-').lower()}", description=f"CycleAug {name}"
            )
            self.last[name] = 0.0
        bar = self.bars[name]
        bar.update(done - bar.n)
        if extra and isinstance(extra[0], dict):
            bar.set_postfix({k: f"{v:.3f}" for k, v in extra[0].items() if k in ("G", "D_A", "D_B")}, refresh=False)
        now = time.monotonic()
        if done >= total or now - self.last[name] >= self.interval:
            update_progress_artifact(self.artifacts[name], 100.0 * done / max(total, 1))
            self.last[name] = now
        if done >= total:
            bar.close()
