"""When a dead worker is restarted and when the supervisor gives up (RestartPolicy; times are passed in)."""

from __future__ import annotations

from pilot.workers.supervisor import RestartPolicy, describe_exit


def test_any_exit_before_the_server_came_up_is_fatal() -> None:
    policy = RestartPolicy()
    assert policy.on_exit(1.0, server_up=False) is None
    policy.on_ready(2.0)
    assert policy.on_exit(3.0, server_up=False) is None


def test_crashes_back_off_exponentially_up_to_the_cap() -> None:
    policy = RestartPolicy(base_delay=0.1, max_delay=1.0, stable_after=30.0)
    delays = []
    now = 0.0
    for _ in range(6):
        policy.on_ready(now)
        now += 1.0  # crashes soon after becoming ready
        delays.append(policy.on_exit(now, server_up=True))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_worker_that_stayed_up_restarts_at_the_base_delay_again() -> None:
    policy = RestartPolicy(base_delay=0.1, max_delay=10.0, stable_after=30.0)
    for now in (0.0, 1.0, 2.0):
        policy.on_ready(now)
        policy.on_exit(now + 0.5, server_up=True)
    policy.on_ready(10.0)
    assert policy.on_exit(40.0, server_up=True) == 0.1


def test_repeated_start_failures_give_up_and_a_ready_run_resets_the_count() -> None:
    policy = RestartPolicy(max_start_failures=3)
    assert policy.on_exit(0.0, server_up=True) is not None
    assert policy.on_exit(1.0, server_up=True) is not None
    policy.on_ready(2.0)  # became ready: the failures before no longer count
    assert policy.on_exit(3.0, server_up=True) is not None
    assert policy.on_exit(4.0, server_up=True) is not None
    assert policy.on_exit(5.0, server_up=True) is not None
    assert policy.on_exit(6.0, server_up=True) is None


def test_exit_descriptions_name_the_signal() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"
