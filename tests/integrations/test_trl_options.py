"""TRL 1.16 and per-rollout plan options: refused at construction, never dropped.

TRL generates every completion with the run's `max_completion_length` and scores it
with the user's reward functions, which know nothing of a token budget's composite
reward, an MCQ/cloze variant or a restructured question; so `LPPOGRPOTrainer` refuses
strategies whose plans carry such options. h1 runs when `category_column` gives its
depth labels. Driven through `GRPOTrainer`'s own construction and `train()`.
"""
# ruff: noqa: F811 - the fixture imported from test_trl is a test parameter here

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

from test_trl import Log, config, dataset, tiny_model, tok  # noqa: E402, F401

from lppo_sampling import make_strategy  # noqa: E402
from lppo_sampling.integrations.trl import LPPOGRPOTrainer  # noqa: E402
from lppo_sampling.strategies.formats import FormatGuide  # noqa: E402

pytestmark = pytest.mark.integration

REFUSED = {"length_curriculum": "max_new_tokens", "cog_drift": "format"}


def build(tok, tmp_path, **over):
    kw = dict(model=tiny_model(tok), reward_funcs=Log(), processing_class=tok,
              train_dataset=dataset(), args=config(tmp_path), strategy="uniform")
    kw.update(over)
    return LPPOGRPOTrainer(**kw)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_option_strategies_by_name_are_refused_at_construction(name, tok, tmp_path) -> None:
    """Bug caught: length_curriculum trained at TRL's fixed completion length with a plain
    reward (or cog_drift with open questions only) while the strategy tracks its plan."""
    with pytest.raises(ValueError) as e:
        build(tok, tmp_path, strategy=name)
    msg = str(e.value)
    assert msg.startswith(f"LPPOGRPOTrainer(strategy=...): strategy '{name}' sets the "
                          f"per-rollout option '{REFUSED[name]}'") and "\n" not in msg
    assert f"lppo train --strategy {name}" in msg


def test_option_strategy_objects_are_refused_before_the_model_loads(tok, tmp_path) -> None:
    """Bug caught: the refusal coming only after TRL loaded the model (or never)."""
    clpo = make_strategy("clpo", group_size=4, restructure_fn=lambda k, m: [None] * len(k))
    with pytest.raises(ValueError, match=r"^LPPOGRPOTrainer\(strategy=\.\.\.\): strategy 'clpo' "
                                         r"sets the per-rollout option 'question'"):
        build(tok, tmp_path, model=object(), strategy=clpo)  # TRL would fail on this model


def test_h1_trains_with_its_depth_labels_and_is_refused_without(tok, tmp_path) -> None:
    """Bug caught: h1 accepted without labels (it fails at its first batch, mid-run), or a
    category column that never reaches the pool."""
    with pytest.raises(ValueError, match=r"^LPPOGRPOTrainer\(strategy=\.\.\., category_column="
                                         r"\.\.\.\): strategy 'h1'.*category"):
        build(tok, tmp_path / "a", strategy="h1")
    with pytest.raises(ValueError, match=r"category_column='depth': train_dataset has no such"):
        build(tok, tmp_path / "b", strategy="h1", category_column="depth")
    depths = ["depth:1", "depth:1", "depth:1", "depth:2", "depth:2", "depth:3"]
    ds = dataset().add_column("depth", depths)
    log = Log()
    t = build(tok, tmp_path / "c", strategy="h1", category_column="depth", train_dataset=ds,
              reward_funcs=log, args=config(tmp_path / "c", max_steps=1))
    t.train()
    assert set(log.keys) <= {"s0", "s1", "s2"}                       # depth 1 first
    assert t.lppo_strategy.stats.step == 1


def test_a_plan_with_options_never_reaches_generation(tok, tmp_path) -> None:
    """Bug caught: a guide swapped in after construction whose format is silently dropped."""
    strat = make_strategy("uniform", group_size=4)
    t = build(tok, tmp_path, strategy=strat)
    strat.guide = FormatGuide()
    strat.guide.bind(strat.stats)
    log = Log()
    t.reward_funcs = [log]
    with pytest.raises(ValueError, match=r"carries the per-rollout option\(s\) \['format'\]"):
        t.train()
    assert log.keys == [] and np.all(strat.stats["n_rollouts"] == 0)
