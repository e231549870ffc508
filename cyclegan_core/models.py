"""The model families, how an exported model is stored and loaded, and the fingerprint that keys it.

``CycleGAN`` (two generators, two discriminators), the single-translator variant of
:mod:`cyclegan_core.translator` and the two one-sided CUT / FastCUT models of :mod:`cyclegan_core.cut`
(:class:`~cyclegan_core.cut.CUTPair`) are built by :func:`build_model`. An exported model is two files in
its folder (``paths.models/<fingerprint>``): ``model.safetensors`` (the generators' weights) and
``model.json`` (fingerprint, sha256, steps, settings). :func:`load_generators` gives the two
image-to-image generators of any family (for CUT, A->B's and B->A's), so generation and validation
never import the trainer.

The fingerprint (:func:`model_fingerprint`) is the training samples' digests, the ``model`` key of
:mod:`cyclegan_core.inputs` (settings and code) and nothing else: a stored model with the same
fingerprint is reused instead of trained.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save
from torch import nn

from . import inputs
from .config import Config, ModelConfig
from .cut import PRESETS, CUTPair, CutSettings
from .networks import define_discriminator, define_generator, init_weights
from .storage import atomic_path, read_json, sha256_file, write_json_atomic
from .translator import SingleTranslator

MODEL_FILE = "model.safetensors"
MODEL_JSON = "model.json"
EXPORT_FORMAT = "cycleaug-generators-2"


class CheckpointError(RuntimeError):
    """A checkpoint or an exported model cannot be used: corrupt, or written under another configuration."""


class CycleGAN(nn.Module):
    """Two generators (A->B, B->A) and two discriminators (judging A, judging B)."""

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        g = {"n_blocks": cfg.n_blocks, "use_dropout": cfg.use_dropout, "upsample": cfg.upsample,
             "input_skip": cfg.input_skip, "skip_init": cfg.skip_init}
        self.G_AB = define_generator(cfg.generator, channels, channels, cfg.ngf, cfg.norm, **g)
        self.G_BA = define_generator(cfg.generator, channels, channels, cfg.ngf, cfg.norm, **g)
        d_norm = cfg.discriminator_norm
        self.D_A = define_discriminator(cfg.discriminator, channels, cfg.ndf, d_norm, cfg.n_layers_d)
        self.D_B = define_discriminator(cfg.discriminator, channels, cfg.ndf, d_norm, cfg.n_layers_d)
        for net in (self.G_AB, self.G_BA, self.D_A, self.D_B):
            init_weights(net, cfg.init_type, cfg.init_gain)

    def generators(self) -> nn.ModuleDict:
        return nn.ModuleDict({"G_AB": self.G_AB, "G_BA": self.G_BA})

    def exported(self) -> nn.ModuleDict:
        """What an exported model keeps: the two generators."""
        return self.generators()


Model = CycleGAN | SingleTranslator | CUTPair


def build_model(cfg: ModelConfig, channels: int, cut: CutSettings | None = None) -> Model:
    """The networks of ``cfg.arch``; ``cut``: CUT's settings (default: the arch's preset)."""
    if cfg.arch in PRESETS:
        return CUTPair(cfg, channels, cut or PRESETS[cfg.arch])
    return SingleTranslator(cfg, channels) if cfg.arch == "translator" else CycleGAN(cfg, channels)


def code_version() -> str:
    """sha256 of the source that defines what training produces (the ``model`` key's modules)."""
    return inputs.code_digest("model")


def training_settings(cfg: Config) -> dict:
    """The settings that change trained weights (not logging, checkpoint cadence or speed switches)."""
    return inputs.settings(cfg, "model")


def model_fingerprint(cfg: Config, train_digest_a: str, train_digest_b: str) -> str:
    """What a trained model depends on: training samples, training settings, code."""
    return inputs.key_of(cfg, "model", A=train_digest_a, B=train_digest_b)


def settings_key(cfg: Config) -> str:
    """The fingerprint without the data: training settings and code. Models sharing it differ only in
    the samples they saw, which is what the growing-collection policy (``orchestrate.retrain``) weighs."""
    return inputs.key_of(cfg, "model")


def export_model(model: Model, folder: str | Path, meta: dict) -> Path:
    """Write the generator weights to ``model.safetensors``, then ``model.json`` (``meta`` + their sha256)."""
    folder = Path(folder)
    weights = {k: v.detach().contiguous().cpu().clone() for k, v in model.exported().state_dict().items()}
    path = folder / MODEL_FILE
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(weights, metadata={"fingerprint": meta["fingerprint"], "format": EXPORT_FORMAT}))
    write_json_atomic(folder / MODEL_JSON, {"fingerprint": meta["fingerprint"], "sha256": sha256_file(path),
                                            **{k: v for k, v in meta.items() if k != "fingerprint"}})
    return path


def load_generators(model_dir: str | Path, device: str = "cpu") -> tuple[nn.ModuleDict, dict]:
    """The two image-to-image generators ``G_AB``, ``G_BA`` of an exported model (eval mode), and its
    ``model.json``. For the single-translator variant they are encoder -> translator -> decoder."""
    model_dir = Path(model_dir)
    meta = read_json(model_dir / MODEL_JSON)
    path = model_dir / MODEL_FILE
    if sha256_file(path) != meta["sha256"]:
        raise CheckpointError(f"{path}: corrupt (sha256 does not match {model_dir / MODEL_JSON})")
    model = build_model(ModelConfig.model_validate(meta["model"]), meta["channels"])
    model.exported().load_state_dict(load_file(str(path), device="cpu"))
    return model.generators().to(device).eval(), meta
