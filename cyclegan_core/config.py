"""The one typed configuration of CycleAug, read from ``params.yaml``.

The CLI, the Prefect flow and ``dvc repro`` all build a :class:`Config` from the same file, so a
setting means the same thing everywhere. Unknown keys and out-of-range values are errors that name
the key and what is allowed.

Over 500 lines on purpose: every section of the pipeline's ``params.yaml`` is one class here, in the
file's order, with its defaults, ranges and help text, so a person reads the whole schema in one place
and a key's meaning is stated once (``cyclegan_core.inputs`` says which step each key reaches). The
``paired`` and ``modality`` sections' classes live beside their packages (:mod:`cyclegan_core.paired.settings`,
:mod:`cyclegan_core.modality.settings`), the ``runtime`` section's (how and where torch runs, shared by the
steps and out of every fingerprint) in :mod:`cyclegan_core.runtime`; the strict base class in
:mod:`cyclegan_core.schema`.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .modality.settings import ModalityConfig
from .paired.settings import PairedConfig
from .runtime import RuntimeConfig, moved_key_errors
from .schema import _Strict
from .storage import StorageError, check_url, escapes, is_remote

DIRECTIONS = ("AtoB", "BtoA")
class ConfigError(ValueError):
    """A configuration file or value is unusable; the message names the key and the problem."""


class DefaultDataConfig(_Strict):
    """The bundled default collections: handwritten (A) and typed (B) digits."""

    typed_per_digit: int = Field(180, ge=1, description="Rendered typed samples per digit 0-9.")
    typed_size: int = Field(32, ge=8, le=256, description="Side of a rendered typed digit, px.")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0


class AudioConfig(_Strict):
    """Audio clips as spectrogram pictures (used when a collection holds sound, not images)."""

    sample_rate: int = Field(16_000, ge=1_000, le=192_000, description="Hz after resampling (soxr).")
    n_fft: int = Field(512, ge=16, description="STFT window and FFT size, samples (even).")
    hop_length: int = Field(160, ge=1, description="STFT hop, samples (160 = 10 ms at 16 kHz).")
    frames: int = Field(64, ge=4, description="Picture width in STFT frames (multiple of 4); sets the clip length.")
    representation: Literal["mel", "linear"] = "mel"
    n_mels: int = Field(64, ge=4, description="Mel bands (picture height) when representation is mel.")
    fmin: float = Field(0.0, ge=0.0)
    fmax: float | None = Field(None, gt=0.0, description="Highest mel frequency; default sample_rate / 2.")
    db_min: float = Field(-80.0, description="Magnitude (dB) mapped to black; quieter is clipped.")
    db_max: float = Field(30.0, description="Magnitude (dB) mapped to white; louder is clipped.")
    inversion: Literal["griffin_lim", "source_phase"] = "griffin_lim"
    griffin_lim_iters: int = Field(32, ge=1)
    max_seconds: float = Field(60.0, gt=0.0, description="Longer files are quarantined without being decoded.")
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg")

    @model_validator(mode="after")
    def _shapes(self) -> AudioConfig:
        if self.n_fft % 2:
            raise ValueError(f"n_fft={self.n_fft} must be even")
        if self.frames % 4:
            raise ValueError(f"frames={self.frames} must be a multiple of 4 (the generators downsample twice)")
        if self.bins % 4:
            raise ValueError(f"the picture height ({self.bins} bins) must be a multiple of 4: "
                             "choose n_mels, or n_fft / 2 for linear spectrograms, accordingly")
        if self.db_max <= self.db_min:
            raise ValueError(f"db_max={self.db_max} must be above db_min={self.db_min}")
        return self

    @property
    def bins(self) -> int:
        """Picture height: mel bands, or the STFT bins without the Nyquist bin."""
        return self.n_mels if self.representation == "mel" else self.n_fft // 2

    @property
    def clip_samples(self) -> int:
        """Samples per clip, so that a centred STFT has exactly ``frames`` frames."""
        return self.hop_length * (self.frames - 1)
def _local_path_inside_project(value: str) -> str:
    """Relative paths are from the project folder and may not climb out of it with ``../``."""
    if not value.strip():
        raise ValueError("must not be empty")
    if not is_remote(value) and escapes(value):
        raise ValueError(f"{value!r} leaves the project folder through '../'; relative paths must stay inside "
                         "it (write an absolute path to use a folder elsewhere)")
    return value


def _storage_url(value: str) -> str:
    if is_remote(value) and "@" in value.split("://", 1)[-1].split("/", 1)[0]:
        raise ValueError("credentials do not belong in a URL in params.yaml; set them in the environment "
                         "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    try:
        check_url(value)
    except StorageError as err:
        raise ValueError(str(err)) from None
    return _local_path_inside_project(value)


# Where the bundled default collections are made when the configured folders are these.
DEFAULT_COLLECTIONS = {"image": ("data/raw/A", "data/raw/B"), "audio": ("data/raw/voices/A", "data/raw/voices/B")}


class DataConfig(_Strict):
    """Where the two unpaired collections are and what the pipeline turns them into."""

    kind: Literal["image", "audio"] = Field(
        "image", description="image, or audio (clips become log-magnitude spectrograms, see data.audio)."
    )
    domain_a: str = Field("data/raw/A", description="Folder or fsspec URL of collection A.")
    domain_b: str = Field("data/raw/B", description="Folder or fsspec URL of collection B.")
    image_size: int = Field(32, ge=8, le=1024, description="Square side after ingest, px.")
    mode: Literal["L", "RGB"] = "L"
    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Held-out share when a collection has no train/test folders."
    )
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Images with more pixels are quarantined, never decoded."
    )
    min_image_side: int = Field(
        8, ge=1, description="Images with a narrower side are quarantined: too little to translate."
    )
    max_file_bytes: int = Field(
        256 * 2**20, ge=1, description="Files larger than this are quarantined without being read."
    )
    retries: int = Field(
        4, ge=0, le=20, description="Retries of a storage call failing with a transient error (network, 5xx)."
    )
    retry_backoff_s: float = Field(
        0.5, ge=0.0, le=60.0, description="First wait before a retry; it doubles each time (with jitter)."
    )
    read_timeout_s: float = Field(
        60.0, gt=0.0, le=3600.0,
        description="Time limit of one remote storage read (a folder listing, a file): a stalled one counts as a "
                    "transient error, is retried, then the file is quarantined.",
    )
    ingest_chunk_files: int = Field(
        2048, ge=1, le=1_000_000,
        description="Files per ingest chunk: the unit of ingest's reading and decoding that the task runner maps "
                    "(a speed setting: the manifest's bytes do not depend on it).",
    )
    default: DefaultDataConfig = DefaultDataConfig()
    audio: AudioConfig = AudioConfig()

    @field_validator("domain_a", "domain_b")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        return _storage_url(value)

    @field_validator("extensions")
    @classmethod
    def _dotted_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one extension is needed, e.g. [.png, .jpg]")
        bad = [e for e in value if not e.startswith(".") or len(e) < 2]
        if bad:
            raise ValueError(f"extensions start with a dot, e.g. .png (got {bad})")
        return value

    @property
    def channels(self) -> int:
        return 1 if self.kind == "audio" or self.mode == "L" else 3

    @property
    def picture_mode(self) -> str:
        """PIL mode of the pictures the models see (spectrograms are gray)."""
        return "L" if self.kind == "audio" else self.mode

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the pictures the models see: the image side, or bins x frames for audio."""
        if self.kind == "audio":
            return self.audio.bins, self.audio.frames
        return self.image_size, self.image_size

    @property
    def file_extensions(self) -> tuple[str, ...]:
        """The file endings ingest lists: ``extensions`` for images, ``audio.extensions`` for audio."""
        return self.audio.extensions if self.kind == "audio" else self.extensions

    @property
    def audio_settings(self) -> AudioConfig | None:
        """``audio`` when the collections are audio, else None."""
        return self.audio if self.kind == "audio" else None

    @property
    def uses_default_collections(self) -> bool:
        """Whether both collections are the bundled default ones (digits, or spoken words for audio)."""
        return (self.domain_a, self.domain_b) == DEFAULT_COLLECTIONS[self.kind]


