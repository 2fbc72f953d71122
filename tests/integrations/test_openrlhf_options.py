"""OpenRLHF 0.11.2 and per-rollout plan options: clpo's restructured question is posed.

The prompt file is where OpenRLHF's rollouts get their question, so a restructured
question (clpo) is honoured: it is written as the prompt and the label keeps the
original answer, which OpenRLHF's own `SingleTurnAgentExecutor` (with our
`reward_func`) scores against. A token budget or a format cannot reach OpenRLHF's
rollouts and scorers; those strategies are refused before a file is written
(test_plan_options.py).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("openrlhf.utils.agent")

from openrlhf.utils.agent import SingleTurnAgentExecutor  # noqa: E402
from test_openrlhf import FakeEngine, params  # noqa: E402

from lppo_sampling import make_strategy  # noqa: E402
from lppo_sampling.integrations import openrlhf as glue  # noqa: E402
from lppo_sampling.integrations import openrlhf_reward  # noqa: E402

pytestmark = pytest.mark.integration

G = 2
PROBLEMS = {f"p{i}": {"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(3)}


def easier(keys, modes):
    return [f"Easier: double {k[1:]}." for k in np.asarray(keys).tolist()]


def episode(strategy, path, tok, engine_texts, log):
    """One OpenRLHF episode on the prompt file: G rollouts per prompt, scored, logged."""
    f = glue.write_prompts(strategy, PROBLEMS, path, n=3)
    assert glue.check_prompts(f, G) == 3
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    ex = SingleTurnAgentExecutor(remote_rm_url=openrlhf_reward.__file__)
    engine = FakeEngine(tok, engine_texts(rows))
    outs = [asyncio.run(ex.execute(r["input"], r["label"], params(), 64, tok, engine))
            for r in rows for _ in range(G)]
    glue.feed_observations(strategy, log)
    return rows, engine, outs


def test_clpo_question_is_posed_and_scored_against_the_original_answer(
        tiny_tokenizer, tmp_path, monkeypatch) -> None:
    """Bug caught: the planned rewrite not reaching OpenRLHF's engine, or its reward taken
    against anything but the original answer."""
    log = tmp_path / "obs.jsonl"
    monkeypatch.setenv(glue.LOG_ENV, str(log))
    strat = make_strategy("clpo", group_size=G, restructure_fn=easier)
    rows, engine, _ = episode(strat, tmp_path / "ep0.jsonl", tiny_tokenizer,
                              lambda rows: [" no idea"] * (G * len(rows)), log)
    assert {r["input"] for r in rows} == {p["question"] for p in PROBLEMS.values()}
    assert strat.stats.step == 1                                     # all failed: all hard

    def right(rows):  # each rollout states the original answer of its own sample
        return [f" so {json.loads(r['label'])['answer']}" for r in rows for _ in range(G)]

    rows, engine, outs = episode(strat, tmp_path / "ep1.jsonl", tiny_tokenizer, right, log)
    ids = [json.loads(r["label"])["sample_id"] for r in rows]
    assert [r["input"] for r in rows] == [f"Easier: double {k[1:]}." for k in ids]
    posed = [tiny_tokenizer.decode(c) for c in engine.calls]
    assert all(p.startswith("Easier: double") for p in posed)     # what the engine was asked
    assert [float(o["reward"]) for o in outs] == [1.0] * (G * 3)
    assert strat.metrics()["sampler/clpo_simplify_frac"] == 1.0
    assert (strat.stats["reward_sum"][strat.stats.rows(ids)] == G).all()
