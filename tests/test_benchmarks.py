import time

from benchmarks.run import timed_steps


def test_timed_steps_stops_after_the_time_and_excludes_the_warmup():
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.01)

    steps, wall = timed_steps(step, seconds=0.1, warmup=3)
    assert len(calls) == steps + 3  # the warm-up calls are run but not counted
    assert 0.1 <= wall < 1.0 and 5 <= steps <= 20
