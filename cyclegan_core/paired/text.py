"""Caption edits that keep text true to a transformed image: spatial words under a horizontal flip.

No augmentation library rewrites captions, so this is written by hand. The word table is data (an
involution: applying it twice gives the original text back); a later policy file can extend it.
Only lower-case, Capitalised and UPPER-CASE spellings are rewritten, with their case kept, so a
flip applied twice is the identity on any text.
"""

from __future__ import annotations

import re

#: Words a left-right mirror turns into each other. Each pair is listed once; the map is symmetric.
HFLIP_WORD_PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("leftmost", "rightmost"),
    ("leftward", "rightward"),
    ("leftwards", "rightwards"),
    ("lefthand", "righthand"),
    ("clockwise", "counterclockwise"),
)

_WORD = re.compile(r"[A-Za-z]+")


def _swap_table(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    table: dict[str, str] = {}
    for a, b in pairs:
        if a in table or b in table:
            raise ValueError(f"word pair ({a}, {b}) overlaps another pair: the table must be an involution")
        table[a], table[b] = b, a
    return table


HFLIP_WORDS = _swap_table(HFLIP_WORD_PAIRS)


def _recase(word: str, like: str) -> str | None:
    if like.islower():
        return word
    if like.isupper():
        return word.upper()
    if like[0].isupper() and like[1:].islower():
        return word.capitalize()
    return None  # mixed case such as "lEft": left alone so the edit stays an involution


def swap_words(text: str, table: dict[str, str] = HFLIP_WORDS) -> tuple[str, list[list]]:
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
    """The caption of a horizontally flipped image: left/right and their variants swapped."""
    return swap_words(text, HFLIP_WORDS)
