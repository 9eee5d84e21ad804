"""The demo sizes itself to the machine: the plan shrinks on a slower machine and says its expected time."""

import logging

import pytest

from diffusionct.demo import BUDGET_SECONDS, FULL, QUICK, REFERENCE_GFLOPS, choose_plan, expected_seconds, plan_for_budget


def test_reference_machine_runs_the_full_plan():
    assert plan_for_budget(FULL, REFERENCE_GFLOPS, BUDGET_SECONDS["full"]) == FULL
    assert plan_for_budget(QUICK, REFERENCE_GFLOPS, BUDGET_SECONDS["quick"]) == QUICK


@pytest.mark.parametrize("slowdown", [2.0, 3.0, 4.0])
def test_slower_machine_gets_a_smaller_plan_that_fits(slowdown):
    gflops = REFERENCE_GFLOPS / slowdown
    plan = plan_for_budget(FULL, gflops, BUDGET_SECONDS["full"])
    assert plan != FULL and plan.test_slices < FULL.test_slices and plan.cnn_steps < FULL.cnn_steps
    assert sum(expected_seconds(plan, gflops).values()) <= BUDGET_SECONDS["full"]
    assert sum(expected_seconds(FULL, gflops).values()) > BUDGET_SECONDS["full"]


def test_expected_time_scales_with_machine_speed_and_work():
    fast, slow = expected_seconds(FULL, 400.0), expected_seconds(FULL, 200.0)
    assert all(slow[stage] == pytest.approx(2 * fast[stage]) for stage in fast)
    assert sum(expected_seconds(QUICK, 400.0).values()) < sum(fast.values()) / 5


def test_hopeless_machine_gets_the_smallest_rung():
    plan = plan_for_budget(FULL, 1.0, BUDGET_SECONDS["full"])
    assert (plan.test_cases, plan.test_slices) == (2, 2)


def test_choose_plan_says_machine_plan_and_expected_time(caplog):
    with caplog.at_level(logging.INFO, logger="diffusionct.demo"):
        plan = choose_plan(quick=True, budget_s=1e6, device="cpu")
    assert plan == QUICK
    text = caplog.text
    assert "GFLOP/s" in text and "expected time:" in text and "simulate" in text
