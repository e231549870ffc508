"""The translator plug-in interface: a translator turns a batch of items of one modality into items of
another, with its settings recorded as provenance.

A translator is any object with ``name``, ``source`` and ``target`` (each one of :data:`MODALITIES`),
``settings()`` (a JSON-able dict: what a published row records about how it was made) and
``translate(batch, seed)``, which returns :class:`TranslatedItem` s (several per source item where
the translator makes variants, such as several voices per text). A translator is named in a config
either by a registered name (:data:`BUILTIN`, or one added with :func:`register`) or as
``module:function``, a factory that takes the translator's settings as keyword arguments and
returns the translator. :func:`resolve_translator` builds either and checks what it got, with
errors that say which part is wrong.

Items by modality: ``text`` is a ``str``; ``speech`` is WAV bytes; ``image`` is a uint8 (H, W, 3)
array (``TranslatedItem.extra`` may carry more, such as the scene a caption was drawn as).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

MODALITIES = ("text", "speech", "image")

# name -> "module:function" of the factory; imported only when asked for, so registering costs nothing
# and an optional extra (eSpeak NG) is needed only by the translator that uses it.
BUILTIN: dict[str, str] = {
    "text_to_speech": "cyclegan_core.modality.speech:text_to_speech",
    "caption_to_scene": "cyclegan_core.modality.scenes:caption_to_scene",
    "scene_to_caption": "cyclegan_core.modality.scenes:scene_to_caption",
}
_REGISTERED: dict[str, Callable[..., Translator]] = {}


class TranslatorError(ValueError):
    """A translator name, ``module:function`` string or factory result that cannot be used; the
    message says which part is wrong."""


@dataclass(frozen=True)
class TranslatedItem:
    """One output of a translator: the item, the source it came from and how it was made.

    ``index`` is the source item's position in the batch; ``params`` the per-item choices (a
    voice, a rate, a seed) that, with the translator's settings, say how to make it again.
    """

    output: Any
    source: Any
    index: int
    params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Translator(Protocol):
    """What the pipeline needs of a translator (see the module docstring)."""

    name: str
    source: str
    target: str

    def settings(self) -> dict: ...

    def translate(self, batch: Sequence[Any], seed: int) -> list[TranslatedItem]: ...


def register(name: str, factory: Callable[..., Translator]) -> None:
    """Make ``factory`` available as ``name`` (in this process); a built-in name cannot be taken."""
    if name in BUILTIN:
        raise TranslatorError(f"translator name {name!r} is built in; choose another name")
    if not callable(factory):
        raise TranslatorError(f"register({name!r}, ...): the factory must be callable, got {type(factory).__name__}")
    _REGISTERED[name] = factory


def available() -> list[str]:
    """The translator names :func:`resolve_translator` knows, built in and registered."""
    return sorted({*BUILTIN, *_REGISTERED})


def load_factory(spec: str) -> Callable[..., Translator]:
    """The factory a registered name or a ``module:function`` string names."""
    if not isinstance(spec, str) or not spec.strip():
        raise TranslatorError(f"a translator is a registered name or 'module:function', got {spec!r}")
    spec = spec.strip()
    if spec in _REGISTERED:
        return _REGISTERED[spec]
    target = BUILTIN.get(spec, spec)
    if ":" not in target:
        raise TranslatorError(f"unknown translator {spec!r}: known are {', '.join(available())}, "
                              "or give your own as 'module:function'")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr or ":" in attr:
        raise TranslatorError(f"translator {spec!r}: expected exactly one ':' between a module and a function")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise TranslatorError(f"translator {spec!r}: module {module_name!r} cannot be imported ({err})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TranslatorError(f"translator {spec!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TranslatorError(f"translator {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable factory")
    return obj


def check_translator(obj: Any, spec: str = "<translator>") -> Translator:
    """``obj`` if it is a usable translator; otherwise a :class:`TranslatorError` naming what is missing."""
    missing = [a for a in ("name", "source", "target", "settings", "translate") if not hasattr(obj, a)]
    if missing:
        raise TranslatorError(f"translator {spec!r}: the factory returned a {type(obj).__name__} without "
                              f"{', '.join(missing)} (see cyclegan_core.modality.translators.Translator)")
    for attr in ("source", "target"):
        if getattr(obj, attr) not in MODALITIES:
            raise TranslatorError(f"translator {spec!r}: {attr} {getattr(obj, attr)!r} is not one of "
                                  f"{', '.join(MODALITIES)}")
    if obj.source == obj.target:
        raise TranslatorError(f"translator {spec!r}: source and target are both {obj.source!r}; a modality "
                              "translator makes another modality")
    if not callable(obj.translate) or not callable(obj.settings):
        raise TranslatorError(f"translator {spec!r}: translate and settings must be methods")
    made = obj.settings()
    if not isinstance(made, dict):
        raise TranslatorError(f"translator {spec!r}: settings() must return a dict, got {type(made).__name__}")
    return obj


def resolve_translator(spec: str, settings: dict | None = None) -> Translator:
    """Build the translator ``spec`` names with ``settings`` as keyword arguments, and check it."""
    factory = load_factory(spec)
    settings = dict(settings or {})
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind(**settings)
        except TypeError as err:
            raise TranslatorError(f"translator {spec!r}: its settings do not fit the factory: {err}") from None
    try:
        made = factory(**settings)
    except TypeError as err:  # a ``**settings`` factory passing them on to a constructor that refuses one
        raise TranslatorError(f"translator {spec!r}: its settings do not fit the factory: {err}") from err
    return check_translator(made, spec)
