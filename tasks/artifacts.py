"""What the flow shows in the Prefect UI, shaped for it: Markdown whose pictures load there (inlined
as data URIs: the UI cannot reach files in ``reports/``), and figure tables one figure a row, so
they fit the UI's width instead of one direction a row with forty columns."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from cyclegan_core.config import DIRECTIONS

_PICTURE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def inline_pictures(markdown: str, folder: str | Path) -> str:
    """``![alt](name.png)`` with ``folder/name.png`` present becomes ``![alt](data:image/png;base64,...)``;
    other links are left as they are."""
    root = Path(folder)

    def inline(m: re.Match) -> str:
        path = root / m.group(2)
        if m.group(2).startswith(("data:", "http:", "https:")) or not path.is_file():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"

    return _PICTURE.sub(inline, markdown)


def _shown(value: object) -> object:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def figure_rows(figures: dict[str, dict]) -> list[dict]:
    """One row per scalar figure, one column per direction (rounded to four significant digits)."""
    names = list(dict.fromkeys(k for d in DIRECTIONS for k, v in figures.get(d, {}).items()
                               if not isinstance(v, dict | list)))
    return [{"figure": k, **{d: _shown(figures.get(d, {}).get(k)) for d in DIRECTIONS}} for k in names]
