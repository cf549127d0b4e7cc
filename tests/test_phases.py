"""phases.yaml: every phase validates; the dvc commands and the report are built correctly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import ParamsError
from birdpipe.reports.experiments import Phase, experiments_from_json, load_phases
from birdpipe.reports.phases import (
    exp_run_command,
    hydra_value,
    parse_sets,
    render_report,
    validate_phase,
)

ROOT = Path(__file__).resolve().parents[1]
STUDY_PHASES = (
    "phase0_cnn",
    "phase0_vit",
    "phase1_balanced",
    "phase1_sqrt",
    "phase1_norm_only",
    "phase2a_cnn_focal",
    "phase2b_cnnv2_focal",
    "phase2c_gamma1",
    "phase2d_gamma3",
    "phase3_ast_baseline",
    "phase3_ast_full",
)


@pytest.mark.parametrize("offline", [False, True])
def test_every_phase_validates_against_the_schema(offline):
    base, phases = load_phases(ROOT / "phases.yaml")
    assert set(STUDY_PHASES) <= set(phases)
    for phase in phases.values():
        overrides = validate_phase(phase, base, offline, params_file=ROOT / "params.yaml")
        assert overrides or phase.name == "defaults"  # every phase pins its settings, but `defaults`


def test_pretrained_phases_name_hub_weights_and_offline_switch_removes_them():
    base, phases = load_phases(ROOT / "phases.yaml")
    assert phases["phase0_vit"].overrides(base, False)["model.pretrained"] == "google/vit-base-patch16-224"
    ast = phases["phase3_ast_full"].overrides(base, False)
    assert ast["model.pretrained"] == "MIT/ast-finetuned-audioset-10-10-0.4593" and ast["model.ast.max_length"] == 1024
    for name in ("phase0_vit", "phase3_ast_baseline", "phase3_ast_full"):
        assert phases[name].overrides(base, True)["model.pretrained"] is None


def test_study_settings_of_phase_2b_and_3_full():
    base, phases = load_phases(ROOT / "phases.yaml")
    p2b = phases["phase2b_cnnv2_focal"].overrides(base, False)
    assert (p2b["model.name"], p2b["loss.name"], p2b["loss.gamma"], p2b["train.scheduler"]) == (
        "audio_cnn_v2",
        "focal",
        2.0,
        "step",
    )
    assert (p2b["train.step_size"], p2b["train.step_gamma"], p2b["train.warmup_epochs"]) == (10, 0.5, 5.0)
    full = phases["phase3_ast_full"].overrides(base, False)
    assert (full["augment.specaugment.p"], full["augment.mixup.p"], full["augment.mixup.alpha"]) == (0.8, 0.6, 0.4)
    assert (full["train.backbone_lr"], full["train.head_lr"], full["train.weight_decay"]) == (5e-5, 1e-3, 0.01)


def test_a_bad_override_names_the_key(tmp_path):
    phase = Phase("bad", "", {"loss.gamma": "high"}, {}, {})
    with pytest.raises(ParamsError, match=r"loss\.gamma"):
        validate_phase(phase, {}, False, params_file=ROOT / "params.yaml")
    phase = Phase("typo", "", {"train.epocs": 3}, {}, {})
    with pytest.raises(ParamsError, match=r"train\.epocs"):
        validate_phase(phase, {}, False, params_file=ROOT / "params.yaml")


def test_unknown_phase_keys_are_rejected(tmp_path):
    path = tmp_path / "phases.yaml"
    path.write_text(yaml.safe_dump({"phases": {"x": {"params": {}, "paramz": {}}}}))
    with pytest.raises(PipelineError, match="paramz"):
        load_phases(path)


def test_a_phase_with_base_false_is_params_yaml_as_it_stands_plus_its_own(tmp_path):
    base, phases = load_phases(ROOT / "phases.yaml")
    assert phases["defaults"].overrides(base, offline=False) == {}
    assert phases["defaults"].overrides(base, offline=False, extra={"seed": 1}) == {"seed": 1}
    assert phases["phase0_cnn"].overrides(base, offline=False)["train.epochs"] == 50  # base still applies elsewhere


def test_dvc_command_uses_hydra_syntax():
    assert hydra_value(None) == "null" and hydra_value(True) == "true" and hydra_value(5e-05) == "5e-05"
    assert hydra_value(["recordist", "date"]) == "[recordist,date]"
    command = exp_run_command("phase0_cnn", {"loss.alpha": None, "split.group_by": ["a", "b"]}, queue=True)
    assert command == [
        "dvc",
        "exp",
        "run",
        "-n",
        "phase0_cnn",
        "--queue",
        "-S",
        "loss.alpha=null",
        "-S",
        "split.group_by=[a,b]",
    ]
    assert parse_sets(["split.group_by=[recordist, date]", "loss.alpha=0.25"]) == {
        "split.group_by": ["recordist", "date"],
        "loss.alpha": 0.25,
    }
    # a rerun of a phase of the same name must replace it, not stop at DVC's name conflict
    forced = exp_run_command("phase0_cnn", {}, queue=False, force=True)
    assert forced == ["dvc", "exp", "run", "-n", "phase0_cnn", "--temp", "--force"]


def _exp(name, state, f1, stamp):
    return {
        "revs": [
            {
                "name": name,
                "data": {
                    "timestamp": stamp,
                    "metrics": {
                        "metrics/eval.json": {"data": {"test": {"f1_macro": f1, "accuracy": 0.5}}},
                        "metrics/baselines.json": {"data": {"mfcc_logreg": {"test": {"f1_macro": 0.2}}}},
                    },
                    "params": {"params.yaml": {"data": {"model": {"name": "audio_cnn"}}}},
                },
            }
        ],
        "executor": None if state is None else {"state": state},
        "name": name,
    }


def test_experiments_from_json_skips_unfinished_and_keeps_newest():
    shown = [
        {
            "name": "main",
            "data": {},
            "experiments": [
                _exp("phase0_cnn", "success", 0.30, "2026-01-02"),
                _exp("phase0_cnn", None, 0.10, "2026-01-01"),
                _exp("phase1_sqrt", "running", 0.99, "2026-01-03"),
                _exp("phase1_balanced", "queued", 0.99, "2026-01-03"),
            ],
        }
    ]
    results = experiments_from_json(shown)
    assert set(results) == {"phase0_cnn"}
    assert results["phase0_cnn"]["test.f1_macro"] == 0.30
    assert results["phase0_cnn"]["baselines.mfcc_logreg.test.f1_macro"] == 0.2
    assert results["phase0_cnn"]["params"]["model.name"] == "audio_cnn"


def test_report_puts_study_figures_beside_ours():
    phases = {
        "phase2b_cnnv2_focal": Phase("phase2b_cnnv2_focal", "CNNv2", {}, {}, {"f1_macro": 0.2167}),
        "phase0_cnn": Phase("phase0_cnn", "CNN", {}, {}, {}),
    }
    params = {"model.name": "x", "data.source": "/data/meta.csv", "split.group_by": ["recordist", "date"], "seed": 0}
    results = {"phase2b_cnnv2_focal": {"test.f1_macro": 0.41234, "train.epochs": 12, "params": params}}
    text = render_report(phases, results, "Title")
    assert (
        "Runs: data.source /data/meta.csv; split.group_by [recordist,date]; split.min_recordings null; seed 0" in text
    )
    row = next(line for line in text.splitlines() if line.startswith("| `phase2b_cnnv2_focal`"))
    assert "0.412 (0.217)" in row and "| 12 |" in row
    assert "Not run yet: `phase0_cnn`" in text


def test_seed_table_has_per_seed_rows_means_and_the_gap_to_the_baseline():
    from birdpipe.reports.seeds import render, seed_rows

    def run(f1, lr_f1):
        return {"test.f1_macro": f1, "test.accuracy": 0.5, "test.map": 0.4, "test.f1_rare": 0.2,
                "test.window.f1_macro": f1 - 0.1, "train.seconds": 60.0,
                "baselines.mfcc_logreg.test.f1_macro": lr_f1, "baselines.majority.test.f1_macro": 0.01}  # fmt: skip

    results = {"real_best_s0": run(0.5, 0.3), "real_best_s1": run(0.7, 0.4)}
    table = seed_rows(results, ["best"], [0, 1], "real_")
    assert len(table) == 6  # two baselines and the recipe, per seed
    text = render(table, "T", ["best"], [0, 1], "cmd")
    assert "| **best** | **mean** | **–** | **–** | **0.600 ± 0.100** |" in text  # mean ± spread over the seeds
    assert "| **MFCC stats + logistic regression** | **mean** | **–** | **–** | **0.350 ± 0.050** |" in text
    assert "`best`: mean test F1-macro +0.250 against MFCC stats" in text
    assert "BirdNET" not in text  # no BirdNET rows when no run holds its baselines
    with_birdnet = {k: {**v, "baselines.birdnet_zero_shot.test.f1_macro": 0.55} for k, v in results.items()}
    text = render(seed_rows(with_birdnet, ["best"], [0, 1], "real_"), "T", ["best"], [0, 1], "cmd")
    assert "| **BirdNET zero-shot (no training)** | **mean** | **–** | **–** | **0.550 ± 0.000** |" in text
    assert "+0.050 against BirdNET zero-shot" in text
    with pytest.raises(PipelineError, match="real_best_s2"):
        seed_rows(results, ["best"], [0, 2], "real_")


def test_report_selection_by_prefix_falls_back_to_seed_zero():
    from birdpipe.reports.experiments import select_results

    results = {"real_phase0_cnn": {"a": 1}, "real_phase2b_cnnv2_focal_s0": {"a": 2}, "phase0_cnn": {"a": 3}}
    chosen = select_results(results, "real_")
    assert chosen["phase0_cnn"] == {"a": 1} and chosen["phase2b_cnnv2_focal"] == {"a": 2}
    assert select_results(results)["phase0_cnn"] == {"a": 3}


def test_seed_table_is_spliced_between_the_readme_markers():
    from birdpipe.reports.seeds import README_END, README_START, splice

    readme = f"intro\n{README_START}\nold table\n{README_END}\nafter\n"
    spliced = splice(readme, "| new | table |\n")
    assert spliced == f"intro\n{README_START}\n| new | table |\n{README_END}\nafter\n"
    assert splice(spliced, "| newer |").count(README_START) == 1
    with pytest.raises(PipelineError, match="needs the lines"):
        splice("no markers here", "x")


def test_phases_run_outside_the_workspace_and_data_paths_become_absolute(tmp_path, monkeypatch):
    from birdpipe.reports.phases import _absolute_source

    # run now or queued, a phase runs in a temporary copy: it starts from params.yaml as it stands and
    # leaves the workspace alone (a run in the workspace would hand its params to the next phase)
    assert exp_run_command("a", {}, queue=False)[-1] == "--temp"
    assert exp_run_command("a", {}, queue=True)[-1] == "--queue"
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("data: {source: ../recordings/metadata.csv}\n")
    assert _absolute_source({}) == {"data.source": str((tmp_path / "../recordings/metadata.csv").resolve())}
    assert _absolute_source({"data.source": "/abs/meta.csv"}) == {"data.source": "/abs/meta.csv"}
    Path("params.yaml").write_text("data: {source: synthetic}\n")
    assert _absolute_source({"seed": 1}) == {"seed": 1}


def test_phases_cli_lists_phases_and_prints_dry_run_commands(monkeypatch, capsys):
    import subprocess
    import sys

    from birdpipe.__main__ import main
    from birdpipe.reports import phases as phases_module

    listed = subprocess.run([sys.executable, "-m", "birdpipe", "phases", "list"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    base, phases = load_phases(ROOT / "phases.yaml")
    assert [line.split(":")[0] for line in listed.splitlines() if not line.startswith(" ")] == list(phases)
    assert f"transfer_birdnet_mlp: {phases['transfer_birdnet_mlp'].description}" in listed

    monkeypatch.chdir(ROOT)  # phases.yaml and params.yaml are read from the working directory
    monkeypatch.setattr(phases_module.subprocess, "run", lambda *a, **k: pytest.fail("a dry run ran dvc"))
    argv = ["phases", "run", "transfer_birdnet_mlp", "--dry-run", "--seeds", "0", "1", "--prefix", "x_"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    # a relative data.source in params.yaml would come along, made absolute for the temporary copy
    expected = phases["transfer_birdnet_mlp"].overrides(base, False, phases_module._absolute_source({}))
    for seed, line in zip((0, 1), lines, strict=True):
        words = line.split()
        assert words[:6] == ["dvc", "exp", "run", "-n", f"x_transfer_birdnet_mlp_s{seed}", "--temp"]
        assert words[6::2] == ["-S"] * len(words[7::2])  # every override is an -S pair
        sets = dict(item.split("=", 1) for item in words[7::2])
        assert sets == {**{k: hydra_value(v) for k, v in expected.items()}, "seed": str(seed)}
    assert "model.name=birdnet_mlp" in lines[0] and "--queue" not in lines[0] and "--force" not in lines[0]

    assert main(["phases", "queue", "transfer_birdnet_mlp", "--dry-run", "--force"]) == 0
    assert capsys.readouterr().out.split()[4:7] == ["transfer_birdnet_mlp", "--queue", "--force"]
    assert main(["phases", "validate", "phase0_cnn", "transfer_birdnet_mlp"]) == 0
    assert capsys.readouterr().out.strip() == "2 phases validate against the params schema"
    assert main(["phases", "run", "no_such_phase", "--dry-run"]) == 2
    assert "unknown phase(s) no_such_phase" in capsys.readouterr().err


def test_every_phase_resolves_to_its_pinned_params():
    """A default changed in params.yaml must not change a published phase silently: re-pin on purpose with
    `python -m birdpipe phases pin` (and say why in the commit)."""
    from birdpipe.reports.pins import LOCK_FILE, drift, resolved_phases

    pinned = yaml.safe_load((ROOT / LOCK_FILE).read_text())
    changes = drift(pinned, resolved_phases(ROOT / "phases.yaml", ROOT / "params.yaml"))
    report = "\n".join(f"  {phase}: {'; '.join(keys)}" for phase, keys in changes.items())
    assert not changes, f"phases resolve to other params than pinned in {LOCK_FILE}:\n{report}"


def test_a_changed_default_is_named_with_the_phases_it_moves(tmp_path):
    from birdpipe.reports.pins import drift, resolved_phases

    pinned = resolved_phases(ROOT / "phases.yaml", ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["patience"] = raw["train"]["patience"] + 1  # a default that phases with base: false inherit
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    changes = drift(pinned, resolved_phases(ROOT / "phases.yaml", tmp_path / "params.yaml"))
    assert "defaults" in changes and any(k.startswith("train.patience") for k in changes["defaults"])
    assert "phase0_cnn" not in changes  # the study's base pins its patience
