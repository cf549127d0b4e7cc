"""The study's phases (``phases.yaml``) as named DVC experiments, and the comparison report.

``list`` shows them, ``queue`` puts them in DVC's queue (``dvc exp run --queue -n NAME -S ...``), ``run`` runs
some now, ``report`` renders ``reports/phases.md`` and ``reports/phases_f1.png`` from ``dvc exp show --json``.
Every phase's overrides are validated against the params schema before DVC sees them.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import PARAMS_FILE, apply_overrides, validate_params
from birdpipe.reports.experiments import (
    PHASES_FILE,
    Phase,
    experiments_from_dvc,
    load_phases,
    select_results,
)

REPORT = "reports/phases.md"
DEFAULT_TITLE = "The study's phases on the default synthetic corpus"
FIGURE = "reports/phases_f1.png"
COLUMNS = (  # (report header, our metric key, study key)
    ("val acc", "val.accuracy", "val_accuracy"),
    ("test acc", "test.accuracy", "test_accuracy"),
    ("F1-macro", "test.f1_macro", "f1_macro"),
    ("F1-weighted", "test.f1_weighted", "f1_weighted"),
    ("mAP", "test.map", "map"),
    ("rare F1", "test.f1_rare", "f1_rare"),
    ("best epoch", "train.best_epoch", "best_epoch"),
    ("epochs", "train.epochs", "epochs"),
    ("train s", "train.seconds", "seconds"),
)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` strings (values parsed as YAML, as ``dvc exp run -S`` does) into a dict."""
    result = {}
    for item in items or []:
        if "=" not in item:
            raise PipelineError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        result[key.strip()] = yaml.safe_load(value) if value else None
    return result


def validate_phase(
    phase: Phase,
    base: dict[str, Any],
    offline: bool,
    extra: dict[str, Any] | None = None,
    params_file: str | Path = PARAMS_FILE,
) -> dict[str, Any]:
    """The phase's overrides, after checking that params.yaml with them applied passes the schema."""
    overrides = phase.overrides(base, offline, extra)
    raw = yaml.safe_load(Path(params_file).read_text())
    validate_params(apply_overrides(raw, overrides), origin=f"phase {phase.name}")
    return overrides


def hydra_value(value: Any) -> str:
    """A Python value as ``dvc exp run -S`` (Hydra override grammar) reads it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def exp_run_command(name: str, overrides: dict[str, Any], queue: bool, force: bool = False) -> list[str]:
    """``dvc exp run`` for one phase. Queued or not, it runs in a temporary copy of the workspace (``--temp``
    when run now), so every phase starts from the same params.yaml: a run in the workspace would leave its
    params there for the next phase to inherit (a data source, a seed) and overwrite the workspace's outputs.
    """
    command = ["dvc", "exp", "run", "-n", name, "--queue" if queue else "--temp"]
    if force:  # rerun every stage and replace an experiment of the same name
        command.append("--force")
    for key, value in overrides.items():
        command += ["-S", f"{key}={hydra_value(value)}"]
    return command


def _select(phases: dict[str, Phase], names: list[str]) -> list[Phase]:
    unknown = [n for n in names if n not in phases]
    if unknown:
        raise PipelineError(f"unknown phase(s) {', '.join(unknown)}; known: {', '.join(phases)}")
    return [phases[n] for n in (names or list(phases))]


def _absolute_source(extra: dict[str, Any], params_file: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Experiments run in a temporary copy of the repo: a relative data path (given with --set or standing in
    params.yaml) must become absolute."""
    source = extra.get("data.source")
    if source is None and Path(params_file).exists():
        source = ((yaml.safe_load(Path(params_file).read_text()) or {}).get("data") or {}).get("source")
    if source and source != "synthetic" and not Path(source).expanduser().is_absolute():
        extra = {**extra, "data.source": str(Path(source).expanduser().resolve())}
    return extra


def run_experiments(commands: list[list[str]], runner: Callable[..., Any] = subprocess.run) -> None:
    """Run ``dvc exp run`` commands one after the other; stop at the first that fails."""
    for command in commands:
        done = runner(command)
        if done.returncode != 0:
            raise PipelineError(f"`{' '.join(command[:5])}` failed with exit status {done.returncode}")


