"""`SampleStats`: the one table of per-sample learning statistics.

Every strategy reads this table; only `observe` writes it. Columns are numpy arrays
indexed by a dense row per stable sample key (see `keys.KeyIndex`), grown by doubling,
so a batch update is a handful of fancy-indexed array operations and never a Python
loop over the pool.

Layout: the columns a training step reads and writes (`HOT_COLUMNS`) share one 64-byte,
cache-line-aligned record per sample, and each is a strided view into that table. A
step touches ~1000 scattered rows of a pool that may hold millions; with one array per
column every column access missed the cache again, with one record per row the first
access brings the row's line and the other columns of that row hit it (measured on a
1M pool: the `lppo` step 1.8 -> 1.3 ms). The rest are plain arrays.

Order (in)variance, stated precisely (and tested):
    * counts and sums (rollouts, rewards, guided stats, lengths, steps) are order-free:
      observing a batch equals observing any split of it, in any order (exactly, for
      rewards/lengths that are integers or dyadic fractions; otherwise up to float
      rounding).
    * the EMA and Δ are a time series over *observation events*: a sample seen twice in
      one `observe` call is pooled into one event (its rollouts are merged), while two
      calls are two events. Splitting a batch so that a sample lands in two calls
      therefore changes its EMA — this is the rule, not an accident.
    * splitting a batch so that each sample stays in one part, in any order, is exact.
"""

from __future__ import annotations

import numpy as np

from lppo_sampling import rules
from lppo_sampling.batch import GroupResults
from lppo_sampling.checks import bool_array
from lppo_sampling.keys import KeyIndex

__all__ = ["SampleStats", "COLUMNS"]

# name -> (dtype, fill value for a new row)
COLUMNS: dict[str, tuple[type, float]] = {
    "n_events": (np.int32, 0),  # observation events with >= 1 unguided rollout
    "n_rollouts": (np.int32, 0),  # unguided rollouts observed
    "reward_sum": (np.float64, 0.0),  # sum of unguided rewards
    "ema": (np.float64, 0.0),  # EMA of the unguided pass rate (valid where n_events > 0)
    "delta": (np.float64, 0.0),  # last learning progress Δ
    "last_pass_rate": (np.float32, np.nan),  # unguided pass rate of the last event
    "guided_rollouts": (np.int32, 0),
    "guided_reward_sum": (np.float64, 0.0),
    "last_step": (np.int32, -1),  # step of the last observation (any rollout)
    "n_measured": (np.int32, 0),  # rollouts with a length / step measurement
    "length_sum": (np.float64, 0.0),
    "steps_sum": (np.float64, 0.0),
    "group_mean": (np.float32, np.nan),  # mean reward over all rollouts of the last event
    "group_std": (np.float32, np.nan),  # population std of the same
    "has_solution": (np.bool_, False),  # an expert solution exists (PG-sampling may guide)
    "category": (np.int32, -1),  # index into SampleStats.categories (-1 = none)
    # the last observation event had no unguided rollout (rules.allow_guidance reads it)
    "last_event_guided_only": (np.bool_, False),
}

# valid values per built-in column, checked on load: (low, high, NaN allowed)
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "n_events": (0, np.inf, False),
    "n_rollouts": (0, np.inf, False),
    "reward_sum": (0.0, np.inf, False),
    "ema": (0.0, 1.0, False),
    "delta": (-1.0, 1.0, False),
    "last_pass_rate": (0.0, 1.0, True),
    "guided_rollouts": (0, np.inf, False),
    "guided_reward_sum": (0.0, np.inf, False),
    "last_step": (-1, np.inf, False),
    "n_measured": (0, np.inf, False),
    "length_sum": (0.0, np.inf, False),
    "steps_sum": (0.0, np.inf, False),
    "group_mean": (0.0, 1.0, True),
    "group_std": (0.0, 0.5, True),
}


# columns a training step touches, stored together as one 64-byte record per row (the
# order packs them without padding: 4 x f8, 4 x i4, 3 x f4, 2 x bool = 62 bytes)
HOT_COLUMNS = (
    "ema", "delta", "reward_sum", "guided_reward_sum",
    "n_events", "n_rollouts", "guided_rollouts", "last_step",
    "last_pass_rate", "group_mean", "group_std",
    "has_solution", "last_event_guided_only",
)
_LINE = 64  # bytes per hot record: one cache line on x86-64 and most ARM cores


