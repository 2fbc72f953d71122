"""Model-side signals of the curricula, computed on our policy (the callables lppo_sampling takes).

| strategy  | argument         | here                                                          |
|-----------|------------------|---------------------------------------------------------------|
| `pcl`     | `predictor`      | `ValueHead` on fresh `HiddenStates` (mean-pooled last layer)  |
| `adcl`    | `estimate_fn`    | `ValueHead` on fresh `HiddenStates` (the current model)       |
| `gain_rl` | `score_fn`       | `AngleScorer`: mean pairwise cosine at the last `mlp.up_proj` |
| `gain_rl` | `angle_fn`       | `BatchAngle`: the batch's mean `AngleScorer`, current policy  |
| `clpo`    | `restructure_fn` | `PolicyRestructurer`: the policy rewrites, answer checked     |

`build_signals(name, policy_fn, problems)` builds what a strategy's catalog entry asks
for; the trainer passes `policy_fn=lambda: self.policy`, so the signals follow the
policy being trained and cost nothing until the strategy first calls them. Features are
computed with the current policy (no cache across steps), so a resumed run predicts exactly
as an uninterrupted one: the policy is in the checkpoint, the head's statistics in the
sampler state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "HiddenStates",
    "ValueHead",
    "AngleScorer",
    "BatchAngle",
    "PolicyRestructurer",
    "build_signals",
]


def _prompt_ids(policy: Any, question: str) -> list[int]:
    from agents.policy import encode_chat

    ids, _ = encode_chat(policy.tokenizer, [{"role": "user", "content": question}])
    return ids


def _questions(problems: Mapping[Any, Any], keys: np.ndarray) -> list[str]:
    out = []
    for k in np.asarray(keys).tolist():
        p = problems.get(k, problems.get(str(k)))
        if p is None:
            raise KeyError(f"no problem with key {k!r} for the model signal")
        out.append(p.question if hasattr(p, "question") else str(p))
    return out


class HiddenStates:
    """Mean-pooled last-layer hidden state of each problem's prompt (one prefill pass).

    Args:
        policy_fn: returns the current `Policy` (called at each computation).
        problems: key → `MathProblem` (or question text).
        cache: keep features per key (PCL: features of the policy at first sight);
            False recomputes with the current model each time (ADCL's re-estimates).
        batch_size: prompts per forward pass.
    """

    def __init__(self, policy_fn: Callable[[], Any], problems: Mapping[Any, Any], *,
                 cache: bool = True, batch_size: int = 8) -> None:
        self.policy_fn, self.problems, self.cache = policy_fn, problems, cache
        self.batch_size = batch_size
        self._cache: dict[Any, np.ndarray] = {}

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        """(m, H) float64 features, each scaled to unit norm."""
        import torch

        keys = np.asarray(keys)
        todo = [i for i, k in enumerate(keys.tolist()) if not self.cache or k not in self._cache]
        got: dict[int, np.ndarray] = {}
        if todo:
            policy = self.policy_fn()
            model, dev = policy.model, policy.device
            qs = _questions(self.problems, keys[todo])
            was_training = model.training
            model.eval()
            with torch.no_grad():
                for s in range(0, len(todo), self.batch_size):
                    ids = [_prompt_ids(policy, q) for q in qs[s:s + self.batch_size]]
                    width = max(map(len, ids))
                    pad = policy.tokenizer.pad_token_id or 0
                    x = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=dev)
                    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids],
                                        device=dev)
                    h = model(input_ids=x, attention_mask=mask,
                              output_hidden_states=True).hidden_states[-1].float()
                    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                    for j, v in enumerate(pooled.cpu().numpy().astype(np.float64)):
                        got[todo[s + j]] = v
            model.train(was_training)
            if self.cache:
                for i, v in got.items():
                    self._cache[keys[i].item() if hasattr(keys[i], "item") else keys[i]] = v
        rows = [got[i] if i in got else self._cache[k] for i, k in enumerate(keys.tolist())]
        return np.stack(rows) if rows else np.zeros((0, 1))


class ValueHead:
    """Pass-rate predictor V(x) = clip(prior + [φ(x), 1]·w, 0, 1) on the policy's features.

    A ridge head fitted online: `update(keys, targets)` folds the batch into decayed
    sufficient statistics (A ← γA + Σ φ̃φ̃ᵀ, c ← γc + Σ φ̃(t − prior)) and solves
    w = (A + λI)⁻¹c exactly — PCL's on-policy regression of its value model onto each
    group's mean reward, with a linear head instead of a separate LM, and recent batches
    weighted more (γ = `forget`). Predictions are clipped into [0, 1].

    Args:
        features: `(keys) -> (m, H)` features (a `HiddenStates`).
        l2: ridge penalty λ; forget: decay γ of older batches in (0, 1].
        prior: the prediction before any update.
    """

    def __init__(self, features: Callable[[np.ndarray], np.ndarray], *, l2: float = 1e-2,
                 forget: float = 0.9, prior: float = 0.5) -> None:
        self.features, self.l2, self.forget, self.prior = features, l2, forget, prior
        self.A: np.ndarray | None = None
        self.c: np.ndarray | None = None
        self.w: np.ndarray | None = None
        # features of the last predict: the policy has not changed when the same step's
        # groups come back to `update`, so they are reused instead of a second prefill
        self._last: dict[Any, np.ndarray] = {}

    def _features(self, keys: np.ndarray, remember: bool) -> np.ndarray:
        ks = np.asarray(keys).tolist()
        if not remember and ks and all(k in self._last for k in ks):
            return np.stack([self._last[k] for k in ks])
        phi = self.features(keys)
        if remember:
            self._last = dict(zip(ks, phi, strict=True))
        return phi

    @staticmethod
    def _aug(phi: np.ndarray) -> np.ndarray:
        return np.concatenate([phi, np.ones((phi.shape[0], 1))], axis=1)

    def predict(self, keys: np.ndarray) -> np.ndarray:
        """Predicted pass rates, (m,) in [0, 1]."""
        phi = self._aug(self._features(keys, remember=True))
        z = self.prior + (phi @ self.w if self.w is not None else np.zeros(phi.shape[0]))
        return np.clip(z, 0.0, 1.0)

    __call__ = predict

    def update(self, keys: np.ndarray, targets: np.ndarray) -> None:
        """Fold the observed mean rewards of `keys` in and refit."""
        phi, t = self._aug(self._features(keys, remember=False)), np.asarray(targets, np.float64)
        if self.A is None:
            self.A, self.c = np.zeros((phi.shape[1],) * 2), np.zeros(phi.shape[1])
        self.A = self.forget * self.A + phi.T @ phi
        self.c = self.forget * self.c + phi.T @ (t - self.prior)
        self.w = np.linalg.solve(self.A + self.l2 * np.eye(self.A.shape[0]), self.c)

    def state_dict(self) -> dict:
        """Sufficient statistics and weights (saved with the strategy)."""
        empty = np.zeros(0)
        return {"A": empty if self.A is None else self.A.copy(),
                "c": empty if self.c is None else self.c.copy(),
                "w": empty if self.w is None else self.w.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restore statistics and weights."""
        a, c, w = (np.asarray(state[k], np.float64) for k in ("A", "c", "w"))
        self.A = None if a.size == 0 else a
        self.c = None if c.size == 0 else c
        self.w = None if w.size == 0 else w


def _last_up_proj(model: Any) -> Any:
    last = None
    for name, module in model.named_modules():
        if name.endswith("mlp.up_proj"):
            last = module
    if last is None:
        raise ValueError("strategy 'gain_rl': score_fn needs a model with an mlp.up_proj layer "
                         "(Llama, Qwen, SmolLM2...); pass your own score_fn for this model")
    return last


class AngleScorer:
    """GAIN-RL's angle concentration: mean pairwise cosine of a prompt's token states.

    One prefill pass per prompt with a forward pre-hook on the last layer's
    `mlp.up_proj` (its input: the post-attention-norm states); the score is the mean
    cosine over token pairs i > j (the causal lower triangle). The paper's code adds
    8 × the question-vs-system-prompt cosine with hard-coded template offsets; that term
    is left out here (no system-prompt offsets in our chat template).
    """

    def __init__(self, policy_fn: Callable[[], Any], problems: Mapping[Any, Any]) -> None:
        self.policy_fn, self.problems = policy_fn, problems

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        """(m,) scores in [-1, 1]."""
        import torch

        policy = self.policy_fn()
        model = policy.model
        seen: list[torch.Tensor] = []
        handle = _last_up_proj(model).register_forward_pre_hook(
            lambda _m, args: seen.append(args[0].detach()))
        out = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for q in _questions(self.problems, keys):
                    seen.clear()
                    ids = torch.tensor([_prompt_ids(policy, q)], device=policy.device)
                    model(input_ids=ids)
                    x = torch.nn.functional.normalize(seen[-1][0].float(), dim=-1)
                    t = x.shape[0]
                    if t < 2:
                        out.append(1.0)
                        continue
                    cos = x @ x.T
                    out.append(float(cos.tril(-1).sum() / (t * (t - 1) / 2)))
        finally:
            handle.remove()
            model.train(was_training)
        return np.asarray(out, np.float64)


class BatchAngle:
    """GAIN-RL's online angle metric: the batch's mean angle concentration, current policy.

    Why: μ's update is n·tanh(α(acc/2 − β)) + n·tanh(α·angle), clipped at adj_min = 0;
    with rewards in [0, 1] the accuracy term is never positive, so without this term the
    Gaussian's centre never moves. The paper's code hooks the old-log-prob pass (prompt
    and response tokens); the selector hands `angle_fn` the batch's keys only, so this
    prefills the batch's prompts with the policy as it is at the step's observe (one
    extra prefill of n prompts per step). Prompt tokens only: a deviation from the paper.
    """

    def __init__(self, policy_fn: Callable[[], Any], problems: Mapping[Any, Any]) -> None:
        self.scorer = AngleScorer(policy_fn, problems)

    def __call__(self, keys: np.ndarray) -> float:
        """Mean angle concentration of the batch's prompts, in [-1, 1]."""
        return float(np.mean(self.scorer(keys)))


class PolicyRestructurer:
    r"""CLPO's restructuring: the policy rewrites a problem, simpler or rephrased.

    The policy is asked for a new problem with the same final answer and then its
    solution ending in `\boxed{}`. A rewrite is accepted only if that boxed answer equals
    the original answer (exact numeric or text match) and the new problem text does not
    state the answer; otherwise the call returns None for it and the sample is posed as
    it is. Decoding is greedy, so a rewrite is reproducible.
    """

    PROMPTS = {
        "simplify": "Rewrite this math problem as an easier problem that has exactly the same "
                    "final answer.",
        "diversify": "Rephrase this math problem in different words; the final answer must "
                     "stay exactly the same.",
    }

    def __init__(self, policy_fn: Callable[[], Any], problems: Mapping[Any, Any], *,
                 max_new_tokens: int = 192) -> None:
        self.policy_fn, self.problems, self.max_new_tokens = policy_fn, problems, max_new_tokens
        self.accepted = 0
        self.rejected = 0

    def _ask(self, policy: Any, instruction: str, question: str) -> str:
        import torch

        msg = (f"{instruction}\nProblem: {question}\n\nWrite 'New problem:' followed by the "
               f"new problem, then 'Solution:' and its solution with the final answer in "
               f"\\boxed{{}}.")
        ids = torch.tensor([_prompt_ids(policy, msg)], device=policy.device)
        with torch.no_grad():
            out = policy.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=policy.tokenizer.pad_token_id,
            )
        return policy.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    @staticmethod
    def parse(text: str, answer: str) -> str | None:
        """The new problem of a reply, if its solution's boxed answer is the original."""
        from lppo_env.answers import contains_answer, last_boxed, parse_number

        if "New problem:" not in text or "Solution:" not in text:
            return None
        new = text.split("New problem:", 1)[1].split("Solution:", 1)[0].strip()
        got = last_boxed(text.split("Solution:", 1)[1])
        if not new or got is None:
            return None
        a, b = parse_number(got), parse_number(answer)
        same = (a == b) if a is not None and b is not None else got.strip() == answer.strip()
        if not same or contains_answer(new, answer):
            return None
        return new

    def __call__(self, keys: np.ndarray, modes: list[str]) -> list[str | None]:
        """The rewritten question per key (None where the rewrite was not accepted)."""
        policy = self.policy_fn()
        out: list[str | None] = []
        for k, mode in zip(np.asarray(keys).tolist(), modes, strict=True):
            p = self.problems.get(k, self.problems.get(str(k)))
            reply = self._ask(policy, self.PROMPTS[mode], p.question)
            new = self.parse(reply, p.answer)
            self.accepted += new is not None
            self.rejected += new is None
            out.append(new)
        return out


