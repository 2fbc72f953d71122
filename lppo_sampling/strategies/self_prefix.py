"""Self-prefix guide: replay the head of the policy's own earlier success on a rarely solved sample.

Idea (Rollout Pass-Rate Control, arXiv 2605.05112): a sample the policy solves rarely but
not never has, somewhere in its history, a successful rollout. Starting some of the next
rollouts from a head of that rollout raises the sample's pass rate towards a useful
level, and the prefix is in the policy's own format, which an expert solution may not
be. The replayed tokens are context, never trained (the rollout backend puts any prefix
on the prompt side), and guided results never move the unguided EMA (`SampleStats`
tracks them apart), exactly as for LPPO's expert prefixes.

The plan keeps the `RolloutPlan` contract: `prefix_ratios[i, j] > 0` marks a guided slot
and says where to cut; `SelfPrefixGuide.source == "self"` says the prefix comes from the
stored success, which `self_prefix_texts(strategy, plan)` turns into text. The trainer
hands successes back with `remember_successes(strategy, keys, rewards, texts, answers)`.

Cuts (pure, `cut_points` / `cut_self_prefix`): the stored text is first truncated before
the answer's first appearance (so no prefix states it), then cut just after an `=` (a
computation left open, as the expert mid cut) or, without any `=`, at a line end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from lppo_sampling import rules
from lppo_sampling.batch import GroupResults, RolloutPlan
from lppo_sampling.roles import (
    Guide,
    KeepAll,
    LPWeighter,
    UniformSelector,
    UnitWeighter,
    check_range,
)
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = [
    "SelfPrefixGuide",
    "cut_points",
    "cut_self_prefix",
    "remember_successes",
    "replayable_head",
    "self_prefix",
    "self_prefix_texts",
    "lppo_self",
]


def _answer_re(answer: str) -> re.Pattern[str]:
    """The answer as a standalone token: "14" must not match inside "140" or "2.14"."""
    a = answer.strip()
    return re.compile(r"(?<![\w.])" + re.escape(a) + r"(?![\w]|\.\d)")


def replayable_head(text: str, answer: str) -> str:
    """The part of a successful completion before the answer first appears ("" if at once)."""
    if not answer.strip():
        return ""
    m = _answer_re(answer).search(text)
    return text if m is None else text[: m.start()]


def cut_points(head: str) -> list[int]:
    """Positions where a replay may end: just after each `=`, else after each line break.

    Every cut leaves at least one character of non-whitespace text before it.
    """
    eq = [i + 1 for i, ch in enumerate(head) if ch == "=" and head[:i].strip()]
    if eq:
        return eq
    return [i + 1 for i, ch in enumerate(head) if ch == "\n" and head[:i].strip()]


def cut_self_prefix(head: str, ratio: float) -> str:
    """Prefix of a replayable head at depth `ratio` in (0, 1]; "" when it has no cut point.

    The k-th of the n cut points with k = min(n - 1, floor(ratio * n)): deeper ratios give
    longer prefixes, and ratio 1 keeps the last open computation for the model.
    """
    pts = cut_points(head)
    if not pts or ratio <= 0:
        return ""
    k = min(len(pts) - 1, int(np.floor(ratio * len(pts))))
    return head[: pts[k]]


class SelfPrefixGuide(Guide):
    """Guide rarely solved samples with a prefix of their own stored success.

    A sample is guided when it has a stored success (`remember_successes`) and its EMA
    unguided pass rate is at most `rare_threshold` (solved rarely; a stored success means
    not never). Its last `guided_fraction · G` slots (at least one) get a depth drawn
    uniformly from [`low`, `high`]; the rest stay unguided so the unguided pass rate keeps
    being measured.

    Args:
        low, high: band of cut depths, 0 < low <= high <= 1.
        guided_fraction: share of the G rollouts that are guided (0.5).
        rare_threshold: EMA pass rate at or below which a sample counts as rarely solved.
    """

    source = "self"

    def __init__(
        self,
        low: float = 0.25,
        high: float = 0.75,
        guided_fraction: float = 0.5,
        rare_threshold: float = 0.25,
    ) -> None:
        self.low = check_range("low", low, 0.0, 1.0, closed="right")
        self.high = check_range("high", high, 0.0, 1.0, closed="right")
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got {low} > {high}")
        self.guided_fraction = check_range("guided_fraction", guided_fraction, 0.0, 1.0)
        self.rare_threshold = check_range("rare_threshold", rare_threshold, 0.0, 1.0)
        self.heads: dict[int, str] = {}
        self._last: dict[str, float] = {}

    def eligible(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """(n,) bool: has a stored success and a low enough unguided EMA."""
        stored = np.fromiter((int(r) in self.heads for r in rows), bool, rows.shape[0])
        return stored & stats.seen(rows) & (stats["ema"][rows] <= self.rare_threshold)

    def plan(
        self, stats: SampleStats, rows: np.ndarray, group_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """(n, G) depths: eligible rows' last slots get a depth in [low, high]."""
        rows = np.asarray(rows, np.int64)
        n_guided = rules.guided_slot_count(group_size, self.guided_fraction)
        n_guided = min(n_guided, group_size - 1) if group_size > 1 else n_guided
        # G = 1 fills the group: never guided twice in a row (see rules.allow_guidance)
        ok = rules.allow_guidance(
            self.eligible(stats, rows), stats["last_event_guided_only"][rows], n_guided,
            group_size,
        )
        ratios = np.zeros((rows.shape[0], group_size), dtype=np.float64)
        if n_guided and ok.any():
            depth = rng.uniform(self.low, self.high, size=(int(ok.sum()), n_guided))
            ratios[ok, group_size - n_guided :] = np.maximum(depth, np.nextafter(0.0, 1.0))
        self._last = {
            "sampler/self_prefix_sample_frac": float(ok.mean()) if ok.size else 0.0,
            "sampler/self_prefix_stored": float(len(self.heads)),
        }
        return ratios

    def remember(self, row: int, text: str, answer: str) -> bool:
        """Store the replayable head of a success of `row`; False (nothing stored) if unusable."""
        head = replayable_head(text, answer)
        if not cut_points(head):
            return False
        self.heads[int(row)] = head
        return True

    def text(self, row: int, ratio: float) -> str:
        """The prefix of `row`'s stored success at depth `ratio` ("" if none stored)."""
        head = self.heads.get(int(row))
        return cut_self_prefix(head, ratio) if head is not None else ""

    def state_dict(self) -> dict:
        """Stored heads as parallel arrays of rows and texts (JSON-safe strings)."""
        rows = sorted(self.heads)
        return {"rows": np.asarray(rows, np.int64), "heads": [self.heads[r] for r in rows]}

    def load_state_dict(self, state: dict) -> None:
        """Restore stored heads; `ValueError` if rows and heads do not pair up."""
        rows = np.asarray(state.get("rows", []), np.int64).reshape(-1)
        heads = list(state.get("heads", []))
        if rows.shape[0] != len(heads) or not all(isinstance(h, str) for h in heads):
            raise ValueError(
                f"self-prefix state needs as many string heads as rows, got {len(heads)} "
                f"heads for {rows.shape[0]} rows"
            )
        self.heads = {int(r): h for r, h in zip(rows.tolist(), heads, strict=True)}

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Share of the last plan's samples guided, and how many successes are stored."""
        return dict(self._last)

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Nothing: successes arrive with their text through `remember_successes`."""


def _self_guide(strategy: Strategy) -> SelfPrefixGuide | None:
    g = strategy.guide
    return g if isinstance(g, SelfPrefixGuide) else None


def remember_successes(
    strategy: Strategy,
    keys: Sequence[object] | np.ndarray,
    rewards: np.ndarray,
    texts: Sequence[Sequence[str]],
    answers: Sequence[str],
    guided: np.ndarray | None = None,
) -> int:
    """Store, per sample, its latest unguided success (no-op for other guides).

    Args:
        strategy: any strategy; only a `SelfPrefixGuide` stores anything.
        keys: (n,) sample keys of the step.
        rewards: (n, G) rewards; a slot with reward >= 1 is a success.
        texts: n lists of G completion texts (what the verifier scored).
        answers: (n,) gold answers, to cut each text before the answer appears.
        guided: (n, G) bool; guided successes are not stored (they replay context).

    Returns:
        How many samples got a (new) stored success.
    """
    guide = _self_guide(strategy)
    if guide is None:
        return 0
    r = np.asarray(rewards, np.float64)
    g = np.zeros(r.shape, bool) if guided is None else np.asarray(guided, bool)
    rows = strategy.stats.register(strategy.stats.index.validate(keys))
    stored = 0
    for i, row in enumerate(rows.tolist()):
        # the last success in slot order: later slots are no older, and one per sample
        for j in reversed(range(r.shape[1])):
            if r[i, j] >= 1.0 and not g[i, j] and guide.remember(row, texts[i][j], answers[i]):
                stored += 1
                break
    return stored


def self_prefix_texts(strategy: Strategy, plan: RolloutPlan) -> list[list[str]] | None:
    """Per slot, the self-prefix text a guided slot starts from; None for other guides.

    A planned slot only ever gets a positive depth when its sample has a stored head
    with a cut point, so every planned slot gets a non-empty text.
    """
    guide = _self_guide(strategy)
    if guide is None:
        return None
    rows = strategy.stats.register(plan.keys)
    return [
        [guide.text(row, float(d)) if d > 0 else "" for d in plan.prefix_ratios[i]]
        for i, row in enumerate(rows.tolist())
    ]


@register_strategy("self_prefix")
def self_prefix(
    group_size: int = 8,
    beta: float = 0.8,
    low: float = 0.25,
    high: float = 0.75,
    guided_fraction: float = 0.5,
    rare_threshold: float = 0.25,
    seed: int = 0,
) -> Strategy:
    """Self-prefix guidance only (uniform batches, weight 1)."""
    return Strategy(
        selector=UniformSelector(),
        guide=SelfPrefixGuide(low, high, guided_fraction, rare_threshold),
        filter=KeepAll(),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )


@register_strategy("lppo_self")
def lppo_self(
    group_size: int = 8,
    beta: float = 0.8,
    kappa: float = 8.0,
    bias: float = 0.5,
    normalize_weights: bool = False,
    low: float = 0.25,
    high: float = 0.75,
    guided_fraction: float = 0.5,
    rare_threshold: float = 0.25,
    seed: int = 0,
) -> Strategy:
    """LP-weighting + the self-prefix guide over uniform batches."""
    return Strategy(
        selector=UniformSelector(),
        guide=SelfPrefixGuide(low, high, guided_fraction, rare_threshold),
        filter=KeepAll(),
        weighter=LPWeighter(kappa, bias, normalize_weights),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )
