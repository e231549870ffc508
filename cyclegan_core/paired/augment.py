"""The synchronized augmenter (batched, one draw per sample) and replay of its records.

Alignment checks (``align.py``) run after the synchronized ops and before mixup and dropout.

:class:`SyncAugmenter` runs the ops in a fixed order -- temporal crop, speed, 3D cloud transform, geometry, photometric
jitter, pixel noise, audio noise, mixup, modality dropout -- over a batch, drawing every op's
parameters once per sample, and returns each output with its replay record. :func:`replay`
rebuilds an output from its source and record alone, through the same ``apply`` code.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..devices import resolve_device
from . import record as rec
from .align import AlignmentPolicy, check_alignment
from .cloud import CloudTransform
from .ops import (
    AudioNoise,
    Geometry,
    Mixup,
    ModalityDropout,
    Op,
    Photometric,
    PixelNoise,
    SpeedChange,
    TemporalCrop,
    build_op,
)
from .sample import PairedSample


class SyncAugmenter:
    """Synchronized augmentation of paired samples, built from ``paired`` settings (see ``config.py``)."""

    def __init__(self, ops: Sequence[Op], mixup: Mixup | None = None, dropout: ModalityDropout | None = None,
                 device: str | torch.device = "cpu", alignment: AlignmentPolicy | None = None) -> None:
        self.ops = list(ops)
        self.alignment = alignment
        self.mixup = mixup
        self.dropout = dropout
        self.device = torch.device(device)

    @classmethod
    def from_config(cls, cfg: Any, device: str | torch.device | None = None) -> SyncAugmenter:
        """Build from a :class:`cyclegan_core.paired.settings.PairedConfig`."""
        g, ph, t = cfg.geometry, cfg.photometric, cfg.temporal
        ops: list[Op] = [
            TemporalCrop(p=t.crop_p, fraction=t.crop_fraction),
            SpeedChange(p=t.speed_p, rate=t.speed, text_policy=cfg.text_policy),
            CloudTransform(p=cfg.cloud.p, degrees=cfg.cloud.degrees, scale=cfg.cloud.scale,
                           translate=cfg.cloud.translate, mirror_p=cfg.cloud.mirror_p, text_policy=cfg.text_policy),
            Geometry(hflip_p=g.hflip_p, crop=g.crop, crop_scale=g.crop_scale, crop_ratio=g.crop_ratio,
                     output_size=g.output_size, affine_p=g.affine_p, degrees=g.degrees, translate=g.translate,
                     scale=g.scale, shear=g.shear, min_box_area=g.min_box_area, text_policy=cfg.text_policy),
            Photometric(p=ph.jitter_p, brightness=ph.brightness, contrast=ph.contrast, saturation=ph.saturation,
                        hue=ph.hue, text_policy=cfg.text_policy),
            PixelNoise(p=ph.pixel_noise_p, std=ph.pixel_noise_std),
            AudioNoise(p=ph.audio_noise_p, snr_db=ph.audio_snr_db),
        ]
        mixup = Mixup(p=cfg.mixup.p, alpha=cfg.mixup.alpha) if cfg.mixup.p > 0 else None
        drop = cfg.dropout
        probs = {m: getattr(drop, m) for m in ("image", "video", "audio", "caption", "text_embedding")}
        dropout = ModalityDropout(p=probs, keep_one=drop.keep_one) if any(probs.values()) else None
        al = cfg.alignment
        alignment = AlignmentPolicy(al.min_object_fraction, al.min_keypoint_fraction, al.max_redraws, al.on_fail) \
            if al.enabled else None
        device = device or resolve_device(cfg.device, "paired.device")
        return cls(ops, mixup, dropout, device=device, alignment=alignment)

    def augment(self, samples: Sequence[PairedSample], seed: int,
                out_ids: Sequence[str] | None = None) -> list[tuple[PairedSample, dict]]:
        """Augment a batch once; every sample gets one draw per op. Returns (output, record) pairs; the
        output is None for a sample the alignment checks dropped."""
        rng = np.random.default_rng(seed)
        sources = [s.validate() for s in samples]
        ids = list(out_ids) if out_ids is not None else [f"{s.sample_id}.aug" for s in samples]
        records = [rec.new_record(s.sample_id, i) for s, i in zip(sources, ids, strict=True)]
        cur = list(sources)
        for op in self.ops:
            cur = _run_op(op, cur, records, rng, self.device)
        active = [True] * len(cur)  # False: kept unaugmented, or dropped, by the alignment checks
        dropped_idx: set[int] = set()
        if self.alignment is not None:
            cur, records, active, dropped_idx = self._align(sources, cur, records, ids, rng)
        if self.mixup is not None:
            before = list(cur)
            ops_before = [copy.deepcopy(r["ops"]) for r in records]
            for i, s in enumerate(before):
                if not active[i] or rng.random() >= self.mixup.spec["p"]:
                    continue
                partners = [j for j, o in enumerate(before) if j != i and active[j] and _mixable(s, o)]
                if not partners:
                    continue
                j = partners[int(rng.integers(len(partners)))]
                lam = self.mixup.draw_lambda(rng)
                cur[i], effects = Mixup.mix(s, before[j], lam)
                partner = {"source_id": records[j]["source_id"], "ops": ops_before[j]}
                records[i]["ops"].append({"op": Mixup.name, "spec": self.mixup.spec,
                                          "params": {"lam": lam, "partner": partner}, "effects": effects})
        if self.dropout is not None:
            idx = [i for i in range(len(cur)) if active[i]]
            part = _run_op(self.dropout, [cur[i] for i in idx], [records[i] for i in idx], rng, self.device)
            for i, o in zip(idx, part, strict=True):
                cur[i] = o
        return [(None if k in dropped_idx else s.replace(sample_id=i), r)
                for k, (s, i, r) in enumerate(zip(cur, ids, records, strict=True))]

    def _align(self, sources: list[PairedSample], cur: list[PairedSample], records: list[dict], ids: list[str],
               rng: np.random.Generator):
        """Redraw the synchronized ops of samples failing an alignment check, up to ``max_redraws``
        times; then keep the source unaugmented or drop the sample (the record says which and why)."""
        policy = self.alignment
        rejected: list[Counter[str]] = [Counter() for _ in cur]
        reasons: list[dict[str, str]] = [{} for _ in cur]
        draws = [1] * len(cur)
        failing = list(range(len(cur)))
        for attempt in range(policy.max_redraws + 1):
            still = []
            for i in failing:
                draws[i] = attempt + 1
                failed = check_alignment(sources[i], cur[i], records[i], policy)
                if failed:
                    rejected[i].update(failed.keys())
                    reasons[i] = failed
                    still.append(i)
            failing = still
            if not failing or attempt == policy.max_redraws:
                break
            sub_records = [rec.new_record(sources[i].sample_id, ids[i]) for i in failing]
            sub = [sources[i] for i in failing]
            for op in self.ops:
                sub = _run_op(op, sub, sub_records, rng, self.device)
            for i, o, r in zip(failing, sub, sub_records, strict=True):
                cur[i], records[i] = o, r
        active = [True] * len(cur)
        dropped: set[int] = set()
        for i in range(len(cur)):
            outcome = "augmented"
            if i in failing:
                active[i] = False
                outcome = "kept_source" if policy.on_fail == "keep" else "dropped"
                cur[i] = sources[i]
                records[i]["ops"] = []
                if policy.on_fail == "drop":
                    dropped.add(i)
            if rejected[i]:
                records[i]["alignment"] = {"rejected": dict(rejected[i]), "outcome": outcome, "draws": draws[i],
                                           **({"reasons": reasons[i]} if outcome != "augmented" else {})}
        return cur, records, active, dropped


def _mixable(a: PairedSample, b: PairedSample) -> bool:
    """Partners share the spatial canvas and channel count, so their images can be averaged."""
    return a.canvas() == b.canvas() and a.channels() == b.channels()


def _run_op(op: Op, samples: list[PairedSample], records: list[dict], rng: np.random.Generator,
            device: torch.device) -> list[PairedSample]:
    params = op.draw(samples, rng)
    idx = [i for i, p in enumerate(params) if p is not None]
    if not idx:
        return samples
    outs, effects = op.apply([samples[i] for i in idx], [params[i] for i in idx], device)
    result = list(samples)
    for i, o, e in zip(idx, outs, effects, strict=True):
        result[i] = o
        records[i]["ops"].append({"op": op.name, "spec": op.spec, "params": rec.encode(params[i]),
                                  "effects": rec.encode(e)})
    return result


_OP_CACHE: dict[str, Op] = {}


def _op(name: str, spec: dict) -> Op:
    key = name + rec.dumps(spec)
    if key not in _OP_CACHE:
        _OP_CACHE[key] = build_op(name, spec)
    return _OP_CACHE[key]


def replay(source: PairedSample, record: dict, sources: Mapping[str, PairedSample] | None = None,
           device: str | torch.device = "cpu") -> PairedSample:
    """Rebuild an augmented sample from its source and replay record (exactly, on the same device).

    ``sources`` maps source ids to samples; it is needed only for records with mixup (the partner
    is rebuilt from its own source and its record first).
    """
    sample = source.validate()
    for entry in record["ops"]:
        name = entry["op"]
        params = rec.decode(entry["params"])
        if name == Mixup.name:
            partner_rec = params["partner"]
            pid = partner_rec["source_id"]
            if sources is None or pid not in sources:
                raise KeyError(f"replay of {record.get('sample_id')!r}: mixup partner source {pid!r} not given")
            partner = replay(sources[pid], {"ops": partner_rec["ops"]}, sources, device)
            sample, _ = Mixup.mix(sample, partner, params["lam"])
            continue
        outs, _ = _op(name, entry["spec"]).apply([sample], [params], torch.device(device))
        sample = outs[0]
    return sample.replace(sample_id=record.get("sample_id", sample.sample_id))


