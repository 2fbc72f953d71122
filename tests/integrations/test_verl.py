"""verl adapter against the real verl package (0.9.1): sampler, DataProto feedback, estimator."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("torchdata")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402

from lppo_sampling import GroupResults, make_strategy  # noqa: E402
from lppo_sampling.integrations import verl as lv  # noqa: E402
from lppo_sampling.roles import KeepAll, LPWeighter, NoGuide, Selector  # noqa: E402
from lppo_sampling.strategy import Strategy  # noqa: E402

pytestmark = pytest.mark.integration

N = 8
DATA_CFG = {"filter_overlong_prompts": False, "prompt_key": "prompt", "train_batch_size": 4,
            "dataloader_num_workers": 0, "max_prompt_length": 64}


class LowestPassFirst(Selector):
    """Unseen samples first, then the lowest EMA pass rate (deterministic; for tests)."""

    def select(self, stats, n, rng):
        score = np.where(stats.seen(), stats["ema"][: len(stats)], -1.0)
        return np.argsort(score, kind="stable")[:n].astype(np.int64)


def curriculum() -> Strategy:
    return Strategy(selector=LowestPassFirst(), guide=NoGuide(), filter=KeepAll(),
                    weighter=LPWeighter(), group_size=2, seed=0)


@pytest.fixture()
def parquet(tmp_path):
    """verl-style rows whose extra_info.index (10*i) differs from their position."""
    rows = [{"data_source": "t", "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
             "extra_info": {"split": "train", "index": 10 * i}} for i in range(N)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.fixture()
def dataset(parquet, tiny_tokenizer, tmp_path):
    cfg = OmegaConf.create({**DATA_CFG, "cache_dir": str(tmp_path / "cache")})
    return RLHFDataset(data_files=parquet, tokenizer=tiny_tokenizer, config=cfg)


def loader(ds, sampler):
    return StatefulDataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_fn,
                              drop_last=True, num_workers=0)


def step_batch(batch_dict, n, passed: set) -> DataProto:
    """What verl's fit() builds: uid per prompt, n responses each, scores on the last token."""
    b = DataProto.from_single_dict(batch_dict)
    b.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(b))], dtype=object)
    b = b.repeat(n, interleave=True)
    scores = torch.zeros(len(b), 5)
    scores[:, -1] = torch.tensor([float(int(k) in passed) for k in b.non_tensor_batch["index"]])
    b.batch["token_level_scores"] = scores
    b.batch["response_mask"] = torch.ones(len(b), 5)
    return b


def test_sampler_follows_strategy_after_update(dataset) -> None:
    strat = curriculum()
    sampler = lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG), strategy=strat)
    assert sorted(sampler.positions) == [10 * i for i in range(N)]
    it = iter(loader(dataset, sampler))
    first = next(it)
    keys1 = [int(k) for k in first["index"]]
    assert keys1 == [0, 10, 20, 30]                     # unseen first, in key order
    sampler.update(step_batch(first, 2, passed={0, 10}))
    second = next(it)
    keys2 = [int(k) for k in second["index"]]
    assert keys2 == [40, 50, 60, 70]                    # the rest are still unseen
    sampler.update(step_batch(second, 2, passed={40, 50, 60}))
    third = next(iter(loader(dataset, sampler)))        # next epoch: lowest pass rate first
    assert [int(k) for k in third["index"]][:3] == [20, 30, 70]
    # the strategy saw exactly the fed rewards
    rows = strat.stats.rows(np.array([0, 20]))
    assert strat.stats["reward_sum"][rows].tolist() == [2.0, 0.0]
    assert strat.stats["n_rollouts"][rows].tolist() == [2, 2]


def test_stateful_resume_continues_stream(dataset) -> None:
    def make():
        s = lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG),
                           strategy=make_strategy("lppo", group_size=2, seed=3))
        return s, loader(dataset, s)

    s1, dl1 = make()
    it = iter(dl1)
    b = next(it)
    s1.update(step_batch(b, 2, passed={10}))
    buf = io.BytesIO()
    torch.save(dl1.state_dict(), buf)                   # what verl writes to data.pt
    want = [[int(k) for k in nb["index"]] for nb, _ in zip(it, range(1), strict=False)]
    want += [[int(k) for k in nb["index"]] for nb, _ in zip(iter(dl1), range(2), strict=False)]
    s2, dl2 = make()
    buf.seek(0)
    dl2.load_state_dict(torch.load(buf, weights_only=False))
    got = [[int(k) for k in nb["index"]] for nb, _ in zip(iter(dl2), range(1), strict=False)]
    got += [[int(k) for k in nb["index"]] for nb, _ in zip(iter(dl2), range(2), strict=False)]
    assert got == want
    assert s2.strategy.state_checksum() != make()[0].strategy.state_checksum()


