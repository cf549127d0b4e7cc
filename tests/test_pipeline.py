"""End to end: `dvc repro` of the whole DAG in a temporary git repo on a tiny synthetic config, then the
experiment commands a researcher uses (`dvc exp run -S`, `dvc exp show`, `dvc metrics diff`, `dvc plots diff`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {
    "data": {"synthetic": {"species": 4, "max_recordings": 8, "imbalance": 4.0, "min_seconds": 2.0,
                           "median_seconds": 3.0, "max_seconds": 5.0, "similar_pairs": 1, "recordists": 3}},
    "features": {"max_seconds": 5.0, "workers": 2},
    "train": {"epochs": 2, "batch_size": 8, "threads": 2},  # the default recipe otherwise (BirdNET transfer)
    "evaluate": {"rare_threshold": 4},
}  # fmt: skip


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def run(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("birdpipe", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", "synthetic"):
        shutil.copy(ROOT / name, root / name)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")
    run("git", "add", "-A", cwd=root)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project", cwd=root)
    return root


def test_dvc_repro_runs_the_whole_dag(project):
    out = run("dvc", "repro", cwd=project)
    for stage in ("ingest", "split", "soundscapes", "features", "weights", "baselines", "train", "fuse", "evaluate"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    for name in ("accuracy", "f1_macro", "f1_weighted", "map", "top5_accuracy", "f1_rare", "f1_common"):
        assert 0.0 <= metrics["test"][name] <= 1.0 or metrics["test"][name] is None
    assert "window" in metrics["test"] and "val" in metrics
    baselines = json.loads((project / "metrics" / "baselines.json").read_text())
    assert set(baselines) >= {"majority", "mfcc_logreg"}
    train = json.loads((project / "metrics" / "train.json").read_text())
    assert train["train"]["epochs"] == 2 and train["model"]["params"] > 0
    assert "seconds" not in train["train"]  # wall clock stays out of dvc.lock's outputs
    assert json.loads((project / "metrics" / "train_time.json").read_text())["train"]["seconds"] > 0
    for path in ("models/network/bundle.json", "models/network/model.pt", "models/fusion/fusion.json",
                 "metrics/soundscapes.json", "plots/soundscape_pr.png", "data/soundscapes/truth.npy",
                 "plots/confusion.csv", "plots/confusion_matrix.png",
                 "plots/f1_vs_train_count.png", "plots/training_curves.png", "metrics/per_class.csv",
                 "data/ingest_report.json", "data/class_weights.json", "data/feature_stats.json"):  # fmt: skip
        assert (project / path).exists(), path
    run("git", "add", "-A", cwd=project)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline run", cwd=project)
    assert "up to date" in run("dvc", "repro", cwd=project)


def test_a_dvc_remote_carries_caches_and_models_to_a_second_clone_where_repro_is_a_no_op(project, tmp_path):
    remote = tmp_path / "remote"  # a local folder; an NFS mount or s3:// (requirements-remote.txt) works alike
    run("dvc", "remote", "add", "-d", "shared", str(remote), cwd=project)
    run("git", "add", ".dvc/config", cwd=project)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "shared remote", cwd=project)
    pushed = run("dvc", "push", cwd=project)
    assert "pushed" in pushed and any(remote.rglob("*"))

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    assert not (clone / "models" / "network" / "model.pt").exists() and not (clone / "data" / "features").exists()
    run("dvc", "pull", cwd=clone)
    for path in (
        "models/network/model.pt",
        "models/network/bundle.json",
        "data/features/frames.npy",
        "data/manifest.csv",
    ):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    out = run("dvc", "repro", cwd=clone)
    assert "Running stage" not in out and "up to date" in out  # nothing recomputed: the caches came from the remote
    assert "up to date" in run("dvc", "status", cwd=clone)


def test_a_loss_experiment_reruns_only_train_and_evaluate(project):
    out = run("dvc", "exp", "run", "-n", "gamma3", "-S", "loss.name=focal_bce", "-S", "loss.gamma=3", cwd=project)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    for stage in ("ingest", "split", "features", "weights", "baselines"):
        assert f"Running stage '{stage}'" not in out
    shown = json.loads(run("dvc", "exp", "show", "--json", cwd=project))
    text = json.dumps(shown)
    assert "gamma3" in text and "f1_macro" in text
    diff = run("dvc", "metrics", "diff", "--all", "HEAD", "gamma3", cwd=project)
    for name in ("test.f1_macro", "test.accuracy", "test.map", "train.best_epoch"):
        assert name in diff


def test_a_new_split_seed_extracts_no_features_and_a_fusion_change_retrains_nothing(project):
    """Features are computed per recording before the split; fusion is its own stage with its own params."""
    out = run("dvc", "exp", "run", "-n", "split1", "-S", "split.seed=1", cwd=project)
    assert "Running stage 'split'" in out and "Running stage 'train'" in out
    assert "Running stage 'features'" not in out and "Running stage 'ingest'" not in out
    out = run("dvc", "exp", "run", "-n", "fusion1", "-S", "model.fusion.weights=[0.0,0.4,1.0]", cwd=project)
    assert "Running stage 'fuse'" in out or "Stage 'fuse' is cached" in out, out
    assert "Running stage 'train'" not in out and "Running stage 'features'" not in out


def test_plots_diff_renders_the_declared_plots(project):
    out = run("dvc", "plots", "diff", "HEAD", "gamma3", "--json", cwd=project)
    rendered = json.loads(out)["data"]
    names = " ".join(rendered)
    for title in ("Confusion matrix", "Per-species F1", "Precision-recall", "Validation F1-macro", "Training loss"):
        assert title in names
    confusion = next(v for k, v in rendered.items() if k.startswith("Confusion matrix"))[0]
    revisions = {row["rev"] for row in confusion["content"]["data"]["values"]}
    assert revisions == {"HEAD", "gamma3"}  # both experiments drawn side by side


def test_a_typo_in_a_param_stops_the_stage_with_its_name(project):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["dvc", "exp", "run", "-S", "loss.gama=3"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0 and "loss.gama" in done.stderr  # DVC refuses a key not in params.yaml
    # forced in with `+` (or written into params.yaml), the schema stops the first stage that loads it
    done = subprocess.run(["dvc", "exp", "run", "-S", "+loss.gama=3"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0
    assert "loss.gama: unknown key" in done.stdout + done.stderr


def test_two_queued_experiments_run_side_by_side_give_the_metrics_of_the_two_run_in_turn(project):
    """`dvc exp run --queue` twice and `dvc queue start -j 2`: each runs in a copy of its own (its own checkpoints
    and temporary files), so running side by side changes nothing against running one after the other."""
    import time

    from birdpipe.reports.experiments import experiments_from_json

    run("git", "checkout", "--", "params.yaml", "dvc.lock", cwd=project)  # the earlier tests' workspace edits
    recipes = {"a": "train.lr=0.002", "b": "train.lr=0.0005"}
    for name, setting in recipes.items():
        run("dvc", "exp", "run", "--queue", "-n", f"queued_{name}", "-S", setting, cwd=project)
    run("dvc", "queue", "start", "-j", "2", cwd=project)
    deadline = time.monotonic() + 480
    while any(word in run("dvc", "queue", "status", cwd=project) for word in ("Queued", "Running")):
        assert time.monotonic() < deadline, run("dvc", "queue", "status", cwd=project)
        time.sleep(2)
    status = run("dvc", "queue", "status", cwd=project)
    assert "Failed" not in status, status  # `dvc queue logs <name>` tells why
    shutil.rmtree(project / ".dvc" / "cache" / "runs", ignore_errors=True)  # no run-cache: really train again
    for name, setting in recipes.items():
        out = run("dvc", "exp", "run", "--temp", "-n", f"in_turn_{name}", "-S", setting, cwd=project)
        assert "Running stage 'train'" in out
    results = experiments_from_json(json.loads(run("dvc", "exp", "show", "--json", cwd=project)))

    def scores(name: str) -> dict:
        return {k: v for k, v in results[name].items() if k != "rev" and not k.endswith("seconds")}

    for name in recipes:
        assert scores(f"queued_{name}") == scores(f"in_turn_{name}"), name
    assert "test.map" in scores("queued_a") and scores("queued_a") != scores("queued_b")  # the recipes did differ