def _hot_dtype() -> np.dtype:
    """Structured dtype of one hot record, padded to one cache line."""
    packed = np.dtype([(n, COLUMNS[n][0]) for n in HOT_COLUMNS])
    assert packed.itemsize <= _LINE, packed.itemsize
    return np.dtype({
        "names": list(HOT_COLUMNS),
        "formats": [COLUMNS[n][0] for n in HOT_COLUMNS],
        "offsets": [packed.fields[n][1] for n in HOT_COLUMNS],
        "itemsize": _LINE,
    })


_HOT = _hot_dtype()


def _builtin_columns(cap: int) -> dict[str, np.ndarray]:
    """Fresh built-in columns for `cap` rows: hot ones as views into one aligned table."""
    buf = np.zeros(cap * _LINE + _LINE, np.uint8)  # zeros: padding bytes are deterministic
    start = (-buf.ctypes.data) % _LINE  # align row 0 to a cache line
    table = buf[start: start + cap * _LINE].view(_HOT)
    cols = {}
    for name, (dt, fill) in COLUMNS.items():
        if name in HOT_COLUMNS:
            cols[name] = table[name]
            if fill != 0:  # (NaN != 0 too) the zeroed table already holds a 0 fill
                cols[name][...] = fill
        else:
            cols[name] = np.full(cap, fill, dtype=dt)
    return cols


def _copy_rows(src: dict[str, np.ndarray], dst: dict[str, np.ndarray], n: int,
               block: int = 1 << 15) -> dict[str, np.ndarray]:
    """`dst[name][:n] = src[name][:n]` for every column of `src`; returns `dst`.

    Row block by row block, so a block of the hot table (2 MB) stays in cache while all of
    its columns are read or written: copying column after column would stream the whole
    table through memory once per column (measured at 1M rows: 0.17 -> 0.05 s).
    """
    for start in range(0, n, block):
        end = min(n, start + block)
        for name, arr in src.items():
            dst[name][start:end] = arr[start:end]
    return dst


def _same_spec(a: tuple[type, float], b: tuple[type, float]) -> bool:
    """Column specs match; NaN fills compare equal (NaN != NaN would refuse a re-bind)."""
    fa, fb = float(a[1]), float(b[1])
    return np.dtype(a[0]) == np.dtype(b[0]) and (fa == fb or (np.isnan(fa) and np.isnan(fb)))


