"""The runtime block (cyclegan_core/runtime.py): shared by the steps, overridable per step, out of every
fingerprint as a block, in a translation's key where it can change bytes; old keys say where they moved."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclegan_core import inputs
from cyclegan_core.config import ConfigError, config_from_dict, load_config
from cyclegan_core.generate import generation_key
from cyclegan_core.models import model_fingerprint
from cyclegan_core.runtime import MOVED, RuntimeConfig, StepRuntime

ROOT = Path(__file__).resolve().parents[1]

# A value other than the default for every key of the runtime block.
OTHER = {"device": "cpu", "precision": "bf16", "channels_last": True, "compile": True, "compile_mode": "max-autotune",
         "compile_backend": "aot_eager", "adam_impl": "foreach", "pin_memory": False, "num_threads": 3,
         "cache_mb": 0, "loader_workers": 2, "checkpoint_every": 7, "log_every": 3,
         "train": {"precision": "fp16"}, "generate": {"device": "cpu", "compile": False},
         "validate": {"device": "cpu"}}


def _gen_key(cfg) -> str:
    return generation_key(cfg.generate, cfg.runtime.step("generate"), cfg.data.audio_settings)


def test_one_block_shared_by_the_steps_with_their_own_values():
    cfg = load_config(ROOT / "params.yaml", ["runtime.device=cpu", "runtime.generate.precision=bf16"])
    assert {cfg.runtime.step(s).device for s in ("train", "generate", "validate")} == {"cpu"}
    assert cfg.runtime.step("generate").precision == "bf16" and cfg.runtime.step("train").precision == "fp32"
    assert cfg.runtime.precision == "fp32"
    # A step's value wins over the shared one; null keeps the shared one.
    cfg = config_from_dict({"runtime": {"channels_last": True, "train": {"channels_last": False, "compile": None}}})
    assert cfg.runtime.step("train").channels_last is False and cfg.runtime.step("generate").channels_last is True
    assert cfg.runtime.step("train") == StepRuntime(channels_last=False)
    with pytest.raises(ValueError, match="no runtime for step 'publish'"):
        cfg.runtime.step("publish")
    # The step blocks take the shared keys only; validation reads the device alone.
    with pytest.raises(ConfigError, match=r"runtime\.generate\.workers: unknown key; allowed keys here: device, "
                                          r"precision"):
        load_config(None, ["runtime.generate.workers=2"])
    with pytest.raises(ConfigError, match="runtime.validate sets precision: validation reads only the device"):
        load_config(None, ["runtime.validate.precision=bf16"])
    with pytest.raises(ConfigError, match=r"runtime\.device: String should match pattern"):
        load_config(None, ["runtime.device=tpu"])
    assert set(OTHER) == {f.alias or n for n, f in RuntimeConfig.model_fields.items()}, "OTHER misses a key"
    assert config_from_dict({"runtime": OTHER}).runtime.step("validate").device == "cpu"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_key_says_where_it_moved(old, tmp_path):
    section, key = old.split(".")
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{old}=cpu"])
    text = str(err.value)
    assert f"  {old}: moved to {MOVED[old]}" in text and MOVED[old].startswith("runtime.")
    new = MOVED[old].split()[0]
    assert new.removeprefix("runtime.").split(".")[-1] == key  # the same name, in the runtime block
    p = tmp_path / "params.yaml"
    p.write_text(f"{section}:\n  {key}: auto\n")
    with pytest.raises(ConfigError, match=rf"{p}: keys that moved to the runtime section\n  {old}: moved to"):
        load_config(p)


def test_the_messages_name_the_new_keys():
    def message(override: str) -> str:
        with pytest.raises(ConfigError) as err:
            load_config(None, [override])
        return str(err.value)
    assert "train.device: moved to runtime.device (runtime.train.device for training alone)" in message(
        "train.device=cpu")
    assert "generate.precision: moved to runtime.generate.precision (or runtime.precision for every step)" in message(
        "generate.precision=bf16")
    assert "validate.device: moved to runtime.validate.device" in message("validate.device=cpu")
    assert "train.log_every: moved to runtime.log_every;" in message("train.log_every=3")


def test_no_key_reads_the_runtime_block_but_a_translation_key_reads_its_rounding():
    base = load_config(ROOT / "params.yaml")
    other = load_config(ROOT / "params.yaml", [f"runtime.{k}={v}" for k, v in OTHER.items()])
    assert other.runtime != base.runtime
    # Every key's settings (the model fingerprint among them) are the same under any runtime block.
    for key in inputs.KEYS:
        assert inputs.settings_digest(other, key) == inputs.settings_digest(base, key), key
    assert model_fingerprint(other, "a", "b") == model_fingerprint(base, "a", "b")
    assert not any(p == "runtime" or p.startswith("runtime.") for k in inputs.KEYS.values() for p in k.params)
    # What can change a translation's bytes changes its key: precision (shared or generate's own), memory
    # format, compiled kernels; training's own values and the loop's switches do not.
    cpu = ["runtime.device=cpu"]
    key = _gen_key(load_config(ROOT / "params.yaml", cpu))
    for change in ("runtime.precision=bf16", "runtime.generate.precision=bf16", "runtime.channels_last=true",
                   "runtime.generate.compile=true"):
        assert _gen_key(load_config(ROOT / "params.yaml", [*cpu, change])) != key, change
    for same in ("runtime.train.precision=bf16", "runtime.log_every=3", "runtime.num_threads=2",
                 "runtime.cache_mb=0", "runtime.compile_mode=max-autotune", "runtime.validate.device=cpu"):
        assert _gen_key(load_config(ROOT / "params.yaml", [*cpu, same])) == key, same
    # dvc.yaml's generate stage lists the keys that rounding comes from; train's lists none of the block.
    assert {"runtime.precision", "runtime.generate"} <= set(inputs.STAGES["generate"].params)
    assert not any(p.startswith("runtime") for p in inputs.STAGES["train"].params)
