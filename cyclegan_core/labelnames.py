"""Class names in ``labels.csv``: integers as before, or names (strings) mapped to integer ids.

A collection's ``labels.csv`` (columns ``path,label``) may give each file an integer class or a name.
Where every label of both collections is an integer, the integers are the classes and there are no
names. Otherwise every label is a name, and the names of both collections together, *sorted* (Python
string order), are the ids 0, 1, ...: the same names in A and B get the same ids, and adding a file
of a name already known keeps every id (a new name may shift the ids of the names sorting after it).
Ingest writes the names to ``<paths.ingest>/label_names.json``; publishing turns them into a Hugging
Face ``ClassLabel`` and the grids, the review page and the listening page show them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from .config import DataConfig
from .storage import read_json, write_json_atomic

NAMES_FILE = "label_names.json"


def is_integer(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def label_ids(values: Iterable[str]) -> dict[str, int] | None:
    """The name -> id map of these raw labels (both collections'), or None where all are integers."""
    names = {v.strip() for v in values}
    if all(is_integer(v) for v in names):
        return None
    return {name: i for i, name in enumerate(sorted(names))}


def collection_ids(urls: dict[str, str], cfg: DataConfig) -> dict[str, int] | None:
    """:func:`label_ids` of both collections' ``labels.csv`` together."""
    from .ingest import label_values

    return label_ids([v for d in sorted(urls) for v in label_values(urls[d], cfg)])


def write_names(ingest_dir: str | Path, ids: dict[str, int] | None) -> None:
    """``label_names.json`` beside the manifests (its names in id order), or none where labels are integers."""
    path = Path(ingest_dir) / NAMES_FILE
    if ids is None:
        path.unlink(missing_ok=True)
        return
    write_json_atomic(path, {"names": sorted(ids, key=ids.__getitem__)})


def read_names(ingest_dir: str | Path) -> list[str] | None:
    """The class names by id, or None where the labels are integers (no ``label_names.json``)."""
    path = Path(ingest_dir) / NAMES_FILE
    if not path.exists():
        return None
    names = read_json(path).get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected {{\"names\": [strings]}}")
    return names


def name_of(label: int | None, names: Sequence[str] | None) -> str | int | None:
    """What people see for a class id: its name where there are names, else the id."""
    if label is None or names is None or not 0 <= int(label) < len(names):
        return label
    return names[int(label)]
