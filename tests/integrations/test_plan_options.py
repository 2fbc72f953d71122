"""Per-rollout plan options in the adapters: honoured or refused at start-up, never dropped.

Library-free (no trl, verl or openrlhf): the shared checks of `integrations._common` and
OpenRLHF's prompt-file writer, which imports no OpenRLHF code. The adapters' own
construction-time refusals are tested with the real libraries in test_trl.py,
test_verl.py and test_openrlhf.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lppo_sampling import available_strategies, make_strategy
from lppo_sampling.batch import GroupResults, RolloutPlan
from lppo_sampling.integrations import openrlhf as glue
from lppo_sampling.integrations._common import (
    check_plan_options,
    check_pool,
    plan_option_keys,
    refuse_plan_options,
)
from lppo_sampling.roles import Guide
from lppo_sampling.strategies.catalog import strategy_info

OPTION_STRATEGIES = {"length_curriculum": "max_new_tokens", "cog_drift": "format",
                     "clpo": "question"}


def _rewrite(keys, modes):
    return [f"Easier: what is {k}?" for k in np.asarray(keys).tolist()]


FAKES = {
    "predictor": lambda keys: np.full(len(keys), 0.5),
    "estimate_fn": lambda keys: np.linspace(0, 1, len(keys)),
    "score_fn": lambda keys: np.arange(len(keys), dtype=float),
    "restructure_fn": _rewrite,
}


def build(name: str, **kw):
    """Any registered strategy, its model signals replaced by array stand-ins."""
    signals = {a: FAKES[a] for a in strategy_info(name).signals}
    return make_strategy(name, group_size=2, **signals, **kw)


def planned_options(name: str) -> set[str]:
    """Option names a strategy's plans really carry over a few steps of all-fail results."""
    s = build(name)
    keys = [f"q{i}" for i in range(6)]
    s.add_samples(keys, category=["depth:1"] * 6)
    seen: set[str] = set()
    for _ in range(3):
        picked = s.select(3)
        plan = s.plan(picked)
        for d in plan.options or ():
            seen |= set(d)
        s.observe(GroupResults.from_plan(plan, np.zeros((3, 2))))
    return seen


@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_every_registered_strategy_declares_its_plan_options(name):
    """Bug caught: an option a strategy's plans carry that the adapters' table does not
    list (an adapter would then pass a plan whose option it never applies)."""
    keys = plan_option_keys(build(name))
    assert keys is not None, f"{name}: per-rollout options unknown to the adapters"
    assert planned_options(name) <= set(keys)
    assert bool(keys) == (name in OPTION_STRATEGIES)
    if keys:
        assert keys[0] == OPTION_STRATEGIES[name]


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(sorted(OPTION_STRATEGIES)),
       honoured=st.sets(st.sampled_from(["max_new_tokens", "length_reward", "w_correct",
                                         "w_length", "w_format", "format", "question",
                                         "restructure", "prefix"])))
def test_refusal_is_exactly_the_unhonoured_options(name, honoured):
    """Bug caught: a strategy accepted although one of its options is not applied, or a
    refusal that does not name the strategy, the option and the way out."""
    s = build(name)
    missing = [k for k in plan_option_keys(s) if k not in honoured]
    if not missing:
        refuse_plan_options(s, "X(strategy=...)", "Lib", frozenset(honoured))
        return
    with pytest.raises(ValueError) as e:
        refuse_plan_options(s, "X(strategy=...)", "Lib", frozenset(honoured))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("X(strategy=...): ")
    assert f"strategy {name!r}" in msg and f"option {missing[0]!r}" in msg
    assert f"lppo train --strategy {name}" in msg


@pytest.mark.parametrize("name", ["uniform", "lppo", "pcl", "gain_rl", "h1", "dapo"])
def test_strategies_without_options_pass_every_adapter(name):
    refuse_plan_options(build(name), "X", "Lib")


@pytest.mark.parametrize("name", ["self_prefix", "lppo_self"])
def test_self_prefix_strategies_are_refused(name):
    """Bug caught: self_prefix run by an adapter that never hands successes back: it would
    never guide, i.e. silently train as uniform (lp_weighting for lppo_self)."""
    with pytest.raises(ValueError, match=rf"^X: strategy '{name}' replays the policy's own "
                                         rf"earlier successes.*lppo train --strategy {name}"):
        refuse_plan_options(build(name), "X", "Lib")


class OddGuide(Guide):
    """A guide with options the adapters have never heard of."""

    def plan(self, stats, rows, group_size, rng):
        return np.zeros((rows.shape[0], group_size))

    def sample_options(self, stats, rows):
        return [{"temperature": 0.3}] * rows.shape[0]