class ModelConfig(_Strict):
    """The networks (names and defaults follow the reference implementation, except sizes).

    These defaults are the reference's; ``params.yaml`` sets the recipe measured on digits and photos
    (``norm: none`` generators, ``norm_d: instance`` discriminators, ``upsample: resize_conv``).

    ``arch: cyclegan`` is the reference CycleGAN (two generators, two image discriminators);
    ``arch: translator`` is the single-translator variant (one shared encoder/decoder trained as an
    autoencoder, a translator on encodings, a discriminator on encodings, a deviation loss): see
    :mod:`cyclegan_core.translator`. ``arch: cut`` / ``fastcut`` are contrastive unpaired translation
    (Park et al. 2020) in the paper's two settings: one-sided models (a generator, a discriminator and
    a projection head each, no cycle loss); the pipeline translates both ways, so a run trains two of
    them, A->B and B->A (see :mod:`cyclegan_core.train_cut`).
    """

    arch: Literal["cyclegan", "translator", "cut", "fastcut"] = Field(
        "cyclegan", description="Model family: cyclegan, translator (single translator), cut or fastcut (one-sided "
        "contrastive models, one per direction).")
    generator: Literal["resnet", "unet_128", "unet_256"] = Field(
        "resnet", description="resnet (n_blocks residual blocks; 6 and 9 are the reference's) or U-Net."
    )
    discriminator: Literal["patchgan", "pixel"] = Field(
        "patchgan", description="patchgan (n_layers_d strided convs; 3 = the 70x70 'basic') or pixel (1x1)."
    )
    ngf: int = Field(16, ge=1, description="Generator filters in the first conv layer.")
    ndf: int = Field(16, ge=1, description="Discriminator filters in the first conv layer.")
    n_blocks: int = Field(6, ge=0, description="Residual blocks in each ResNet generator (or translator).")
    n_layers_d: int = Field(3, ge=1, description="Strided conv layers in each PatchGAN.")
    norm: Literal["instance", "batch", "none"] = "instance"
    norm_d: Literal["instance", "batch", "none", "spectral"] | None = Field(
        None, description="The discriminators' norm; null: the same as norm (the reference has one norm for all); "
        "spectral (not the reference's): no norm layers, every convolution spectrally normalized.",
    )
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = "normal"
    init_gain: float = Field(0.02, gt=0.0, description="Scale of normal/xavier/orthogonal init.")
    use_dropout: bool = Field(False, description="Dropout 0.5 in residual blocks / inner U-Net levels.")
    upsample: Literal["transpose", "resize_conv"] = Field(
        "transpose", description="transpose (reference) or resize_conv (nearest x2 then conv: no checkerboard)."
    )
    input_skip: bool = Field(
        False, description="ResNet generators: the last conv also sees the input image (colour and levels that "
        "instance norm removes reach the output); false: the reference network.",
    )
    skip_init: Literal["random", "identity"] = Field(
        "random", description="With input_skip: identity starts the skip conv's input part at the identity (a "
        "fresh generator emits its input rather than a flat image); random: initialised as every other weight.",
    )
    translator_directions: Literal["AtoB", "both"] = Field(
        "both",
        description="arch translator only: AtoB is the article's single translator (B->A is then the "
        "autoencoder, untranslated); both adds a second translator and encoding discriminator for B->A.",
    )

    @property
    def discriminator_norm(self) -> str:
        """The norm of the discriminators: ``norm_d``, or ``norm`` where it is unset."""
        return self.norm if self.norm_d is None else self.norm_d

    @model_validator(mode="after")
    def _translator_needs_resnet(self) -> ModelConfig:
        if self.skip_init == "identity" and not self.input_skip:
            raise ValueError("model.skip_init=identity needs model.input_skip=true (it initialises the skip)")
        if self.input_skip and (self.arch != "cyclegan" or self.generator != "resnet"):
            raise ValueError(
                f"model.input_skip=true needs arch 'cyclegan' with generator 'resnet' (got arch {self.arch!r}, "
                f"generator {self.generator!r}): the translator's decoder and the U-Net have no such skip"
            )
        if self.arch == "translator" and self.generator != "resnet":
            raise ValueError(
                f"model.generator={self.generator!r}: arch 'translator' splits a ResNet generator into "
                "encoder / translator / decoder, so the generator must be 'resnet'"
            )
        if self.arch in ("cut", "fastcut") and self.generator != "resnet":
            raise ValueError(
                f"model.generator={self.generator!r}: arch {self.arch!r} takes its contrastive features from "
                "the ResNet generator's layers 0, 4, 8, 12 and 16, so the generator must be 'resnet'"
            )
        return self


