"""Self-prefix guide: cuts never state the answer, only samples with a stored success are
guided, guided results never move the unguided EMA, state round-trips exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.self_prefix import (
    SelfPrefixGuide,
    cut_points,
    cut_self_prefix,
    remember_successes,
    replayable_head,
    self_prefix_texts,
)

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
WORKED = "First, 15 - 43 = -28.\nThen -28 - 75 = -103.\nFinally -103 + 9 = -94.\nAnswer: -94"


def test_cut_is_before_the_answer_and_mid_step() -> None:
    head = replayable_head(WORKED, "-94")
    assert head == "First, 15 - 43 = -28.\nThen -28 - 75 = -103.\nFinally -103 + 9 = "
    assert cut_self_prefix(head, 0.1) == "First, 15 - 43 ="
    assert cut_self_prefix(head, 0.5) == "First, 15 - 43 = -28.\nThen -28 - 75 ="
    assert cut_self_prefix(head, 1.0) == (
        "First, 15 - 43 = -28.\nThen -28 - 75 = -103.\nFinally -103 + 9 ="
    )
    # "14" is not found inside "140", and an answer stated at once leaves nothing to replay
    assert replayable_head("140 - 126 = 14", "14") == "140 - 126 = "
    assert cut_points(replayable_head("The answer is 5", "5")) == []


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="0123456789 +-=.\nab", max_size=80),
    answer=st.integers(-200, 200).map(str),
    ratio=st.floats(1e-9, 1.0),
)
def test_cut_properties(text: str, answer: str, ratio: float) -> None:
    head = replayable_head(text, answer)
    assert text.startswith(head)
    prefix = cut_self_prefix(head, ratio)
    assert head.startswith(prefix)
    assert replayable_head(prefix, answer) == prefix  # the prefix never states the answer
    assert bool(prefix) == bool(cut_points(head))
    assert len(cut_self_prefix(head, min(1.0, ratio + 0.3))) >= len(prefix)  # monotone


def drive(strategy, pool: int, steps: int, batch: int, seed: int):
    """select → plan → observe → remember; returns the plans and the stored rows over time."""
    rng = np.random.default_rng(seed)
    strategy.add_samples(np.arange(pool), has_solution=np.ones(pool, bool))
    true_p = rng.beta(0.5, 2.0, size=pool)
    out = []
    for _ in range(steps):
        keys = strategy.select(batch)
        stored_before = set(strategy.guide.heads)
        plan = strategy.plan(keys)
        texts = self_prefix_texts(strategy, plan)
        r = (rng.random(plan.prefix_ratios.shape) < true_p[keys][:, None]).astype(float)
        strategy.observe(GroupResults.from_plan(plan, r))
        answers = [str(k + 1000) for k in keys]
        completions = [[f"7 + 8 = 15\n15 - 3 = 12\nanswer {k + 1000}" for _ in row] for k, row
                       in zip(keys, r, strict=True)]
        remember_successes(strategy, keys, r, completions, answers, plan.guided)
        out.append((keys, plan, texts, r, stored_before))
    return out


case = st.tuples(st.integers(3, 30), st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**16))


@pytest.mark.parametrize("name", ["self_prefix", "lppo_self"])
@SETTINGS
@given(c=case)
def test_only_samples_with_a_stored_success_are_guided(name, c) -> None:
    pool, steps, batch, seed = c
    s = make_strategy(name, seed=seed)
    for keys, plan, texts, _, stored_before in drive(s, pool, steps, batch, seed):
        rows = s.stats.register(keys)
        for i, row in enumerate(rows.tolist()):
            if plan.guided[i].any():
                assert row in stored_before
                assert not plan.guided[i].all()  # an unguided slot keeps measuring
            for j in range(plan.group_size):
                # every planned guided slot has a usable prefix, never the answer
                assert bool(texts[i][j]) == bool(plan.guided[i, j])
                assert replayable_head(texts[i][j], str(keys[i] + 1000)) == texts[i][j]


@SETTINGS
@given(c=case, flip=st.integers(0, 2**16))
def test_guided_results_never_move_the_unguided_ema(c, flip) -> None:
    pool, steps, batch, seed = c
    a, b = make_strategy("lppo_self", seed=seed), make_strategy("lppo_self", seed=seed)
    for s in (a, b):
        s.add_samples(np.arange(pool), has_solution=np.ones(pool, bool))
        s.guide.heads = {r: "1 + 1 =" for r in range(pool)}  # every sample eligible
    rng = np.random.default_rng(flip)
    for _ in range(steps):
        keys = a.select(batch)
        assert (b.select(batch) == keys).all()
        plan = a.plan(keys)
        b.plan(keys)
        r = (rng.random(plan.prefix_ratios.shape) < 0.3).astype(float)
        r2 = r.copy()
        r2[plan.guided] = 1.0 - r2[plan.guided]  # other guided outcomes, same unguided ones
        a.observe(GroupResults.from_plan(plan, r))
        b.observe(GroupResults.from_plan(plan, r2))
        np.testing.assert_array_equal(a.stats["ema"], b.stats["ema"])
        np.testing.assert_array_equal(a.stats["delta"], b.stats["delta"])
        np.testing.assert_array_equal(a.weights(keys), b.weights(keys))


@pytest.mark.parametrize("name", ["self_prefix", "lppo_self"])
@SETTINGS
@given(c=case)
def test_state_round_trips_exactly(name, c, tmp_path_factory) -> None:
    pool, steps, batch, seed = c
    s = make_strategy(name, seed=seed)
    drive(s, pool, steps, batch, seed)
    assert s.guide.heads or not any(s.stats["reward_sum"] > 0)  # successes were stored
    path = tmp_path_factory.mktemp("st") / "s.npz"
    s.save(path)
    t = make_strategy(name, seed=seed + 1)
    t.load(path)
    assert t.guide.heads == s.guide.heads
    assert t.state_checksum() == s.state_checksum()
    keys = s.select(batch)
    assert (t.select(batch) == keys).all()
    np.testing.assert_array_equal(s.plan(keys).prefix_ratios, t.plan(keys).prefix_ratios)


def test_bad_state_is_refused_and_leaves_the_strategy_unchanged() -> None:
    s = make_strategy("self_prefix")
    s.add_samples([0, 1])
    s.guide.heads = {0: "1 + 1 ="}
    state = s.state_dict()
    state["roles"]["guide"]["heads"] = []
    with pytest.raises(ValueError, match="as many string heads as rows"):
        s.load_state_dict(state)
    assert s.guide.heads == {0: "1 + 1 ="}


def test_other_guides_ignore_successes() -> None:
    s = make_strategy("lppo")
    s.add_samples([0])
    assert remember_successes(s, [0], np.ones((1, 8)), [["1 = 1"] * 8], ["1"]) == 0
    assert self_prefix_texts(s, s.plan([0])) is None
    with pytest.raises(ValueError, match="low must be <= high"):
        SelfPrefixGuide(low=0.8, high=0.2)


@pytest.mark.parametrize("name", ["self_prefix", "lppo_self"])
@SETTINGS
@given(visits=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_a_single_slot_sample_is_never_self_guided_twice_in_a_row(name, visits, seed) -> None:
    """Rule: with G = 1 the one slot is guided at most every second visit. Bug caught: a
    rarely solved sample replayed forever (its unguided EMA could never move again)."""
    s = make_strategy(name, group_size=1, seed=seed)
    s.add_samples(["q"], has_solution=[True])
    s.observe(GroupResults.build(["q"], np.zeros((1, 1))))  # seen, failed: rare
    s.guide.heads = {0: "1 + 1 ="}  # a stored success to replay
    guided = []
    for _ in range(visits):
        plan = s.plan(["q"])
        guided.append(bool(plan.guided.all()))
        s.observe(GroupResults.from_plan(plan, np.zeros((1, 1))))
    assert any(guided)
    assert not any(a and b for a, b in zip(guided, guided[1:], strict=False))
