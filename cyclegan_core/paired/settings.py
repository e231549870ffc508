"""The settings of paired multimodal augmentation (``params.yaml`` section ``paired``, read by
``cycleaug paired-augment``), beside the package they configure. :class:`cyclegan_core.config.Config`
holds a :class:`PairedConfig` as its ``paired`` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ..schema import Device, _Strict, ordered_range


class PairedGeometryConfig(_Strict):
    """One geometric draw per sample (kornia), applied to image, mask, boxes, keypoints and video frames."""

    hflip_p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a horizontal flip (also swaps "
                           "left/right words in captions and stereo channels).")
    crop: bool = Field(True, description="Random resized crop (to output_size, or the input size).")
    crop_scale: tuple[float, float] = Field((0.6, 1.0), description="Share of the area a crop keeps.")
    crop_ratio: tuple[float, float] = Field((0.75, 1.3333333), description="Aspect ratio range of a crop.")
    output_size: tuple[int, int] | None = Field(None, description="[H, W] of every output; null keeps each "
                                                "input's size.")
    affine_p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a random affine (rotation, "
                            "translation, scale, shear).")
    degrees: float = Field(15.0, ge=0.0, le=180.0, description="Rotation range, +- degrees.")
    translate: float = Field(0.1, ge=0.0, le=1.0, description="Translation range, share of the side.")
    scale: tuple[float, float] = Field((0.9, 1.1), description="Scale range of the affine.")
    shear: float = Field(0.0, ge=0.0, le=45.0, description="Shear range, +- degrees.")
    min_box_area: float = Field(0.0, ge=0.0, description="Boxes whose clipped area is not above this (px^2) "
                                "are removed (and listed in the replay record).")

    @field_validator("crop_scale", "crop_ratio", "scale")
    @classmethod
    def _ranges(cls, v: tuple[float, float], info: Any) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"{info.field_name}: values must be > 0")
        if info.field_name == "crop_scale" and v[1] > 1.0:
            raise ValueError("crop_scale: a crop cannot keep more than the whole image (high <= 1)")
        return ordered_range(v, info.field_name)

    @field_validator("output_size")
    @classmethod
    def _size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError("output_size: [H, W] must be positive")
        return v


class PairedPhotometricConfig(_Strict):
    """Changes to the signal modalities only (image, video frames, audio), one draw per sample."""

    jitter_p: float = Field(0.8, ge=0.0, le=1.0, description="Probability of colour jitter (kornia ColorJitter).")
    brightness: float = Field(0.2, ge=0.0, le=1.0)
    contrast: float = Field(0.2, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    hue: float = Field(0.05, ge=0.0, le=0.5)
    pixel_noise_p: float = Field(0.3, ge=0.0, le=1.0, description="Probability of Gaussian pixel noise.")
    pixel_noise_std: tuple[float, float] = Field((0.0, 0.05), description="Noise std range on [0, 1] pixels.")
    audio_noise_p: float = Field(0.3, ge=0.0, le=1.0, description="Probability of white noise on the audio.")
    audio_snr_db: tuple[float, float] = Field((10.0, 40.0), description="Signal-to-noise ratio range, dB.")

    @field_validator("pixel_noise_std", "audio_snr_db")
    @classmethod
    def _ranges(cls, v: tuple[float, float], info: Any) -> tuple[float, float]:
        if info.field_name == "pixel_noise_std" and v[0] < 0:
            raise ValueError("pixel_noise_std: values must be >= 0")
        return ordered_range(v, info.field_name)


class PairedTemporalConfig(_Strict):
    """One time window and one speed for video and audio together."""

    crop_p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a temporal crop.")
    crop_fraction: tuple[float, float] = Field((0.5, 1.0), description="Share of the duration a crop keeps.")
    speed_p: float = Field(0.3, ge=0.0, le=1.0, description="Probability of a speed change.")
    speed: tuple[float, float] = Field((0.8, 1.25), description="Playback rate range (>1 is faster).")

    @field_validator("crop_fraction", "speed")
    @classmethod
    def _ranges(cls, v: tuple[float, float], info: Any) -> tuple[float, float]:
        if v[0] <= 0 or (info.field_name == "crop_fraction" and v[1] > 1.0):
            raise ValueError(f"{info.field_name}: values must be in (0, 1]" if info.field_name == "crop_fraction"
                             else f"{info.field_name}: values must be > 0")
        return ordered_range(v, info.field_name)


class PairedMixupConfig(_Strict):
    """Cross-modal mixup within a batch: one lambda for image, video, audio, text embedding, soft labels."""

    p: float = Field(0.2, ge=0.0, le=1.0, description="Share of outputs mixed with a partner; 0 turns it off.")
    alpha: float = Field(0.4, gt=0.0, description="lambda ~ Beta(alpha, alpha).")


class PairedDropoutConfig(_Strict):
    """Modality dropout: per-modality probability of masking (zeroing, with a recorded flag)."""

    image: float = Field(0.0, ge=0.0, le=1.0)
    video: float = Field(0.1, ge=0.0, le=1.0)
    audio: float = Field(0.1, ge=0.0, le=1.0)
    caption: float = Field(0.1, ge=0.0, le=1.0)
    text_embedding: float = Field(0.0, ge=0.0, le=1.0)
    keep_one: bool = Field(True, description="Never mask every modality of a sample.")


class PairedAlignmentConfig(_Strict):
    """Checks that a draw kept the pair aligned; failing draws are redrawn, then kept or dropped."""

    enabled: bool = Field(True, description="Run the alignment checks after the synchronized ops.")
    min_object_fraction: float = Field(0.25, ge=0.0, le=1.0, description="Share of each annotated object's "
                                       "area (mask, else box) that must stay in the frame.")
    min_keypoint_fraction: float = Field(0.0, ge=0.0, le=1.0, description="Share of the visible keypoints "
                                         "that must stay visible.")
    max_redraws: int = Field(3, ge=0, le=100, description="Redraws of a failing sample before on_fail.")
    on_fail: Literal["keep", "drop"] = Field("keep", description="keep: the unaugmented sample; drop: no output.")


class PairedCloudConfig(_Strict):
    """One 3D transform per sample holding a point cloud; its camera (and image, for a mirror) follow."""

    p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a 3D transform of the point cloud.")
    degrees: float = Field(30.0, ge=0.0, le=180.0, description="Rotation about a random axis, +- degrees.")
    scale: tuple[float, float] = Field((0.9, 1.1), description="Uniform scale range of the cloud.")
    translate: float = Field(0.5, ge=0.0, description="Translation range per axis, +- world units.")
    mirror_p: float = Field(0.0, ge=0.0, le=1.0, description="Probability of mirroring the world (x -> -x); "
                            "the image flips with it (and caption words, stereo channels).")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError("scale: values must be > 0")
        return ordered_range(v, "scale")


class PairedDemoConfig(_Strict):
    """The generated scenes the demo writes to ``paired.input`` when it is missing."""

    samples: int = Field(64, ge=1)
    image_size: int = Field(64, ge=16, le=1024)
    frames: int = Field(8, ge=1, le=1000)
    frame_rate: float = Field(8.0, gt=0.0)
    sample_rate: int = Field(8000, ge=1000, le=192000)
    seed: int = 0
    points_per_object: int = Field(48, ge=0, le=100_000, description="Points of each shape's 3D extrusion "
                                   "in the scene's point cloud (0: no cloud and no camera).")
    preview: int = Field(4, ge=0, le=32, description="Samples drawn before/after in <output>/preview.png by "
                         "`paired-augment --demo` (0: no picture).")


class PairedConfig(_Strict):
    """Synchronized augmentation of a paired multimodal Parquet dataset (``cycleaug paired-augment``)."""

    input: str = Field("data/paired/source", description="Parquet file or folder of paired samples.")
    output: str = Field("data/paired/augmented", description="Folder for the augmented dataset.")
    copies: int = Field(4, ge=1, le=10_000, description="Augmented outputs per source sample.")
    seed: int = 0
    batch_size: int = Field(32, ge=1, description="Samples augmented together (kornia batches, mixup partners).")
    shard_rows: int = Field(1024, ge=1, description="Rows per output Parquet shard.")
    text_policy: str | None = Field(None, description="YAML caption-edit policy (mirror, hue, speed words); "
                                    "null uses the bundled cyclegan_core/paired/text_policy.yaml.")
    device: Device = Field("cpu", description="cpu, cuda[:N] or auto.")
    geometry: PairedGeometryConfig = PairedGeometryConfig()
    photometric: PairedPhotometricConfig = PairedPhotometricConfig()
    temporal: PairedTemporalConfig = PairedTemporalConfig()
    mixup: PairedMixupConfig = PairedMixupConfig()
    dropout: PairedDropoutConfig = PairedDropoutConfig()
    alignment: PairedAlignmentConfig = PairedAlignmentConfig()
    cloud: PairedCloudConfig = PairedCloudConfig()
    demo: PairedDemoConfig = PairedDemoConfig()
