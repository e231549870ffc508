"""Score one generated shard: per-sample figures and verdicts, and what the shard adds to the run's figures.

:func:`score_shard` reads a shard of ``data/generated/<direction>/`` ``generate.batch_size`` rows at a time
(so memory is set by the batch, never by the collection), writes its validated rows to a shard of the same
name and its sufficient statistics (counts, sums of the per-sample figures, moments and a seeded KID
reservoir of the judge's features, see :mod:`cyclegan_core.streamstats`) beside it.
:mod:`cyclegan_core.validate` says what each figure means and merges the shards' statistics.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from .config import DIRECTIONS, Config
from .devices import resolve_device
from .figures import AUDIO_SUMMARIZED, SUMMARIZED
from .gate import bounds_for, reason_key, sample_failures
from .images import decode_png, to_tensor, to_uint8
from .judges import classify, device_of, inception_features, load_inception, load_judges
from .metrics import conformal_realism, cycle_errors, margins, perturb, softmax, ssim
from .storage import atomic_path, parquet_batches, sha256_file
from .streamstats import Moments, Reservoir, load_stats, save_stats

# The per-sample table: one float column per per-sample figure of figures.FIGURES (the audio ones on
# audio collections only), the label the judge reads in G(x), and the gate's verdict.
_VERDICT = [("pred_label", pa.int64()), ("label_ok", pa.bool_()), ("passed", pa.bool_()), ("fail_reason", pa.string())]
VALIDATED_SCHEMA = pa.schema([("sample_id", pa.string()), ("split", pa.string()),
                              *((name, pa.float64()) for name in SUMMARIZED), *_VERDICT])


def validated_schema(audio: bool = False) -> pa.Schema:
    """The per-sample table validate writes (with the audio figures for audio collections)."""
    names = (*SUMMARIZED, *(AUDIO_SUMMARIZED if audio else ()))
    return pa.schema([("sample_id", pa.string()), ("split", pa.string()),
                      *((name, pa.float64()) for name in names), *_VERDICT])



# Each validated shard's sufficient statistics: _stats/<direction>/part-XXXXX.safetensors (a "_" folder,
# which Parquet dataset readers skip, so <direction>/ holds only the tables).
STATS_DIR = "_stats"
REFERENCE_FILE = "reference-{}.safetensors"  # in the judge's folder: the held-out real samples' statistics
FEATURES = 128  # the domain judge's feature width (SmallCNN.FEATURES)
INCEPTION_FEATURES = 2048


def stats_name(shard: str) -> str:
    """Where the statistics of validated shard ``<direction>/part-XXXXX.parquet`` go, relative to the folder."""
    return f"{STATS_DIR}/{shard[: -len('.parquet')]}.safetensors"


@torch.inference_mode()
def _identity(gen: nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Mean |x - gen(x)| per sample on [0, 1], on the uint8-rounded output like the stored images."""
    out = []
    device = device_of(gen)
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        y = to_uint8(gen(to_tensor(x).to(device)))
        out.append(np.abs(x.astype(np.float64) - y.astype(np.float64)).mean(axis=(1, 2, 3)) / 255.0)
    return np.concatenate(out) if out else np.zeros(0)


def _sample_seed(seed: int, sample_id: str) -> tuple[int, int]:
    # Per sample, so a row's figure does not depend on which rows are validated with it.
    return seed, int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")


@torch.inference_mode()
def robust_cycle_psnr(back: nn.Module, sources: np.ndarray, translations: np.ndarray, sample_ids: Sequence[str],
                      noise_std: float, jpeg_quality: int | None, seed: int, batch: int = 64) -> np.ndarray:
    """PSNR(x, F(q(G(x)))) per sample (dB, capped like :func:`cycle_errors`).

    ``translations`` are the stored G(x) (uint8); each is perturbed by :func:`perturb` with noise
    drawn from ``seed`` and its sample id, brought back by ``back`` (F) and rounded to uint8 like
    the stored reconstructions.
    """
    out = []
    device = device_of(back)
    for start in range(0, len(sources), batch):
        ids = sample_ids[start:start + batch]
        y = np.stack([perturb(translations[start + k][None], noise_std, jpeg_quality, _sample_seed(seed, sid))[0]
                      for k, sid in enumerate(ids)])
        rec = to_uint8(back(to_tensor(y).to(device)))
        out.append(cycle_errors(sources[start:start + batch], rec)[1])
    return np.concatenate(out) if out else np.zeros(0)