class SampleStats:
    """Per-sample statistics for a growing pool of samples.

    Args:
        beta: EMA coefficient β for the unguided pass rate (LPPO default 0.8).
        capacity: initial row capacity (grows by doubling).
    """

    def __init__(self, beta: float = 0.8, capacity: int = 1024) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        self.beta = float(beta)
        self.index = KeyIndex()
        self.step = 0  # observation events so far (the strategy's clock)
        self._cap = max(1, int(capacity))
        self._cols = _builtin_columns(self._cap)
        self._extra: dict[str, tuple[type, float]] = {}
        self.categories: list[str] = []  # category labels (data source, topic, level, cluster)
        self._category_id: dict[str, int] = {}

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, name: str) -> np.ndarray:
        """A view of column `name` over the registered rows."""
        if name not in self._cols:
            raise KeyError(f"unknown column {name!r}; columns: {sorted(self._cols)}")
        return self._cols[name][: len(self)]

    @property
    def nbytes(self) -> int:
        """Bytes the columns hold in memory for the registered rows.

        The hot record's padding is included; the key index is not.
        """
        hot = _HOT.itemsize
        cold = sum(a.itemsize for n, a in self._cols.items() if n not in HOT_COLUMNS)
        return (hot + cold) * len(self)

    @property
    def columns(self) -> list[str]:
        """Names of all columns, built-in and extra."""
        return list(self._cols)

    def seen(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Bool mask: the sample has at least one unguided observation."""
        n = self["n_events"]
        return (n if rows is None else n[rows]) > 0

    def pass_rate(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Lifetime unguided pass rate (NaN where never observed)."""
        s, c = self["reward_sum"], self["n_rollouts"]
        if rows is not None:
            s, c = s[rows], c[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    def steps_since_seen(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Observation events since the sample was last observed (-1 = never)."""
        last = self["last_step"] if rows is None else self["last_step"][rows]
        return np.where(last >= 0, self.step - last, -1)

    def mean_length(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Mean response length over measured rollouts (NaN where none)."""
        return self._mean("length_sum", rows)

    def mean_steps(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Mean reasoning-step count over measured rollouts (NaN where none)."""
        return self._mean("steps_sum", rows)

    def _mean(self, col: str, rows: np.ndarray | None) -> np.ndarray:
        s, c = self[col], self["n_measured"]
        if rows is not None:
            s, c = s[rows], c[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    # ------------------------------------------------------------ registration
    def add_column(self, name: str, dtype: type, fill: float) -> None:
        """Add a per-sample column for a strategy's own state (e.g. Beta posteriors)."""
        if name in self._cols:
            if name in self._extra and _same_spec(self._extra[name], (dtype, fill)):
                return  # re-binding after load_state_dict
            have = self._column_spec(name)
            raise ValueError(
                f"column {name!r} already exists as ({np.dtype(have[0])}, fill {have[1]!r}); "
                f"cannot add it as ({np.dtype(dtype)}, fill {fill!r})"
            )
        self._extra[name] = (dtype, fill)
        self._cols[name] = np.full(self._cap, fill, dtype=dtype)

    def _column_spec(self, name: str) -> tuple[type, float]:
        return COLUMNS.get(name) or self._extra[name]

    def _reserve(self, n: int) -> None:
        if n <= self._cap:
            return
        cap = self._cap
        while cap < n:
            cap *= 2
        grown = _builtin_columns(cap)
        for name in self._cols:
            if name not in grown:  # a strategy's own column
                dt, fill = self._column_spec(name)
                grown[name] = np.full(cap, fill, dtype=dt)
        _copy_rows(self._cols, grown, self._cap)
        self._cols = grown
        self._cap = cap

    def register(
        self, keys: object, has_solution: object | None = None, category: object | None = None
    ) -> np.ndarray:
        """Add unknown keys to the pool (known keys keep their stats); return rows.

        Args:
            keys: (n,) int or str sample keys.
            has_solution: (n,) bool, or None to leave unchanged (False for new keys).
            category: (n,) labels (str or int; e.g. data source, topic, difficulty level)
                used by category-level strategies (SEC, DUMP, SAI-DPO), or None.
        """
        arr, found = self.index.find(keys)
        flags = None
        if has_solution is not None:
            flags = bool_array("has_solution", has_solution, arr.shape)
        cat_ids = None
        if category is not None:
            labels = np.asarray(category, dtype=object)
            if labels.shape != arr.shape:
                raise ValueError(
                    f"category must have shape {arr.shape} like keys, got {labels.shape}"
                )
            for x in labels.tolist():
                if isinstance(x, (bool, np.bool_)) or not isinstance(x, (str, int, np.integer)):
                    raise ValueError(
                        f"category labels must be str or int, got {type(x).__name__} {x!r}"
                    )
            new_labels = [
                str(x) for x in dict.fromkeys(labels.tolist()) if str(x) not in self._category_id
            ]
            cat_ids = np.empty(arr.shape[0], np.int32)
            lookup = dict(self._category_id)
            for lab in new_labels:
                lookup[lab] = len(lookup)
            for i, x in enumerate(labels.tolist()):
                cat_ids[i] = lookup[str(x)]
        before = len(self.index)
        # reserve first so a failure cannot leave the index ahead of the columns
        self._reserve(before + arr.shape[0])
        rows = self.index.add_found(arr, found)
        if flags is not None:
            self._cols["has_solution"][rows] = flags
        if cat_ids is not None:
            for lab in new_labels:
                self._category_id[lab] = len(self.categories)
                self.categories.append(lab)
            self._cols["category"][rows] = cat_ids
        return rows

    def rows(self, keys: object, name: str = "keys") -> np.ndarray:
        """Rows of known keys; `ValueError` naming the first unknown key."""
        return self.find_rows(keys, name)[1]

    def find_rows(self, keys: object, name: str = "keys") -> tuple[np.ndarray, np.ndarray]:
        """Validated keys and their rows; `ValueError` naming the first unknown key."""
        arr, rows = self.index.find(keys, name)
        if (rows < 0).any():
            bad = arr[int(np.flatnonzero(rows < 0)[0])]
            bad = bad.item() if isinstance(bad, np.generic) else bad
            raise ValueError(
                f"{name} holds a key not in the pool: {bad!r}; register samples with "
                f"add_samples(keys) first"
            )
        return arr, rows

    # ----------------------------------------------------------------- update
    def observe(self, results: GroupResults) -> np.ndarray:
        """Fold one batch of group results into the table (one observation event).

        Unknown keys are registered. Guided rollouts update only the guided columns;
        the EMA, Δ and last pass rate move only with unguided rollouts.

        Returns:
            (n,) rows of `results.keys`.
        """
        rows = self.register(results.keys)
        self.step += 1
        m, g, r = results.mask, results.guided, results.rewards
        # per batch row sums via einsum (much faster than masked reductions on (n, G))
        mf = m.astype(np.float64)
        gf = g.astype(np.float64)
        uf = mf - gf  # guided slots are always valid, so unguided = valid - guided
        per_row = {
            "u_n": uf.sum(1),
            "u_sum": np.einsum("ij,ij->i", uf, r),
            "g_n": gf.sum(1),
            "g_sum": np.einsum("ij,ij->i", gf, r),
            "all_sq": np.einsum("ij,ij->i", mf, r * r),
        }
        if results.lengths is not None or results.steps is not None:
            per_row["meas_n"] = per_row["u_n"] + per_row["g_n"]
            for name, col in (("len_sum", results.lengths), ("steps_sum", results.steps)):
                per_row[name] = (
                    np.einsum("ij,ij->i", mf, col) if col is not None else np.zeros(rows.shape)
                )
        # duplicates in one call are pooled into one event per sample
        srt = np.sort(rows)
        if (srt[1:] != srt[:-1]).all():
            uniq, agg = rows, per_row
        else:
            uniq, inv = np.unique(rows, return_inverse=True)
            agg = {
                k: np.bincount(inv, weights=v, minlength=uniq.size) for k, v in per_row.items()
            }
        agg["all_n"] = agg["u_n"] + agg["g_n"]
        agg["all_sum"] = agg["u_sum"] + agg["g_sum"]
        c = self._cols
        u = uniq
        # unguided: counts, EMA, Δ, last pass rate
        has_u = agg["u_n"] > 0
        ur = u[has_u]
        if ur.size:
            p = agg["u_sum"][has_u] / agg["u_n"][has_u]
            seen = c["n_events"][ur] > 0
            old = c["ema"][ur]
            new = rules.ema_update(old, p, self.beta, seen)
            c["delta"][ur] = rules.learning_progress(old, new, seen)
            c["ema"][ur] = new
            c["last_pass_rate"][ur] = p
            c["n_events"][ur] += 1
            c["n_rollouts"][ur] += agg["u_n"][has_u].astype(np.int32)
            c["reward_sum"][ur] += agg["u_sum"][has_u]
        c["guided_rollouts"][u] += agg["g_n"].astype(np.int32)
        c["guided_reward_sum"][u] += agg["g_sum"]
        mean = agg["all_sum"] / agg["all_n"]
        var = np.maximum(agg["all_sq"] / agg["all_n"] - mean * mean, 0.0)
        c["group_mean"][u] = mean
        c["group_std"][u] = np.sqrt(var)
        c["last_step"][u] = self.step
        c["last_event_guided_only"][u] = ~has_u
        if "meas_n" in agg:
            c["n_measured"][u] += agg["meas_n"].astype(np.int32)
            c["length_sum"][u] += agg["len_sum"]
            c["steps_sum"][u] += agg["steps_sum"]
        return rows

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Arrays (trimmed to the pool) plus JSON-able metadata; exact round trip."""
        n = len(self)
        return {
            "beta": self.beta,
            "step": self.step,
            "index": self.index.state_dict(),
            "categories": list(self.categories),
            "extra_columns": {k: [np.dtype(dt).str, fill] for k, (dt, fill) in self._extra.items()},
            "columns": _copy_rows(
                self._cols, {k: np.empty(n, a.dtype) for k, a in self._cols.items()}, n
            ),
        }

    @classmethod
    def from_state_dict(cls, state: dict, where: str = "state_dict['stats']") -> SampleStats:
        """Rebuild a table saved with `state_dict`, validating every entry first.

        Raises:
            ValueError: naming the entry, for a missing entry, a wrong shape or dtype, or
                a value no sequence of `observe` calls can produce (NaN Δ, ema = 7,
                negative counts, category ids without labels, ...).
        """
        if not isinstance(state, dict):
            raise ValueError(f"{where} must be a dict, got {type(state).__name__}")
        for field in ("beta", "step", "index", "columns"):
            if field not in state:
                raise ValueError(f"{where} lacks the entry {field!r}")
        beta = state["beta"]
        if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.number)):
            raise ValueError(f"{where}['beta'] must be a number in [0, 1), got {beta!r}")
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"{where}['beta'] must lie in [0, 1), got {beta!r}")
        step = state["step"]
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or (
            step < 0
        ):
            raise ValueError(f"{where}['step'] must be an int >= 0, got {step!r}")
        categories = state.get("categories", [])
        if not isinstance(categories, (list, tuple)) or not all(
            isinstance(c, str) for c in categories
        ):
            raise ValueError(f"{where}['categories'] must be a list of str")
        if len(set(categories)) != len(categories):
            raise ValueError(f"{where}['categories'] holds duplicate labels")
        index = KeyIndex.from_state_dict(state["index"], f"{where}['index']")
        stats = cls(beta=float(beta), capacity=1)
        extra = state.get("extra_columns", {})
        if not isinstance(extra, dict):
            raise ValueError(f"{where}['extra_columns'] must be a dict")
        for name, spec in extra.items():
            try:
                dt, fill = spec
                if not isinstance(fill, (bool, int, float)):
                    raise TypeError(f"fill must be a number, got {fill!r}")
                stats.add_column(name, np.dtype(dt).type, fill)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}['extra_columns'][{name!r}] is invalid: {e}") from None
        n = len(index)
        cols = state["columns"]
        if not isinstance(cols, dict):
            raise ValueError(f"{where}['columns'] must be a dict")
        missing = set(stats._cols) - set(cols)
        if missing:
            raise ValueError(f"{where} lacks columns {sorted(missing)}")
        unknown = set(cols) - set(stats._cols)
        if unknown:
            raise ValueError(
                f"{where} has columns {sorted(unknown)} not declared in 'extra_columns'"
            )
        arrays = {}
        for name in stats._cols:
            arr = np.asarray(cols[name])
            want = np.dtype(stats._column_spec(name)[0])
            if arr.shape != (n,):
                raise ValueError(
                    f"{where}['columns'][{name!r}] has shape {arr.shape}, expected ({n},)"
                )
            if arr.dtype != want:
                raise ValueError(
                    f"{where}['columns'][{name!r}] has dtype {arr.dtype}, expected {want}"
                )
            arrays[name] = arr
        _check_columns(arrays, len(categories), int(step), where)
        stats._reserve(max(n, 1))
        _copy_rows(arrays, stats._cols, n)
        stats.index = index
        stats.categories = list(categories)
        stats._category_id = {c: i for i, c in enumerate(stats.categories)}
        stats.step = int(step)
        return stats


def _check_columns(cols: dict[str, np.ndarray], n_categories: int, step: int, where: str) -> None:
    """Refuse built-in column values that no sequence of `observe` calls can produce."""

    def bad(name: str, what: str, mask: np.ndarray) -> ValueError:
        i = int(np.flatnonzero(mask)[0])
        return ValueError(
            f"{where}['columns'][{name!r}] {what}: row {i} holds {cols[name][i]!r}"
        )

    for name, (lo, hi, nan_ok) in _BOUNDS.items():
        a = cols[name]
        if a.dtype.kind == "f":
            nan = np.isnan(a)
            if not nan_ok and nan.any():
                raise bad(name, "must not be NaN", nan)
            with np.errstate(invalid="ignore"):  # 1e-9: float rounding of β·x + (1 − β)·y
                out = ~nan & ~(np.isfinite(a) & (a >= lo - 1e-9) & (a <= hi + 1e-9))
        else:
            out = (a < lo) | (a > hi)
        if out.any():
            raise bad(name, f"must lie in [{lo}, {hi}]", out)
    for total, count in (("reward_sum", "n_rollouts"), ("guided_reward_sum", "guided_rollouts")):
        over = cols[total] > cols[count] * (1.0 + 1e-9)  # rewards lie in [0, 1]
        if over.any():
            raise bad(total, f"exceeds {count!r} (rewards lie in [0, 1])", over)
    ev, ro = cols["n_events"], cols["n_rollouts"]
    if ((ev > 0) != (ro > 0)).any() or (ev > ro).any():
        raise bad("n_events", "disagrees with 'n_rollouts'", ((ev > 0) != (ro > 0)) | (ev > ro))
    late = cols["last_step"] > step
    if late.any():
        raise bad("last_step", f"is after the table's step {step}", late)
    cat = cols["category"]
    off = (cat < -1) | (cat >= n_categories)
    if off.any():
        raise bad("category", f"must be -1 or an index into the {n_categories} categories", off)
