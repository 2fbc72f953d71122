"""The self-prefix guide through the real training step: successes stored from unguided
rollouts, replayed as the prefix of later guided slots, and every planned slot usable."""

from __future__ import annotations

import numpy as np

from agents.rollout.base import Rollout, SamplingConfig
from agents.step import train_step
from lppo_env import MathProblem, make_group_env
from lppo_sampling import make_strategy

PROBLEMS = [
    MathProblem(id=f"q{i}", question=f"{10 + i} + 5 + 7 =", answer=str(22 + i),
                steps=(f"{10 + i} + 5 = {15 + i}.", f"{15 + i} + 7 = {22 + i}."))
    for i in range(4)
]


class ScriptedBackend:
    """Slot 0 of every group answers right (1/4 pass rate); guided slots continue the prefix."""

    def __init__(self) -> None:
        self.requests = []
        self.calls = 0

    def generate(self, requests, sampling):
        self.requests.append(list(requests))
        out = []
        for k, req in enumerate(requests):
            i = int(req.prompt.split(" + ")[0][-2:]) - 10 if not req.prefix else None
            if req.prefix:
                text = " right."  # a guided continuation: scored on prefix + text
            elif k % 4 == 0:
                text = f"{10 + i} + 5 = {15 + i}.\n{15 + i} + 7 = {22 + i}.\n\\boxed{{{22 + i}}}"
            else:
                text = "\\boxed{0}"
            out.append(Rollout([1], [2] if req.prefix else [], [3, 4], [0.0, 0.0], text,
                               prefix=req.prefix, request_index=k))
        return out

    def sync_weights(self, model) -> None:
        pass


class NoUpdate:
    model = None

    def update(self, batch):
        return {}


def test_self_prefix_replays_a_stored_success_in_the_step() -> None:
    strategy = make_strategy("lppo_self", group_size=4, rare_threshold=0.3)
    strategy.add_samples([p.id for p in PROBLEMS], has_solution=[True] * 4)
    envs = make_group_env(4 * 4, PROBLEMS)
    backend = ScriptedBackend()
    kw = dict(batch_size=4, sampling=SamplingConfig(max_new_tokens=8), pad_token_id=0)
    record, metrics = train_step(strategy, envs, backend, NoUpdate(), **kw)
    assert not record.guided.any()  # nothing stored yet: nothing guided
    assert len(strategy.guide.heads) == 4  # each group's unguided success was stored
    record, metrics = train_step(strategy, envs, backend, NoUpdate(), **kw)
    assert metrics["prefix/planned_unusable"] == 0
    guided = record.guided
    assert guided.any() and (guided == (record.prefix_ratios > 0)).all()
    for i, key in enumerate(record.keys.tolist()):
        head = strategy.guide.heads[strategy.stats.register([key])[0]]
        p = next(p for p in PROBLEMS if p.id == key)
        for j in np.flatnonzero(guided[i]):
            prefix = record.prefixes[i, j]
            assert head.startswith(prefix) and prefix.endswith("=")
            assert p.answer not in prefix.split()  # cut before the answer appears
    # the prefix went to the backend and is not trained: it sits on the prompt side
    sent = [r for r in backend.requests[-1] if r.prefix]
    assert len(sent) == int(guided.sum())