def _audio_figures(gen: pa.Table, src: np.ndarray, out: np.ndarray, rec: np.ndarray,
                   audio) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-sample figures of audio rows, and the translations as heard.

    ``cycle_lsd``: log-spectral distance (dB) between the source's and the cycle's pictures;
    ``cycle_si_sdr``: SI-SDR (dB) of the cycle's waveform against the source clip;
    ``inversion_lsd``: log-spectral distance between the translated picture and the spectrogram of
    the translation's waveform, i.e. what the way back to sound (``data.audio.inversion``) loses.
    The second value: uint8 pictures of the translations' waveforms, to score what a listener gets.
    """
    from .audio import Spectrogram, decode_wav, log_spectral_distance, picture_to_uint8, si_sdr, uint8_to_picture

    if not gen.num_rows:
        return {name: np.zeros(0) for name in AUDIO_SUMMARIZED}, out
    clips = {c: np.stack([decode_wav(b)[0] for b in gen.column(c).to_pylist()])
             for c in ("source_audio", "audio", "reconstruction_audio")}
    heard = Spectrogram(audio).picture(clips["audio"])
    figures = {"cycle_lsd": log_spectral_distance(uint8_to_picture(src), uint8_to_picture(rec), audio),
               "cycle_si_sdr": si_sdr(clips["source_audio"], clips["reconstruction_audio"]),
               "inversion_lsd": log_spectral_distance(uint8_to_picture(out), heard, audio)}
    return figures, picture_to_uint8(heard)



# ---- one shard ----

class _Shard:
    """What one shard adds to its direction's run-level figures (held-out rows only, but the counts)."""

    def __init__(self, size: int, inception: bool):
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.sums: dict[str, list[float]] = {}  # figure -> [sum of its finite values, how many]
        self.moments = {"gen": Moments.empty(FEATURES), "src": Moments.empty(FEATURES)}
        self.reservoirs = {"gen": Reservoir.empty(size, FEATURES), "src": Reservoir.empty(size, FEATURES)}
        if inception:
            self.moments["inception"] = Moments.empty(INCEPTION_FEATURES)
            self.reservoirs["inception"] = Reservoir.empty(size, INCEPTION_FEATURES)

    def add_sum(self, name: str, values: np.ndarray | None) -> None:
        acc = self.sums.setdefault(name, [0.0, 0])
        if values is None:
            return
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        acc[0] += float(v.sum())
        acc[1] += len(v)

    def add_features(self, name: str, feats: np.ndarray, ids: list[str], seed: int, first_row: int) -> None:
        self.moments[name] = self.moments[name].merge(Moments.of(feats))
        size = self.reservoirs[name].size
        self.reservoirs[name] = self.reservoirs[name].merge(Reservoir.of(feats, ids, seed, size, 0, first_row))

    def meta(self) -> dict:
        return {"counts": dict(self.counts), "reasons": dict(self.reasons), "sums": self.sums}


class Scorer:
    """The models one process scores shards with: judges, realism calibration, generators, Inception.

    Built from :func:`prepare`'s result, so a worker process needs only paths; loading them is cheap.
    ``model_dir`` (the model that made the translations) enables the identity-drift and robust-cycle figures.
    """

    def __init__(self, cfg: Config, prepared: dict, model_dir: str | Path | None = None):
        self.cfg = cfg
        v = cfg.validate_
        self.device = resolve_device(cfg.runtime.step("validate").device, "runtime.device")
        self.judges = load_judges(Path(prepared["judges"]), cfg.data.channels)
        for net in (self.judges.domain, *self.judges.label.values()):
            net.to(self.device)
        self.inception = load_inception(v.inception_weights)
        if self.inception is not None:
            self.inception = self.inception.to(self.device)
        arrays = load_stats(prepared["reference"])[3]
        self.calibration = {d: arrays[f"calibration.{d}"] for d in ("A", "B")}
        self.gens = None
        if model_dir is not None:
            from .models import load_generators

            self.gens, _ = load_generators(model_dir, self.device)


