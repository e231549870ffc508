"""A picture of a few augmented samples, before and after: image with boxes, keypoints, the projected
point cloud and the caption, so a person can see at a glance that the modalities moved together.

Drawn with Pillow (no plotting library needed): one row per sample, the source on the left and the
augmented output on the right, each scaled up with nearest-neighbour so pixels stay visible; under
each panel its caption (wrapped), and under the output the ops its record applied.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .camera import project
from .io import quantize
from .sample import PairedSample

PALETTE = [(255, 255, 255), (255, 80, 200), (0, 230, 255), (255, 170, 0), (150, 255, 90), (190, 140, 255)]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _panel(s: PairedSample, scale: int) -> Image.Image:
    if s.image is not None:
        arr = quantize(s.image).permute(1, 2, 0).numpy()
        im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).convert("RGB")
    else:
        h, w = s.canvas() or (64, 64)
        im = Image.new("RGB", (w, h))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(im)
    if s.points is not None and s.intrinsics is not None and len(s.points):
        uv, depth = project(s.points.cpu(), s.intrinsics.cpu(), s.extrinsics.cpu())
        labels = s.point_labels.tolist() if s.point_labels is not None else [0] * len(uv)
        for (u, v), z, lab in zip(uv.tolist(), depth.tolist(), labels, strict=True):
            if z > 0 and 0 <= u < im.width / scale and 0 <= v < im.height / scale:
                x, y = u * scale, v * scale
                d.point([(x, y), (x + 1, y), (x, y + 1)], fill=(30, 30, 30) if lab else (90, 90, 90))
    if s.boxes is not None:
        ids = s.box_mask_ids.tolist() if s.box_mask_ids is not None else list(range(len(s.boxes)))
        for box, obj in zip(s.boxes.cpu().tolist(), ids, strict=True):
            d.rectangle([c * scale for c in box], outline=PALETTE[obj % len(PALETTE)], width=2)
    if s.keypoints is not None:
        for (x, y), vis in zip(s.keypoints.cpu().tolist(), s.keypoint_visible.cpu().tolist(), strict=True):
            if vis:
                x, y = x * scale, y * scale
                d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(255, 255, 0), outline=(0, 0, 0))
    return im


def _ops(record: dict) -> str:
    parts = []
    for e in record.get("ops", []):
        eff = e.get("effects", {})
        tag = e["op"]
        if eff.get("mirrored"):
            tag += " (mirror)"
        if "caption_object_edits" in eff or "caption_edits" in eff:
            tag += " +caption edit"
        parts.append(tag)
    outcome = record.get("alignment", {}).get("outcome")
    if outcome and outcome != "augmented":
        parts.append(f"[alignment: {outcome}]")
    return "ops: " + (", ".join(parts) or "none")


def write_preview(items: Sequence[tuple[PairedSample, PairedSample, dict]], path: str | Path,
                  panel_px: int = 256) -> Path:
    """Write a PNG of ``(source, output, record)`` triples; returns its path (written atomically)."""
    from ..storage import atomic_path

    if not items:
        raise ValueError("write_preview: no samples to draw")
    font, small = _font(15), _font(12)
    rows = []
    for src, out, record in items:
        panels = []
        for s, title in ((src, "before"), (out, "after")):
            h, w = s.canvas() or (64, 64)
            scale = max(1, panel_px // max(h, w))
            img = _panel(s, scale)
            width = max(img.width, 300)
            caption = textwrap.wrap(s.caption or "(no caption)", width=width // 8) or [""]
            ops = textwrap.wrap(_ops(record), width=width // 6) if s is out else []
            cell = Image.new("RGB", (width, img.height + 30 + 18 * len(caption) + 15 * len(ops)), (250, 250, 250))
            d = ImageDraw.Draw(cell)
            d.text((4, 3), f"{title}: {s.sample_id}", fill=(0, 0, 0), font=font)
            cell.paste(img, (0, 24))
            y = img.height + 28
            for line in caption:
                d.text((4, y), line, fill=(20, 20, 120), font=font)
                y += 18
            for line in ops:
                d.text((4, y), line, fill=(90, 90, 90), font=small)
                y += 15
            panels.append(cell)
        row = Image.new("RGB", (sum(p.width for p in panels) + 12, max(p.height for p in panels)), (200, 200, 200))
        x = 0
        for p in panels:
            row.paste(p, (x, 0))
            x += p.width + 12
        rows.append(row)
    legend = ["boxes: one colour per object;  yellow dots: visible keypoints;",
              "dark dots: the point cloud projected through the sample's camera"]
    sheet = Image.new("RGB", (max(r.width for r in rows), 38 + sum(r.height for r in rows) + 8 * len(rows)),
                      (200, 200, 200))
    for k, line in enumerate(legend):
        ImageDraw.Draw(sheet).text((4, 4 + 16 * k), line, fill=(0, 0, 0), font=small)
    y = 38
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 8
    target = Path(path)
    with atomic_path(target) as tmp:
        sheet.save(tmp, format="PNG")
    return target