# ------------------------------------------------------------------------------------------ report
def _fmt(value: Any, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key.endswith(("best_epoch", "epochs")):
        return str(int(value))
    if key.endswith("seconds"):
        return f"{value:.0f}"
    return f"{value:.3f}"


SETTINGS = (  # params that say what data a report's runs saw: (shown as, params key)
    ("data.source", "data.source"),
    ("split.group_by", "split.group_by"),
    ("split.min_recordings", "split.min_recordings"),
    ("seed", "seed"),
    ("rare = fewer training recordings than", "evaluate.rare_threshold"),
)


def _settings_line(results: dict[str, dict[str, Any]]) -> str:
    """The data settings of the runs (every distinct value), so a report says what it was run on."""
    parts = []
    for shown, key in SETTINGS:
        values = sorted({hydra_value(r.get("params", {}).get(key)) for r in results.values()})
        parts.append(f"{shown} {' / '.join(values)}")
    return "Runs: " + "; ".join(parts) + "."


BASELINE_COLUMNS = ("mfcc_logreg", "birdnet_zero_shot", "birdnet_logreg")  # "–" where a run has none


def render_report(
    phases: dict[str, Phase],
    results: dict[str, dict[str, Any]],
    title: str,
    figure: str | None = None,
    command: str = "python -m birdpipe phases report",
) -> str:
    """Markdown: one row per phase with our figures and the study's beside them."""
    lines = [
        f"# {title}",
        "",
        f"Generated by `{command}` from `dvc exp show --json`; do not edit by hand.",
        "Each cell is ours, with the study's figure (its own data: 89 species, 11,075 recordings) in "
        "brackets where it reported one. Recording-level metrics on the test split unless marked val. "
        "Transformers marked config-built ran with `--offline`: random initialisation at the sizes under "
        "`offline:` in phases.yaml, not the study's pretrained weights.",
        "",
        _settings_line({name: results[name] for name in phases if name in results}),
        "",
    ]
    header = ["phase", *[c[0] for c in COLUMNS], "model", "MFCC-LR F1", "BirdNET zero-shot F1", "BirdNET-LR F1"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, phase in phases.items():
        ours = results.get(name)
        if ours is None:
            continue
        cells = [f"`{name}`"]
        for _, key, study_key in COLUMNS:
            cell = _fmt(ours.get(key), key)
            if study_key in phase.study:
                cell += f" ({_fmt(phase.study[study_key], study_key)})"
            cells.append(cell)
        p = ours.get("params", {})
        model = str(p.get("model.name", "?"))
        if p.get("model.name") in ("audio_vit", "ast"):
            model += " (pretrained)" if p.get("model.pretrained") else " (config-built)"
        cells += [model] + [_fmt(ours.get(f"baselines.{b}.test.f1_macro"), "f1") for b in BASELINE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    missing = [n for n in phases if n not in results]
    lines.append("")
    if missing:
        lines += [f"Not run yet: {', '.join(f'`{n}`' for n in missing)}.", ""]
    lines += ["## What each phase changes", ""]
    for name, phase in phases.items():
        if name in results:
            lines.append(f"- `{name}`: {phase.description}")
    if figure:
        lines += ["", f"![F1-macro per phase]({Path(figure).name})", ""]
    return "\n".join(lines) + "\n"


def f1_figure(phases: dict[str, Phase], results: dict[str, dict[str, Any]], path: str | Path) -> None:
    from birdpipe.evaluation.plots import bar_png

    names = [n for n in phases if n in results]
    series = {
        "ours (test)": [float(results[n].get("test.f1_macro") or 0.0) for n in names],
        "MFCC stats + logistic regression (same split)": [
            results[n].get("baselines.mfcc_logreg.test.f1_macro") for n in names
        ],
        "BirdNET zero-shot (same split)": [results[n].get("baselines.birdnet_zero_shot.test.f1_macro") for n in names],
        "study (its own data)": [phases[n].study.get("f1_macro") for n in names],
    }
    bar_png(names, series, path, "F1-macro per phase", "F1-macro")


# ------------------------------------------------------------------------------------------ CLI
def add_parser(commands: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    parser = commands.add_parser(
        "phases",
        help="the study's phases as named DVC experiments, and their report",
        description=__doc__.splitlines()[0],
    )
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--file", default=PHASES_FILE, help="phases file (default phases.yaml)")
    for action, text in (
        ("list", "list the phases"),
        ("queue", "queue phases as named experiments"),
        ("run", "run phases now, one after the other, each in a temporary copy (the workspace stays as it is)"),
        ("validate", "check every phase"),
    ):
        p = sub.add_parser(action, help=text, parents=[common])
        if action != "list":
            p.add_argument("names", nargs="*", help="phase names (default: all)")
            p.add_argument(
                "--offline",
                action="store_true",
                help="use each phase's `offline` overrides: config-built models instead of hub weights",
            )
            p.add_argument("--set", action="append", metavar="KEY=VALUE", help="an extra override for every phase")
            p.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
            p.add_argument(
                "--force",
                action="store_true",
                help="replace experiments of the same name (dvc exp run --force: every stage reruns)",
            )
            p.add_argument("--prefix", default="", help="prefix for the experiment names (e.g. real_)")
            p.add_argument(
                "--seeds",
                type=int,
                nargs="+",
                metavar="SEED",
                help="one experiment per seed (split and training), named <prefix><phase>_s<seed>",
            )
        p.set_defaults(handler=handler)
    pin = sub.add_parser("pin", help="write every phase's fully resolved params to phases.lock.yaml", parents=[common])
    pin.set_defaults(handler=handler)
    report = sub.add_parser("report", help="render reports/phases.md from the experiments", parents=[common])
    report.add_argument("--out", default=REPORT, help=f"Markdown file (default {REPORT})")
    report.add_argument("--prefix", default="", help="only experiments named <prefix><phase>")
    report.add_argument("--title", default=DEFAULT_TITLE)
    report.set_defaults(handler=handler)
    seeds = sub.add_parser(
        "seeds",
        parents=[common],
        help="per-seed and mean table of some phases and the baselines (e.g. the real-data recipe)",
    )
    seeds.add_argument("names", nargs="+", help="phases to compare")
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    seeds.add_argument("--prefix", default="real_", help="experiments are named <prefix><phase>_s<seed>")
    seeds.add_argument("--out", default="reports/real_recipe.md")
    seeds.add_argument("--title", default="Real-data recipe against the baselines")
    seeds.add_argument("--figure-of", default=None, help="phase whose seed-0 per-species F1 is plotted")
    seeds.add_argument("--readme", type=Path, default=None, help="also put the table between this file's markers")
    seeds.set_defaults(handler=handler)


def main(args: argparse.Namespace) -> int:
    base, phases = load_phases(args.file)
    if args.action == "list":
        for phase in phases.values():
            study = ", ".join(f"{k} {v}" for k, v in phase.study.items()) or "not reported"
            print(
                f"{phase.name}: {phase.description}\n    overrides: {phase.params or '(base only)'}"
                + (f"\n    offline: {phase.offline}" if phase.offline else "")
                + f"\n    study: {study}"
            )
        return 0
    if args.action == "pin":
        from birdpipe.reports.pins import LOCK_FILE, write_pins

        pinned = write_pins(LOCK_FILE, args.file)
        print(f"wrote {LOCK_FILE}: {len(pinned)} phases")
        return 0
    if args.action == "report":
        results = experiments_from_dvc()
        results = select_results(results, args.prefix)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure = out.with_name(out.stem + "_f1.png")
        f1_figure(phases, results, figure)
        command = f"python -m birdpipe phases report --out {args.out}"
        command += f" --prefix {args.prefix}" if args.prefix else ""
        command += f" --title {json.dumps(args.title)}" if args.title != DEFAULT_TITLE else ""
        out.write_text(render_report(phases, results, args.title, str(figure), command))
        print(f"wrote {out} and {figure} ({sum(n in results for n in phases)} of {len(phases)} phases run)")
        return 0
    if args.action == "seeds":
        from birdpipe.reports.seeds import write_seed_report

        write_seed_report(
            phases, args.names, args.seeds, args.prefix, Path(args.out), args.title, args.figure_of, args.readme
        )
        return 0
    extra = _absolute_source(parse_sets(args.set))
    selected = _select(phases, args.names)
    commands = []
    for phase in selected:
        for seed in args.seeds or [None]:
            more = extra if seed is None else {**extra, "seed": seed}
            overrides = validate_phase(phase, base, args.offline, more)
            name = args.prefix + phase.name + ("" if seed is None else f"_s{seed}")
            commands.append(exp_run_command(name, overrides, args.action == "queue", args.force))
    if args.action == "validate":
        print(f"{len(selected)} phases validate against the params schema")
        return 0
    for command in commands:
        print(" ".join(command))
    if not args.dry_run:
        run_experiments(commands)
        if args.action == "run":
            print("the workspace is unchanged: `dvc exp show` lists the runs, `dvc exp apply <name>` brings one in")
    return 0