def test_weighted_estimator_through_verl_dispatch(dataset) -> None:
    assert core_algos.get_adv_estimator_fn("lppo_grpo") is lv.compute_lppo_grpo_advantage
    strat = make_strategy("lp_weighting", group_size=4, seed=0)
    sampler = lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG), strategy=strat).bind()
    keys = np.array([10 * i for i in range(N)])
    strat.observe(GroupResults.build(keys, np.full((N, 4), 0.5)))   # seen: next Δ ≠ 0
    batch_dict = next(iter(loader(dataset, sampler)))
    batch = step_batch(batch_dict, 4, passed=set())
    rng = np.random.default_rng(0)
    batch.batch["token_level_scores"][:, -1] = torch.tensor(rng.integers(0, 2, len(batch)),
                                                            dtype=torch.float32)
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"].clone()
    lv.tag_uids(batch)
    step0 = strat.stats.step
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "use_kl_in_reward": False})
    out = compute_advantage(batch, adv_estimator="lppo_grpo", config=cfg)
    assert strat.stats.step == step0 + 1                # the estimator observed the rewards
    base, _ = core_algos.compute_grpo_outcome_advantage(
        batch.batch["token_level_rewards"], batch.batch["response_mask"],
        batch.non_tensor_batch["uid"])
    w = strat.weights(batch.non_tensor_batch["index"].astype(np.int64))
    assert not np.allclose(w, 1.0)
    torch.testing.assert_close(out.batch["advantages"],
                               base * torch.as_tensor(w, dtype=base.dtype)[:, None])
    sampler.update(out)                                 # same uids: not counted twice
    assert strat.stats.step == step0 + 1
    untagged = step_batch(batch_dict, 4, passed=set())
    untagged.batch["token_level_rewards"] = untagged.batch["token_level_scores"]
    with pytest.raises(ValueError, match="carries no sample key"):
        compute_advantage(untagged, adv_estimator="lppo_grpo", config=cfg)
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        compute_advantage(batch, adv_estimator="lppo_grpo",
                          config=OmegaConf.create({"use_kl_in_reward": True}))


def test_trainer_hooks_and_config_only_install(dataset, parquet, tiny_tokenizer, tmp_path,
                                               monkeypatch) -> None:
    import verl.trainer.main_ppo_v0 as v0

    monkeypatch.setattr(v0, "create_rl_sampler", v0.create_rl_sampler)
    monkeypatch.setattr(v0, "RayPPOTrainer", v0.RayPPOTrainer)
    cfg = OmegaConf.create({**DATA_CFG, "cache_dir": str(tmp_path / "c"),
                            "lppo": {"strategy": "lp_weighting", "kwargs": {"group_size": 2}}})
    ds = lv.LPPODataset(data_files=parquet, tokenizer=tiny_tokenizer, config=cfg)
    assert v0.RayPPOTrainer is lv.LPPORayPPOTrainer
    sampler = v0.create_rl_sampler(cfg, ds)
    assert isinstance(sampler, lv.LPPOSampler) and sampler.strategy.name == "lp_weighting"
    # _get_gen_batch tags uids with keys (the trainer is not started: no GPU workers here)
    trainer = object.__new__(lv.LPPORayPPOTrainer)
    batch = DataProto.from_single_dict(next(iter(loader(ds, sampler))))
    batch.non_tensor_batch["uid"] = np.array(["a", "b", "c", "d"], dtype=object)
    gen = trainer._get_gen_batch(batch)  # verl moves "index" into the generation batch
    assert lv.keys_from_uids(batch.non_tensor_batch["uid"]) == [
        int(k) for k in gen.non_tensor_batch["index"]]
    assert list(gen.non_tensor_batch["uid"]) == list(batch.non_tensor_batch["uid"])
    with pytest.raises(ValueError, match="train_sampler"):
        lv.LPPORayPPOTrainer(config=None, tokenizer=None, role_worker_mapping={},
                             resource_pool_manager=None)


def test_validation_and_parquet_helper(dataset, tmp_path, tiny_tokenizer) -> None:
    with pytest.raises(ValueError, match="dataloader_num_workers"):
        lv.LPPOSampler(dataset, OmegaConf.create({**DATA_CFG, "dataloader_num_workers": 2}),
                       strategy=curriculum())
    with pytest.raises(ValueError, match="strategy"):
        lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG))
    with pytest.raises(ValueError, match="duplicate"):
        lv.LPPOSampler(dataset, batch_size=2, strategy=curriculum(), keys=[1] * N)
    path = lv.to_verl_parquet(
        [{"id": "a", "question": "1+1?", "answer": "2"}, {"id": "b", "question": "2+2?",
                                                           "answer": "4", "solution": "2+2=4"}],
        tmp_path / "p.parquet")
    ds = RLHFDataset(data_files=str(path), tokenizer=tiny_tokenizer,
                     config=OmegaConf.create({**DATA_CFG, "cache_dir": str(tmp_path / "c2")}))
    assert lv.dataset_keys(ds) == [0, 1]
    row = ds[1]
    assert row["index"] == 1 and row["extra_info"]["sample_id"] == "b"
    assert row["reward_model"]["ground_truth"] == "4"


@pytest.mark.skipif(
    not lv.HAS_CURRICULUM_SAMPLER, reason="verl >= 0.8 has no AbstractCurriculumSampler"
)
def test_curriculum_sampler_on_old_verl(dataset) -> None:  # pragma: no cover - verl <= 0.7 only
    cfg = OmegaConf.create({**DATA_CFG, "sampler": {"lppo": {"strategy": "uniform",
                                                             "kwargs": {"group_size": 2}}}})
    s = lv.LPPOCurriculumSampler(data_source=dataset, data_config=cfg)
    assert len(list(iter(s))) == len(s)
