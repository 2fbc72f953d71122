"""verl 0.9.1 and per-rollout plan options: refused when the sampler is built, never dropped.

verl's rollout (the agent loop's sampling params) could cap one rollout's tokens, but
neither verl's scorers nor lppo_env's `compute_score` compute the length curriculum's
composite reward, pose an MCQ/cloze variant or a restructured question; so strategies
whose plans carry such options are refused through verl's own start-up path (hydra
config, `LPPODataset` via `create_rl_dataset`, `main_ppo_v0`'s and V1's
`create_rl_sampler` globals), with the harness of test_verl.py.
"""
# ruff: noqa: F811 - fixtures imported from test_verl are test parameters here

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("torchdata")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from test_verl import (  # noqa: E402, F401 - fixtures and helpers of the verl harness
    DATA_CFG,
    _restore_verl_globals,
    compose,
    dataset,
    model_dir,
    start_run,
)
from verl import DataProto  # noqa: E402

from lppo_sampling import make_strategy  # noqa: E402
from lppo_sampling.integrations import verl as lv  # noqa: E402
from lppo_sampling.strategies.formats import FormatGuide  # noqa: E402

pytestmark = pytest.mark.integration

REFUSED = {"length_curriculum": "max_new_tokens", "cog_drift": "format"}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_legacy_start_up_refuses_option_strategies(name, model_dir, tmp_path) -> None:
    """Bug caught: length_curriculum run by verl with the run's own response length and a
    plain score (or cog_drift with open questions only), the strategy none the wiser."""
    with pytest.raises(ValueError) as e:
        start_run(compose(model_dir, tmp_path, strategy=name))
    msg = str(e.value)
    assert msg.startswith(f"data.lppo.strategy: strategy '{name}' sets the per-rollout option "
                          f"'{REFUSED[name]}'") and "\n" not in msg
    assert f"lppo train --strategy {name}" in msg


def test_clpo_strategy_object_and_h1_without_labels_are_refused(dataset) -> None:
    """Bug caught: a restructured question never posed; h1 failing at its first batch."""
    clpo = make_strategy("clpo", group_size=2, restructure_fn=lambda k, m: [None] * len(k))
    with pytest.raises(ValueError, match=r"^data\.lppo\.strategy: strategy 'clpo' sets the "
                                         r"per-rollout option 'question'.*write_prompts"):
        lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG), strategy=clpo)
    with pytest.raises(ValueError, match=r"^data\.lppo\.strategy: strategy 'h1'.*category"):
        lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG),
                       strategy=make_strategy("h1", group_size=2))


def test_v1_sampler_hook_names_the_option_not_prefix_guidance(dataset, tmp_path,
                                                              tiny_tokenizer) -> None:
    """Bug caught: V1 refusing length_curriculum as 'prefix guidance' (the wrong reason)."""
    v1 = pytest.importorskip("verl.trainer.ppo.v1.trainer_base")
    cfg = OmegaConf.create({**DATA_CFG, "cache_dir": str(tmp_path / "c"),
                            "lppo": {"strategy": "length_curriculum",
                                     "kwargs": {"group_size": 2}}})
    ds = lv.LPPODataset(data_files=dataset.data_files, tokenizer=tiny_tokenizer, config=cfg)
    with pytest.raises(ValueError, match=r"^data\.lppo\.strategy: strategy 'length_curriculum' "
                                         r"sets the per-rollout option 'max_new_tokens'.*V1"):
        v1.create_rl_sampler(cfg, ds)


def test_a_plan_with_options_never_reaches_the_rollout() -> None:
    """Bug caught: a guide swapped in after start-up whose format is silently dropped."""
    strat = make_strategy("uniform", group_size=2)
    keys = np.arange(4) * 10
    s = lv.LPPOSampler(None, strategy=strat, batch_size=4, keys=keys)
    strat.guide = FormatGuide()
    strat.guide.bind(strat.stats)
    infos = np.empty(4, dtype=object)
    infos[:] = [{"index": int(k)} for k in keys]
    b = DataProto.from_dict(tensors={"x": torch.zeros(4, 1)},
                            non_tensors={"uid": np.array([f"u{i}" for i in range(4)], object),
                                         "extra_info": infos})
    lv.tag_uids(b)
    gen = b.repeat(2, interleave=True)
    with pytest.raises(ValueError, match=r"sample 0 carries the per-rollout option\(s\) "
                                         r"\['format'\]"):
        s.attach_prefixes(gen)
    assert "lppo_prefix" not in gen.non_tensor_batch
