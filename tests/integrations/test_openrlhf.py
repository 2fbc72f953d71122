"""OpenRLHF reward/agent modules through openrlhf 0.11.2's own executors, with a fake engine."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("openrlhf.utils.agent")

from openrlhf.utils.agent import AgentExecutorBase, SingleTurnAgentExecutor  # noqa: E402

from lppo_sampling.integrations import openrlhf as glue  # noqa: E402
from lppo_sampling.integrations import openrlhf_agent, openrlhf_reward  # noqa: E402
from lppo_sampling.roles import Guide, KeepAll, UniformSelector, UnitWeighter  # noqa: E402
from lppo_sampling.strategy import Strategy  # noqa: E402

pytestmark = pytest.mark.integration

G = 4


class FakeEngine:
    """Stands in for OpenRLHF's vLLM engine: answers '... = <answer>' or a wrong number."""

    def __init__(self, tok, texts):
        self.tok, self.texts, self.calls = tok, list(texts), []

    async def generate(self, token_ids, sampling_params, multi_modal_data=None):
        self.calls.append(list(token_ids))
        text = self.texts.pop(0)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, text=text,
                                                        finish_reason="stop", logprobs=None)])


def params():
    return SimpleNamespace(max_tokens=16, logprobs=None)


class HalfGuide(Guide):
    def plan(self, stats, rows, group_size, rng):
        r = np.zeros((rows.shape[0], group_size))
        r[:, group_size // 2:] = 0.5
        return r


def load_like_openrlhf(module) -> AgentExecutorBase:
    """openrlhf.trainer.ray.vllm_engine._load_agent_executor (that module imports vllm)."""
    spec = importlib.util.spec_from_file_location("agent_module", module.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert issubclass(mod.AgentExecutor, AgentExecutorBase)
    return mod.AgentExecutor()


PROBLEMS = {f"p{i}": {"question": f"What is {i}+{i}?", "answer": str(2 * i),
                      "solution": f"Add {i} and {i}.\nSo {2 * i}."} for i in range(3)}


def test_agent_executor_guides_scores_and_feeds_strategy(tiny_tokenizer, tmp_path, monkeypatch):
    log = tmp_path / "obs.jsonl"
    monkeypatch.setenv(glue.LOG_ENV, str(log))
    strat = Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                     weighter=UnitWeighter(), group_size=G, seed=0)
    prompts = glue.write_prompts(strat, PROBLEMS, tmp_path / "prompts.jsonl", 1,
                                 prefix_fn=lambda p, r: "Step 1: add.\n")
    row = json.loads(prompts.read_text().splitlines()[0])
    meta = glue.decode_label(row["label"])
    assert meta["prefixes"] == ["", "", "Step 1: add.\n", "Step 1: add.\n"]
    ex = load_like_openrlhf(openrlhf_agent)
    answer = meta["answer"]
    engine = FakeEngine(tiny_tokenizer, [f" so {answer}", " so 99", f" so {answer}", " so 98"])
    outs = [
        asyncio.run(ex.execute(row["input"], row["label"], params(), 64, tiny_tokenizer, engine))
        for _ in range(G)
    ]
    assert [o["reward"] for o in outs] == [1.0, 0.0, 1.0, 0.0]
    # guided rollouts: the prefix is in the observation (prompt side), outside the action range
    for o, pre in zip(outs, meta["prefixes"], strict=True):
        start, end = o["action_ranges"][0]
        context = tiny_tokenizer.decode(o["observation_tokens"][:start])
        assert context == row["input"] + pre
    end = glue.feed_observations(strat, log)
    assert end == log.stat().st_size
    r = strat.stats.rows([meta["sample_id"]])
    assert strat.stats["n_rollouts"][r].tolist() == [2]
    assert strat.stats["reward_sum"][r].tolist() == [1.0]
    assert strat.stats["guided_rollouts"][r].tolist() == [2]
    assert glue.feed_observations(strat, log, end) == end      # nothing new


def test_reward_func_through_single_turn_executor(tiny_tokenizer, tmp_path, monkeypatch):
    log = tmp_path / "obs.jsonl"
    monkeypatch.setenv(glue.LOG_ENV, str(log))
    ex = SingleTurnAgentExecutor(remote_rm_url=openrlhf_reward.__file__)
    label = glue.encode_label(7, "12")
    engine = FakeEngine(tiny_tokenizer, [" The answer is 12", " The answer is 13"])
    good = asyncio.run(ex.execute("What is 6+6?", label, params(), 64, tiny_tokenizer, engine))
    bad = asyncio.run(ex.execute("What is 6+6?", label, params(), 64, tiny_tokenizer, engine))
    assert float(good["reward"]) == 1.0 and float(bad["reward"]) == 0.0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["sample_id"], x["reward"], x["guided"]) for x in lines] == [
        (7, 1.0, False),
        (7, 0.0, False),
    ]
    # the question's own numbers never count as the answer
    assert openrlhf_reward.reward_func(["Q 12?A none"], ["Q 12?"], [label])["rewards"].item() == 0.0


def test_labels_and_logs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="lppo JSON"):
        glue.decode_label("not json")
    with pytest.raises(ValueError, match="sample_id"):
        glue.decode_label(json.dumps({"answer": "1"}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": 1}\n')
    strat = Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                     weighter=UnitWeighter(), group_size=G)
    with pytest.raises(ValueError, match="bad observation line"):
        glue.feed_observations(strat, bad)
