"""The synchronized augmenter (batched, one draw per sample) and replay of its records.

:class:`SyncAugmenter` runs the ops in a fixed order -- temporal crop, speed, geometry, photometric
jitter, pixel noise, audio noise, mixup, modality dropout -- over a batch, drawing every op's
parameters once per sample, and returns each output with its replay record. :func:`replay`
rebuilds an output from its source and record alone, through the same ``apply`` code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from . import record as rec
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
                 device: str | torch.device = "cpu") -> None:
        self.ops = list(ops)
        self.mixup = mixup
        self.dropout = dropout
        self.device = torch.device(device)

    @classmethod
    def from_config(cls, cfg: Any, device: str | torch.device | None = None) -> SyncAugmenter:
        """Build from a :class:`cyclegan_core.config.PairedConfig`."""
        g, ph, t = cfg.geometry, cfg.photometric, cfg.temporal
        ops: list[Op] = [
            TemporalCrop(p=t.crop_p, fraction=t.crop_fraction),
            SpeedChange(p=t.speed_p, rate=t.speed),
            Geometry(hflip_p=g.hflip_p, crop=g.crop, crop_scale=g.crop_scale, crop_ratio=g.crop_ratio,
                     output_size=g.output_size, affine_p=g.affine_p, degrees=g.degrees, translate=g.translate,
                     scale=g.scale, shear=g.shear, min_box_area=g.min_box_area),
            Photometric(p=ph.jitter_p, brightness=ph.brightness, contrast=ph.contrast, saturation=ph.saturation,
                        hue=ph.hue),
            PixelNoise(p=ph.pixel_noise_p, std=ph.pixel_noise_std),
            AudioNoise(p=ph.audio_noise_p, snr_db=ph.audio_snr_db),
        ]
        mixup = Mixup(p=cfg.mixup.p, alpha=cfg.mixup.alpha) if cfg.mixup.p > 0 else None
        drop = cfg.dropout
        probs = {m: getattr(drop, m) for m in ("image", "video", "audio", "caption", "text_embedding")}
        dropout = ModalityDropout(p=probs, keep_one=drop.keep_one) if any(probs.values()) else None
        return cls(ops, mixup, dropout, device=device or resolve_device(cfg.device))

    def augment(self, samples: Sequence[PairedSample], seed: int,
                out_ids: Sequence[str] | None = None) -> list[tuple[PairedSample, dict]]:
        """Augment a batch once; every sample gets one draw per op. Returns (output, record) pairs."""
        rng = np.random.default_rng(seed)
        cur = [s.validate() for s in samples]
        ids = list(out_ids) if out_ids is not None else [f"{s.sample_id}.aug" for s in samples]
        records = [rec.new_record(s.sample_id, i) for s, i in zip(cur, ids, strict=True)]
        for op in self.ops:
            cur = _run_op(op, cur, records, rng, self.device)
        if self.mixup is not None:
            before = list(cur)
            ops_before = [copy.deepcopy(r["ops"]) for r in records]
            for i, s in enumerate(before):
                if rng.random() >= self.mixup.spec["p"]:
                    continue
                partners = [j for j, o in enumerate(before) if j != i and _mixable(s, o)]
                if not partners:
                    continue
                j = partners[int(rng.integers(len(partners)))]
                lam = self.mixup.draw_lambda(rng)
                cur[i], effects = Mixup.mix(s, before[j], lam)
                partner = {"source_id": records[j]["source_id"], "ops": ops_before[j]}
                records[i]["ops"].append({"op": Mixup.name, "spec": self.mixup.spec,
                                          "params": {"lam": lam, "partner": partner}, "effects": effects})
        if self.dropout is not None:
            cur = _run_op(self.dropout, cur, records, rng, self.device)
        return [(s.replace(sample_id=i), r) for s, i, r in zip(cur, ids, records, strict=True)]


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"paired.device={name!r} but no CUDA device is available")
    return torch.device(name)
