"""DAPO dynamic sampling: the keep rule, the filter role and the `refill` loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.filters import DynamicSamplingFilter, RefillError, refill
from lppo_sampling.strategies.rules_peer import dapo_keep

SET = settings(max_examples=60, deadline=None)


def test_dapo_keep_hand_values():
    r = np.array(
        [[1, 1, 1], [0, 0, 0], [1, 0, 1], [0.1, 0.1, 0.1], [0.1, 0.2, 0.1], [1, 0, 1]], float
    )
    m = np.ones_like(r, bool)
    m[5, 1] = False  # the only 0 is padding: the valid rollouts are all 1
    assert dapo_keep(r, m).tolist() == [False, False, True, False, True, False]


def test_singleton_group_is_kept():
    r = np.array([[1.0, 0.0], [0.0, 1.0]])
    m = np.array([[True, False], [False, True]])
    assert dapo_keep(r, m).tolist() == [True, True]


binary = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.integers(2, 8)),
    elements=st.sampled_from([0.0, 1.0]),
)


@SET
@given(r=binary, seed=st.integers(0, 1000))
def test_dapo_keep_is_zero_lt_correct_lt_g_and_slot_order_free(r, seed):
    """Bug caught: keeping all-0 or all-1 groups (e.g. `std >= 0`), or a verdict that
    depends on slot order (e.g. comparing only the first two rewards)."""
    m = np.ones_like(r, bool)
    keep = dapo_keep(r, m)
    c = r.sum(axis=1)
    assert np.array_equal(keep, (c > 0) & (c < r.shape[1]))
    perm = np.random.default_rng(seed).permutation(r.shape[1])
    assert np.array_equal(dapo_keep(r[:, perm], m), keep)


def test_filter_keeps_informative_groups_and_unobserved():
    s = make_strategy("dapo")
    s.add_samples(np.arange(5))
    r = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]], float)
    s.observe(GroupResults.build(np.arange(4), r))
    assert s.keep(np.arange(5)).tolist() == [False, False, True, False, True]
    assert s.metrics()["sampler/filter_pass_frac"] == 0.25


def test_duplicate_key_in_one_batch_is_judged_on_the_union():
    s = make_strategy("dapo")
    s.observe(GroupResults.build([7, 7, 8], np.array([[1, 1], [0, 0], [1, 1]], float)))
    assert s.keep([7, 8]).tolist() == [True, False]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="oversample"):
        DynamicSamplingFilter(oversample=0.5)
    with pytest.raises(ValueError, match="max_num_gen_batches"):
        DynamicSamplingFilter(max_num_gen_batches=1.5)


def _generator(pass_p: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)

    def generate(plan):
        r = (rng.random((len(plan), plan.group_size)) < pass_p[plan.keys][:, None]).astype(float)
        return GroupResults.from_plan(plan, r), {"n": len(plan)}

    return generate


@SET
@given(target=st.integers(1, 20), pool=st.integers(60, 120), seed=st.integers(0, 10_000))
def test_refill_returns_exactly_target_kept_groups(target, pool, seed):
    """Bug caught: a refill that returns more or fewer than `target` groups (the last
    chunk's surplus not dropped), trains on a group the filter rejected, or sizes chunks
    other than ceil(oversample · target)."""
    s = make_strategy("dapo", seed=seed, max_num_gen_batches=0)
    s.add_samples(np.arange(pool))
    pass_p = np.random.default_rng(seed).uniform(0.1, 0.9, pool)
    batch = refill(s, target, _generator(pass_p, seed))
    assert batch.keys.shape == (target,)
    assert set(batch.keys.tolist()) <= set(range(pool))
    assert sum(int(c.keep.sum()) for c in batch.chunks) == target
    for c in batch.chunks:
        assert len(c.plan) == math.ceil(3.0 * target)
        assert c.payload == {"n": len(c.plan)}
        # every group used for training passes DAPO's rule
        assert dapo_keep(c.results.rewards[c.keep], c.results.mask[c.keep]).all()
    assert batch.n_passed >= target and batch.n_generated == sum(
        len(c.results) for c in batch.chunks
    )
    assert 0 < batch.keep_rate <= 1


def test_refill_raises_when_chunk_limit_is_reached():
    s = make_strategy("dapo", max_num_gen_batches=2)
    s.add_samples(np.arange(50))
    never = _generator(np.zeros(50), 0)  # every group all-fail: nothing passes
    with pytest.raises(RefillError, match="max_num_gen_batches"):
        refill(s, 4, never)
    assert s.stats.step == 2  # two chunks were generated and observed


def test_refill_explicit_chunk_size_and_bad_target():
    s = make_strategy("dapo")
    s.add_samples(np.arange(40))
    batch = refill(s, 5, _generator(np.full(40, 0.5), 1), gen_batch_size=7)
    assert all(len(c.plan) == 7 for c in batch.chunks)
    with pytest.raises(ValueError, match="target"):
        refill(s, 0, _generator(np.full(40, 0.5), 1))
    with pytest.raises(ValueError, match="gen_batch_size"):
        refill(s, 3, _generator(np.full(40, 0.5), 1), gen_batch_size=0)
    assert s.filter.oversampled_size(512) == 1536
