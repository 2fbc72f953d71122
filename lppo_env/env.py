"""`MathReasoningEnv`: one math problem per episode, as a Gymnasium text environment."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from lppo_env.answers import contains_answer
from lppo_env.loaders import load_problems
from lppo_env.prefix import Prefix, TokenCounter, count_tokens, make_prefix
from lppo_env.problems import MathProblem, check_unique_ids
from lppo_env.spaces import UnicodeText
from lppo_env.verify import MathVerifier, default_verifier

__all__ = ["MathReasoningEnv", "DEFAULT_SYSTEM_PROMPT", "RESET_OPTIONS", "make_group_env",
           "group_options"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step, one step per line. "
    "Put the final answer in \\boxed{}, for example: The answer is \\boxed{42}."
)
RESET_OPTIONS = frozenset({"problem_id", "prefix_ratio", "prefix", "slots", "format",
                           "question", "restructure", "max_new_tokens", "length_reward",
                           "w_correct", "w_length", "w_format"})
_WEIGHTS = {"w_correct": 1.0, "w_length": 0.5, "w_format": 0.25}


class MathReasoningEnv(gym.Env[str, str]):
    """Single-turn math reasoning with a verifiable reward.

    ## Description
    Each episode is one math problem. The agent (a language model) writes a solution;
    the reward says whether its final answer equals the gold answer. An episode can be
    *guided*: the assistant turn then starts with a prefix of the expert solution (LPPO
    prefix-guided sampling) and the agent continues from there.

    ## Action Space
    `UnicodeText(max_completion_chars)`: the completion, i.e. the text the model
    generated *after* the prefix (the prefix is not repeated). Anything but a `str`
    raises TypeError (a `str()` of an object could state any answer).

    ## Observation Space
    `UnicodeText(max_prompt_chars)`: after `reset`, the user message (the question in
    `user_template`); with a `tokenizer`, the full chat-templated prompt including the
    system prompt and the partial assistant turn, ready to tokenize and generate from.
    After `step`, the empty string (the episode is over).

    ## Starting State
    `reset(seed=None, options=None)`. Options (all optional):
    - `"problem_id"`: the problem to pose; without it a problem is drawn with
      `self.np_random`, so the same seed gives the same problem.
    - `"prefix_ratio"`: float in [0, 1], expert prefix covering that fraction of the
      solution steps (`make_prefix`: cut at a step boundary, never the final answer).
    - `"prefix"`: explicit prefix text (exclusive with `"prefix_ratio"`). The same
      answer-leak guard applies: a prefix that states the final answer is cut to its
      longest head of whole lines that does not (`prefix_leak_trimmed` in info).
    A bad option raises an error that names it ("reset option 'prefix_ratio': ...").
    - `"format"`: "open" (default), "mcq" or "cloze": an answer-preserving variant of the
      question (`lppo_env.formats`; Cog-DRIFT). MCQ answers may be the option letter.
      A variant that cannot keep the answer raises `VariantError` naming the problem.
    - `"question"`: a restructured question to pose instead (CLPO); the reward is still
      verified against the problem's own answer. `"restructure"` labels it (info only).
    - `"max_new_tokens"`: the rollout's token budget (length curriculum); with
      `"length_reward": True` the reward is `lppo_env.length_reward` (correctness, length
      efficiency, format; weights `"w_correct"`, `"w_length"`, `"w_format"`).
    - `"slots"`: a list of per-slot option dicts; the env with `slot=i` merges
      `slots[i]` over the shared options. This is how a vector env gives each of its G
      copies its own prefix (see `make_group_env`).

    ## Rewards
    1.0 if math-verify judges the final answer of prefix + completion equal to the gold
    answer, else 0.0. No answer, a verifier timeout or a verifier error give 0.0 (the
    `status` in `info` tells them apart). With the reset option `length_reward` the
    reward is the length curriculum's composite in [0, 1] instead (`lppo_env.length_reward`).

    ## Episode End
    After one step: `terminated=True` (the task is done, there is nothing left to
    bootstrap), `truncated=False`.

    ## Information
    `reset` info: `problem_id`, `messages` (system, user and, when guided, a partial
    assistant turn holding the prefix: render with `continue_final_message=True`),
    `prefix`, `prefix_ratio`, `prefix_steps`, `prefix_tokens` (None without tokenizer),
    `prefix_leak_trimmed` (an explicit prefix was cut before the final answer),
    `guided`, `format`, `question` (as posed), `restructure`, `max_new_tokens` (0 = no budget).
    `step` info: `problem_id`, `parsed_answer`, `correct`, `status`, `prefix`, `guided`;
    with a length reward also `response_tokens`, `format_ok`, `over_budget`,
    `correctness_reward`.

    ## Arguments
    - `problems`: a dataset name or path for `load_problems`, or a sequence of
      `MathProblem` (default "default").
    - `dataset_kwargs`: options for `load_problems` when `problems` is a name.
    - `system_prompt`: the system message; None for no system message.
    - `user_template`: formats the user message; must contain `{question}`.
    - `tokenizer`: optional Hugging Face tokenizer, used to render the observation and
      to count prefix tokens.
    - `verifier`: a `MathVerifier`; default the shared `default_verifier()`.
    - `slot`: this env's index in a vector env (selects `options["slots"][slot]`).
    - `max_prompt_chars`, `max_completion_chars`: bounds of the text spaces.

    ## Vector envs
    `make_group_env` (G slots of one problem, no autoreset) is what training uses.
    `gymnasium.make_vec(ENV_ID, num_envs, vectorization_mode="async")` works too, with
    or without shared memory. Without shared memory pass
    `vector_kwargs={"shared_memory": False, "autoreset_mode": AutoresetMode.DISABLED}`:
    gymnasium 1.4's async worker forgets a pending autoreset on `reset` only when
    shared memory is on, so the next `step` would reset instead of scoring the action.

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        problems: str | Path | Sequence[MathProblem] = "default",
        *,
        dataset_kwargs: Mapping[str, Any] | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        user_template: str = "{question}",
        tokenizer: TokenCounter | None = None,
        verifier: MathVerifier | None = None,
        slot: int = 0,
        max_prompt_chars: int = 65_536,
        max_completion_chars: int = 65_536,
    ) -> None:
        if isinstance(problems, (str, Path)):
            loaded = load_problems(problems, **dict(dataset_kwargs or {}))
        else:
            if dataset_kwargs:
                raise ValueError("MathReasoningEnv expects dataset_kwargs only with a dataset "
                                 f"name, got {sorted(dataset_kwargs)} with a problem sequence")
            loaded = tuple(problems)
            if not all(isinstance(p, MathProblem) for p in loaded):
                raise TypeError("MathReasoningEnv expects problems to be MathProblem objects")
        if not loaded:
            raise ValueError("MathReasoningEnv expects at least one problem, got none")
        check_unique_ids(loaded)
        if "{question}" not in user_template:
            raise ValueError(f"MathReasoningEnv expects user_template to contain '{{question}}', "
                             f"got {user_template!r}")
        if isinstance(slot, bool) or not isinstance(slot, int) or slot < 0:
            raise ValueError(f"MathReasoningEnv expects slot >= 0, got {slot!r}")
        self.problems: tuple[MathProblem, ...] = loaded
        self._by_id = {p.id: p for p in loaded}
        self.system_prompt = system_prompt
        self.user_template = user_template
        self.tokenizer = tokenizer
        self.verifier = verifier
        self.slot = slot
        self.observation_space = UnicodeText(max_prompt_chars)
        self.action_space = UnicodeText(max_completion_chars)
        self._problem: MathProblem | None = None
        self._prefix = ""
        self._mcq: Any = None
        self._budget: int | None = None
        self._length_weights: dict[str, float] | None = None

    # -- lookup -----------------------------------------------------------------------

    @property
    def problem_ids(self) -> tuple[str, ...]:
        """Ids of all problems, in dataset order."""
        return tuple(p.id for p in self.problems)

    def problem(self, problem_id: str) -> MathProblem:
        """The problem with this id (KeyError naming the id otherwise)."""
        try:
            return self._by_id[problem_id]
        except KeyError:
            raise KeyError(
                f"MathReasoningEnv expects a known problem_id, got {problem_id!r}"
            ) from None

    @property
    def current_problem(self) -> MathProblem | None:
        """The problem of the running episode (None before the first reset)."""
        return self._problem

    # -- rendering --------------------------------------------------------------------

    def messages(self, problem: MathProblem, prefix: str = "") -> list[dict[str, str]]:
        """Chat messages for `problem`; a non-empty prefix becomes a partial assistant turn."""
        out = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        out.append(
            {"role": "user", "content": self.user_template.format(question=problem.question)}
        )
        if prefix:
            out.append({"role": "assistant", "content": prefix})
        return out

    def _observation(self, messages: list[dict[str, str]], guided: bool) -> str:
        if self.tokenizer is None:
            return messages[-2 if guided else -1]["content"]
        rendered = self.tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            messages, tokenize=False, add_generation_prompt=not guided,
            continue_final_message=guided,
        )
        return str(rendered)

    # -- Gymnasium API ----------------------------------------------------------------

    def _options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        opts = dict(options or {})
        unknown = set(opts) - RESET_OPTIONS
        if unknown:
            raise ValueError(
                f"MathReasoningEnv.reset expects options among "
                f"{sorted(RESET_OPTIONS)}, got unknown {sorted(unknown)}"
            )
        slots = opts.pop("slots", None)
        if slots is not None:
            if (not isinstance(slots, Sequence) or isinstance(slots, str)
                    or self.slot >= len(slots)):
                raise ValueError(f"reset option 'slots': expected a list with an entry for "
                                 f"slot {self.slot}, got {slots!r:.80}")
            entry = slots[self.slot]
            if entry is not None and not isinstance(entry, Mapping):
                raise ValueError(f"reset option 'slots': expected a dict of options for slot "
                                 f"{self.slot}, got {type(entry).__name__}")
            slot_opts = dict(entry or {})
            bad = set(slot_opts) - (RESET_OPTIONS - {"slots"})
            if bad:
                raise ValueError(f"reset option 'slots': expected slot options among "
                                 f"{sorted(RESET_OPTIONS - {'slots'})}, got unknown {sorted(bad)}")
            if slot_opts.keys() & {"prefix", "prefix_ratio"}:
                opts.pop("prefix", None)
                opts.pop("prefix_ratio", None)
            opts.update(slot_opts)
        if opts.get("prefix") is not None and opts.get("prefix_ratio") is not None:
            raise ValueError(
                "MathReasoningEnv.reset expects either 'prefix' or 'prefix_ratio', got both"
            )
        ratio = opts.get("prefix_ratio")
        if ratio is not None:
            if (isinstance(ratio, bool) or not isinstance(ratio, numbers.Real)
                    or not 0.0 <= float(ratio) <= 1.0):
                raise ValueError(f"reset option 'prefix_ratio': expected a number in [0, 1], "
                                 f"got {ratio!r:.40}")
            opts["prefix_ratio"] = float(ratio)
        if opts.get("prefix") is not None and not isinstance(opts["prefix"], str):
            raise TypeError(f"reset option 'prefix': expected str, "
                            f"got {type(opts['prefix']).__name__}")
        _check_curriculum_options(opts)
        return opts

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Pose a problem (see Starting State); returns (prompt, info)."""
        super().reset(seed=seed)
        opts = self._options(options)
        if opts.get("problem_id") is not None:
            if opts["problem_id"] not in self._by_id:
                raise KeyError(f"reset option 'problem_id': expected a known problem id, "
                               f"got {opts['problem_id']!r:.80}")
            problem = self._by_id[opts["problem_id"]]
        else:
            problem = self.problems[int(self.np_random.integers(len(self.problems)))]
        ratio = opts.get("prefix_ratio")
        leak_trimmed = False
        if opts.get("prefix") is not None:
            text = opts["prefix"]
            if contains_answer(text, problem.answer):
                text, leak_trimmed = _head_without_answer(text, problem.answer), True
            n_tokens = count_tokens(text, self.tokenizer) if self.tokenizer and text else None
            prefix = Prefix(text=text, n_steps=0, total_steps=len(problem.steps), ratio=0.0,
                            n_tokens=n_tokens if self.tokenizer is None or text else 0)
        else:
            prefix = make_prefix(problem, 0.0 if ratio is None else ratio, self.tokenizer)
        self._problem, self._prefix = problem, prefix.text
        shown, self._mcq = self._posed(problem, opts)
        self._budget = opts.get("max_new_tokens")
        self._length_weights = (
            {k: float(opts.get(k, v)) for k, v in _WEIGHTS.items()}
            if opts.get("length_reward") else None
        )
        if self._length_weights is not None and self._budget is None:
            raise ValueError("reset option 'length_reward': needs 'max_new_tokens' (the budget)")
        messages = self.messages(shown, prefix.text)
        info = {
            "problem_id": problem.id,
            "messages": messages,
            "prefix": prefix.text,
            "prefix_ratio": prefix.ratio,
            "prefix_steps": prefix.n_steps,
            "prefix_tokens": prefix.n_tokens,
            "prefix_leak_trimmed": leak_trimmed,
            "guided": prefix.guided,
            "format": opts.get("format", "open"),
            "question": shown.question,
            "restructure": opts.get("restructure", "none"),
            "max_new_tokens": self._budget or 0,  # 0: no budget (vector infos need one type)
        }
        return self._observation(messages, prefix.guided), info

    def _posed(self, problem: MathProblem, opts: dict[str, Any]) -> tuple[MathProblem, Any]:
        """The problem as shown (format variant or restructured question) and its MCQ."""
        from dataclasses import replace

        from lppo_env.formats import VariantError, variant

        fmt = opts.get("format", "open")
        if opts.get("question") is not None:
            if fmt != "open":
                raise ValueError("reset option 'question': a restructured question is posed "
                                 f"open-ended, got format {fmt!r} as well")
            return replace(problem, question=opts["question"]), None
        try:
            text, mcq = variant(problem, fmt)
        except VariantError as e:
            raise VariantError(f"reset option 'format': {e}") from e
        return (problem if fmt == "open" else replace(problem, question=text)), mcq

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score `prefix + action` against the gold answer; the episode ends."""
        if self._problem is None:
            raise gym.error.ResetNeeded("MathReasoningEnv.step expects reset() first, got step()")
        if not isinstance(action, str):
            raise TypeError(f"MathReasoningEnv.step expects action to be str (the completion "
                            f"text), got {type(action).__name__}")
        verifier = self.verifier or default_verifier()
        completion = self._prefix + action
        judged = self._mcq.resolve(completion) if self._mcq is not None else completion
        result = verifier.verify(judged, self._problem.answer)
        reward = float(result.reward)
        extra: dict[str, Any] = {}
        if self._length_weights is not None:
            from lppo_env.length_reward import formatted, length_reward

            n_tokens = (count_tokens(action, self.tokenizer) if self.tokenizer is not None
                        else len(action.split()))
            ok = formatted(completion)
            reward = length_reward(bool(result.correct), n_tokens, int(self._budget), ok,
                                   **self._length_weights)
            extra = {"response_tokens": n_tokens, "format_ok": ok,
                     "over_budget": n_tokens > int(self._budget),
                     "correctness_reward": float(result.reward)}
        info = {
            "problem_id": self._problem.id,
            "parsed_answer": result.parsed_answer,
            "correct": result.correct,
            "status": result.status,
            "prefix": self._prefix,
            "guided": bool(self._prefix),
            **extra,
        }
        self._problem = None
        return "", reward, True, False, info