def score_shard(scorer: Scorer, generated_dir: str | Path, shard: str, out_dir: str | Path,
                batch: int | None = None) -> dict:
    """Score generated shard ``shard`` (``<direction>/part-XXXXX.parquet`` under ``generated_dir``).

    Reads it ``batch`` rows at a time (default ``generate.batch_size``: as many images as generation holds
    decoded at once, a size already chosen for the image size and the device; the judge's activations,
    a few hundred KB an image at 32x32, are a batch's largest transient). Writes its validated rows to
    ``out_dir/<shard>`` and its sufficient statistics to ``out_dir/_stats/...`` (:func:`stats_name`).
    Returns their names and sha256, and how many batches were decoded and the largest (at most
    ``batch`` rows: what memory is set by).
    The rows' figures depend only on the row (and the models), not on the other rows or the batch.
    """
    cfg, v = scorer.cfg, scorer.cfg.validate_
    audio = cfg.data.audio_settings
    direction = shard.split("/", 1)[0]
    if direction not in DIRECTIONS:
        raise ValueError(f"{shard}: not a shard of a direction {DIRECTIONS}")
    target = direction[-1]
    t_idx = 0 if target == "A" else 1
    back = "G_BA" if direction == "AtoB" else "G_AB"
    judges, gens = scorer.judges, scorer.gens
    real_margin = scorer.calibration[target]
    thresholds = bounds_for(cfg)[0][direction]
    acc = _Shard(v.kid_reservoir, scorer.inception is not None)
    rows: list[dict] = []
    columns = ["sample_id", "split", "label", "source_image", "image", "reconstruction",
               *(["source_audio", "audio", "reconstruction_audio"] if audio is not None else [])]
    held = 0  # held-out rows so far: their position in the shard's feature sets
    batches = largest = 0
    batch = batch or cfg.generate.batch_size
    for rb in parquet_batches(Path(generated_dir) / shard, columns, batch):  # a reader a row group
        gen = pa.Table.from_batches([rb])
        n = gen.num_rows
        batches, largest = batches + 1, max(largest, n)
        src, out, rec = (np.stack([decode_png(b) for b in gen.column(col).to_pylist()])
                         for col in ("source_image", "image", "reconstruction"))
        l1, psnr = cycle_errors(src, rec)
        ssim_v = ssim(src, rec)
        sound, heard = _audio_figures(gen, src, out, rec, audio) if audio is not None else ({}, None)
        ident = _identity(gens[back], src) if gens is not None else None
        sids = gen.column("sample_id").to_pylist()
        robust = (robust_cycle_psnr(gens[back], src, out, sids, v.robust_noise_std, v.robust_jpeg_quality,
                                    v.robust_seed) if gens is not None else None)
        logits, feats = classify(judges.domain, out)
        realism = conformal_realism(margins(logits, t_idx), real_margin)
        src_logits, src_feats = classify(judges.domain, src)
        labels = gen.column("label").to_pylist()
        pred: list[int | None] = [None] * n
        pred_src: list[int | None] = [None] * n
        pred_heard: list[int | None] = [None] * n
        if target in judges.label:
            pred = [int(x) for x in classify(judges.label[target], out)[0].argmax(1)]
            pred_src = [int(x) for x in classify(judges.label[target], src)[0].argmax(1)]
            if heard is not None:  # the word as said by the translation's waveform, not its picture
                pred_heard = [int(x) for x in classify(judges.label[target], heard)[0].argmax(1)]
        ok = [None if lb is None or p is None else lb == p for lb, p in zip(labels, pred, strict=True)]
        splits = gen.column("split").to_pylist()
        passed = np.zeros(n, dtype=bool)
        for i, sid in enumerate(sids):
            m = {"cycle_l1": float(l1[i]), "cycle_psnr": float(psnr[i]),
                 "cycle_psnr_robust": None if robust is None else float(robust[i]), "cycle_ssim": float(ssim_v[i]),
                 "identity_l1": None if ident is None else float(ident[i]), "realism": float(realism[i]),
                 **{k: float(x[i]) for k, x in sound.items()}}
            why = sample_failures({**m, "label_ok": ok[i]}, thresholds)
            acc.reasons.update(reason_key(w) for w in why)
            passed[i] = not why
            rows.append({"sample_id": sid, "split": splits[i], **m, "pred_label": pred[i], "label_ok": ok[i],
                         "passed": not why, "fail_reason": "; ".join(why) or None})

        test = np.asarray([s == "test" for s in splits], dtype=bool)
        lab = [i for i in range(n) if test[i] and ok[i] is not None]
        acc.counts.update({"generated": n, "passed": int(passed.sum()), "held_out": int(test.sum()),
                           "labelled": len(lab), "passed_held_out": int(passed[test].sum()),
                           "label_ok": sum(bool(ok[i]) for i in lab),
                           "label_ok_untranslated": sum(pred_src[i] == labels[i] for i in lab),
                           "label_ok_heard": sum(pred_heard[i] == labels[i] for i in lab)})
        per_sample = {"cycle_l1": l1, "cycle_psnr": psnr, "cycle_psnr_robust": robust, "cycle_ssim": ssim_v,
                      "identity_l1": ident, "realism": realism, **sound}
        for name, vals in per_sample.items():
            acc.add_sum(name, None if vals is None else vals[test])
        acc.add_sum("realism_untranslated", conformal_realism(margins(src_logits[test], t_idx), real_margin))
        acc.add_sum("p_target", softmax(logits[test])[:, t_idx] if test.any() else None)
        test_ids = [s for s, t in zip(sids, test, strict=True) if t]
        acc.add_features("gen", feats[test], test_ids, v.classifier_seed, held)
        acc.add_features("src", src_feats[test], test_ids, v.classifier_seed, held)
        if scorer.inception is not None and test.any():
            acc.add_features("inception", inception_features(scorer.inception, out[test], device=scorer.device),
                             test_ids, v.classifier_seed, held)
        held += int(test.sum())

    out = Path(out_dir)
    (out / direction).mkdir(parents=True, exist_ok=True)
    with atomic_path(out / shard) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=validated_schema(audio is not None)), tmp)
    save_stats(out / stats_name(shard), acc.meta(), acc.moments, acc.reservoirs)
    return {"direction": direction, "file": shard, "rows": len(rows), "sha256": sha256_file(out / shard),
            "stats_sha256": sha256_file(out / stats_name(shard)), "batches": batches, "largest_batch": largest}
