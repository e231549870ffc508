"""Caption edits that keep text true to transformed data: spatial words under a horizontal flip,
colour adjectives under a large hue shift, speed words under a speed change.

No augmentation library rewrites captions, so this is written by hand; the tables are data, read
from ``text_policy.yaml`` (or another file of the same format). The mirror table is an involution,
and only lower-case, Capitalised and UPPER-CASE spellings are rewritten, with their case kept, so a
flip applied twice is the identity on any text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

_WORD = re.compile(r"[A-Za-z]+")


def _swap_table(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    table: dict[str, str] = {}
    for a, b in pairs:
        if a in table or b in table:
            raise ValueError(f"word pair ({a}, {b}) overlaps another pair: the table must be an involution")
        table[a], table[b] = b, a
    return table


def _recase(word: str, like: str) -> str | None:
    if like.islower():
        return word
    if like.isupper():
        return word.upper()
    if like[0].isupper() and like[1:].islower():
        return word.capitalize()
    return None  # mixed case such as "lEft": left alone so the edit stays an involution


def swap_words(text: str, table: dict[str, str]) -> tuple[str, list[list]]:
    """Rewrite ``text`` through ``table``; returns the new text and the edits ``[start, old, new]``."""
    edits: list[list] = []
    out: list[str] = []
    last = 0
    for m in _WORD.finditer(text):
        word = m.group(0)
        target = table.get(word.lower())
        if target is None:
            continue
        new = _recase(target, word)
        if new is None:
            continue
        out.append(text[last:m.start()])
        out.append(new)
        last = m.end()
        edits.append([m.start(), word, new])
    out.append(text[last:])
    return "".join(out), edits


def hflip_caption(text: str) -> tuple[str, list[list]]:
    """The caption of a horizontally flipped image under the bundled policy: left/right swapped."""
    return load_policy().mirrored(text)


POLICY_FORMAT = "cycleaug-text-policy-1"
DEFAULT_POLICY = Path(__file__).with_name("text_policy.yaml")


@dataclass(frozen=True)
class TextPolicy:
    """The caption-edit tables of one policy file."""

    mirror: dict[str, str]
    hue_min_shift: float
    hue_colours: dict[str, float]
    faster_than: float
    slower_than: float
    when_faster: dict[str, str]
    when_slower: dict[str, str]

    def mirrored(self, text: str) -> tuple[str, list[list]]:
        return swap_words(text, self.mirror)

    def hue_shifted(self, text: str, turns: float) -> tuple[str, list[list]]:
        """Colour words renamed for a hue rotation of ``turns`` (kornia's ``hue_factor``: 1 = 360 degrees)."""
        shift = turns * 360.0
        if abs(shift) < self.hue_min_shift:
            return text, []
        names = list(self.hue_colours)

        def nearest(h: float) -> str:
            return min(names, key=lambda n: abs((self.hue_colours[n] - h + 180.0) % 360.0 - 180.0))

        table = {n: nearest((self.hue_colours[n] + shift) % 360.0) for n in names}
        return swap_words(text, {k: v for k, v in table.items() if k != v})

    def speed_changed(self, text: str, rate: float) -> tuple[str, list[list]]:
        if rate > self.faster_than:
            return swap_words(text, self.when_faster)
        if rate < self.slower_than:
            return swap_words(text, self.when_slower)
        return text, []


@functools.cache
def load_policy(path: str | None = None) -> TextPolicy:
    """Read a text policy (the bundled ``text_policy.yaml`` when ``path`` is None); errors name the file."""
    p = Path(path) if path else DEFAULT_POLICY
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{p}: cannot read the text policy: {err}") from None
    if not isinstance(raw, dict) or raw.get("format") != POLICY_FORMAT:
        raise ValueError(f"{p}: not a {POLICY_FORMAT} file")
    try:
        hue, speed = raw["hue"], raw["speed"]
        return TextPolicy(
            mirror=_swap_table(tuple(tuple(pair) for pair in raw["mirror_pairs"])),
            hue_min_shift=float(hue["min_shift_degrees"]),
            hue_colours={str(k): float(v) for k, v in hue["colours"].items()},
            faster_than=float(speed["faster_than"]), slower_than=float(speed["slower_than"]),
            when_faster={str(k): str(v) for k, v in speed["when_faster"].items()},
            when_slower={str(k): str(v) for k, v in speed["when_slower"].items()},
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{p}: malformed text policy: {err!r}") from None
