import io

import numpy as np
import pytest
from PIL import Image

from cyclegan_core.images import BadImage, decode_image, decode_png, encode_png, to_tensor, to_uint8


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_modes_are_normalized():
    rgb = Image.new("RGB", (20, 10), (255, 0, 0))
    out = decode_image(_png(rgb), "L", 8, 10**6)
    assert out.shape == (8, 8, 1) and out.dtype == np.uint8
    assert decode_image(_png(rgb), "RGB", 8, 10**6).shape == (8, 8, 3)
    # Transparent pixels become white, not black.
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(_png(rgba), "L", 8, 10**6).min() == 255
    # 16-bit gray is scaled to the 8-bit range.
    g16 = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    assert g16.mode.startswith("I;16")
    out = decode_image(_png(g16), "L", 8, 10**6)
    assert out.min() == 0 and out.max() == 255


def test_bad_inputs_raise_with_reason():
    with pytest.raises(BadImage, match="empty"):
        decode_image(b"", "L", 8, 10**6)
    with pytest.raises(BadImage, match="not an image"):
        decode_image(b"hello, not a picture", "L", 8, 10**6)
    good = _png(Image.new("L", (64, 64), 7))
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode_image(good[: len(good) // 2], "L", 8, 10**6)
    with pytest.raises(BadImage, match="too large"):
        decode_image(good, "L", 8, 100)


def test_png_and_tensor_round_trips():
    arr = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(arr[0])), arr[0])
    assert encode_png(arr[0]) == encode_png(arr[0].copy())  # deterministic bytes
    t = to_tensor(arr)
    assert t.shape == (4, 1, 8, 8) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert np.array_equal(to_uint8(t), arr)


def test_exif_orientation_is_applied_and_sizes_are_checked_before_decoding():
    stored = np.full((16, 16), 255, np.uint8)
    stored[:8, :8] = 0  # dark top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 counter-clockwise to display": top-left goes to bottom-left
    out = decode_image(_png(Image.fromarray(stored), exif=exif), "L", 16, 10**6)[:, :, 0]
    assert out[:8, :8].mean() > 250 and out[8:, :8].mean() < 5 and out[:, 8:].min() == 255
    with pytest.raises(BadImage, match=r"too small: 1x1, a side under data.min_image_side=4 px"):
        decode_image(_png(Image.new("L", (1, 1))), "L", 8, 10**6, min_side=4)
    cmyk = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 0, 0, 255)).save(cmyk, format="JPEG", quality=95)
    assert decode_image(cmyk.getvalue(), "L", 8, 10**6).max() < 10  # full black ink -> black
