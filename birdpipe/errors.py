"""The project's error type for problems the user can fix, and the stage runner that reports them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with the user's params, data or files; its message says what to do, no traceback needed."""


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main: a PipelineError becomes one clear message and exit status 1."""
    started = time.perf_counter()
    try:
        main()
    except PipelineError as exc:
        print(f"error in stage {name}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"stage {name} interrupted; its outputs were left as they were", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"stage {name} done in {time.perf_counter() - started:.1f} s")
