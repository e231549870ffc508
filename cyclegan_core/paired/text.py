"""Caption edits that keep text true to transformed data: spatial words under a horizontal flip,
colour adjectives under a large hue shift, speed words under a speed change, and -- for samples
whose ``meta.phrases`` says which words name which object -- the phrase of an object a crop removed,
and places, relations and list orders a rotation changed.

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
    objects: ObjectRules | None = None

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


@dataclass(frozen=True)
class ObjectRules:
    """Caption edits for objects that left the frame or whose spatial relations changed (see the YAML)."""

    removed: tuple[tuple[str, str], ...]
    places: tuple[str, str, str]
    relations: tuple[str, str]
    orders: tuple[str, str]

    def rewrite(self, text: str, phrases: list, centres: dict[int, float], removed: set[int],
                width: float) -> tuple[str, list[dict]]:
        """``text`` with removed objects' phrases taken out and places, relations and list orders set from
        the transformed x ``centres`` (object id -> x); returns the text and the edits made."""
        slotted = _slot(text, phrases)
        if slotted is None:
            return text, []  # the caption does not name the objects as meta.phrases says: leave it
        template, names = slotted
        edits: list[dict] = []

        def place(token: str) -> str:
            x = centres.get(int(token[2:-1]), width / 2.0)
            # The same thirds as the scene description: a centre exactly on a boundary is the middle.
            return self.places[0 if x < width / 3 else (2 if x > 2 * width / 3 else 1)]

        x_tok = r"(?P<x><#\d+>)"
        for obj in sorted(removed):
            tok = f"<#{obj}>"
            if tok not in template:
                continue
            for pattern, repl in self.removed:
                rx = re.compile(pattern.replace("{obj}", re.escape(tok)).replace("{x}", x_tok))
                m = rx.search(template)
                if m is None:
                    continue
                other = m.groupdict().get("x")
                new = repl.replace("{x}", other or "").replace("{place}", place(other) if other else "")
                before = template
                template = template[:m.start()] + new + template[m.end():]
                edits.append({"rule": "removed", "object": obj, "old": _fill(before, names),
                              "new": _fill(template, names)})
                break
        tokens = re.findall(r"<#\d+>", template)
        cx = {t: centres.get(int(t[2:-1])) for t in tokens}
        if any(v is None for v in cx.values()):
            return _fill(template, names), edits
        before = template
        # One object: its place. Two related objects: the relation word. A list: the order.
        places = "|".join(re.escape(p) for p in self.places)
        template = re.sub(rf"^(<#\d+>) (?:{places})$", lambda m: f"{m.group(1)} {place(m.group(1))}", template)
        rel = "|".join(re.escape(r) for r in self.relations)
        template = re.sub(rf"(<#\d+>) (?:{rel}) (<#\d+>)", lambda m: f"{m.group(1)} "
                          f"{self.relations[0] if cx[m.group(1)] < cx[m.group(2)] else self.relations[1]} {m.group(2)}",
                          template)
        orders = "|".join(re.escape(o) for o in self.orders)
        m = re.search(rf", (?:{orders})$", template)
        if m and len(tokens) >= 2:
            ranked = sorted(tokens, key=lambda t: cx[t])
            if tokens == ranked:
                word = self.orders[0]
            elif tokens == ranked[::-1]:
                word = self.orders[1]
            else:  # neither way: name them from left to right
                word = self.orders[0]
                it = iter(ranked)
                template = re.sub(r"<#\d+>", lambda _: next(it), template[:m.start()]) + template[m.start():]
            template = re.sub(rf", (?:{orders})$", f", {word}", template)
        if template != before:
            edits.append({"rule": "spatial", "old": _fill(before, names), "new": _fill(template, names)})
        return _fill(template, names), edits


def _slot(text: str, phrases: list) -> tuple[str, dict[str, str]] | None:
    """``text`` with each phrase (``[[id, phrase], ...]`` in caption order) replaced by a ``<#id>`` token."""
    out, names, pos = [], {}, 0
    for obj, phrase in phrases:
        at = text.find(phrase, pos)
        if at < 0 or "<#" in phrase:
            return None
        out.append(text[pos:at])
        tok = f"<#{int(obj)}>"
        out.append(tok)
        names[tok] = phrase
        pos = at + len(phrase)
    out.append(text[pos:])
    return "".join(out), names


def _fill(template: str, names: dict[str, str]) -> str:
    return re.sub(r"<#\d+>", lambda m: names[m.group(0)], template)


def _object_rules(raw: dict) -> ObjectRules:
    rules = tuple((str(p), str(r)) for p, r in raw["removed"])
    for p, _ in rules:
        re.compile(p.replace("{obj}", "<#1>").replace("{x}", r"(?P<x><#\d+>)"))
    places, relations, orders = tuple(raw["places"]), tuple(raw["relations"]), tuple(raw["orders"])
    if len(places) != 3 or len(relations) != 2 or len(orders) != 2:
        raise ValueError("objects: places needs 3 entries (left, middle, right thirds), relations and orders 2")
    return ObjectRules(rules, places, relations, orders)


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
            objects=_object_rules(raw["objects"]) if raw.get("objects") else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{p}: malformed text policy: {err!r}") from None
