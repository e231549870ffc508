"""Each validation figure is declared once (cyclegan_core/figures.py); the gate, schema and report read it."""

from cyclegan_core import report
from cyclegan_core.config import RunThresholds, SampleThresholds
from cyclegan_core.figures import FIGURES, summary_line
from cyclegan_core.gate import gate_message, run_failures, sample_failures, unapplied_bounds
from cyclegan_core.validate import validated_schema


def test_every_declared_figure_has_its_bounds_column_and_report_row():
    rows = {k if isinstance(k, str) else k[0] for _, k, _ in report._REPORT_ROWS}
    audio = validated_schema(audio=True).names
    for f in FIGURES:
        assert f.summary_key in rows, f.name
        if f.sample_bound:
            assert f.sample_bound in SampleThresholds.model_fields, f.name
        if f.run_bound:
            assert f.run_bound in RunThresholds.model_fields, f.name
        assert (f.name in audio) == f.per_sample, f.name
        assert (f.name in validated_schema().names) == (f.per_sample and f.modality == "any"), f.name


def test_bounds_follow_the_declared_direction():
    row = {"cycle_psnr": 12.0, "cycle_l1": 0.5, "cycle_ssim": 0.5, "identity_l1": None, "realism": 0.2,
           "cycle_psnr_robust": None}
    t = SampleThresholds(min_cycle_psnr=15, max_cycle_l1=0.4, max_identity_l1=0.1, min_robust_cycle_psnr=10.0)
    assert sample_failures(row, t) == ["cycle_psnr 12.00 < 15.0",
                                       "cycle_psnr_robust not measured (validate had no model), bound 10.0",
                                       "cycle_l1 0.5000 > 0.4"]
    # A value that rounds to its bound is shown with the digits that separate them.
    near = SampleThresholds(min_cycle_psnr=None, min_realism=0.003)
    assert sample_failures({"cycle_psnr": 30.0, "realism": 0.00279}, near) == ["realism 0.00279 < 0.003"]
    assert sample_failures({"cycle_psnr": 30.0, "realism": 0.0029999}, near) == ["realism 0.0029999 < 0.003"]
    fig = {"mean_cycle_psnr": 20.0, "fid_domain_features": 3.0, "label_accuracy": None, "labelled": 0}
    bounds = RunThresholds(min_mean_cycle_psnr=21, max_fid_domain=2.0, min_label_accuracy=0.5)
    assert run_failures("AtoB", fig, bounds) == [
        "AtoB.mean_cycle_psnr = 20 < 21.0 (validate.run.AtoB.min_mean_cycle_psnr)",
        "AtoB.fid_domain_features = 3 > 2.0 (validate.run.AtoB.max_fid_domain)",
    ]
    assert unapplied_bounds("AtoB", fig, bounds) == [
        "AtoB.label_accuracy >= 0.5 (validate.run.AtoB.min_label_accuracy): not applied, no held-out sample carries "
        "a label"]
    message = gate_message(run_failures("AtoB", fig, bounds))
    assert message.splitlines()[:3] == [
        "quality gate failed, nothing published (the previous version stays as it was):",
        "  - AtoB.mean_cycle_psnr = 20 < 21.0 (validate.run.AtoB.min_mean_cycle_psnr)",
        "  - AtoB.fid_domain_features = 3 > 2.0 (validate.run.AtoB.max_fid_domain)"]
    assert "train longer (train.steps)" in message
    assert message.endswith("e.g. cycleaug --set validate.run.AtoB.min_mean_cycle_psnr=null run")
    # Every bound switches off with null, and lower bounds at their floor are off.
    # The summary line names what was measured.
    assert run_failures("AtoB", {"mean_cycle_ssim": -0.5}, RunThresholds(min_mean_cycle_ssim=-1.0)) == []
    assert run_failures("AtoB", {"mean_cycle_ssim": -0.5}, RunThresholds(min_mean_cycle_ssim=None)) == []
    assert sample_failures({"cycle_psnr": 1.0, "realism": 0.0}, SampleThresholds(min_cycle_psnr=None)) == []
    line = summary_line({"mean_cycle_psnr": 22.91, "mean_realism": 0.4942, "label_accuracy": 0.9444,
                         "label_accuracy_untranslated": 0.504, "fid_domain_features": 0.177})
    assert line == ("cycle PSNR 22.9 dB, realism 0.494, label accuracy 0.944 (untranslated 0.504), "
                    "FID(domain features) 0.177")


def test_one_sided_models_are_not_gated_on_their_cycle():
    """CUT's cycle goes through two models trained apart: with cycle_bounds auto its cycle bounds are left
    out (and named), every other bound stays; "on" keeps them; CycleGAN keeps them on auto."""
    from cyclegan_core.config import config_from_dict
    from cyclegan_core.gate import bounds_for

    def cfg(arch: str, setting: str):
        return config_from_dict({"model": {"arch": arch}, "validate": {
            "cycle_bounds": setting, "sample": {"AtoB": {"min_cycle_psnr": 16.0, "min_realism": 0.01},
                                                "BtoA": {"max_cycle_l1": 0.3}},
            "run": {"AtoB": {"min_mean_cycle_psnr": 19.0, "min_label_accuracy": 0.8}}}})

    sample, run, notes = bounds_for(cfg("cut", "auto"))
    assert sample["AtoB"].min_cycle_psnr is None and sample["AtoB"].min_realism == 0.01
    assert sample["BtoA"].max_cycle_l1 is None and run["AtoB"].min_mean_cycle_psnr is None
    assert run["AtoB"].min_label_accuracy == 0.8
    assert "validate.sample.AtoB.min_cycle_psnr = 16.0: not applied, one-sided model" in notes[0]
    assert {n.split(" = ")[0] for n in notes} >= {"validate.sample.AtoB.min_cycle_psnr",
                                                   "validate.sample.BtoA.max_cycle_l1",
                                                   "validate.run.AtoB.min_mean_cycle_psnr"}
    row = {"cycle_psnr": 9.0, "cycle_l1": 0.9, "realism": 0.5}
    assert sample_failures(row, sample["AtoB"]) == [] and sample_failures(row, sample["BtoA"]) == []
    for arch, setting in (("cut", "on"), ("fastcut", "on"), ("cyclegan", "auto")):
        s, r, n = bounds_for(cfg(arch, setting))
        assert n == [] and s["AtoB"].min_cycle_psnr == 16.0 and r["AtoB"].min_mean_cycle_psnr == 19.0
        assert sample_failures(row, s["AtoB"]) == ["cycle_psnr 9.00 < 16.0"]
    s, r, n = bounds_for(cfg("cyclegan", "off"))
    assert s["AtoB"].min_cycle_psnr is None and len(n) >= 3 and n[0].endswith("not applied, validate.cycle_bounds: off")
