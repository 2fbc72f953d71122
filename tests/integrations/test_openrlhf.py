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


@pytest.fixture(scope="module")
def load_agent_executor():
    """OpenRLHF's own loader for `--train.agent_func_path`, `_load_agent_executor`.

    It lives in `openrlhf.trainer.ray.vllm_engine`, which imports vllm at module level;
    vllm cannot be installed next to openrlhf here (pins clash), so only the three
    names that module takes from vllm are stubbed, for the duration of the import.
    """
    import sys
    import types

    saved = {k: sys.modules.get(k) for k in ("vllm", "vllm.inputs", "vllm.utils")}
    stub = types.ModuleType("vllm")
    stub.__version__ = "0.29.0"
    stub.inputs = types.ModuleType("vllm.inputs")
    stub.inputs.TokensPrompt = dict
    stub.utils = types.ModuleType("vllm.utils")
    stub.utils.random_uuid = lambda: "request"
    sys.modules.update({"vllm": stub, "vllm.inputs": stub.inputs, "vllm.utils": stub.utils})
    try:
        from openrlhf.trainer.ray.vllm_engine import _load_agent_executor
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return _load_agent_executor


PROBLEMS = {f"p{i}": {"question": f"What is {i}+{i}?", "answer": str(2 * i),
                      "solution": f"Add {i} and {i}.\nSo {2 * i}."} for i in range(3)}


def test_agent_executor_guides_scores_and_feeds_strategy(tiny_tokenizer, tmp_path, monkeypatch,
                                                         load_agent_executor):
    log = tmp_path / "obs.jsonl"
    monkeypatch.setenv(glue.LOG_ENV, str(log))
    strat = Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                     weighter=UnitWeighter(), group_size=G, seed=0)
    prompts = glue.write_prompts(strat, PROBLEMS, tmp_path / "prompts.jsonl", 1,
                                 prefix_fn=lambda p, r: "Step 1: add.\n")
    row = json.loads(prompts.read_text().splitlines()[0])
    meta = glue.decode_label(row["label"])
    assert meta["prefixes"] == ["", "", "Step 1: add.\n", "Step 1: add.\n"]
    ex = load_agent_executor(openrlhf_agent.__file__)
    assert isinstance(ex, AgentExecutorBase)
    answer = meta["answer"]
    engine = FakeEngine(tiny_tokenizer, [f" so {answer}", " so 99", f" so {answer}", " so 98"])

    async def generate_responses():
        # what OpenRLHF's RolloutRayActor.generate_responses does with one prompt's G samples
        return await asyncio.gather(*[
            ex.execute(prompt=row["input"], label=row["label"], sampling_params=params(),
                       max_length=64, hf_tokenizer=tiny_tokenizer, llm_engine=engine)
            for _ in range(G)])

    outs = asyncio.run(generate_responses())
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


def load_reward_file(path):
    spec = importlib.util.spec_from_file_location("user_reward", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_user_scorer_files_load_through_openrlhf(tiny_tokenizer, tmp_path, monkeypatch,
                                                 load_agent_executor):
    """The two-line files docs/integrations.md tells users to write (their own scorer)."""
    log = tmp_path / "obs.jsonl"
    monkeypatch.setenv(glue.LOG_ENV, str(log))
    agent_file = tmp_path / "my_agent.py"
    agent_file.write_text(
        "from lppo_sampling.integrations.openrlhf_agent import make_agent_executor\n"
        "AgentExecutor = make_agent_executor(score_fn=lambda text, answer: 0.5)\n")
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text(
        "from lppo_sampling.integrations.openrlhf_reward import make_reward_func\n"
        "reward_func = make_reward_func(score_fn=lambda text, answer: float('7' in text))\n")
    label = glue.encode_label("k", "7")
    agent = load_agent_executor(str(agent_file))
    engine = FakeEngine(tiny_tokenizer, [" 3", " 7"])
    out = asyncio.run(agent.execute("Q?", label, params(), 64, tiny_tokenizer, engine))
    assert out["reward"] == 0.5
    single = SingleTurnAgentExecutor(remote_rm_url=str(reward_file))
    out = asyncio.run(single.execute("Q?", label, params(), 64, tiny_tokenizer, engine))
    assert float(out["reward"]) == 1.0
    assert [json.loads(x)["reward"] for x in log.read_text().splitlines()] == [0.5, 1.0]
    bad = tmp_path / "bad_reward.py"
    bad.write_text(
        "from lppo_sampling.integrations.openrlhf_reward import make_reward_func\n"
        "reward_func = make_reward_func(score_fn=lambda text, answer: -1.0)\n")
    with pytest.raises(ValueError, match=r"score_fn returned -1\.0; rewards must lie in \[0, 1\]"):
        load_reward_file(bad).reward_func(["Q? 1"], ["Q?"], [label])
    # OpenRLHF's executor logs a reward_func error at INFO and returns reward None: the
    # bad value never reaches the observation log
    single = SingleTurnAgentExecutor(remote_rm_url=str(bad))
    out = asyncio.run(single.execute("Q?", label, params(), 64, tiny_tokenizer,
                                     FakeEngine(tiny_tokenizer, [" 1"])))
    assert out["reward"] is None
    assert len(log.read_text().splitlines()) == 2


def test_episode_loop_resumes_from_saved_strategy(tmp_path):
    """Per-episode prompt files: state saved after episode e continues exactly in e + 1."""
    strat = Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                     weighter=UnitWeighter(), group_size=G, seed=3)
    log = tmp_path / "obs.jsonl"
    glue.write_prompts(strat, PROBLEMS, tmp_path / "ep0.jsonl", 2)
    for k in strat.select(2).tolist():
        for _ in range(G):
            glue.append_observation(k, 1.0, False, log)
    offset = glue.feed_observations(strat, log)
    strat.save(tmp_path / "lppo_sampler.npz")
    resumed = Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                       weighter=UnitWeighter(), group_size=G, seed=3)
    resumed.load(tmp_path / "lppo_sampler.npz")
    a = glue.write_prompts(strat, PROBLEMS, tmp_path / "ep1_a.jsonl", 2)
    b = glue.write_prompts(resumed, PROBLEMS, tmp_path / "ep1_b.jsonl", 2)
    assert a.read_text() == b.read_text()            # the next episode's file is the same
    assert glue.feed_observations(resumed, log, offset) == offset


