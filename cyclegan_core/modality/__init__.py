"""Modality translation (issue 24): make the scarce modality from the abundant one, and measure it.

- :mod:`.translators`: the plug-in interface (``Translator``, ``TranslatedItem``), the registry and
  ``module:function`` resolution;
- :mod:`.speech`: ``text_to_speech`` with eSpeak NG (the ``voices`` extra);
- :mod:`.scenes`: ``caption_to_scene`` and ``scene_to_caption`` with the paired package's scenes;
- :mod:`.fidelity`: the cross-modal gate's measurements (fidelity judges, alignment), with the split
  that keeps training-time and validation judges on different samples.
"""

from .translators import (
    BUILTIN,
    MODALITIES,
    TranslatedItem,
    Translator,
    TranslatorError,
    available,
    register,
    resolve_translator,
)

__all__ = ["BUILTIN", "MODALITIES", "TranslatedItem", "Translator", "TranslatorError", "available", "register",
           "resolve_translator"]
