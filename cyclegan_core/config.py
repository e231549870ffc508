"""The one typed configuration of CycleAug, read from ``params.yaml``.

The CLI, the Prefect flow and ``dvc repro`` all build a :class:`Config` from the same file, so a
setting means the same thing everywhere. Unknown keys and out-of-range values are errors that name
the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DIRECTIONS = ("AtoB", "BtoA")


class ConfigError(ValueError):
    """A configuration file or value is unusable; the message names the key and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DefaultDataConfig(_Strict):
    """The bundled default collections: handwritten (A) and typed (B) digits."""

    typed_per_digit: int = Field(180, ge=1, description="Rendered typed samples per digit 0-9.")
    typed_size: int = Field(32, ge=8, le=256, description="Side of a rendered typed digit, px.")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0


class DataConfig(_Strict):
    """Where the two unpaired collections are and what the pipeline turns them into."""

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
    default: DefaultDataConfig = DefaultDataConfig()

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


class ModelConfig(_Strict):
    """The networks (names and defaults follow the reference implementation, except sizes).

    ``arch: cyclegan`` is the reference CycleGAN (two generators, two image discriminators);
    ``arch: translator`` is the single-translator variant (one shared encoder/decoder trained as an
    autoencoder, a translator on encodings, a discriminator on encodings, a deviation loss): see
    :mod:`cyclegan_core.translator`.
    """

    arch: Literal["cyclegan", "translator"] = Field("cyclegan", description="Model family.")
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
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = "normal"
    init_gain: float = Field(0.02, gt=0.0, description="Scale of normal/xavier/orthogonal init.")
    use_dropout: bool = Field(False, description="Dropout 0.5 in residual blocks / inner U-Net levels.")
    upsample: Literal["transpose", "resize_conv"] = Field(
        "transpose", description="transpose (reference) or resize_conv (nearest x2 then conv: no checkerboard)."
    )
    translator_directions: Literal["AtoB", "both"] = Field(
        "both",
        description="arch translator only: AtoB is the article's single translator (B->A is then the "
        "autoencoder, untranslated); both adds a second translator and encoding discriminator for B->A.",
    )

    @model_validator(mode="after")
    def _translator_needs_resnet(self) -> ModelConfig:
        if self.arch == "translator" and self.generator != "resnet":
            raise ValueError(
                f"model.generator={self.generator!r}: arch 'translator' splits a ResNet generator into "
                "encoder / translator / decoder, so the generator must be 'resnet'"
            )
        return self


class TrainConfig(_Strict):
    """The training loop (losses and optimizer follow the reference defaults), and speed switches."""

    steps: int = Field(1500, ge=1, description="Optimizer steps in all.")
    batch_size: int = Field(8, ge=1, description="Images per domain per step (per process under torchrun).")
    lr: float = Field(2e-4, gt=0.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    lr_policy: Literal["linear", "step", "cosine"] = Field(
        "linear", description="linear: held, then linear decay to 0; step: x0.1 every lr_step_size; cosine."
    )
    decay_start: float = Field(
        0.5, ge=0.0, le=1.0, description="linear policy: share of steps at full LR before the decay."
    )
    lr_step_size: int = Field(0, ge=0, description="step policy: steps between x0.1 drops; 0 = steps // 3.")
    gan_mode: Literal["lsgan", "vanilla", "wgangp"] = "lsgan"
    lambda_gp: float = Field(10.0, ge=0.0, description="wgangp: weight of the gradient penalty.")
    lambda_a: float = Field(10.0, ge=0.0, description="Weight of the A->B->A cycle loss.")
    lambda_b: float = Field(10.0, ge=0.0, description="Weight of the B->A->B cycle loss.")
    lambda_identity: float = Field(0.5, ge=0.0)
    lambda_recon: float = Field(10.0, ge=0.0, description="arch translator: autoencoder reconstruction weight.")
    lambda_deviation: float = Field(
        10.0, ge=0.0, description="arch translator: weight of |T(E(b)) - E(b)|, keeping T near identity on B."
    )
    pool_size: int = Field(50, ge=0)
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast dtype for forward passes (fp16 adds a grad scaler); fp32 = off."
    )
    # Settings below do not change what is learned (at most the rounding), so they stay out of
    # the fingerprint and a run may resume under other values.
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available.")
    channels_last: bool = Field(False, description="NHWC memory format (faster convs on GPUs).")
    adam_impl: Literal["auto", "foreach", "fused", "for_loop"] = Field(
        "auto", description="auto: fused on CUDA, for_loop on CPU (measured fastest there)."
    )
    compile: bool = Field(False, description="torch.compile the networks.")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    compile_backend: str = Field("inductor", description="torch.compile backend (aot_eager to test cheaply).")
    pin_memory: bool = Field(
        True, description="Keep the training images in pinned host memory and copy batches asynchronously "
        "(CUDA only; a no-op on CPU)."
    )
    checkpoint_every: int = Field(250, ge=1)
    log_every: int = Field(10, ge=1, description="Steps between loss-log rows (and host syncs on a GPU).")
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default.")

    NOT_IN_FINGERPRINT: ClassVar[frozenset[str]] = frozenset({
        "checkpoint_every", "log_every", "num_threads", "device", "channels_last", "adam_impl", "compile",
        "compile_mode", "compile_backend", "pin_memory",
    })