class TrainConfig(_Strict):
    """What the training loop learns (losses and optimizer follow the reference defaults); how fast and where
    it runs is the ``runtime`` section's."""

    steps: int = Field(1500, ge=1, description="Optimizer steps in all.")
    batch_size: int = Field(8, ge=1, description="Images per domain per step (per process under torchrun).")
    lr: float = Field(2e-4, gt=0.0)
    lr_d: float | None = Field(
        None, gt=0.0, description="arch cyclegan / translator: the discriminators' learning rate (two time-scale "
        "updates, same schedule); null: lr, as the reference.",
    )
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    lr_policy: Literal["linear", "step", "cosine", "plateau", "half_cosine"] = Field(
        "linear", description="The reference's schedulers, one step for one of its epochs: linear (held for "
        "decay_start of the steps, then linear decay), step (x0.1 every lr_step_size), cosine "
        "(CosineAnnealingLR with T_max = the held steps: 0 there, rising again after), plateau "
        "(ReduceLROnPlateau(mode='min', factor=0.2, threshold=0.01, patience=5) on every optimizer, stepped "
        "once per 'epoch' of lr_step_size steps, or one pass over the larger domain when 0, with that epoch's "
        "mean generator loss G; the reference steps it with a constant 0, so there it just drops x0.2 every 6 "
        "epochs); half_cosine (not the reference's): 1 to 0 over all steps.",
    )
    decay_start: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of steps at full LR before the linear decay (the reference's "
        "n_epochs / (n_epochs + n_epochs_decay)); cosine: its T_max.",
    )
    lr_step_size: int = Field(0, ge=0, description="step policy: steps between x0.1 drops, 0 = steps // 3; "
                              "plateau: steps per metric, 0 = one pass over the larger domain "
                              "(ceil(max(n_A, n_B) / (batch_size * processes))).")
    sampling: Literal["random", "epoch"] = Field(
        "random", description="Which samples a step trains on: random (uniform with replacement, each step's "
        "draw independent of the others); epoch (each domain's samples in a seeded permutation, consumed in order "
        "and reshuffled each pass, so every sample comes once per pass; the reference shuffles A like this but "
        "draws B at random). Both resume exactly.",
    )
    augment: Literal["none", "flip", "crop", "crop_flip"] = Field(
        "none", description="Training-batch augmentation, drawn from the trainer's RNG (so resumes are exact): "
        "crop = the reference's resize_and_crop (resize to load_ratio x the size, bicubic on tensors where the "
        "reference uses PIL's BICUBIC on uint8, then a random crop back to the size), flip = random horizontal "
        "flip with p = 0.5. none by default: a flip changes a digit's meaning, and a crop moves it.",
    )
    load_ratio: float = Field(
        286 / 256, ge=1.0, le=4.0, description="crop: resize to this multiple of the image size before the random "
        "crop (the reference's load_size / crop_size = 286 / 256).",
    )
    gan_mode: Literal["lsgan", "vanilla", "wgangp"] = "lsgan"
    lambda_gp: float = Field(10.0, ge=0.0, description="wgangp: weight of the gradient penalty (not in the "
                             "reference's CycleGAN, which defines but never applies it: 0 reproduces it exactly).")
    lambda_a: float = Field(10.0, ge=0.0, description="Weight of the A->B->A cycle loss.")
    lambda_b: float = Field(10.0, ge=0.0, description="Weight of the B->A->B cycle loss.")
    lambda_identity: float = Field(0.5, ge=0.0)
    lambda_recon: float = Field(10.0, ge=0.0, description="arch translator: autoencoder reconstruction weight.")
    lambda_deviation: float = Field(
        10.0, ge=0.0, description="arch translator: weight of |T(E(b)) - E(b)|, keeping T near identity on B."
    )
    pool_size: int = Field(50, ge=0, description="Past fakes the discriminators also see (the reference's 50); "
                           "arch cut/fastcut use none, as the reference's CUT.")
    semantic: Literal["auto", "off"] = Field(
        "auto",
        description="Label-aware training (CyCADA's semantic consistency): auto adds, for each direction whose "
        "sources and targets carry labels, a frozen classifier's cross-entropy between its prediction on G(x) and "
        "x's label; the classifier learns from the 'classifier' half of the target's training samples, validation's "
        "label judge from the other half. off, or collections without labels: the plain reference objective.",
    )
    lambda_semantic: float = Field(1.0, ge=0.0, description="Weight of the semantic-consistency loss.")

    @field_validator("semantic", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false
    semantic_epochs: int = Field(10, ge=1, description="Epochs of the semantic classifiers (before training).")
    semantic_noise: float = Field(
        0.1, ge=0.0, description="Pixel-noise std ([-1, 1] scale) in the semantic classifiers' training and on the "
        "translations they score, so faint patterns cannot satisfy them.",
    )
    semantic_max_samples: int = Field(
        5000, ge=1, description="Cap on the samples each semantic classifier learns from (a seeded subset of the "
        "'classifier' half when there are more, decoded once in file order): bounds its memory on large "
        "collections (as validate.judge_max_samples bounds the judges').",
    )
    semantic_max_steps: int = Field(
        120, ge=1, description="Cap on each semantic classifier's batches (64 pictures up to 64x64, fewer above: "
        "semantic_epochs passes over its samples, or fewer when this is reached first; the demo's take exactly "
        "120). It also caps the samples decoded for it at what these batches can draw, so its time and memory "
        "are the same on any collection larger than that, and training's start-up does not grow with the "
        "collection.",
    )
    seed: int = 0


class GenerateConfig(_Strict):
    """Translation of ingested samples in both directions.

    A row already generated for the same source sample, by the same model and under the same generation
    key (these settings, and the rounding of the generate step's runtime:
    :meth:`~cyclegan_core.runtime.StepRuntime.rounding`), is reused rather than translated again, so a
    nightly run translates only new samples. ``shards`` and ``splits`` only decide where rows go and
    which are made; ``workers`` only how fast.
    """

    splits: tuple[Literal["train", "test"], ...] = ("train", "test")
    batch_size: int = Field(64, ge=1)
    shards: int = Field(2, ge=1, description="Shards per direction (by hash of the source id).")
    png_compress_level: int = Field(
        6, ge=0, le=9, description="zlib level of the translated PNGs: 1 encodes ~3x faster for ~10% larger files "
        "(256x256 photos), which a GPU host may need to keep up."
    )
    workers: int | None = Field(
        None, ge=0, le=256,
        description="Threads decoding and encoding PNGs beside the forward passes; none: one per CPU (at most 32); "
        "0: all in the calling thread.",
    )


class DaskConfig(_Strict):
    """Where mapped generation runs when ``orchestrate.task_runner`` is ``dask``."""

    address: str | None = Field(
        None, description="Scheduler address (tcp://host:8786); none starts a local cluster on this machine."
    )
    workers: int = Field(2, ge=1, le=256, description="Worker processes of the local cluster.")
    threads_per_worker: int = Field(1, ge=1, le=64, description="Threads of each local worker.")


class ScheduleConfig(_Strict):
    """The deployments ``cycleaug serve`` and ``prefect.yaml`` define."""

    cron: str = Field("0 2 * * *", description="When the nightly augmentation runs (cron, in `timezone`).")
    retrain_cron: str | None = Field(
        "0 3 * * 0", description="When a run that retrains on the current data runs; none for never."
    )
    timezone: str = "UTC"
    tags: tuple[str, ...] = ("cycleaug",)

    @field_validator("cron", "retrain_cron")
    @classmethod
    def _five_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a cron expression of 5 fields (minute hour day month weekday)")
        return value


class OrchestrateConfig(_Strict):
    """How the Prefect flow runs: task runner, model policy for growing data, retries, limits, schedule."""

    task_runner: Literal["local", "dask"] = Field(
        "local", description="local: threads in the flow's process; dask: prefect-dask DaskTaskRunner."
    )
    dask: DaskConfig = DaskConfig()
    retrain: Literal["on_change", "on_growth", "on_request"] = Field(
        "on_growth",
        description="When training samples change: on_change retrains at once; on_growth keeps the current "
        "model until the samples it has not seen exceed retrain_growth; on_request keeps it until a run "
        "with retrain=true. Changed training settings or code always retrain.",
    )
    retrain_growth: float = Field(
        0.25, gt=0.0, le=100.0,
        description="on_growth: share of the model's training samples that may be added or removed since it "
        "was trained before it is retrained (per collection).",
    )
    train_launcher: Literal["inprocess", "torchrun"] = Field(
        "inprocess", description="torchrun: the training task runs `torchrun ... cycleaug train` as a subprocess."
    )
    nproc_per_node: int = Field(1, ge=1, le=64, description="torchrun processes (one per GPU).")
    retries: int = Field(3, ge=0, le=20, description="Retries of a step after a transient storage error.")
    retry_delay_s: float = Field(2.0, ge=0.0, description="First retry delay; each next one doubles.")
    train_timeout_s: float = Field(86400.0, gt=0.0, description="Training task time limit.")
    step_timeout_s: float = Field(7200.0, gt=0.0, description="Time limit of every other task.")
    concurrency_limit: str = Field(
        "cycleaug-train-publish",
        description="Prefect global concurrency limit (1 slot) held while training and while publishing.",
    )
    notify_url: str | None = Field(
        None,
        description="Webhook that `cycleaug serve` has a Prefect automation POST to when a run of its deployments "
        "ends Failed or Crashed (a small JSON: flow run name, id, state, message); null = no automation.",
    )
    schedule: ScheduleConfig = ScheduleConfig()


def _per_direction(value: Any) -> Any:
    """Bounds per direction: a direction left out (or null) keeps its defaults, so one bound can be set alone."""
    if isinstance(value, dict):
        return {d: {} for d in DIRECTIONS} | {k: ({} if v is None else v) for k, v in value.items()}
    return value


class SampleThresholds(_Strict):
    """Per-sample gate: a translation failing any bound is dropped from the published set and counted.

    Every bound is switched off the same way: null (the default)."""

    min_cycle_psnr: float | None = Field(None, description="dB, between x and F(G(x)).")
    max_cycle_l1: float | None = Field(None, ge=0.0, le=1.0, description="Mean |x - F(G(x))| on [0, 1].")
    min_cycle_ssim: float | None = Field(
        None, ge=-1.0, le=1.0, description="SSIM between x and F(G(x)) (Gaussian window 11, sigma 1.5)."
    )
    max_identity_l1: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Mean |x - F(x)| on [0, 1]: how much the target->source generator alters a real source.",
    )
    min_realism: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Realism of G(x): the share of held-out real targets the domain judge finds no more target-like "
                    "(a conformal p-value; real targets average 0.5).",
    )
    require_label_ok: bool = Field(
        False, description="Drop labelled translations whose predicted label differs from the source's."
    )
    min_robust_cycle_psnr: float | None = Field(
        None, description="dB, between x and F(q(G(x))), q = validate.robust_* noise then JPEG; null = off "
                          "(needs the model)."
    )
    # Audio only (null = off): the cycle measured on spectrograms and on waveforms.
    max_cycle_lsd: float | None = Field(
        None, ge=0.0, description="Audio: log-spectral distance (dB) between the source's and the cycle's spectrograms."
    )
    min_cycle_si_sdr: float | None = Field(
        None, description="Audio: SI-SDR (dB) of the cycle's waveform against the source clip."
    )