def test_check_prompts_names_file_row_and_field(tmp_path):
    strat = Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                     weighter=UnitWeighter(), group_size=G, seed=0)
    good = glue.write_prompts(strat, PROBLEMS, tmp_path / "p.jsonl", 3,
                              prefix_fn=lambda p, r: "Step 1.\n")
    assert glue.check_prompts(good, G) == 3
    with pytest.raises(ValueError, match=r"p\.jsonl:1: label\.prefixes has 4 entries but "
                                         r"group_size=8"):
        glue.check_prompts(good, 8)
    bad = tmp_path / "bad.jsonl"
    for text, pattern in [
        ('{"input": "Q", "label": "7"}\n', r"bad\.jsonl:1: label: OpenRLHF label needs"),
        ('{"input": "Q", "label": "{\\"answer\\": 1}"}\n', r":1: label: .*'sample_id'"),
        ('{"label": "x"}\n', r"bad\.jsonl:1: input: expected a non-empty question"),
        ('{"input": "Q", "label": "not json"}\n', r":1: label: OpenRLHF label is not lppo JSON"),
        ("\n[1]\n", r"bad\.jsonl:2: expected a JSON object"),
        ("", r"bad\.jsonl: no prompts"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=pattern):
            glue.check_prompts(bad, G)


def test_per_node_logs_are_read_together_once(tmp_path, monkeypatch):
    """Several nodes: one log per writer on shared storage ({host}-{pid}), read as one event."""
    pattern = str(tmp_path / "obs" / "{host}-{pid}.jsonl")
    for host, rows in [("nodeA", [("p0", 1.0, False), ("p1", 0.0, True)]),
                       ("nodeB", [("p0", 0.0, False), ("p0", 1.0, False)])]:
        monkeypatch.setattr(glue.socket, "gethostname", lambda h=host: h)
        for k, r, g in rows:
            glue.append_observation(k, r, g, pattern)
    files = sorted(p.name for p in (tmp_path / "obs").iterdir())
    assert [f.split("-")[0] for f in files] == ["nodeA", "nodeB"]
    strat = Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                     weighter=UnitWeighter(), group_size=G, seed=0)
    offsets = glue.feed_observation_files(strat, pattern)
    assert strat.stats.step == 1                     # one event, as from one shared log
    r0, r1 = strat.stats.rows(["p0", "p1"])
    assert strat.stats["n_rollouts"][r0] == 3 and strat.stats["reward_sum"][r0] == 2.0
    assert strat.stats["guided_rollouts"][r1] == 1
    assert glue.feed_observation_files(strat, pattern, offsets) == offsets
    assert strat.stats.step == 1                     # nothing new, nothing observed twice
    monkeypatch.setattr(glue.socket, "gethostname", lambda: "nodeC")
    glue.append_observation("p1", 2.0, False, pattern)     # a scorer outside [0, 1]
    with pytest.raises(ValueError, match=r"reward 2\.0 lies outside reward_range"):
        glue.feed_observation_files(strat, pattern, offsets)
