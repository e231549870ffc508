"""Every figure validation reports, declared once: its name, how people read it, which way is better,
and the bounds that gate on it. The gate's checks (:mod:`cyclegan_core.gate`), the summary's
percentiles (:mod:`cyclegan_core.validate`), the report's rows (:mod:`cyclegan_core.report`) and the
one-line summaries of the CLI and the flow all read :data:`FIGURES`.

Adding a metric: compute its per-sample column in ``validate.py`` (and add it to the validated
schema), declare it here with its bound names, and add those bounds to ``SampleThresholds`` /
``RunThresholds`` in ``config.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UNDERTRAINED = ("the translations are not good enough yet: train longer (train.steps) or on more samples, and look "
                "at the sample grids in reports/")


@dataclass(frozen=True)
class Figure:
    """One reported figure.

    ``per_sample``: a column of ``validated/<direction>/part-*.parquet``, summarized per direction as
    ``mean_<name>`` and ``p10/p50/p90_<name>``; otherwise ``name`` is a run-level figure of the summary.
    ``sample_bound`` (a ``SampleThresholds`` field) bounds each row; ``run_bound`` (a ``RunThresholds``
    field) bounds ``mean_<name>`` (per-sample figures) or ``name``. A lower run bound at or below
    ``floor`` is off (None: only null turns it off). A set per-sample bound on a row where the figure
    was not measured fails when ``unmeasured`` is "fail" and is passed over when "skip".
    """

    name: str
    title: str
    fmt: str
    better: Literal["higher", "lower"]
    per_sample: bool = True
    sample_bound: str | None = None
    run_bound: str | None = None
    floor: float | None = None
    unmeasured: Literal["fail", "skip"] = "skip"
    unmeasured_why: str = "no held-out samples or no feature extractor"
    summary: str | None = None  # how the one-line summaries (CLI, flow log) say it: "{}" is the value
    needs_labels: bool = False  # a run bound that does not apply where the held-out samples carry no labels
    advice: str = UNDERTRAINED  # the next step a failed bound on it suggests
    doc: str = ""  # what a per-sample column means, for the dataset card's data dictionary
    modality: Literal["any", "audio"] = "any"  # audio: measured on audio collections only

    @property
    def summary_key(self) -> str:
        """The key of the figure in a direction's summary (the mean for per-sample figures)."""
        return f"mean_{self.name}" if self.per_sample else self.name

    @property
    def cycle(self) -> bool:
        """Measured through the way back F (the ``cycle_`` figures): its bounds can be off for one-sided
        models (:func:`cyclegan_core.gate.applicable`)."""
        return self.name.startswith("cycle_")

    @property
    def tail(self) -> int:
        """The percentile the report shows beside the mean: the bad tail (p10 when higher is better)."""
        return 10 if self.better == "higher" else 90

    @property
    def sample_op(self) -> str:
        return "<" if self.better == "higher" else ">"