class GenerateConfig(_Strict):
    """Translation of ingested samples in both directions."""

    splits: tuple[Literal["train", "test"], ...] = ("train", "test")
    batch_size: int = Field(64, ge=1)
    shards: int = Field(2, ge=1, description="Shards per direction (by hash of the source id).")


class SampleThresholds(_Strict):
    """Per-sample gate: a translation failing any bound is dropped and counted."""

    min_cycle_psnr: float = Field(0.0, description="dB, between x and F(G(x)).")
    max_cycle_l1: float = Field(1.0, ge=0.0, le=1.0, description="Mean |x - F(G(x))| on [0, 1].")
    min_realism: float = Field(0.0, ge=0.0, le=1.0, description="P(target domain) of G(x).")


class RunThresholds(_Strict):
    """Run-level gate on held-out samples: if any bound fails, nothing is published."""

    min_mean_cycle_psnr: float = 0.0
    min_mean_realism: float = Field(0.0, ge=0.0, le=1.0)
    min_label_accuracy: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of labelled held-out translations keeping the label."
    )
    min_pass_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share passing per-sample bounds.")


class ValidateConfig(_Strict):
    """How translations are scored and which figures gate publishing."""

    sample: dict[Literal["AtoB", "BtoA"], SampleThresholds] = {
        d: SampleThresholds() for d in DIRECTIONS
    }
    run: dict[Literal["AtoB", "BtoA"], RunThresholds] = {d: RunThresholds() for d in DIRECTIONS}
    classifier_epochs: int = Field(8, ge=1, description="Epochs for the judge classifiers.")
    classifier_seed: int = 0

    @field_validator("sample", "run", mode="before")
    @classmethod
    def _both_directions(cls, value: Any) -> Any:
        # A direction left out keeps its defaults, so one bound can be set alone.
        if isinstance(value, dict):
            return {d: {} for d in DIRECTIONS} | {k: ({} if v is None else v) for k, v in value.items()}
        return value


class PublishConfig(_Strict):
    """The published dataset and the pictures beside it."""

    grid_samples: int = Field(8, ge=1, description="Rows in each sample-grid picture.")


class PathsConfig(_Strict):
    """Where each step keeps its outputs (relative paths are from the working directory)."""

    ingest: str = "data/ingest"
    models: str = "data/models"
    judges: str = "data/judges"
    generated: str = "data/generated"
    validated: str = "data/validated"
    published: str = "data/augmented"
    reports: str = "reports"


class Config(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    publish: PublishConfig = PublishConfig()
    paths: PathsConfig = PathsConfig()

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
        if self.train.precision == "fp16" and self.train.gan_mode == "wgangp":
            raise ValueError("train.precision=fp16 with train.gan_mode=wgangp: the gradient penalty's double "
                             "backward is not scaled; use bf16 or fp32")
        return self

    @property
    def validate_cfg(self) -> ValidateConfig:
        return self.validate_

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def section_hash(self, *names: str) -> str:
        """sha256 of the named sections, for fingerprints and cache keys."""
        dump = self.to_dict()
        blob = json.dumps({n: dump[n] for n in names}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


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


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
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