class RunThresholds(_Strict):
    """Run-level gate on held-out samples: if any bound fails, nothing is published.

    Every bound is switched off the same way: null (the default; a lower bound at its floor, 0 or -1 for
    SSIM, is off too). A bound set on a figure that was not measured fails, except the bounds on labels
    when the collections carry none: those do not apply, and the report says so.
    """

    min_mean_cycle_psnr: float | None = None
    min_mean_cycle_ssim: float | None = Field(None, ge=-1.0, le=1.0)
    min_mean_realism: float | None = Field(None, ge=0.0, le=1.0, description="Real targets score 0.5 on average.")
    min_label_accuracy: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of labelled held-out translations keeping the label (applies only "
        "where the held-out samples carry labels)."
    )
    min_pass_rate: float | None = Field(None, ge=0.0, le=1.0, description="Share passing per-sample bounds.")
    max_fid_domain: float | None = Field(
        None, ge=0.0, description="Frechet distance to held-out real targets on the domain judge's features."
    )
    max_kid_domain: float | None = Field(None, description="KID (unbiased MMD^2) on the domain judge's features.")
    max_fid_inception: float | None = Field(
        None, ge=0.0, description="FID on InceptionV3 pool features (needs validate.inception_weights)."
    )
    max_kid_inception: float | None = Field(None, description="KID on InceptionV3 features.")
    max_mean_cycle_lsd: float | None = Field(None, ge=0.0, description="Audio: mean cycle log-spectral distance, dB.")
    min_mean_cycle_si_sdr: float | None = Field(None, description="Audio: mean cycle SI-SDR on waveforms, dB.")
    min_mean_robust_cycle_psnr: float | None = Field(
        None, description="Mean cycle PSNR through the perturbed translation F(q(G(x))), dB (needs the model)."
    )