def test_an_unknown_option_guide_is_refused_and_a_declared_one_checked():
    """Bug caught: a custom guide's options passed on unchecked (silently not applied)."""
    s = make_strategy("uniform")
    s.guide = OddGuide()
    with pytest.raises(ValueError, match="OddGuide.*option_keys"):
        refuse_plan_options(s, "X", "Lib")
    OddGuide.option_keys = ("temperature",)
    try:
        with pytest.raises(ValueError, match="'temperature'"):
            refuse_plan_options(s, "X", "Lib")
        refuse_plan_options(s, "X", "Lib", frozenset({"temperature"}))
    finally:
        del OddGuide.option_keys


@settings(max_examples=60, deadline=None)
@given(opts=st.lists(st.dictionaries(st.sampled_from(["format", "question", "max_new_tokens"]),
                                    st.just("x"), max_size=2), min_size=1, max_size=5),
       honoured=st.sets(st.sampled_from(["format", "question", "max_new_tokens"])))
def test_a_plan_with_an_unhonoured_option_never_passes(opts, honoured):
    """Bug caught: the runtime guard skipping a sample (e.g. only checking the first)."""
    keys = np.arange(len(opts))
    plan = RolloutPlan(keys, np.zeros((len(opts), 2)), options=tuple(opts))
    bad = [i for i, d in enumerate(opts) if set(d) - honoured]
    if not bad:
        check_plan_options(plan, frozenset(honoured), "X")
        return
    with pytest.raises(ValueError, match=f"sample {bad[0]}"):
        check_plan_options(plan, frozenset(honoured), "X")


def test_check_pool_refuses_h1_without_depth_labels():
    """Bug caught: h1 built by an adapter without labels, failing at its first select."""
    s = build("h1")
    s.add_samples(["a", "b"])
    with pytest.raises(ValueError, match="^S: strategy 'h1'.*category"):
        check_pool(s, "S")
    ok = build("h1")
    ok.add_samples(["a", "b"], category=["depth:1", "depth:2"])
    check_pool(ok, "S")


@pytest.mark.parametrize("name", ["sec", "dump"])
def test_check_pool_refuses_category_bandits_with_one_arm(name):
    """Bug caught: SEC/DUMP plugged in without labels (verl and OpenRLHF pass none) would
    run as uniform sampling with no word; refused at start-up instead."""
    for labels in (None, ["x", "x", "x"]):
        s = build(name)
        s.add_samples(["a", "b", "c"], category=labels)
        with pytest.raises(ValueError, match=f"^S: strategy '{name}'.*one arm"):
            check_pool(s, "S")
    ok = build(name)
    ok.add_samples(["a", "b", "c"], category=["x", "y", "x"])
    check_pool(ok, "S")


# ------------------------------------------------------- OpenRLHF's prompt file
PROBLEMS = {f"q{i}": {"question": f"What is {i} + {i}?", "answer": str(2 * i)}
            for i in range(8)}


def test_openrlhf_prompt_file_poses_clpo_restructured_questions(tmp_path):
    """Bug caught: the restructured question planned but the original written (clpo would
    observe rewards of a problem it believes it simplified)."""
    s = build("clpo")
    f = glue.write_prompts(s, PROBLEMS, tmp_path / "ep0.jsonl", n=8)
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    assert [r["input"] for r in rows] == [PROBLEMS[json.loads(r["label"])["sample_id"]]["question"]
                                          for r in rows]  # unseen: posed as they are
    labels = [json.loads(r["label"]) for r in rows]
    s.observe(GroupResults.build([x["sample_id"] for x in labels], np.zeros((8, 2))))
    f = glue.write_prompts(s, PROBLEMS, tmp_path / "ep1.jsonl", n=8)
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    for r in rows:  # all failed: every sample is hard, so simplified by restructure_fn
        lab = json.loads(r["label"])
        assert r["input"] == f"Easier: what is {lab['sample_id']}?"
        assert lab["answer"] == PROBLEMS[lab["sample_id"]]["answer"]  # the original answer
    assert glue.check_prompts(f, group_size=2) == 8


@pytest.mark.parametrize("name", ["length_curriculum", "cog_drift"])
def test_openrlhf_prompt_file_refuses_budget_and_format_before_writing(name, tmp_path):
    """Bug caught: a token budget or an MCQ format silently left out of the prompt file."""
    out = tmp_path / "ep0.jsonl"
    opt = OPTION_STRATEGIES[name]
    with pytest.raises(ValueError, match=rf"^write_prompts\(strategy=...\): strategy '{name}' "
                                         rf"sets the per-rollout option '{opt}'"):
        glue.write_prompts(build(name), PROBLEMS, out, n=4)
    assert not out.exists()


def test_openrlhf_prompt_file_refuses_h1_without_labels(tmp_path):
    with pytest.raises(ValueError, match=r"^write_prompts\(strategy=...\): strategy 'h1'"):
        glue.write_prompts(build("h1"), PROBLEMS, tmp_path / "x.jsonl", n=4)
