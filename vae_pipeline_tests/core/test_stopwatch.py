import time

import pytest

from vae_pipeline.core.stopwatch import Stopwatch


def test_each_stage_is_timed_and_a_repeated_stage_adds_up() -> None:
    watch = Stopwatch()
    with watch("a"):
        time.sleep(0.02)
    for _ in range(2):
        with watch("b"):
            time.sleep(0.01)
    assert set(watch.seconds) == {"a", "b"}
    assert watch.seconds["a"] >= 0.02 and watch.seconds["b"] >= 0.02
    assert watch.total() == pytest.approx(watch.seconds["a"] + watch.seconds["b"])


def test_a_stage_that_raises_is_still_timed() -> None:
    watch = Stopwatch()
    with pytest.raises(RuntimeError), watch("fails"):
        raise RuntimeError("boom")
    assert "fails" in watch.seconds