class ValidateConfig(_Strict):
    """How translations are scored and which figures gate publishing."""

    sample: dict[Literal["AtoB", "BtoA"], SampleThresholds] = Field(
        default_factory=lambda: {d: SampleThresholds() for d in DIRECTIONS})
    run: dict[Literal["AtoB", "BtoA"], RunThresholds] = Field(
        default_factory=lambda: {d: RunThresholds() for d in DIRECTIONS})
    cycle_bounds: Literal["auto", "on", "off"] = Field(
        "auto", description="Whether the bounds on the cycle figures (cycle PSNR, robust, L1, SSIM; audio: LSD, "
                            "SI-SDR) gate: auto = on, except for one-sided models (model.arch cut or fastcut), "
                            "whose cycle goes through two models trained apart; the figures are reported either way.")
    classifier_epochs: int = Field(8, ge=1, description="Epochs for the judge classifiers.")
    classifier_seed: int = 0
    judge_blur_sigma: float = Field(
        1.0, ge=0.0, le=8.0,
        description="Gaussian blur (px, at data.image_size) applied to every image the domain judge sees, in "
                    "training and scoring alike, so sharpness alone cannot tell the domains apart; 0 turns it off.",
    )
    kid_subset_size: int = Field(
        1000, ge=2, description="KID subset size; smaller sample counts use every sample (min of the two sets)."
    )
    kid_subsets: int = Field(100, ge=1, description="KID subsets averaged.")
    kid_reservoir: int = Field(
        5000, ge=2,
        description="Features kept per feature set for KID (translations, sources, real targets): a seeded sample "
                    "of at most this many, the same whatever the shards; a set no larger is used whole.",
    )
    judge_max_samples: int = Field(
        5000, ge=2,
        description="Training samples per domain the judges learn from at most: a seeded sample by sample id when "
                    "a domain has more (so their training time and memory do not grow with the collection).",
    )
    inception_weights: str | None = Field(
        None,
        description="Local TorchScript InceptionV3 feature extractor (e.g. NVIDIA's inception-2015-12-05.pt) for "
                    "standard FID/KID; never downloaded; a path that does not exist is a configuration error.",
    )
    # The robust cycle F(q(G(x))): a generator hiding x in a faint signal of G(x) (Chu et al. 2017)
    # reconstructs through G(x) but not through a perturbed copy of it.
    robust_noise_std: float = Field(
        8 / 255, ge=0.0, le=1.0,
        description="Std of the Gaussian noise q adds to G(x), on [0, 1] pixels (8/255 by default); 0 = none.",
    )
    robust_jpeg_quality: int | None = Field(
        75, ge=1, le=100, description="JPEG quality q re-encodes the noised G(x) at; null = no JPEG."
    )
    robust_seed: int = Field(0, ge=0, description="Seed of q's noise (drawn per sample from it and the sample id).")

    @field_validator("sample", "run", mode="before")
    @classmethod
    def _both_directions(cls, value: Any) -> Any:
        return _per_direction(value)


