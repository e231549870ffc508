"""The settings of a modality-translation run (``params.yaml`` section ``modality``), beside the package
they configure. :class:`cyclegan_core.config.Config` holds a :class:`ModalityConfig` as its ``modality``
section; ``modality.enabled: true`` makes ``cycleaug run`` a run of kind ``modality`` (see
:mod:`cyclegan_core.modality.run`) instead of the two-collection translation pipeline.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ..schema import _Strict


class ModalitySampleBounds(_Strict):
    """Per generated item: which rows are published (null switches a bound off)."""

    min_fidelity: float | None = Field(
        0.5, ge=0.0, le=1.0,
        description="The fidelity judge's score that the item says its source: for speech the probability the "
                    "validation word judge gives the text's word, for scenes the caption agreement of the "
                    "back-translation (mean over count, colour, shape, place).")
    require_read_back: bool = Field(
        True, description="The judge reads the item back as its source (speech: its top word is the text's word; "
                          "scenes: the back-translated caption means the same).")
    min_realism: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Conformal realism of the judge's margin among the held-out real items' (0.5 is like a real "
                    "item).")


class ModalityRunBounds(_Strict):
    """Per run: whether anything is published (null switches a bound off)."""

    min_real_accuracy: float | None = Field(
        0.8, ge=0.0, le=1.0,
        description="The judge's read-back accuracy on held-out real items: a judge that cannot read real items "
                    "cannot vouch for generated ones.")
    min_fidelity_accuracy: float | None = Field(
        0.8, ge=0.0, le=1.0,
        description="Share of all generated items (before any is dropped) the judge reads back as their source.")
    max_fid: float | None = Field(
        3.0, ge=0.0, description="FID of the generated items against held-out real ones on the judge's features "
                                 "(scaled by the real features' RMS; see modality.fidelity.alignment).")
    max_kid: float | None = Field(None, description="KID on the same features (noisy at a few hundred items).")
    min_mean_realism: float | None = Field(
        0.3, ge=0.0, le=1.0, description="Mean conformal realism of the generated items (0.5 is like a real item).")
    min_pass_rate: float | None = Field(0.8, ge=0.0, le=1.0,
                                        description="Share of generated items that pass every per-item bound.")


class ModalityTargetConfig(_Strict):
    """The real target-modality samples the gate learns from and measures against."""

    collections: tuple[str, ...] = Field(
        ("data/raw/voices/A", "data/raw/voices/B"),
        description="Speech: folders of audio files, each with a labels.csv naming every file's path and its "
                    "text (text_column); the default folders are the bundled speech preset, made (eSpeak NG) "
                    "when missing. Scene images: Parquet files with an image column ({bytes, path} PNG) and the "
                    "caption (text_column); data/raw/scenes/scenes.parquet is made (600 generated scenes) when "
                    "named and missing.")
    text_column: str = Field("word", description="The column that holds what a real item says (labels.csv for "
                                                 "speech, the Parquet file for scenes).")
    judge_epochs: int = Field(40, ge=1, description="Epochs of the validation judge (the word judge for speech, "
                                                    "the object-count CNN for scenes).")
    judge_seed: int = Field(1, description="Its seed (the training-time judge, on other samples, has another).")

    @field_validator("collections")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one real target collection is needed for the gate")
        return value


class ModalityConfig(_Strict):
    """A run of kind ``modality``: make the scarce modality from the abundant one, gate it, publish pairs."""

    enabled: bool = Field(False, description="true: cycleaug run is a modality run (this section), not the "
                                             "two-collection translation pipeline.")
    translator: str = Field(
        "text_to_speech", description="A registered translator (text_to_speech, caption_to_scene, ...) or your own "
                                      "as module:function, a factory taking the settings below as keywords.")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="Keyword arguments of the translator's factory.")
    source: str = Field("data/transcripts.csv",
                        description="The source collection: a CSV or Parquet file with one item per row.")
    source_column: str = Field("text", description="The column of the source items (texts, captions).")
    id_column: str | None = Field("text_id", description="A column of unique source ids; null: the row number.")
    target: ModalityTargetConfig = ModalityTargetConfig()
    batch_size: int = Field(16, ge=1, description="Source items translated and scored at a time.")
    seed: int = 0
    output: str = Field("data/modality/published", description="The published pairs (data/train-*.parquet, "
                                                               "manifest.json, README.md), swapped in whole.")
    reports: str = Field("reports/modality", description="modality.json (the gate's figures), written even when "
                                                         "the gate fails.")
    max_shard_mb: float = Field(64.0, gt=0.0, le=4096.0, description="Largest Parquet shard, MiB.")
    utility_per_class: int | None = Field(
        3, ge=1, description="A passing run's utility figures: classifiers trained on this many real items per class "
                             "(with and without the published items) and on the published items alone, tested on the "
                             "held-out real items (modality.utility); null: not measured.")
    sample: ModalitySampleBounds = ModalitySampleBounds()
    run: ModalityRunBounds = ModalityRunBounds()

    @field_validator("source")
    @classmethod
    def _tabular(cls, value: str) -> str:
        if not value.lower().endswith((".csv", ".parquet")):
            raise ValueError(f"{value!r}: the source collection is a .csv or .parquet file")
        return value
