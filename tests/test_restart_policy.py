"""The supervisor's restart backoff, on simulated time."""

from mwtui.engine.supervisor import RestartPolicy


def test_backoff_doubles_then_gives_up() -> None:
    p = RestartPolicy(base_s=0.25, cap_s=15, stable_s=10, max_failures=4)
    assert p.on_exit(ran_for_s=0.1, was_ready=False) == 0.25
    assert p.on_exit(ran_for_s=0.1, was_ready=False) == 0.5
    assert p.on_exit(ran_for_s=0.1, was_ready=False) == 1.0
    assert p.on_exit(ran_for_s=0.1, was_ready=False) is None  # failed: the traceback stays on screen


def test_a_stable_run_resets_the_backoff() -> None:
    p = RestartPolicy(base_s=0.25, stable_s=10, max_failures=4)
    for _ in range(3):
        p.on_exit(ran_for_s=0.1, was_ready=True)
    assert p.on_exit(ran_for_s=60, was_ready=True) == 0.25


def test_a_short_ready_run_does_not_reset() -> None:
    p = RestartPolicy(base_s=1, stable_s=10, max_failures=10)
    p.on_exit(ran_for_s=1, was_ready=True)
    assert p.on_exit(ran_for_s=1, was_ready=True) == 2


def test_cap() -> None:
    p = RestartPolicy(base_s=1, cap_s=3, max_failures=100)
    delays = [p.on_exit(0, False) for _ in range(6)]
    assert max(d for d in delays if d is not None) == 3