class UtilityBounds(_Strict):
    """Run-level bounds of the utility step (accuracy points on real held-out targets; null = off).

    Both bound the lower end of a 95% interval, so a gain must be there beyond seed and test-set noise.
    """

    min_utility_gain: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="Lower 95% bound of accuracy(few real labels + published translations) - accuracy(few real "
                    "labels): does adding the published rows help?",
    )
    min_transfer_gain: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="Lower 95% bound of accuracy(published translations only) - accuracy(untranslated sources "
                    "only): does translating beat not translating?",
    )


class UtilityConfig(_Strict):
    """The downstream-utility step: train a classifier on real, translated and untranslated samples, test it on
    real held-out targets that no model, judge or bound of the run has seen (the "evaluation" half)."""

    enabled: bool = Field(True, description="Run the step when the collections carry labels (skipped otherwise).")
    labels_per_class: int = Field(10, ge=1, description="Real target labels per class in the few-label arms.")
    seeds: int = Field(3, ge=1, le=20, description="Seeds per arm (few-label draw, initialisation, batch order).")
    steps: int = Field(300, ge=1, description="Optimizer steps per classifier, the same for every arm.")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    real_share: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="In the arms mixing real and translated samples, the share of draws from the real ones (each "
                    "part class-balanced), so a few real samples are not drowned by thousands of translations.",
    )
    model: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function returning a torch.nn.Module for (channels, classes, height, width) "
                    "inputs in [-1, 1]; null: the small fixed CNN of cyclegan_core.utility.small_cnn.",
    )
    max_train_samples: int = Field(
        5000, ge=1,
        description="Largest training set of an arm's classifier: real training targets, published rows, all "
                    "translations, each drawn by sample id when larger (the draw is the same every run), so the "
                    "step's memory does not grow with the collection. The demo's sets (under 2,000) are whole.",
    )
    max_eval_samples: int = Field(
        5000, ge=1,
        description="Largest evaluation set (real held-out targets of the evaluation half), drawn by sample id "
                    "when larger.",
    )
    run: dict[Literal["AtoB", "BtoA"], UtilityBounds] = Field(
        default_factory=lambda: {d: UtilityBounds() for d in DIRECTIONS})

    @field_validator("run", mode="before")
    @classmethod
    def _both_directions(cls, value: Any) -> Any:
        return _per_direction(value)


