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
    """CycleGAN networks (names and defaults follow the reference implementation)."""

    ngf: int = Field(16, ge=1, description="Generator filters in the first conv layer.")
    ndf: int = Field(16, ge=1, description="Discriminator filters in the first conv layer.")
    n_blocks: int = Field(6, ge=1, description="Residual blocks in each ResNet generator.")
    n_layers_d: int = Field(3, ge=1, description="Strided conv layers in each PatchGAN.")
    norm: Literal["instance", "batch", "none"] = "instance"
    init_gain: float = Field(0.02, gt=0.0)


class TrainConfig(_Strict):
    """The CycleGAN training loop (losses and optimizer follow the reference defaults)."""

    steps: int = Field(1500, ge=1, description="Optimizer steps in all.")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    decay_start: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of steps at full LR before linear decay to 0."
    )
    lambda_a: float = Field(10.0, ge=0.0, description="Weight of the A->B->A cycle loss.")
    lambda_b: float = Field(10.0, ge=0.0, description="Weight of the B->A->B cycle loss.")
    lambda_identity: float = Field(0.5, ge=0.0)
    pool_size: int = Field(50, ge=0)
    seed: int = 0
    # Settings below do not change the trained weights, so they stay out of the fingerprint.
    checkpoint_every: int = Field(250, ge=1)
    log_every: int = Field(10, ge=1)
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default.")

    NOT_IN_FINGERPRINT: ClassVar[frozenset[str]] = frozenset({"checkpoint_every", "log_every", "num_threads"})


class GenerateConfig(_Strict):
    """Translation of ingested samples in both directions."""

    splits: tuple[Literal["train", "test"], ...] = ("train", "test")
    batch_size: int = Field(64, ge=1)
    shards: int = Field(2, ge=1, description="Shards per direction (by hash of the source id).")


class SampleThresholds(_Strict):
    """Per-sample gate: a translation failing any bound is dropped from the published set and counted."""

    min_cycle_psnr: float = Field(0.0, description="dB, between x and F(G(x)).")
    max_cycle_l1: float = Field(1.0, ge=0.0, le=1.0, description="Mean |x - F(G(x))| on [0, 1].")
    min_cycle_ssim: float = Field(
        -1.0, ge=-1.0, le=1.0, description="SSIM between x and F(G(x)) (Gaussian window 11, sigma 1.5)."
    )
    max_identity_l1: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Mean |x - F(x)| on [0, 1]: how much the target->source generator alters a real source.",
    )
    min_realism: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Realism of G(x): the share of held-out real targets the domain judge finds no more target-like "
                    "(a conformal p-value; real targets average 0.5).",
    )
    require_label_ok: bool = Field(
        False, description="Drop labelled translations whose predicted label differs from the source's."
    )


class RunThresholds(_Strict):
    """Run-level gate on held-out samples: if any bound fails, nothing is published.

    Upper bounds left at ``null`` are off; a bound set on a figure that was not measured fails.
    """

    min_mean_cycle_psnr: float = 0.0
    min_mean_cycle_ssim: float = Field(-1.0, ge=-1.0, le=1.0)
    min_mean_realism: float = Field(0.0, ge=0.0, le=1.0, description="Real targets score 0.5 on average.")
    min_label_accuracy: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of labelled held-out translations keeping the label."
    )
    min_pass_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share passing per-sample bounds.")
    max_fid_domain: float | None = Field(
        None, ge=0.0, description="Frechet distance to held-out real targets on the domain judge's features."
    )
    max_kid_domain: float | None = Field(None, description="KID (unbiased MMD^2) on the domain judge's features.")
    max_fid_inception: float | None = Field(
        None, ge=0.0, description="FID on InceptionV3 pool features (needs validate.inception_weights)."
    )
    max_kid_inception: float | None = Field(None, description="KID on InceptionV3 features.")


class ValidateConfig(_Strict):
    """How translations are scored and which figures gate publishing."""

    sample: dict[Literal["AtoB", "BtoA"], SampleThresholds] = {
        d: SampleThresholds() for d in DIRECTIONS
    }
    run: dict[Literal["AtoB", "BtoA"], RunThresholds] = {d: RunThresholds() for d in DIRECTIONS}
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
    inception_weights: str | None = Field(
        None,
        description="Local TorchScript InceptionV3 feature extractor (e.g. NVIDIA's inception-2015-12-05.pt) for "
                    "standard FID/KID; never downloaded; a path that does not exist is a configuration error.",
    )

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
        size = self.data.image_size
        if size % 4:
            raise ValueError(
                f"data.image_size={size}: the ResNet generator downsamples twice, "
                "so the size must be a multiple of 4"
            )
        if size // 2**self.model.n_layers_d < 3:
            raise ValueError(
                f"model.n_layers_d={self.model.n_layers_d} is too deep for data.image_size={size}: "
                f"the PatchGAN needs image_size / 2**n_layers_d >= 3"
            )
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
