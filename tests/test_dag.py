"""The DVC DAG keeps its promise: `dvc status` says "up to date" only when outputs match the code, params and data.

Deps granularity: each stage lists, one by one, the project module files its `cmd` imports (transitively, imports
inside functions included, read with `ast` by birdpipe/common/codedeps.py at test time), and a sub-package as its folder
(birdpipe/models: one unit whose __init__ loads its members lazily, and where new models land). Files rather than
the whole `birdpipe/` folder, so that an edit reruns exactly the stages that run the edited code: metrics.py reruns
train, evaluate and baselines; predict.py or phases.py rerun nothing. The test names each stage and the files it
misses, and fails on a dep that names a project .py file or package folder that does not exist. Empty files
(birdpipe/__init__.py, stages/__init__.py) run nothing and are not required (DVC warns "is empty" on every run of a
stage that lists one); the day one gets code, this test asks for it.

The data source: ingest depends on `${data.source}` (templated from params.yaml), so DVC hashes a real folder or
metadata CSV outside the repository like any dependency, and `dvc status` lists ingest when a file there is
added, removed or changed (contents, not modification times); `synthetic` resolves to the placeholder file
./synthetic, so the default corpus keeps its no-op rerun.
"""

from __future__ import annotations

import shutil
from contextlib import chdir
from pathlib import Path
from typing import Any

import pytest
import yaml

from birdpipe.common.codedeps import ROOT, cmd_modules, module_closure

DVC_YAML = ROOT / "dvc.yaml"
PROJECT_PACKAGES = ("birdpipe", "stages")


def _stages() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(DVC_YAML.read_text())["stages"]


def _covered(file: str, deps: list[str]) -> bool:
    return any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)


def missing_code_deps(stages: dict[str, dict[str, Any]], root: Path = ROOT) -> dict[str, list[str]]:
    """Per stage, the project modules its cmd imports (at any depth) that its deps do not cover."""
    missing = {}
    for name, stage in stages.items():
        deps = [str(Path(d).as_posix()).removeprefix("./") for d in stage.get("deps", [])]
        code = [p for p in module_closure(cmd_modules(stage["cmd"]), root) if p.stat().st_size]
        files = [p.relative_to(root).as_posix() for p in code]
        if lacking := [f for f in files if not _covered(f, deps)]:
            missing[name] = lacking
    return missing


def test_every_stage_runs_a_project_module() -> None:
    assert all(cmd_modules(stage["cmd"]) for stage in _stages().values())


def test_stage_deps_cover_the_code_each_stage_imports() -> None:
    missing = missing_code_deps(_stages())
    report = "\n".join(f"  {stage}: {', '.join(files)}" for stage, files in missing.items())
    assert not missing, f"dvc.yaml deps miss project modules the stage's cmd imports; add them:\n{report}"


def test_code_deps_exist() -> None:
    stale = {
        name: bad
        for name, stage in _stages().items()
        if (
            bad := [
                dep
                for dep in stage.get("deps", [])
                if (dep.endswith(".py") or dep.split("/")[0] in PROJECT_PACKAGES) and not (ROOT / dep).exists()
            ]
        )
    }
    assert not stale, f"dvc.yaml deps name project code that does not exist: {stale}"


def test_import_closure_follows_lazy_imports_and_parent_packages() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in module_closure(["stages.train"])}
    # hf: `from birdpipe.models import hf` inside build_model; weights: inside losses.build_loss
    expected = {"birdpipe/models/hf.py", "birdpipe/training/weights.py", "birdpipe/__init__.py", "stages/__init__.py"}
    assert expected <= files
    assert "birdpipe/predict.py" not in files


