"""Rows an analyst threw out, as data: an append-only Parquet log of flag and unflag events.

``data/flags.parquet`` (tracked in git/DVC beside ``params.yaml``) holds one row per event:
``action`` (flag | unflag), the row's ``sample_id``, ``source_id`` and ``direction``, a ``reason``,
``who`` and ``when``. Events are only ever added (a new file holds every old event, then the new
ones, written atomically); :func:`flagged` replays them, so the last event per (direction, source
id) decides. A flag is by source: a translation of the same source made again by a later run stays
out of published versions until it is unflagged.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .config import DIRECTIONS
from .storage import atomic_path

DEFAULT_FLAGS = "data/flags.parquet"
ACTIONS = ("flag", "unflag")
FLAGS_SCHEMA = pa.schema([
    ("action", pa.string()), ("sample_id", pa.string()), ("source_id", pa.string()), ("direction", pa.string()),
    ("reason", pa.string()), ("who", pa.string()), ("when", pa.timestamp("us", tz="UTC")),
])


class FlagError(ValueError):
    """A flag event is incomplete or the flags file is unreadable; the message says which."""


@dataclass(frozen=True)
class Flag:
    sample_id: str
    source_id: str
    direction: str
    reason: str
    who: str
    when: datetime


def read_events(path: str | Path) -> pa.Table:
    """Every event in the order it was added (an empty table when the file does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return FLAGS_SCHEMA.empty_table()
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as err:
        raise FlagError(f"{p}: not a readable flags file ({err})") from None
    missing = [n for n in FLAGS_SCHEMA.names if n not in table.schema.names]
    if missing:
        raise FlagError(f"{p}: not a CycleAug flags file: no column {missing}")
    return table.select(FLAGS_SCHEMA.names).cast(FLAGS_SCHEMA)


def _who(who: str | None) -> str:
    if who:
        return who
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def add_events(path: str | Path, action: str, rows: Iterable[dict], reason: str = "", who: str | None = None) -> int:
    """Append one ``action`` event per row (dicts with sample_id, source_id, direction); returns how many.

    A flag needs a reason. The file is rewritten whole with the old events first, atomically, so a
    killed write leaves the previous file.
    """
    if action not in ACTIONS:
        raise FlagError(f"action must be one of {ACTIONS}, not {action!r}")
    if action == "flag" and not reason.strip():
        raise FlagError("a flag needs a reason (what is wrong with the row)")
    when = datetime.now(UTC)
    events = []
    for row in rows:
        for key in ("source_id", "direction"):
            if not row.get(key):
                raise FlagError(f"a {action} event needs {key}: {row}")
        if row["direction"] not in DIRECTIONS:
            raise FlagError(f"direction must be one of {DIRECTIONS}, not {row['direction']!r}")
        events.append({"action": action, "sample_id": row.get("sample_id") or "", "source_id": row["source_id"],
                       "direction": row["direction"], "reason": reason, "who": _who(who), "when": when})
    if not events:
        return 0
    old = read_events(path)
    table = pa.concat_tables([old, pa.Table.from_pylist(events, schema=FLAGS_SCHEMA)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return len(events)


def flagged(path: str | Path) -> dict[tuple[str, str], Flag]:
    """The rows flagged now: ``{(direction, source_id): Flag}`` after replaying every event in order."""
    current: dict[tuple[str, str], Flag] = {}
    for e in read_events(path).to_pylist():
        key = (e["direction"], e["source_id"])
        if e["action"] == "flag":
            current[key] = Flag(e["sample_id"], e["source_id"], e["direction"], e["reason"], e["who"], e["when"])
        else:
            current.pop(key, None)
    return current
