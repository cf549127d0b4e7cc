"""What the phase and seed reports share: the phases of ``phases.yaml`` and the results of DVC experiments.

:mod:`birdpipe.reports.phases` (list, queue, run, report) and :mod:`birdpipe.reports.seeds` (per-seed tables)
both read these; neither imports the other's module for them.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from birdpipe.common.errors import PipelineError

PHASES_FILE = "phases.yaml"


@dataclass(frozen=True)
class Phase:
    name: str
    description: str
    params: dict[str, Any]
    offline: dict[str, Any]
    study: dict[str, float]
    use_base: bool = True  # `base: false`: params.yaml as it stands plus the phase's own params

    def overrides(self, base: dict[str, Any], offline: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        merged = {**(base if self.use_base else {}), **self.params}
        if offline:
            merged.update(self.offline)
        merged.update(extra or {})
        return merged


def load_phases(path: str | Path = PHASES_FILE) -> tuple[dict[str, Any], dict[str, Phase]]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path} not found (run from the project root)")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - {"base", "phases"}
    if unknown:
        raise PipelineError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: base, phases")
    phases = {}
    for name, entry in (raw.get("phases") or {}).items():
        extra = set(entry) - {"description", "params", "offline", "study", "base"}
        if extra:
            raise PipelineError(f"{path}: phase {name} has unknown keys {sorted(extra)}")
        phases[name] = Phase(
            name,
            entry.get("description", ""),
            entry.get("params") or {},
            entry.get("offline") or {},
            entry.get("study") or {},
            bool(entry.get("base", True)),
        )
    return raw.get("base") or {}, phases


# ------------------------------------------------------------------------------------- experiments
def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def experiments_from_dvc(cwd: str | Path = ".") -> dict[str, dict[str, Any]]:
    """Experiment name -> flat metrics (eval, train, baselines) from ``dvc exp show --json``."""
    done = subprocess.run(["dvc", "exp", "show", "--json", "-A"], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"dvc exp show failed: {done.stderr.strip().splitlines()[-1:]}")
    return experiments_from_json(json.loads(done.stdout or "[]"))


def _metrics_of(data: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for file, content in (data.get("metrics") or {}).items():
        values = (content or {}).get("data") or {}
        if file.endswith("baselines.json"):
            flat.update(flatten(values, "baselines."))
        elif not file.startswith("dvclive"):
            flat.update(flatten(values))
    params = {}
    for content in (data.get("params") or {}).values():
        params.update(flatten((content or {}).get("data") or {}))
    flat["params"] = params
    return flat


def experiments_from_json(shown: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Name -> metrics for every experiment (and named commit) in ``dvc exp show --json`` output.

    Queued, running and failed experiments are left out; when a name occurs more than once, the newest
    run (by timestamp) wins.
    """
    found: dict[str, tuple[str, dict[str, Any]]] = {}

    def visit(entry: dict[str, Any]) -> None:
        data = entry.get("data") or {}
        name = entry.get("name") or data.get("name")
        if name and data.get("metrics"):
            stamp = data.get("timestamp") or ""
            if name not in found or stamp >= found[name][0]:
                found[name] = (stamp, {**_metrics_of(data), "rev": entry.get("rev")})
        for exp in entry.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            if state not in (None, "success"):  # queued or running: its "metrics" are its baseline's
                continue
            for rev in exp.get("revs") or []:
                visit(rev)

    for entry in shown:
        visit(entry)
    return {name: metrics for name, (_, metrics) in found.items()}


def select_results(results: dict[str, dict[str, Any]], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Experiments named ``<prefix><phase>``, or ``<prefix><phase>_s0`` (seed 0 of a ``--seeds`` run)."""
    chosen = {k.removeprefix(prefix): v for k, v in results.items() if k.startswith(prefix)}
    for name in list(chosen):
        base = name.removesuffix("_s0")
        if base != name and base not in chosen:
            chosen[base] = chosen[name]
    return chosen
