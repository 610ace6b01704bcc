"""Engine counters: how one worker's account is taken and how workers' accounts add up."""
from folioscan.workers.engines import counters
from folioscan.workers.engines.registry import TesseractOptions, build_engine


def test_since_takes_differences_of_totals_and_lows_as_they_stand():
    before = {"engine_loads": 3, "oom_backoffs": 1}
    after = {"engine_loads": 5, "oom_backoffs": 1, "vlm_batch_size": 4}
    assert counters.since(before, after) == {"engine_loads": 2, "oom_backoffs": 0, "vlm_batch_size": 4}


def test_combine_sums_totals_and_keeps_the_smallest_low():
    accounts = [{"engine_loads": 1, "oom_backoffs": 2, "vlm_batch_size": 4},
                {"engine_loads": 2, "oom_backoffs": 1, "vlm_batch_size": 2},
                {"engine_loads": 1, "oom_backoffs": 0}]  # a worker that never backed off
    assert counters.combine(accounts) == {"engine_loads": 4, "oom_backoffs": 3, "vlm_batch_size": 2}


def test_a_low_nobody_set_stays_absent_and_totals_are_zero_without_accounts():
    assert counters.combine([{"engine_loads": 1, "oom_backoffs": 0}, {}]) == {"engine_loads": 1, "oom_backoffs": 0}
    assert counters.combine([]) == {"engine_loads": 0, "oom_backoffs": 0}


def test_a_low_keeps_the_smallest_value_until_reset():
    counters.reset_lows()
    try:
        counters.low("vlm_batch_size", 4)
        counters.low("vlm_batch_size", 8)
        assert counters.snapshot()["vlm_batch_size"] == 4
    finally:
        counters.reset_lows()
    assert "vlm_batch_size" not in counters.snapshot()


def test_building_an_engine_counts_one_load():
    before = counters.snapshot()
    build_engine(TesseractOptions())
    assert counters.since(before, counters.snapshot()) == {"engine_loads": 1, "oom_backoffs": 0}
