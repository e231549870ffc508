"""Replay records: the ops and parameters applied to one output sample, as plain JSON.

A record (``format: cycleaug-paired-replay-1``) lists, in order, each op applied to the sample with
its ``spec`` (how the op was built), its ``params`` (the one draw made for this sample) and its
``effects`` (what the draw did, for people and checks: the composed 3x3 matrix, caption edits,
boxes removed). Tensors are stored with dtype and shape; float32 values go through JSON as
float64, which round-trips them bit for bit, so a replay reproduces the output exactly.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from kornia.augmentation.container.params import ParamItem

RECORD_FORMAT = "cycleaug-paired-replay-1"
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float64, torch.int64, torch.int32,
                                                       torch.bool, torch.uint8, torch.float16)}
# kornia parameters that describe the whole batch rather than one sample each.
SHARED_KEYS = frozenset({"forward_input_shape", "order"})


def encode(obj: Any) -> Any:
    """JSON-able form of params: tensors become ``{"tensor": dtype, "shape": [...], "data": [...]}``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return {"tensor": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                "data": t.reshape(-1).tolist()}
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [encode(v) for v in obj]
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    raise TypeError(f"cannot record a {type(obj).__name__} in a replay record")


def decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"tensor", "shape", "data"}:
            dtype = _DTYPES.get(obj["tensor"])
            if dtype is None:
                raise ValueError(f"replay record: unknown tensor dtype {obj['tensor']!r}")
            return torch.tensor(obj["data"], dtype=dtype).reshape(obj["shape"])
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def slice_params(params: list[ParamItem], i: int) -> list[list]:
    """Sample ``i``'s share of a batched kornia draw, as ``[[name, {key: tensor}], ...]``."""
    out = []
    for item in params:
        if not isinstance(item.data, dict):
            raise TypeError(f"nested kornia params ({item.name}) are not supported in replay records")
        data = {k: (v if k in SHARED_KEYS else v[i:i + 1]) for k, v in item.data.items() if k != "forward_input_shape"}
        out.append([item.name, data])
    return out


def merge_params(per_sample: list[list[list]], batch_shape: tuple[int, ...], device: torch.device) -> list[ParamItem]:
    """The inverse of :func:`slice_params`: one kornia param list for a batch of samples."""
    first = per_sample[0]
    merged = []
    for k, (name, data) in enumerate(first):
        parts = [p[k] for p in per_sample]
        if any(p[0] != name for p in parts):
            raise ValueError(f"cannot batch kornia params of different ops: {[p[0] for p in parts]}")
        out: dict[str, torch.Tensor] = {}
        for key, value in data.items():
            if key in SHARED_KEYS:
                if any(not torch.equal(p[1][key], value) for p in parts):
                    raise ValueError(f"{name}.{key} differs between samples; replay them one by one")
                out[key] = value.to(device)
            else:
                out[key] = torch.cat([p[1][key] for p in parts]).to(device)
        out["forward_input_shape"] = torch.tensor(batch_shape)
        merged.append(ParamItem(name, out))
    return merged


def new_record(source_id: str, sample_id: str) -> dict:
    return {"format": RECORD_FORMAT, "source_id": source_id, "sample_id": sample_id, "ops": []}


def dumps(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)


def loads(text: str, where: str = "replay record") -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON: {err}") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ValueError(f"{where}: not a {RECORD_FORMAT} record")
    return record
