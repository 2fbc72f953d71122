"""Break the sampler on purpose, one deliberate bug at a time, and check a test catches it.

Each entry is (bug, file, original text, mutated text, test that must fail). For every
entry the package and tests are copied to a temporary directory, the bug is written in,
and only the named test runs there: "killed" means it failed, as it should. Run from the
repository root (a few minutes; the working tree is not touched):

    python tests/sampling/mutation_check.py                # every bug
    python tests/sampling/mutation_check.py "td0 overshoot" "lp sign flip"

The guided-leak bug of the split / guided properties is `GuidedLeakStats` in
test_core_strategy.py, checked by `test_strengthened_properties_kill_the_guided_leak_mutant`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MUTANTS = [
    (
        'lp bias dropped',
        'lppo_sampling/rules.py',
        'return sigmoid(kappa * np.asarray(delta, dtype=np.float64)) + bias',
        'return sigmoid(kappa * np.asarray(delta, dtype=np.float64)) + 2 * bias',
        'tests/sampling/test_core_rules.py::test_lp_weight_bounded',
    ),
    (
        'lp sign flip',
        'lppo_sampling/rules.py',
        'return sigmoid(kappa * np.asarray(delta, dtype=np.float64)) + bias',
        'return sigmoid(-kappa * np.asarray(delta, dtype=np.float64)) + bias',
        'tests/sampling/test_core_rules.py::test_lp_weight_monotone_in_progress',
    ),
    (
        'ema swapped coeffs',
        'lppo_sampling/rules.py',
        'return np.where(seen, beta * old + (1.0 - beta) * observed, observed)',
        'return np.where(seen, (1.0 - beta) * old + beta * observed, observed)',
        'tests/sampling/test_core_rules.py::test_ema_converges_to_constant_rate',
    ),
    (
        'ema first sight 0',
        'lppo_sampling/rules.py',
        'return np.where(seen, beta * old + (1.0 - beta) * observed, observed)',
        'return np.where(seen, beta * old + (1.0 - beta) * observed, (1.0 - beta) * observed)',
        'tests/sampling/test_core_rules.py::test_ema_stays_in_unit_interval',
    ),
    (
        'delta on first sight',
        'lppo_sampling/rules.py',
        'return np.where(seen, new - old, 0.0)',
        'return new - old',
        'tests/sampling/test_core_rules.py::test_progress_zero_on_first_sight',
    ),
    (
        'stuck ignores solution',
        'lppo_sampling/rules.py',
        'return np.asarray(seen, bool) & np.asarray(has_solution, bool) & (failed_last | low_ema)',
        'return np.asarray(seen, bool) & (failed_last | low_ema)',
        'tests/sampling/test_core_rules.py::test_stuck_requires_history_and_solution',
    ),
    (
        'guided slots first',
        'lppo_sampling/rules.py',
        'ratios[rows, np.arange(group_size - n_guided, group_size)] = draws',
        'ratios[rows, np.arange(0, n_guided)] = draws',
        'tests/sampling/test_core_rules.py::test_prefix_ratios_in_band_and_layout',
    ),
    (
        'allow_guidance ignored',
        'lppo_sampling/rules.py',
        '    if n_guided < group_size:\n        return stuck',
        '    if True:\n        return stuck',
        'tests/sampling/test_core_rules.py::test_allow_guidance_never_fully_guides_twice_in_a_row',
    ),
    (
        'repeated key counted once',
        'lppo_sampling/stats.py',
        'if (srt[1:] != srt[:-1]).all():',
        'if True:',
        'tests/sampling/test_core_strategy.py::test_counts_and_sums_are_order_free_even_with_repeated_keys',  # noqa: E501
    ),
    (
        'grpo population std',
        'lppo_sampling/strategies/rules_peer.py',
        'var = (dev * dev).sum(axis=1) / np.maximum(count - 1.0, 1.0)',
        'var = (dev * dev).sum(axis=1) / count',
        'tests/sampling/test_strategies_sec.py::test_grpo_advantages_zero_mean_and_abs_mean_matches_pass_rate',  # noqa: E501
    ),
    (
        'td0 overshoot',
        'lppo_sampling/strategies/rules_peer.py',
        'return np.where(present, alpha * np.where(present, r, 0.0) + (1.0 - alpha) * q, q)',
        'return np.where(present, alpha * np.where(present, r, 0.0) + q, q)',
        'tests/sampling/test_strategies_sec.py::test_td0_is_convex_combination',
    ),
    (
        'boltzmann sign',
        'lppo_sampling/strategies/rules_peer.py',
        'return softmax(np.asarray(q, dtype=np.float64) / tau, available)',
        'return softmax(-np.asarray(q, dtype=np.float64) / tau, available)',
        'tests/sampling/test_strategies_sec.py::test_boltzmann_is_a_distribution_monotone_in_value',
    ),
    (
        'dapo keeps all-equal',
        'lppo_sampling/strategies/rules_peer.py',
        'return (m.sum(axis=1) <= 1) | (hi > lo)',
        'return (m.sum(axis=1) <= 1) | (hi >= lo)',
        'tests/sampling/test_strategies_dapo.py::test_dapo_keep_is_zero_lt_correct_lt_g_and_slot_order_free',  # noqa: E501
    ),
    (
        'balanced swapped',
        'lppo_sampling/strategies/rules_peer.py',
        'return (p >= low) & (p <= high)',
        'return (p <= low) | (p >= high)',
        'tests/sampling/test_strategies_balanced_filter.py::test_symmetric_band_equals_variance_threshold',  # noqa: E501
    ),
    (
        'ucb n in numerator',
        'lppo_sampling/strategies/rules_peer.py',
        'c * np.sqrt(2.0 * np.log(total + 1.0) / (n + 1.0))',
        'c * np.sqrt(2.0 * np.log(total + 1.0) * (n + 1.0))',
        'tests/sampling/test_strategies_dump.py::test_ucb_bonus_shrinks_with_own_count',
    ),
    (
        'softmax unnormalised',
        'lppo_sampling/strategies/rules_peer.py',
        '    e = np.exp(zz - zz[a].max())\n    return e / e.sum()',
        '    e = np.exp(zz - zz[a].max())\n    return e / e.max()',
        'tests/sampling/test_strategies_dump.py::test_softmax_is_a_shift_invariant_distribution',
    ),
    (
        'mopps alpha/beta swapped',
        'lppo_sampling/strategies/rules_peer.py',
        'a = decay * np.asarray(alpha, np.float64) + (1.0 - decay) * prior_alpha + k * s',
        'a = decay * np.asarray(alpha, np.float64) + (1.0 - decay) * prior_alpha + k * (1.0 - s)',
        'tests/sampling/test_strategies_mopps.py::test_posterior_stays_positive_adds_k_and_mean_moves_toward_s',  # noqa: E501
    ),
    (
        'mopps farthest',
        'lppo_sampling/strategies/rules_peer.py',
        'd = np.abs(np.asarray(draws, dtype=np.float64) - target)',
        'd = -np.abs(np.asarray(draws, dtype=np.float64) - target)',
        'tests/sampling/test_strategies_mopps.py::test_closest_to_target_keeps_the_n_nearest',
    ),
    (
        'cures T multiplied',
        'lppo_sampling/strategies/rules_peer.py',
        'return np.sqrt(np.clip(p * (1.0 - p), 0.0, None)) / t',
        'return np.sqrt(np.clip(p * (1.0 - p), 0.0, None)) * t',
        'tests/sampling/test_strategies_cures.py::test_logits_bounded_and_symmetric',
    ),
    (
        'cures inverse sigma',
        'lppo_sampling/strategies/rules_peer.py',
        'share = s / total if total > 0',
        'share = (1.0 / (s + 1e-3)) / (1.0 / (s + 1e-3)).sum() if total > 0',
        'tests/sampling/test_strategies_cures.py::test_allocation_is_proportional_and_monotone',
    ),
    (
        'hint no clip',
        'lppo_sampling/strategies/rules_peer.py',
        'return np.clip(r + step_up * up - step_down * down, low, high)',
        'return r + step_up * up - step_down * down',
        'tests/sampling/test_strategies_hint_length.py::test_rule_bounded_and_non_increasing_in_pass_rates',  # noqa: E501
    ),
    (
        'hint step_down sign',
        'lppo_sampling/strategies/rules_peer.py',
        'return np.clip(r + step_up * up - step_down * down, low, high)',
        'return np.clip(r + step_up * up + step_down * down, low, high)',
        'tests/sampling/test_strategies_hint_length.py::test_rule_bounded_and_non_increasing_in_pass_rates',  # noqa: E501
    ),
    (
        'saidpo steps first',
        'lppo_sampling/strategies/rules_peer.py',
        'return np.lexsort((np.arange(nop.shape[0]), -ln, -st, nop))',
        'return np.lexsort((np.arange(nop.shape[0]), -ln, nop, -st))',
        'tests/sampling/test_strategies_saidpo.py::test_hardness_order_is_lexicographic',
    ),
    (
        'saidpo 1-err',
        'lppo_sampling/strategies/rules_peer.py',
        'w = np.where(a, np.nan_to_num(np.asarray(error_rate, np.float64), nan=0.0) + floor, 0.0)',
        'w = np.where(a, 1.0 - np.nan_to_num(np.asarray(error_rate, np.float64), nan=0.0) + floor, 0.0)',  # noqa: E501
        'tests/sampling/test_strategies_saidpo.py::test_cluster_weights_distribution_and_monotone_in_error',  # noqa: E501
    ),
    (
        'SEC q not saved',
        'lppo_sampling/strategies/arms.py',
        '        return {"q": self.q.copy(), "last_reward": self.last_reward.copy()}',
        '        return {}',
        'tests/sampling/test_strategies_common.py::test_state_round_trip_exact[sec]',
    ),
    (
        'guided-only flag not loaded',
        'lppo_sampling/stats.py',
        '        for name, arr in arrays.items():\n            stats._cols[name][:n] = arr',
        "        for name, arr in arrays.items():\n            if name != 'last_event_guided_only':\n                stats._cols[name][:n] = arr",  # noqa: E501
        'tests/sampling/test_api_boundary.py::test_guidance_rule_state_round_trips',
    ),
    (
        'uniform with replacement',
        'lppo_sampling/roles.py',
        'return rng.choice(size, size=n, replace=n > size).astype(np.int64)',
        'return rng.choice(size, size=n, replace=True).astype(np.int64)',
        'tests/sampling/test_core_strategy.py::test_selection_stays_in_pool_and_respects_size',
    ),
    (
        'global np.random',
        'lppo_sampling/roles.py',
        'return rng.choice(size, size=n, replace=n > size).astype(np.int64)',
        'return np.random.choice(size, size=n, replace=n > size).astype(np.int64)',
        'tests/sampling/test_core_strategy.py::test_replicas_fed_same_results_are_bit_identical',
    ),
    (
        'rng not restored',
        'lppo_sampling/strategy.py',
        '        self.stats, self.rng = stats, rng\n',
        '        self.stats = stats\n',
        'tests/sampling/test_core_strategy.py::test_state_round_trip_is_exact_and_replays_choices',
    ),
    (
        'refill keeps surplus',
        'lppo_sampling/strategies/filters.py',
        '        take = idx[: target - n_kept]',
        '        take = idx',
        'tests/sampling/test_strategies_dapo.py::test_refill_returns_exactly_target_kept_groups',
    ),
    (
        'DUMP windows not saved',
        'lppo_sampling/strategies/arms.py',
        '            "values": self.values.copy(),',
        '            "values": np.zeros_like(self.values),',
        'tests/sampling/test_strategies_common.py::test_state_round_trip_exact[dump]',
    ),
    (
        'GroupResults unvalidated',
        'lppo_sampling/batch.py',
        '        keys = validate_keys(self.keys, "keys")\n        n = keys.shape[0]\n        if n == 0:',  # noqa: E501
        '        return\n        keys = validate_keys(self.keys, "keys")\n        n = keys.shape[0]\n        if n == 0:',  # noqa: E501
        'tests/sampling/test_api_boundary.py::test_direct_construction_refuses_rewards_outside_unit_interval',  # noqa: E501
    ),
    (
        'has_solution truthiness',
        'lppo_sampling/stats.py',
        'flags = bool_array("has_solution", has_solution, arr.shape)',
        'flags = np.asarray(has_solution, dtype=bool)',
        'tests/sampling/test_api_boundary.py::test_has_solution_takes_only_bools',
    ),
    (
        'balanced asymmetric',
        'lppo_sampling/strategies/rules_peer.py',
        'return (p >= low) & (p <= high)',
        'return (p >= low) & (p <= high + 0.05)',
        'tests/sampling/test_strategies_balanced_filter.py::test_wider_band_keeps_a_superset_and_is_symmetric',  # noqa: E501
    ),
    (
        'hint stored ratio escapes',
        'lppo_sampling/strategies/hint.py',
        'stats["hint_ratio"][uniq] = rules_peer.next_hint_ratio(',
        'stats["hint_ratio"][uniq] = 0.01 + rules_peer.next_hint_ratio(',
        'tests/sampling/test_strategies_hint_length.py::test_ratio_stays_in_band_over_any_history',
    ),
    (
        'arm draw with replacement',
        'lppo_sampling/strategies/sampling.py',
        'picks = rng.choice(int(sizes[a]), size=int(m[a]), replace=False)',
        'picks = rng.choice(int(sizes[a]), size=int(m[a]), replace=True)',
        'tests/sampling/test_strategies_common.py::test_select_keys_in_pool_size_and_no_repeats[sec]',  # noqa: E501
    ),
    (
        'mopps global random',
        'lppo_sampling/strategies/posterior.py',
        'g = rng.random(rows.shape[0])',
        'g = np.random.random(rows.shape[0])',
        'tests/sampling/test_strategies_common.py::test_determinism_and_replicas[mopps]',
    ),
    (
        'no column checks on load',
        'lppo_sampling/stats.py',
        '        _check_columns(arrays, len(categories), int(step), where)\n',
        '',
        'tests/sampling/test_state_loading.py::test_invalid_state_is_refused_naming_the_field_and_changes_nothing',  # noqa: E501
    ),
    (
        'half-loaded on bad group_size',
        'lppo_sampling/strategy.py',
        '        group_size = state["group_size"]\n',
        '        try:\n            self.stats = SampleStats.from_state_dict(state["stats"])\n        except Exception:\n            pass\n        group_size = state["group_size"]\n',  # noqa: E501
        'tests/sampling/test_state_loading.py::test_bad_group_size_leaves_nothing_half_loaded',
    ),
    (
        'inf accepted',
        'lppo_sampling/checks.py',
        '    if not np.isfinite(v):',
        '    if np.isnan(v):',
        'tests/sampling/test_api_boundary.py::test_float_arguments_refuse_non_finite_bool_and_text',
    ),
    (
        'bare str iterated',
        'lppo_sampling/keys.py',
        '    if isinstance(keys, (str, bytes)):',
        '    if False:',
        'tests/sampling/test_api_boundary.py::test_bare_string_is_one_key_not_a_sequence',
    ),
    (
        'read calls register',
        'lppo_sampling/strategy.py',
        '        arr, rows = self.stats.find_rows(keys)',
        '        arr = self.stats.index.validate(keys)\n        rows = self.stats.register(arr)',
        'tests/sampling/test_api_boundary.py::test_read_calls_refuse_unknown_keys_and_never_grow_the_pool',  # noqa: E501
    ),
    (
        'guided forever',
        'lppo_sampling/rules.py',
        '    if n_guided < group_size:\n        return stuck',
        '    if True:\n        return stuck',
        'tests/sampling/test_api_boundary.py::test_no_sample_is_guided_forever',
    ),
    (
        'saved keys cache kept stale',
        'lppo_sampling/keys.py',
        '        self._encoded = None  # the only writer',
        '        pass  # the only writer',
        'tests/sampling/test_key_index.py::test_saved_key_arrays_always_equal_a_fresh_encoding',
    ),
    (
        'saved keys cache not copied',
        'lppo_sampling/keys.py',
        'v.copy() if isinstance(v, np.ndarray) else v for',
        'v for',
        'tests/sampling/test_key_index.py::test_saved_key_arrays_always_equal_a_fresh_encoding',
    ),
    (
        'batch recalled by array id',
        'lppo_sampling/keys.py',
        '    return arr.tobytes()',
        '    return id(arr)',
        'tests/sampling/test_key_index.py::test_remembered_batches_answer_like_a_fresh_lookup',
    ),
    (
        'recalled keys not held',
        'lppo_sampling/keys.py',
        '(_identities(arr), arr.copy(), value)',
        '(_identities(arr), arr, value)',
        'tests/sampling/test_key_index.py::test_a_bad_key_born_where_a_checked_key_lived_is_still_refused',  # noqa: E501
    ),
]


def run(selected: list[str]) -> int:
    """Apply each selected bug in a temporary copy and run its test; return survivors."""
    survivors = 0
    for name, path, old, new, test in MUTANTS:
        if selected and name not in selected:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for d in ("lppo_sampling", "tests"):
                shutil.copytree(REPO / d, Path(tmp) / d)
            shutil.copy(REPO / "pyproject.toml", tmp)
            target = Path(tmp) / path
            text = target.read_text()
            if old not in text:
                print(f"{name:<32} NOT APPLIED (the original text changed: update the entry)")
                survivors += 1
                continue
            target.write_text(text.replace(old, new, 1))
            r = subprocess.run(
                [sys.executable, "-m", "pytest", test, "-q", "-x", "-p", "no:cacheprovider"],
                cwd=tmp, env={**os.environ, "PYTHONPATH": tmp}, capture_output=True, text=True,
            )
        killed = r.returncode == 1
        survivors += not killed
        verdict = "killed" if killed else "SURVIVED"
        print(f"{name:<32} {verdict:<9} {test.split('::')[1]}", flush=True)
    return survivors


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1:]) else 0)