def test_missing_deps_are_reported_by_stage(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("from . import c\n")
    (tmp_path / "pkg" / "c.py").write_text("import yaml\n")
    stages = {"s": {"cmd": "python -m pkg.a", "deps": ["pkg/a.py", "pkg/__init__.py"]}}
    assert missing_code_deps(stages, tmp_path) == {"s": ["pkg/b.py", "pkg/c.py"]}


# --------------------------------------------------------------------------------- the external data source
def _toy_repo(repo: Path, source: str) -> None:
    """A repository whose ingest stage has the real stage's templated deps and params, and a cheap command."""
    from dvc.repo import Repo

    real = _stages()["ingest"]
    templated = [d for d in real["deps"] if "${" in d]
    assert templated, "the ingest stage has no dependency templated from params (e.g. ${data.source})"
    stage = {"cmd": "echo ingested > out.txt", "deps": templated, "params": real["params"], "outs": ["out.txt"]}
    repo.mkdir()
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": stage}}))
    _set_source(repo, source)
    placeholder = ROOT / "synthetic"  # `${data.source}` with the default value: without it `dvc repro` fails
    assert placeholder.is_file(), "./synthetic, the ingest dependency when data.source is 'synthetic', is missing"
    shutil.copy(placeholder, repo / "synthetic")
    Repo.init(str(repo), no_scm=True).close()
    site_cache = repo.parent / "site_cache"  # DVC's state database, out of the user's cache folder
    config = f"[core]\n    no_scm = True\n    analytics = false\n    site_cache_dir = {site_cache}\n"
    (repo / ".dvc" / "config").write_text(config)


def _set_source(repo: Path, source: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = source
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def _status(repo: Path) -> list[str]:
    from dvc.repo import Repo

    with chdir(repo), Repo() as dvc:
        return sorted(dvc.status())


def _repro(repo: Path) -> list[str]:
    from dvc.repo import Repo

    with chdir(repo), Repo() as dvc:  # the API, as the CLI, works from the repository's root
        return [stage.addressing for stage in dvc.reproduce()]


def test_external_source_changes_rerun_ingest_and_synthetic_stays_a_no_op(tmp_path: Path) -> None:
    ext = tmp_path / "recordings"
    (ext / "sp_a").mkdir(parents=True)
    (ext / "sp_a" / "1.wav").write_bytes(b"RIFF one")
    (ext / "metadata.csv").write_text("path,label\nsp_a/1.wav,sp_a\n")
    repo = tmp_path / "repo"
    _toy_repo(repo, "synthetic")
    assert _repro(repo) == ["ingest"]
    assert _status(repo) == [] and _repro(repo) == []  # the default corpus: up to date, nothing reruns

    _set_source(repo, "../recordings")  # a folder outside the repository, relative as in the README
    assert _repro(repo) == ["ingest"] and _status(repo) == []
    for change in (
        lambda: (ext / "sp_a" / "1.wav").write_bytes(b"RIFF one, re-recorded"),  # replaced
        lambda: (ext / "sp_a" / "2.wav").write_bytes(b"RIFF two"),  # added
        lambda: (ext / "sp_a" / "1.wav").unlink(),  # removed
        lambda: (ext / "sp_a" / "2.wav").rename(ext / "sp_a" / "3.wav"),  # renamed
    ):
        change()
        assert _status(repo) == ["ingest"]
        assert _repro(repo) == ["ingest"] and _status(repo) == []
    (ext / "sp_a" / "3.wav").touch()  # a new modification time alone: same recordings, same manifest
    assert _status(repo) == []

    # a CSV source given as its folder (ingest reads the folder's metadata.csv): a recording's new bytes rerun ingest
    (ext / "sp_a" / "3.wav").write_bytes(b"RIFF three, re-encoded")
    assert _status(repo) == ["ingest"]
    assert _repro(repo) == ["ingest"] and _status(repo) == []

    _set_source(repo, str(ext / "metadata.csv"))  # a metadata CSV, absolute: only the table is tracked (ingest warns)
    assert _repro(repo) == ["ingest"] and _status(repo) == []
    (ext / "metadata.csv").write_text("path,label\nsp_a/3.wav,sp_a\n")
    assert _status(repo) == ["ingest"]


@pytest.mark.parametrize("stage", ["train", "evaluate", "baselines"])
def test_metrics_code_is_a_dep_of_the_stages_that_report_metrics(stage: str) -> None:
    assert "birdpipe/evaluation/metrics.py" in _stages()[stage]["deps"]


# ------------------------------------------------------------------------------------ the training fingerprint
def test_training_fingerprint_changes_with_the_code_training_imports(tmp_path: Path, monkeypatch) -> None:
    from birdpipe.common import codedeps
    from birdpipe.common.params import validate_params
    from birdpipe.training.resume import training_fingerprint

    for package in PROJECT_PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codedeps, "ROOT", tmp_path)
    params = validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    inputs = [tmp_path / "inputs.json"]
    inputs[0].write_text("{}")
    before = training_fingerprint(params, inputs)
    assert training_fingerprint(params, inputs) == before

    (tmp_path / "birdpipe" / "predict.py").write_text("# not imported by training\n")
    assert training_fingerprint(params, inputs) == before
    for module in ("birdpipe/training/losses.py", "birdpipe/models/hf.py", "stages/train.py"):  # hf is imported lazily
        path = tmp_path / module
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        assert training_fingerprint(params, inputs) != before, module
        path.write_bytes(original)
        assert training_fingerprint(params, inputs) == before
    inputs[0].write_text('{"changed": 1}')
    assert training_fingerprint(params, inputs) != before


def test_training_fingerprint_reads_the_train_stage_code_deps() -> None:
    from birdpipe.common.codedeps import code_digest
    from birdpipe.training.resume import TRAINING_CODE

    code = [f for f in code_digest(TRAINING_CODE) if (ROOT / f).stat().st_size]
    assert "birdpipe/training/loop.py" in code and "birdpipe/models/hf.py" in code
    assert [f for f in code if not _covered(f, _stages()["train"]["deps"])] == []