def _check_curriculum_options(opts: dict[str, Any]) -> None:
    """Validate the curriculum options (format, question, budget, reward weights)."""
    from lppo_env.formats import FORMATS

    fmt = opts.get("format", "open")
    if fmt not in FORMATS:
        raise ValueError(f"reset option 'format': expected one of {list(FORMATS)}, got {fmt!r:.40}")
    q = opts.get("question")
    if q is not None and (not isinstance(q, str) or not q.strip()):
        raise ValueError(f"reset option 'question': expected a non-empty str, got {q!r:.40}")
    b = opts.get("max_new_tokens")
    if b is not None and (isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1):
        raise ValueError(f"reset option 'max_new_tokens': expected an int >= 1, got {b!r:.40}")
    if not isinstance(opts.get("length_reward", False), bool):
        raise ValueError("reset option 'length_reward': expected a bool")
    for k in _WEIGHTS:
        w = opts.get(k)
        if w is not None and (isinstance(w, bool) or not isinstance(w, numbers.Real)
                              or not 0.0 <= float(w) < float("inf")):
            raise ValueError(f"reset option {k!r}: expected a finite number >= 0, got {w!r:.40}")


def _head_without_answer(prefix: str, answer: str) -> str:
    """The longest head of `prefix`, in whole lines, that does not state `answer`.

    The guard `make_prefix` applies to expert steps, applied to an explicit prefix:
    a prefix that states the final answer would let an empty completion score 1.
    """
    lines = prefix.splitlines(keepends=True)
    k = 0
    while k < len(lines) and not contains_answer("".join(lines[: k + 1]), answer):
        k += 1
    return "".join(lines[:k])


