"""soundscapes: soundscapes.source + data/split.csv -> data/soundscapes/ (files, events, segment truth, features)."""

from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import read_table
from birdpipe.common.params import load_params
from birdpipe.soundscapes.prepare import prepare_soundscapes


def main() -> None:
    params = load_params()
    report = prepare_soundscapes(params, read_table("data/split.csv"), read_table("data/manifest.csv"),
                                 "data/soundscapes")  # fmt: skip
    if report["source"] == "none":
        print("soundscapes: soundscapes.source is none: no soundscape metrics")
        return
    bird_free = report["bird_free_segments"]
    print(f"soundscapes ({report['source']}): {report['files']} files, {report['hours']:.2f} h, "
          f"{report['events']} events, segments {report['segments']} of which bird-free {bird_free}")  # fmt: skip
    for line in report["problems"]:
        print(f"  {line}")


if __name__ == "__main__":
    run_stage("soundscapes", main)
