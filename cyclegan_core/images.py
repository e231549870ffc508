"""Decoding, checking and encoding images, and moving them between uint8 arrays and tensors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


class BadImage(ValueError):
    """A file that cannot become a training image; the message is the reason."""


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Composite transparent images on white so transparent pixels do not turn black."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit gray images: scale to the full 8-bit range instead of clipping."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        im = Image.fromarray(((arr - lo) * scale).round().astype(np.uint8), mode="L")
    return im


def decode_image(data: bytes, mode: str, size: int, max_pixels: int, min_side: int = 1) -> np.ndarray:
    """Decode ``data`` into a ``size`` x ``size`` uint8 array in ``mode`` (``L`` or ``RGB``).

    Applies EXIF orientation, flattens transparency on white, scales 16-bit gray, converts CMYK
    and palettes, resizes the shorter side to ``size`` and centre-crops. The size in the header is
    checked before any pixel is decoded, so a file claiming huge dimensions allocates nothing.
    Raises :class:`BadImage` with the reason.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise BadImage(f"too large: {w}x{h} = {w * h} pixels > data.max_image_pixels={max_pixels}, "
                               "refused before decoding")
            if min(w, h) < min_side:
                raise BadImage(f"too small: {w}x{h}, a side under data.min_image_side={min_side} px")
            # verify() checks chunk CRCs and the end marker, which load() alone lets through.
            im.verify()
            im = Image.open(io.BytesIO(data))
            im.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (no decoder recognises the content)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage(f"refused before decoding (decompression bomb): {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(f"corrupt or truncated image: {err}") from None
    if w < 1 or h < 1:
        raise BadImage(f"degenerate size {w}x{h}")
    im = ImageOps.exif_transpose(im)
    im = _to_8bit(_flatten_alpha(im))
    im = im.convert(mode)
    if im.size != (size, size):
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def encode_png(arr: np.ndarray, compress_level: int = 6) -> bytes:
    """Lossless, deterministic PNG bytes of an (H, W, C) uint8 array (zlib level ``compress_level``)."""
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """(H, W, C) uint8 array of PNG bytes written by :func:`encode_png`."""
    arr = np.asarray(Image.open(io.BytesIO(data)), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def to_tensor(batch: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1], the range of a tanh generator."""
    arr = np.stack(batch) if isinstance(batch, list) else batch
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return t.div_(127.5).sub_(1.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), rounded."""
    t = ((t.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return t.permute(0, 2, 3, 1).cpu().numpy()