FIGURES: tuple[Figure, ...] = (  # in the order the gate checks them
    Figure("cycle_psnr", "cycle PSNR dB", ".2f", "higher", sample_bound="min_cycle_psnr",
           run_bound="min_mean_cycle_psnr", floor=0.0, summary="cycle PSNR {} dB",
           doc="PSNR (dB) between the source x and its reconstruction F(G(x)); higher is better"),
    Figure("cycle_psnr_robust", "cycle PSNR dB through noise + JPEG", ".2f", "higher",
           sample_bound="min_robust_cycle_psnr", run_bound="min_mean_robust_cycle_psnr", unmeasured="fail",
           unmeasured_why="no model or no held-out samples", summary="through noise + JPEG {} dB",
           advice="the reconstruction does not survive a small perturbation of G(x): the generator may hide its "
                  "input in a faint signal (Chu et al. 2017); train longer or with a larger identity weight",
           doc="PSNR (dB) between x and F(q(G(x))), q = Gaussian noise then JPEG: low when the translation "
               "hides x in a faint signal; null without the model"),
    Figure("cycle_l1", "cycle L1", ".4f", "lower", sample_bound="max_cycle_l1",
           doc="mean |x - F(G(x))| on [0, 1]"),
    Figure("cycle_ssim", "cycle SSIM", ".3f", "higher", sample_bound="min_cycle_ssim",
           run_bound="min_mean_cycle_ssim", floor=-1.0,
           doc="SSIM between x and F(G(x)) (Gaussian window 11, sigma 1.5)"),
    Figure("identity_l1", "identity drift L1", ".4f", "lower", sample_bound="max_identity_l1",
           doc="mean |x - F(x)| on [0, 1]: how much the way-back generator alters a real source"),
    Figure("realism", "realism: translations", ".3f", "higher", sample_bound="min_realism",
           run_bound="min_mean_realism", floor=0.0, summary="realism {}",
           doc="conformal p-value of 'is a real target sample' from a domain judge (real targets average "
               "0.5; not a probability of being real)"),
    Figure("label_accuracy", "label accuracy: translations", ".3f", "higher", per_sample=False,
           run_bound="min_label_accuracy", floor=0.0, summary="label accuracy {}", needs_labels=True,
           advice="translations change their labels: label-aware training (train.semantic: auto) needs labels.csv "
                  "in both collections, with the same classes"),
    Figure("pass_rate", "held-out pass rate", ".3f", "higher", per_sample=False, run_bound="min_pass_rate",
           floor=0.0),
    Figure("fid_domain_features", "FID, domain features: translations", ".3f", "lower", per_sample=False,
           run_bound="max_fid_domain", summary="FID(domain features) {}"),
    Figure("kid_domain_features", "KID, domain features: translations", ".4f", "lower", per_sample=False,
           run_bound="max_kid_domain"),
    Figure("fid_inception", "FID, Inception", ".2f", "lower", per_sample=False, run_bound="max_fid_inception"),
    Figure("kid_inception", "KID, Inception", ".4f", "lower", per_sample=False, run_bound="max_kid_inception"),
    Figure("cycle_lsd", "cycle log-spectral distance dB", ".2f", "lower", sample_bound="max_cycle_lsd",
           run_bound="max_mean_cycle_lsd", modality="audio", summary="audio: cycle log-spectral distance {} dB",
           doc="audio: log-spectral distance (dB) between the source's and the cycle's spectrograms"),
    Figure("cycle_si_sdr", "cycle SI-SDR dB on waveforms", ".2f", "higher", sample_bound="min_cycle_si_sdr",
           run_bound="min_mean_cycle_si_sdr", modality="audio", summary="cycle SI-SDR {} dB",
           doc="audio: SI-SDR (dB) of the cycle's waveform against the source clip"),
    Figure("inversion_lsd", "inversion loss: log-spectral distance dB", ".2f", "lower", modality="audio",
           doc="audio: log-spectral distance (dB) lost turning the translated spectrogram back into sound"),
)

BY_NAME = {f.name: f for f in FIGURES}
SUMMARIZED = tuple(f.name for f in FIGURES if f.per_sample and f.modality == "any")
AUDIO_SUMMARIZED = tuple(f.name for f in FIGURES if f.per_sample and f.modality == "audio")


def summary_line(fig: dict) -> str:
    """The held-out figures of one direction in a line, for people (three significant figures); figures
    not measured on this run (robust cycle without a model, audio ones on images) are left out."""
    parts = []
    for f in FIGURES:
        if f.summary is None:
            continue
        value = fig.get(f.summary_key)
        if value is None and (f.unmeasured == "fail" or f.modality == "audio"):
            continue
        text = "n/a" if value is None else f"{value:.3g}"
        if f.name == "label_accuracy" and fig.get("label_accuracy_untranslated") is not None:
            text += f" (untranslated {fig['label_accuracy_untranslated']:.3g})"
        parts.append(f.summary.format(text))
    if fig.get("label_accuracy_heard") is not None:
        parts.append(f"label accuracy as heard {fig['label_accuracy_heard']:.3g}")
    return ", ".join(parts)
