"""Command line: ``python -m birdpipe <command>`` (predict, params, phases, recipe).

Run ``python -m birdpipe <command> --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from birdpipe.common.errors import PipelineError


def _predict(args: argparse.Namespace) -> int:
    import torch

    from birdpipe.bundle import load_bundle
    from birdpipe.predict import PredictOptions, Predictor, find_audio
    from birdpipe.predict_outputs import write_outputs

    if args.device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for but no CUDA device is available")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = PredictOptions(args.window, args.hop, args.top_k, args.min_confidence, args.batch_size, args.max_seconds,
                             args.scores, args.threads)  # fmt: skip
    options.validate()
    files = find_audio(args.paths)
    if not files:
        raise PipelineError(f"no audio files ({', '.join(('wav', 'flac', 'ogg', 'mp3'))}) found in {args.paths}")
    bundle = load_bundle(args.model, device)
    predictor = Predictor(bundle, options, device)
    run = predictor.run(files, progress=not args.quiet)
    root = Path(args.paths[0]).resolve() if len(args.paths) == 1 and Path(args.paths[0]).is_dir() else None
    written = write_outputs(run, bundle, options, Path(args.out), args.format, root)
    speed = run.audio_seconds / run.seconds if run.seconds > 0 else float("inf")
    print(
        f"predict: {len(run.recordings)} recordings ({run.audio_seconds / 60:.1f} min of audio) in "
        f"{run.seconds:.1f} s ({speed:.0f}x real time); {len(run.skipped)} skipped"
    )
    for path, reason in run.skipped:
        print(f"  skipped {path}: {reason}")
    print("  " + ", ".join(f"{k}: {v}" for k, v in written.items()))
    return 0 if run.recordings else 1


def _params(args: argparse.Namespace) -> int:
    import yaml

    from birdpipe.common.params import PARAMS_FILE, load_params, schema_lines

    if args.check:
        load_params(args.check)  # also warns (stderr) of every key whose value cannot matter
        print(f"{args.check}: valid")
        return 0
    values = None
    if Path(PARAMS_FILE).exists():
        load_params()  # validates, and warns of keys whose value cannot matter
        values = yaml.safe_load(Path(PARAMS_FILE).read_text())
    print(f"# key: type = value in {PARAMS_FILE if values is not None else 'the schema'} (default where it differs)")
    print("\n".join(schema_lines(values=values)))
    return 0


def _phases(args: argparse.Namespace) -> int:
    from birdpipe.reports import phases

    return phases.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m birdpipe", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict",
        help="label new recordings with a trained model",
        description="Species, time span and confidence for every window of new recordings (0, 1 or several "
        "detections per window, at the model's per-species thresholds), a per-recording prediction aggregated as "
        "`evaluate` does, as CSV and/or Raven selection tables; --scores adds every window's scores.",
    )
    predict.add_argument("paths", nargs="+", help="audio files or folders (searched recursively; wav flac ogg mp3)")
    predict.add_argument("--model", default="models", help="trained model folder (default: models/)")
    predict.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    predict.add_argument(
        "--window", type=float, default=None, help="window length in seconds (default: the model's training window)"
    )
    predict.add_argument(
        "--hop",
        type=float,
        default=None,
        help="seconds between window starts; smaller than --window means overlap "
        "(default: the model's evaluation hop, so results match `evaluate`)",
    )
    predict.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="at most this many detections per window (default: every species at or above its threshold)",
    )
    predict.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="one detection threshold for every species (default: the model's per-species thresholds, chosen on "
        "validation soundscapes for soundscapes.target_precision; 0.1 for a model without them)",
    )
    predict.add_argument(
        "--scores", action="store_true", help="also write scores.csv: every window's score in [0, 1] for every species"
    )
    predict.add_argument("--batch-size", type=int, default=64, help="windows per model call (default 64)")
    predict.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="analyse only the first seconds of each recording (default: all of it)",
    )
    predict.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto uses CUDA when present"
    )
    predict.add_argument("--threads", type=int, default=0, help="CPU threads for the model and BirdNET (0: every core)")
    predict.add_argument(
        "--format",
        choices=("csv", "raven", "both"),
        default="both",
        help="detections.csv, Raven <recording>.selections.txt tables, or both; summary.csv is always written",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(handler=_predict)

    params = commands.add_parser(
        "params",
        help="list every params.yaml key with its type and default, and warn of keys whose value cannot matter",
    )
    params.add_argument("--check", metavar="YAML", help="validate a params file (and warn of inert keys) instead")
    params.set_defaults(handler=_params)

    from birdpipe.reports.phases import add_parser as add_phases

    add_phases(commands, _phases)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