def group_options(problem_id: str, prefixes: Sequence[float | str | None]) -> dict[str, Any]:
    """Reset options for G rollouts of one problem, one prefix spec per slot.

    Each entry is a prefix ratio (float), an explicit prefix (str), or None (unguided).
    """
    slots: list[dict[str, Any]] = []
    for p in prefixes:
        if p is None:
            slots.append({"prefix_ratio": 0.0})
        elif isinstance(p, str):
            slots.append({"prefix": p})
        else:
            slots.append({"prefix_ratio": float(p)})
    return {"problem_id": problem_id, "slots": slots}


def make_group_env(
    num_envs: int,
    problems: str | Path | Sequence[MathProblem] = "default",
    **env_kwargs: Any,
) -> SyncVectorEnv:
    r"""A `SyncVectorEnv` of `num_envs` (= G) envs over one shared problem list.

    Autoreset is disabled: a group is reset explicitly with `group_options(...)` for
    each new problem, never to a random one behind the caller's back. The problems are
    loaded once and shared; so is the verifier.

    Example:
        >>> envs = make_group_env(4)  # doctest: +SKIP
        >>> obs, info = envs.reset(options=group_options("arith:4-1", [None, None, 0.3, 0.5]))
        >>> _, rewards, *_ = envs.step(["... \\boxed{3}"] * 4)
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"make_group_env expects num_envs >= 1, got {num_envs!r}")
    if isinstance(problems, (str, Path)):
        problems = load_problems(problems, **dict(env_kwargs.pop("dataset_kwargs", None) or {}))
    shared = tuple(problems)

    def thunk(i: int) -> Any:
        return lambda: MathReasoningEnv(shared, slot=i, **env_kwargs)

    return SyncVectorEnv([thunk(i) for i in range(num_envs)], autoreset_mode=AutoresetMode.DISABLED)
