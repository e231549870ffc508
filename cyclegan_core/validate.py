"""Validate: score every translation, decide which pass, and gate the run.

Per sample (x a source, G the direction's generator, F the way back):
- cycle reconstruction between x and F(G(x)) on [0, 1]: L1, PSNR and SSIM (Gaussian window 11,
  sigma 1.5, the Wang et al. 2004 settings, via ``kornia.metrics.ssim``);
- robust cycle PSNR between x and F(q(G(x))), q = Gaussian noise then JPEG (``validate.robust_*``): a
  generator that hides x in a faint signal of G(x) (Chu et al. 2017) reconstructs through G(x), not through q;
- identity drift, mean |x - F(x)|: how much the way-back generator alters a real sample that is
  already in its output domain (what CycleGAN's identity loss holds down);
- realism: how target-like a domain judge finds G(x), ranked among held-out real targets (below);
- when sources carry labels, the label a classifier trained on real target samples predicts for G(x).

Realism is a conformal p-value, not the judge's softmax. On the bundled digits a two-class judge
separates the real collections perfectly (held-out accuracy 1.000, with or without blur), so its
P(target) is 1.000 for anything on the target side of its boundary and says nothing about how
convincing a translation is. Instead each translation's judge margin (target logit minus source
logit) is ranked among the margins of held-out real target samples:
realism = (#{real targets with a lower margin} + 1/2) / (n + 1) (ties count half). Under the
hypothesis "this is a real target sample" it is uniform with mean 0.5, so a translation as
convincing as the median real target scores 0.5 and one less target-like than every real target
scores 0.5 / (n + 1). The judge also sees every image through a fixed Gaussian blur
(``validate.judge_blur_sigma``), in training and scoring alike, so its margin rests on shape and
stroke style more than on sharpness (A is blurry, B sharp on the bundled digits). The raw softmax
P(target) is still reported (``mean_p_target``) to show the saturation this replaces.

Per direction, on held-out samples: means and percentiles, pass rate, label accuracy (and that of
the untranslated sources), and FID and KID between translations and held-out real targets on the
domain judge's penultimate features, plus on InceptionV3 features when a local TorchScript file is
configured.

The pieces live beside this module: :mod:`cyclegan_core.metrics` (the pure metrics),
:mod:`cyclegan_core.judges` (the classifiers, their cache and calibration, Inception) and
:mod:`cyclegan_core.gate` (the bounds); this module runs them over the generated rows and writes
the validated tables, the summary and the sample grids.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from .config import DIRECTIONS, Config
from .devices import resolve_device
from .figures import AUDIO_SUMMARIZED, SUMMARIZED
from .gate import reason_key, run_failures, sample_failures, unapplied_bounds
from .generate import read_generated
from .images import decode_png, to_tensor, to_uint8
from .ingest import manifest_images, read_manifest
from .judges import (
    calibration_half,
    classify,
    device_of,
    inception_features,
    load_inception,
    load_or_train_judges,
    realism_calibration,
)
from .metrics import (
    conformal_realism,
    cycle_errors,
    frechet_distance,
    kernel_inception_distance,
    leave_one_out_realism,
    margins,
    perturb,
    softmax,
    ssim,
)
from .storage import atomic_dir, write_json_atomic

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


PERCENTILES = (10, 50, 90)


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _spread(name: str, values: np.ndarray) -> dict:
    """mean_<name> and p10/p50/p90_<name> of the finite values (None when there are none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    out = {f"mean_{name}": _mean(v)}
    for q in PERCENTILES:
        out[f"p{q}_{name}"] = float(np.percentile(v, q)) if len(v) else None
    return out


@dataclass(frozen=True)
class ValidateResult:
    out_dir: str
    summary: str
    passed: bool
    failures: list[str]
    figures: dict

    def to_dict(self) -> dict:
        return asdict(self)


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


def _pair(result: tuple[float, float, int] | None) -> tuple[float | None, float | None, int | None]:
    return (None, None, None) if result is None else result


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


def validate(cfg: Config, manifest_a: str | Path, manifest_b: str | Path, generated_dir: str | Path,
             out_dir: str | Path, model_dir: str | Path | None = None) -> ValidateResult:
    """Score every generated row; write ``<direction>.parquet`` and ``summary.json`` to ``out_dir``.

    ``model_dir`` (the model that made the translations) enables the identity-drift and robust-cycle figures.
    """
    v = cfg.validate_
    audio = cfg.data.audio_settings
    inception = load_inception(v.inception_weights)  # a configuration error before any work
    device = resolve_device(v.device, "validate.device")
    judges, judge_key = load_or_train_judges(cfg, manifest_a, manifest_b)
    for net in (judges.domain, *judges.label.values()):
        net.to(device)
    if inception is not None:
        inception = inception.to(device)
    held_out = {d: calibration_half(read_manifest(m, ("test",))) for d, m in (("A", manifest_a), ("B", manifest_b))}
    real = {d: manifest_images(t) if t.num_rows else None for d, t in held_out.items()}
    real_logits = {d: classify(judges.domain, x) if x is not None else (np.zeros((0, 2)), np.zeros((0, 128)))
                   for d, x in real.items()}
    # Held-out real samples (never seen in the judge's training) are the reference for realism.
    cal_logits = np.concatenate([real_logits["A"][0], real_logits["B"][0]])
    cal_labels = np.concatenate([np.zeros(len(real_logits["A"][0]), np.int64),
                                 np.ones(len(real_logits["B"][0]), np.int64)])
    judge_acc = float((cal_logits.argmax(1) == cal_labels).mean()) if len(cal_labels) else None
    calibration = realism_calibration(Path(cfg.paths.judges) / judge_key, real_logits)
    gens = None
    if model_dir is not None:
        from .models import load_generators

        gens, _ = load_generators(model_dir, device)
    real_incep = ({d: inception_features(inception, x, device=device) for d, x in real.items() if x is not None}
                  if inception else {})

    figures: dict[str, dict] = {}
    failures: list[str] = []
    not_applied: list[str] = []
    with atomic_dir(out_dir) as tmp:
        for direction in DIRECTIONS:
            target = direction[-1]
            t_idx = 0 if target == "A" else 1
            gen = read_generated(generated_dir, direction,
                                 ["sample_id", "split", "label", "source_image", "image", "reconstruction",
                                  *(["source_audio", "audio", "reconstruction_audio"] if audio is not None else [])])
            n = gen.num_rows
            empty = np.zeros((0, *cfg.data.shape, cfg.data.channels), np.uint8)
            src, out, rec = (
                np.stack([decode_png(b) for b in gen.column(col).to_pylist()]) if n else empty
                for col in ("source_image", "image", "reconstruction")
            )
            l1, psnr = cycle_errors(src, rec)
            ssim_v = ssim(src, rec)
            sound, heard = _audio_figures(gen, src, out, rec, audio) if audio is not None else ({}, None)
            back = "G_BA" if direction == "AtoB" else "G_AB"
            ident = _identity(gens[back], src) if gens is not None and n else None
            sids = gen.column("sample_id").to_pylist()
            robust = (robust_cycle_psnr(gens[back], src, out, sids, v.robust_noise_std, v.robust_jpeg_quality,
                                        v.robust_seed) if gens is not None and n else None)
            logits, feats = classify(judges.domain, out)
            real_t_feats = real_logits[target][1]
            real_margin = calibration[target]
            realism = conformal_realism(margins(logits, t_idx), real_margin)
            src_logits, src_feats = classify(judges.domain, src)
            labels = gen.column("label").to_pylist()
            pred: list[int | None] = [None] * n
            pred_src: list[int | None] = [None] * n
            pred_heard: list[int | None] = [None] * n
            if target in judges.label and n:
                pred = [int(x) for x in classify(judges.label[target], out)[0].argmax(1)]
                pred_src = [int(x) for x in classify(judges.label[target], src)[0].argmax(1)]
                if heard is not None:  # the word as said by the translation's waveform, not its picture
                    pred_heard = [int(x) for x in classify(judges.label[target], heard)[0].argmax(1)]
            ok = [None if lb is None or p is None else lb == p for lb, p in zip(labels, pred, strict=True)]

            rows = []
            thresholds = v.sample[direction]
            reasons: Counter[str] = Counter()
            splits = gen.column("split").to_pylist()
            for i, sid in enumerate(sids):
                m = {"cycle_l1": float(l1[i]), "cycle_psnr": float(psnr[i]),
                     "cycle_psnr_robust": None if robust is None else float(robust[i]), "cycle_ssim": float(ssim_v[i]),
                     "identity_l1": None if ident is None else float(ident[i]), "realism": float(realism[i]),
                     **{k: float(v[i]) for k, v in sound.items()}}
                why = sample_failures({**m, "label_ok": ok[i]}, thresholds)
                reasons.update(reason_key(w) for w in why)
                rows.append({"sample_id": sid, "split": splits[i], **m, "pred_label": pred[i], "label_ok": ok[i],
                             "passed": not why, "fail_reason": "; ".join(why) or None})
            table = pa.Table.from_pylist(rows, schema=validated_schema(audio is not None))
            pq.write_table(table, tmp / f"{direction}.parquet")

            test = np.asarray([s == "test" for s in splits], dtype=bool)
            passed = np.asarray([r["passed"] for r in rows], dtype=bool)
            lab = [i for i in range(n) if test[i] and ok[i] is not None]
            fid = frechet_distance(feats[test], real_t_feats)
            kid, kid_std, kid_n = _pair(kernel_inception_distance(feats[test], real_t_feats, v.kid_subset_size,
                                                                  v.kid_subsets, v.classifier_seed))
            kid_src = _pair(kernel_inception_distance(src_feats[test], real_t_feats, v.kid_subset_size,
                                                      v.kid_subsets, v.classifier_seed))[0]
            fig = {
                "generated": n, "passed": int(passed.sum()), "dropped": int(n - passed.sum()),
                "dropped_by": dict(sorted(reasons.items())),
                "held_out": int(test.sum()), "labelled": len(lab),
                "pass_rate": _mean(passed[test].astype(float)),
            }
            per_sample = {"cycle_l1": l1, "cycle_psnr": psnr,
                          "cycle_psnr_robust": robust if robust is not None else np.zeros(0), "cycle_ssim": ssim_v,
                          "identity_l1": ident if ident is not None else np.zeros(0), "realism": realism, **sound}
            for name in (*SUMMARIZED, *sound):
                vals = per_sample[name]
                fig.update(_spread(name, vals[test] if len(vals) == n else vals))
            fig.update({
                "realism_untranslated": _mean(conformal_realism(margins(src_logits[test], t_idx), real_margin)),
                "realism_real_target": leave_one_out_realism(real_margin),
                "mean_p_target": _mean(softmax(logits[test])[:, t_idx]) if test.any() else None,
                "label_accuracy": float(np.mean([ok[i] for i in lab])) if lab else None,
                "label_accuracy_untranslated": (
                    float(np.mean([pred_src[i] == labels[i] for i in lab])) if lab else None
                ),
                **({"label_accuracy_heard": float(np.mean([pred_heard[i] == labels[i] for i in lab])) if lab
                    else None} if audio is not None else {}),
                "fid_domain_features": fid,
                "fid_domain_untranslated": frechet_distance(src_feats[test], real_t_feats),
                "kid_domain_features": kid, "kid_domain_std": kid_std, "kid_subset_size": kid_n,
                "kid_domain_untranslated": kid_src,
                "real_target_held_out": len(real_t_feats),
            })
            if inception is not None:
                gen_incep = inception_features(inception, out[test], device=device)
                ref = real_incep.get(target, np.zeros((0, gen_incep.shape[1])))
                fig["fid_inception"] = frechet_distance(gen_incep, ref)
                fig["kid_inception"] = _pair(kernel_inception_distance(gen_incep, ref, v.kid_subset_size,
                                                                       v.kid_subsets, v.classifier_seed))[0]
            figures[direction] = fig
            failures += run_failures(direction, fig, v.run[direction])
            not_applied += unapplied_bounds(direction, fig, v.run[direction])
        judge = {"key": judge_key, "blur_sigma": v.judge_blur_sigma, "held_out_accuracy": judge_acc,
                 "held_out_samples": len(cal_labels)}
        robust_cycle = {"noise_std": v.robust_noise_std, "jpeg_quality": v.robust_jpeg_quality, "seed": v.robust_seed,
                        "measured": gens is not None}
        summary = {"passed": not failures, "failures": failures, "not_applied": not_applied, "kind": cfg.data.kind,
                   "directions": figures,
                   "judges": judge_key, "robust_cycle": robust_cycle,
                   "domain_judge": judge, "thresholds": {"sample": {d: v.sample[d].model_dump() for d in DIRECTIONS},
                                                         "run": {d: v.run[d].model_dump() for d in DIRECTIONS}}}
        write_json_atomic(tmp / "summary.json", nan_to_none(summary))
    return ValidateResult(str(out_dir), str(Path(out_dir) / "summary.json"), not failures, failures, figures)


def read_validated(out_dir: str | Path, direction: str) -> pa.Table:
    return pq.read_table(Path(out_dir) / f"{direction}.parquet")


def nan_to_none(obj):
    """JSON-safe copy: NaN and Inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj
