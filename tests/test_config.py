from pathlib import Path

import pytest

from cyclegan_core.config import Config, ConfigError, load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_is_valid_and_complete():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.data.image_size == 32 and cfg.train.steps > 0
    # params.yaml spells out every section, so a person tunes the pipeline in one place.
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    sections = {f.alias or name for name, f in Config.model_fields.items()}
    assert {"data", "model", "train", "generate", "validate", "publish", "paths", "orchestrate", "paired"} <= sections
    assert set(raw) == sections


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key"):
        load_config(p)


def test_bad_choice_names_allowed_values(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  mode: CMYK\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "data.mode" in str(err.value) and "'L'" in str(err.value) and "'RGB'" in str(err.value)


def test_malformed_yaml_and_wrong_top_level(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_sizes_must_fit_the_networks():
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_config(None, ["data.image_size=30"])
    with pytest.raises(ConfigError, match="n_layers_d"):
        load_config(None, ["data.image_size=16", "model.n_layers_d=3"])
    assert load_config(None, ["data.image_size=16", "model.n_layers_d=2"]).data.image_size == 16


def test_overrides_are_yaml_typed():
    assert parse_overrides(["train.steps=10", "generate.splits=[test]"]) == {
        "train": {"steps": 10}, "generate": {"splits": ["test"]}
    }
    cfg = load_config(None, ["train.steps=10", "validate.run.AtoB.min_pass_rate=0.5"])
    assert cfg.train.steps == 10 and cfg.validate_.run["AtoB"].min_pass_rate == 0.5
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["nonsense"])


def test_errors_name_the_key_the_allowed_values_and_what_was_given(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  imgsize: 32\n  mode: rgb\n  retries: -1\npaths:\n  reportz: r\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    text = str(err.value)
    assert text.startswith(f"{p}: invalid configuration")
    assert "data.imgsize: unknown key; allowed keys here: kind, domain_a, domain_b, image_size, mode" in text
    assert "data.mode: Input should be 'L' or 'RGB' (got 'rgb')" in text
    assert "data.retries: Input should be greater than or equal to 0 (got -1)" in text
    assert "paths.reportz: unknown key; allowed keys here: ingest, models" in text and "publish_url" in text
    p.write_text("validate:\n  run:\n    AtoB:\n      min_psnr: 3\n")
    with pytest.raises(ConfigError, match=r"validate\.run\.AtoB\.min_psnr: unknown key; allowed keys here: "
                                          r"min_mean_cycle_psnr, .*min_mean_realism"):
        load_config(p)
    p.write_text("model: [16, 16]\n")
    with pytest.raises(ConfigError, match=r"model: expected a section \(mapping\) with keys .*ngf, ndf"):
        load_config(p)


def test_storage_settings_are_checked_when_read():
    cfg = load_config(None, ["paths.publish_url=s3://bucket/datasets/digits", "data.domain_b=memory://b"])
    assert cfg.paths.publish_url == "s3://bucket/datasets/digits" and cfg.data.retries == 4
    with pytest.raises(ConfigError, match="paths.publish_url: 'data/out' is not a URL"):
        load_config(None, ["paths.publish_url=data/out"])
    with pytest.raises(ConfigError, match="data.domain_b: unknown storage scheme s4://"):
        load_config(None, ["data.domain_b=s4://bucket/b"])
    with pytest.raises(ConfigError, match="data.extensions: extensions start with a dot"):
        load_config(None, ["data.extensions=[png]"])
    with pytest.raises(ConfigError, match=r"data.retry_backoff_s: Input should be less than or equal to 60"):
        load_config(None, ["data.retry_backoff_s=600"])


def test_voices_params_are_valid():
    cfg = load_config(ROOT / "params.voices.yaml")
    assert cfg.data.kind == "audio" and cfg.data.uses_default_collections
    assert cfg.data.shape == (32, 48) and cfg.data.channels == 1
    assert cfg.paths.published != load_config(ROOT / "params.yaml").paths.published  # the demos do not collide