class PublishConfig(_Strict):
    """The published dataset and the pictures beside it."""

    grid_samples: int = Field(8, ge=1, description="Rows in each sample-grid picture.")
    max_shard_mb: float = Field(
        256.0, gt=0.0, le=4096.0,
        description="Largest Parquet shard, MiB; a hash prefix whose rows outgrow it is split into 16 shards.",
    )


class PathsConfig(_Strict):
    """Where each step keeps its outputs (relative paths are from the working directory)."""

    ingest: str = "data/ingest"
    models: str = "data/models"
    judges: str = "data/judges"
    generated: str = "data/generated"
    validated: str = "data/validated"
    published: str = "data/augmented"
    reports: str = "reports"
    flags: str = Field("data/flags.parquet", description="Rows analysts flagged (cycleaug review / flag): an "
                       "append-only event log, tracked beside params.yaml; publish leaves flagged sources out.")
    publish_url: str | None = Field(
        None, description="fsspec URL (s3://bucket/prefix, memory://x) each published version is copied to, "
        "manifest.json last; credentials come from the environment, never from this file."
    )
    models_url: str | None = Field(
        None, description="fsspec URL of a shared model store: each trained model folder is copied to "
        "<models_url>/<fingerprint>/ (model.json last), and a run with no local model for its fingerprint "
        "fetches it from there instead of training; credentials from the environment."
    )

    @field_validator("ingest", "models", "judges", "generated", "validated", "published", "reports", "flags")
    @classmethod
    def _inside_project(cls, value: str) -> str:
        if is_remote(value):
            raise ValueError(f"{value!r}: step outputs are local folders; use paths.publish_url to publish to "
                             "remote storage")
        return _local_path_inside_project(value)

    @field_validator("publish_url", "models_url")
    @classmethod
    def _remote_storage(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_remote(value):
            raise ValueError(f"{value!r} is not a URL; paths.published and paths.models are the local copies, "
                             "publish_url and models_url remote ones such as s3://bucket/prefix")
        return _storage_url(value)


class Config(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    utility: UtilityConfig = UtilityConfig()
    publish: PublishConfig = PublishConfig()
    paths: PathsConfig = PathsConfig()
    paired: PairedConfig = PairedConfig()
    modality: ModalityConfig = ModalityConfig()
    orchestrate: OrchestrateConfig = OrchestrateConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _sizes_fit_networks(self) -> Config:
        size, m = self.data.image_size, self.model
        if m.generator == "resnet" and size % 4:
            raise ValueError(
                f"data.image_size={size}: the ResNet generator downsamples twice, "
                "so the size must be a multiple of 4"
            )
        for name, side in (("unet_128", 128), ("unet_256", 256)):
            if m.generator == name and size % side:
                raise ValueError(
                    f"data.image_size={size}: model.generator={name} halves the image {side.bit_length() - 1} "
                    f"times, so the size must be a multiple of {side}"
                )
        if m.discriminator == "patchgan":
            # The variant's discriminator judges encodings (a quarter of the side) with two
            # strided layers fewer: the encoder has already done those two halvings.
            side, layers, what = size, m.n_layers_d, "image_size"
            if m.arch == "translator":
                side, layers, what = size // 4, max(0, m.n_layers_d - 2), "image_size / 4 (the encodings)"
            if side // 2**layers < 3:
                raise ValueError(
                    f"model.n_layers_d={m.n_layers_d} is too deep for data.image_size={size}: "
                    f"the PatchGAN needs {what} / 2**{layers} >= 3"
                )
        if m.arch in ("cut", "fastcut") and self.train.gan_mode == "wgangp":
            raise ValueError(f"model.arch={m.arch} with train.gan_mode=wgangp: the CUT step has no gradient "
                             "penalty; use lsgan (the reference's) or vanilla")
        if self.runtime.step("train").precision == "fp16" and self.train.gan_mode == "wgangp":
            raise ValueError("training precision fp16 (runtime.precision or runtime.train.precision) with "
                             "train.gan_mode=wgangp: the gradient penalty's double backward is not scaled; use bf16 "
                             "or fp32")
        return self

    @property
    def validate_cfg(self) -> ValidateConfig:
        return self.validate_

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.steps=10", "data.mode=RGB"]`` -> nested dict; values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic section class inside an annotation (``X``, ``X | None``, ``dict[K, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _section_at(loc: tuple) -> tuple[type[BaseModel] | None, bool]:
    """The section class a location points into, and whether the last step was a dict key."""
    model: type[BaseModel] | None = Config
    keyed = False
    for part in loc:
        if model is None:
            return None, False
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        field = fields.get(str(part))
        if field is None:
            if keyed:  # e.g. validate.sample.AtoB: a key of a dict of sections
                keyed = False
                continue
            return None, False
        keyed = typing.get_origin(field.annotation) is dict
        model = _model_of(field.annotation)
    return model, keyed


def _keys_of(model: type[BaseModel]) -> str:
    return ", ".join(f.alias or n for n, f in model.model_fields.items())


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(err: ValidationError, source: str) -> str:
    """One line per problem: the dotted key, what is wrong, what is allowed and what was given."""
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = tuple(e["loc"])
        msg, kind, given = e["msg"], e["type"], e.get("input")
        if loc and loc[-1] == "[key]":  # a bad key of a mapping such as validate.sample
            loc, msg = loc[:-2], f"key {loc[-2]!r}: {msg}"
        key = ".".join(str(p) for p in loc) or "(top level)"
        if kind == "extra_forbidden":
            parent, _ = _section_at(loc[:-1])
            msg = "unknown key" + (f"; allowed keys here: {_keys_of(parent)}" if parent else "")
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            section, keyed = _section_at(loc)
            if section is not None and not keyed:
                msg = f"expected a section (mapping) with keys {_keys_of(section)}; got {_shown(given)}"
            else:
                msg = f"{msg}; got {_shown(given)}"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif kind == "literal_error" or kind.endswith("_type") \
                or not isinstance(given, (dict, list, tuple, types.NoneType)):
            msg = f"{msg} (got {_shown(given)})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    moved = moved_key_errors(raw)
    if moved:
        raise ConfigError("\n".join([f"{source}: keys that moved to the runtime section", *moved]))
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | Path | None = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``params.yaml`` (missing sections take defaults) and apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise ConfigError(f"{p}: configuration file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        raw = loaded
    raw = _merge(raw, parse_overrides(overrides))
    return config_from_dict(raw, source)
