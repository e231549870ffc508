"""Browse one published version by its figures: filter, sort, page, and read single rows' pictures.

:class:`VersionIndex` reads only the small columns of every shard (ids, direction, split, label,
passed and the per-sample figures: tens of bytes a row, no image byte) and remembers where each row
is (shard, row group, row). A page is a filter and a sort over that index; a picture is read from
its one row group when the page asks for it. The web page (``cycleaug review``, :mod:`flows.review`)
is a thin layer over this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .labelnames import name_of
from .publish import CLASS_COLUMNS, class_names
from .reader import BYTES_COLUMNS, PublishedDataset

KEY_COLUMNS = ("sample_id", "source_id", "direction", "split", "label", "passed")
TEXT_FILTERS = ("direction", "split")


@dataclass(frozen=True)
class Page:
    total: int
    rows: list[dict]


def _number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class VersionIndex:
    """The small columns of every row of a published version, and where each row lives."""

    def __init__(self, dataset: PublishedDataset):
        self.dataset = dataset
        self.files = dataset.files()
        tables, where = [], []
        self.metrics: list[str] = []
        self.names: list[str] | None = None  # class names by id, where the version's labels have names
        for f_idx, path in enumerate(self.files):
            with dataset.fs.open(path, "rb") as fh:
                pf = pq.ParquetFile(fh)
                schema = pf.schema_arrow
                if not self.metrics:
                    self.metrics = [f.name for f in schema if pa.types.is_floating(f.type)]
                    self.names = class_names(schema)
                wanted = [c for c in (*KEY_COLUMNS, *self.metrics) if c in schema.names]
                for rg in range(pf.metadata.num_row_groups):
                    t = pf.read_row_group(rg, columns=wanted)
                    tables.append(t)
                    where += [(f_idx, rg, i) for i in range(t.num_rows)]
        self.table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
        self.where = where
        self.columns = {name: self.table.column(name).to_numpy(zero_copy_only=False)
                        for name in self.table.column_names}
        ids = sorted({int(x) for x in self.columns.get("label", []) if x is not None and x == x})
        self.labels: list[int | str] = [name_of(i, self.names) for i in ids]  # what people see and filter by

    def __len__(self) -> int:
        return self.table.num_rows

    def select(self, filters: dict[str, Any]) -> np.ndarray:
        """Row numbers matching ``filters``: direction, split, label, passed, and ``min_<figure>`` /
        ``max_<figure>`` ranges (rows without the figure do not match a range)."""
        keep = np.ones(len(self), dtype=bool)
        for name in TEXT_FILTERS:
            if filters.get(name):
                keep &= self.columns[name] == filters[name]
        if filters.get("label") not in (None, ""):
            want = filters["label"]
            label = self.names.index(want) if self.names and want in self.names else int(want)
            keep &= np.asarray([x == label for x in self.columns["label"]], dtype=bool)
        if filters.get("passed") not in (None, ""):
            want = str(filters["passed"]).lower() in ("1", "true", "yes")
            keep &= self.columns["passed"].astype(bool) == want
        for m in self.metrics:
            lo, hi = filters.get(f"min_{m}"), filters.get(f"max_{m}")
            if lo in (None, "") and hi in (None, ""):
                continue
            vals = self.columns[m].astype(float)
            ok = np.isfinite(vals)
            if lo not in (None, ""):
                ok &= vals >= float(lo)
            if hi not in (None, ""):
                ok &= vals <= float(hi)
            keep &= ok
        return np.flatnonzero(keep)

    def order(self, rows: np.ndarray, sort: str | None, descending: bool = False) -> np.ndarray:
        """``rows`` sorted by a figure or a key column (stable; rows without the figure last)."""
        if not sort:
            return rows
        if sort not in self.columns:
            raise KeyError(f"no column {sort!r} to sort by; there are {sorted(self.columns)}")
        vals = self.columns[sort][rows]
        if sort in self.metrics:
            v = vals.astype(float)
            missing = ~np.isfinite(v)
            v = np.where(missing, 0.0, -v if descending else v)
            idx = np.lexsort((v, missing))
        else:
            idx = np.argsort(vals.astype(str), kind="stable")
            if descending:
                idx = idx[::-1]
        return rows[idx]

    def _named(self, rec: dict) -> dict:
        """``label`` and ``pred_label`` as class names where the version has them (ids as ``label_id``...)."""
        if self.names is None:
            return rec
        for c in CLASS_COLUMNS:
            if c in rec:
                rec[f"{c}_id"], rec[c] = rec[c], name_of(rec[c], self.names)
        return rec

    def record(self, row: int) -> dict:
        """A row's small columns (no bytes)."""
        return self._named({name: _number(self.columns[name][row].item() if hasattr(self.columns[name][row], "item")
                                          else self.columns[name][row]) for name in self.columns} | {"row": int(row)})

    def page(self, filters: dict[str, Any], sort: str | None = None, descending: bool = False, offset: int = 0,
             limit: int = 50) -> Page:
        rows = self.order(self.select(filters), sort, descending)
        return Page(len(rows), [self.record(int(r)) for r in rows[offset:offset + limit]])

    def full_record(self, row: int) -> dict:
        """Every column of one row except the image and audio bytes (read from its row group)."""
        f_idx, rg, i = self.where[row]
        with self.dataset.fs.open(self.files[f_idx], "rb") as fh:
            pf = pq.ParquetFile(fh)
            cols = [c for c in pf.schema_arrow.names if c not in BYTES_COLUMNS]
            rec = pf.read_row_group(rg, columns=cols).slice(i, 1).to_pylist()[0]
        return self._named({k: _number(v) if not hasattr(v, "isoformat") else v.isoformat() for k, v in rec.items()})

    def picture(self, row: int, column: str) -> bytes:
        """The stored PNG (or WAV) bytes of one row's ``column``."""
        if column not in BYTES_COLUMNS:
            raise KeyError(f"{column!r} is not a picture column ({', '.join(BYTES_COLUMNS)})")
        f_idx, rg, i = self.where[row]
        with self.dataset.fs.open(self.files[f_idx], "rb") as fh:
            value = pq.ParquetFile(fh).read_row_group(rg, columns=[column]).column(0)[i].as_py()
        if value is None:
            raise KeyError(f"row {row} has no {column}")
        return value["bytes"]