def build_signals(
    strategy: str, policy_fn: Callable[[], Any], problems: Mapping[Any, Any],
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The model-side callables `strategy` needs and `given` does not already hold."""
    from lppo_sampling import available_strategies
    from lppo_sampling.strategies.catalog import strategy_info

    if strategy not in available_strategies():
        return {}  # make_strategy names the unknown strategy
    given = dict(given or {})
    out: dict[str, Any] = {}
    for arg in strategy_info(strategy).signals:
        if given.get(arg) is not None:
            continue
        if arg == "predictor":  # PCL scores candidates with the current policy each step
            out[arg] = ValueHead(HiddenStates(policy_fn, problems, cache=False))
        elif arg == "estimate_fn":
            out[arg] = ValueHead(HiddenStates(policy_fn, problems, cache=False))
        elif arg == "score_fn":
            out[arg] = AngleScorer(policy_fn, problems)
            if given.get("angle_fn") is None:  # the online term that moves μ (see BatchAngle)
                out["angle_fn"] = BatchAngle(policy_fn, problems)
        elif arg == "restructure_fn":
            out[arg] = PolicyRestructurer(policy_fn, problems)
        else:
            raise ValueError(f"strategy {strategy!r} needs {arg!r}, which agents cannot build; "
                             f"pass it in strategy_kwargs")
    return out
