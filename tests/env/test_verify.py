from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lppo_env import (
    MathProblem,
    MathVerifier,
    VerifierError,
    compute_score,
    extract_final_answer,
    fast_verdict,
    make_trl_reward,
    parse_number,
    strip_unit_words,
)

DEADLINE = 1.0
SLACK = 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the total is \\boxed{72}.", "72"),
        ("\\boxed{\\frac{1}{2}} then \\boxed{3}", "3"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("closed \\boxed{4} then \\boxed{5", "4"),
        ("She earned $1,000 in total.", "$1,000"),
        ("It costs $5.", "$5"),
        ("5 - 9 = -4", "-4"),
        ("x\n#### 1,234", "1,234"),
        ("no numbers at all", None),
    ],
)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [("1,000", 1000), ("$5", 5), ("\\$5", 5), ("-4", -4), ("0.25", 0.25), ("3/4", 0.75),
     ("\\frac{3}{4}", 0.75), ("-\\frac{1}{2}", -0.5), ("72.", 72), ("x+1", None), ("50%", None)],
)
def test_parse_number(text: str, value: float | None) -> None:
    parsed = parse_number(text)
    assert (parsed if parsed is None else float(parsed)) == value


def test_fast_verdict_defers_symbolic_and_near_equal_cases() -> None:
    assert fast_verdict("72", "72.0").reward == 1.0
    assert fast_verdict("71", "72").status == "ok" and fast_verdict("71", "72").reward == 0.0
    assert fast_verdict(None, "72").status == "no_answer"
    assert fast_verdict("\\sqrt{2}", "\\sqrt{2}") is None
    assert fast_verdict("0.3333333", "1/3") is None


def test_pool_decides_symbolic_answers(verifier: MathVerifier) -> None:
    cases = [
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("\\boxed{\\sqrt{2}}", "\\sqrt{2}", 1.0),
        ("\\boxed{x+1}", "1+x", 1.0),
        ("\\boxed{x+2}", "1+x", 0.0),
        ("\\boxed{0.3333333}", "1/3", 1.0),
        ("\\boxed{\\pi}", "3", 0.0),
    ]
    before = verifier.stats["pool"]
    results = verifier.verify_batch([c for c, _, _ in cases], [g for _, g, _ in cases])
    assert [r.reward for r in results] == [r for _, _, r in cases]
    assert all(r.status == "ok" for r in results)
    assert verifier.stats["pool"] - before >= 4


def test_unparseable_gold_is_an_error_and_none_for_trl(verifier: MathVerifier) -> None:
    r = verifier.verify("\\boxed{3}", "\\text{}")
    assert (r.status, r.reward) == ("error", 0.0)
    reward = make_trl_reward(verifier)
    assert reward(prompts=["p", "p"], completions=["\\boxed{3}", "\\boxed{3}"],
                  answer=["\\text{}", "3"]) == [None, 1.0]


def test_trl_reward_conversational_and_prefix(verifier: MathVerifier) -> None:
    reward = make_trl_reward(verifier)
    completions = [[{"role": "assistant", "content": "so \\boxed{12}"}], "carry on: 9"]
    assert reward(prompts=None, completions=completions, answer=["12", "12"],
                  prefix=["", "7 + 5 = 12\n"]) == [1.0, 0.0]
    with pytest.raises(KeyError, match="expects a dataset column 'answer'"):
        reward(prompts=None, completions=["1"], solution=["1"])


def test_compute_score_verl_signature() -> None:
    out = compute_score("openai/gsm8k", "... so \\boxed{18}", "18", extra_info={"index": 3},
                        unused_kwarg=1)
    assert out == {"score": 1.0, "acc": True, "pred": "18", "status": "ok"}
    out = compute_score("x", "7.", "12", extra_info={"prefix": "5 + 7 = 12\n"})
    assert (out["score"], out["pred"]) == (0.0, "7")


def test_gsm8k_gold_solutions_score_one(gsm8k: tuple[MathProblem, ...], verifier) -> None:
    results = verifier.verify_batch([p.solution for p in gsm8k], [p.answer for p in gsm8k])
    rate = sum(r.reward for r in results) / len(gsm8k)
    assert rate >= 0.995, rate


def test_gsm8k_other_answers_score_zero(gsm8k: tuple[MathProblem, ...], verifier) -> None:
    rng = random.Random(0)
    others = [gsm8k[rng.randrange(len(gsm8k))] for _ in gsm8k]
    results = verifier.verify_batch([o.solution for o in others], [p.answer for p in gsm8k])
    # Many GSM8K answers coincide (small integers): only pairs with different values count.
    pairs = [(r, o, p) for r, o, p in zip(results, others, gsm8k, strict=True)
             if parse_number(o.answer) != parse_number(p.answer)]
    assert len(pairs) > 0.9 * len(gsm8k)
    zero = sum(r.reward == 0.0 for r, _, _ in pairs)
    assert zero / len(pairs) >= 0.99, zero / len(pairs)


def test_pool_agrees_with_fast_path_on_gsm8k(gsm8k: tuple[MathProblem, ...]) -> None:
    sample = random.Random(1).sample(gsm8k, 150)
    completions = [p.solution for p in sample] + [p.solution for p in sample[1:] + sample[:1]]
    answers = [p.answer for p in sample] * 2
    with MathVerifier(fast_path=False, deadline=5.0) as pool_only:
        slow = pool_only.verify_batch(completions, answers)
        assert pool_only.stats["fast"] == 0
    with MathVerifier() as fast:
        quick = fast.verify_batch(completions, answers)
    agree = sum(a.reward == b.reward for a, b in zip(slow, quick, strict=True))
    assert agree >= 0.99 * len(completions)


def hostile_corpus() -> list[tuple[object, str]]:
    big = "1" * 1_000_000
    return [
        (big, "1"),
        ("x" * 1_000_000 + "\\boxed{5}", "5"),
        ("\\boxed{" + "{" * 50_000 + "1" + "}" * 50_000 + "}", "1"),
        ("\\boxed{" + "\\frac{" * 200 + "1" + "}{2}" * 200 + "}", "1"),
        ("\\boxed{9^{9^{9^{9}}}}", "5"),
        ("\\boxed{9^9^9^9}", "5"),
        ("\\boxed{10^{10^{10^{10}}}!}", "2"),
        ("\x00\\boxed{3\x00}\x00", "3"),
        ("\ud800\udfff \\boxed{4} \udc80", "4"),
        (b"\xff\xfe \\boxed{6}", "6"),
        (None, "1"),
        ("\\boxed{1}" * 5000, "1"),
        ("\\boxed{" * 5000, "1"),
        ("\\sqrt{" * 3000 + "2", "2"),
        ("\\boxed{\\begin{pmatrix}" + "1&" * 2000 + "1\\end{pmatrix}}", "1"),
    ]


def test_hostile_corpus_returns_within_deadline(verifier: MathVerifier) -> None:
    for completion, gold in hostile_corpus():
        t0 = time.monotonic()
        r = verifier.verify(completion, gold)  # type: ignore[arg-type]
        elapsed = time.monotonic() - t0
        assert elapsed <= DEADLINE + SLACK, (repr(completion)[:60], elapsed)
        assert r.status in ("ok", "no_answer", "timeout", "error")
        assert r.reward in (0.0, 1.0)
    nul = verifier.verify("\x00\\boxed{3\x00}\x00", "3")
    assert (nul.reward, nul.parsed_answer) == (1.0, "3")
    hang = verifier.verify("\\boxed{9^{9^{9^{9}}}}", "5")
    assert (hang.status, hang.reward) == ("timeout", 0.0)
    # after all that, the pool still works
    assert verifier.verify("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").reward == 1.0


def test_batch_timeout_bounds_the_call(verifier: MathVerifier) -> None:
    hostile = ["\\boxed{9^{9^{9^{9}}}}"] * 6 + ["\\boxed{\\sqrt{4}}"]
    t0 = time.monotonic()
    results = verifier.verify_batch(hostile, ["5"] * 6 + ["2"], timeout=0.5)
    assert time.monotonic() - t0 <= 0.5 + SLACK
    assert all(r.status == "timeout" for r in results[:6])


def test_batch_timeout_does_not_wait_for_successor_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loaded machine makes each fork slow; the caller's budget must not pay for it."""
    from lppo_env import verify as verify_module

    with MathVerifier(num_workers=2, deadline=10.0) as v:
        v.start()
        real_fork = verify_module._Server.fork

        def slow_fork(server: object) -> tuple[int, object]:
            time.sleep(2.0)
            return real_fork(server)

        monkeypatch.setattr(verify_module._Server, "fork", slow_fork)
        t0 = time.monotonic()
        results = v.verify_batch(["\\boxed{9^{9^{9^{9}}}}"] * 2, ["5"] * 2, timeout=0.5)
        assert time.monotonic() - t0 <= 0.5 + SLACK
        assert [r.status for r in results] == ["timeout", "timeout"]
        monkeypatch.setattr(verify_module._Server, "fork", real_fork)
        assert v.verify("\\boxed{\\sqrt{9}}", "3").reward == 1.0
        assert len(v.worker_pids()) == 2
        assert v.stats["restarts"] == 2


def test_crashed_worker_is_replaced() -> None:
    with MathVerifier(num_workers=1, deadline=10.0) as v:
        v.start()
        (pid,) = v.worker_pids()
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        t0 = time.monotonic()
        r = v.verify("\\boxed{9^{9^{9^{9}}}}", "5")  # hangs until the worker is killed
        assert time.monotonic() - t0 < 5.0
        assert r.status == "error" and "worker died" in r.detail
        assert v.worker_pids() != [pid]
        assert v.verify("\\boxed{\\sqrt{9}}", "3").reward == 1.0
        assert v.stats["restarts"] >= 1


def test_closed_verifier_restarts_and_threads_are_safe() -> None:
    v = MathVerifier(num_workers=1)
    with v:
        assert v.verify("\\boxed{\\sqrt{4}}", "2").reward == 1.0
    assert v.worker_pids() == []
    out: list[float] = []
    threads = [threading.Thread(target=lambda: out.append(
        v.verify("\\boxed{\\sqrt{16}}", "4").reward)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out == [1.0] * 4
    v.close()


# MATH-style gold/answer pairs the fast path cannot decide: each needs the worker pool.
SYMBOLIC_PAIRS = [
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"), ("2\\sqrt{2}", "\\sqrt{8}"), ("x+1", "1+x"),
    ("\\{1,2\\}", "\\{2,1\\}"), ("(1,2]", "(1, 2]"), ("\\frac{\\pi}{2}", "\\pi/2"),
    ("(x-1)(x+1)", "x^2-1"), ("\\sqrt{45}", "3\\sqrt{5}"), ("50\\%", "50"),
    ("90^\\circ", "90"), ("e^{2}", "e^2"), ("\\log_2 8", "3"),
]

UNGUARDED_SCRIPT = """
import json, random, sys
from lppo_env import MathVerifier, load_gsm8k

with open(sys.argv[2], "a") as marker:  # counts how often this top level runs
    marker.write("ran\\n")
pairs = json.loads(sys.argv[3])
sample = random.Random(0).sample(load_gsm8k(sys.argv[1]), 300)
completions = [p.solution for p in sample] + [f"So \\\\boxed{{{a}}}." for _, a in pairs]
golds = [p.answer for p in sample] + [g for g, _ in pairs]
verifier = MathVerifier(deadline=5.0, fast_path=False)
results = verifier.verify_batch(completions, golds)
print(json.dumps({"rate": sum(r.reward for r in results) / len(results),
                  "pool": verifier.stats["pool"],
                  "bad": [(c[-40:], r.status, r.detail) for c, r in zip(completions, results)
                          if r.reward != 1.0][:5]}))
"""


def test_unguarded_script_scores_every_gold_answer(tmp_path, gsm8k_path) -> None:
    """Deliberate bug caught: workers started by `multiprocessing` spawn/forkserver
    re-run the user's script (no `__main__` guard), fail to start, and every pool item
    scored 0 ("workers failed to start") with no error: 93 % instead of 100 %.
    """
    script = tmp_path / "train_unguarded.py"
    script.write_text(UNGUARDED_SCRIPT, encoding="utf-8")
    marker = tmp_path / "ran.txt"
    out = subprocess.run(
        [sys.executable, str(script), str(gsm8k_path), str(marker), json.dumps(SYMBOLIC_PAIRS)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["pool"] == 300 + len(SYMBOLIC_PAIRS)  # every item went through the pool
    assert report["rate"] == 1.0, report["bad"]
    assert marker.read_text().splitlines() == ["ran"]  # the workers never re-ran the script


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is not running
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_worker_outlives_a_killed_caller(tmp_path) -> None:
    """Deliberate bug caught: a caller killed with SIGKILL (a scheduler, the OOM killer)
    must not leave its verifier server and workers running, hanging on to CPU and RAM.
    """
    script = tmp_path / "victim.py"
    script.write_text(
        "import sys, time\n"
        "from lppo_env import MathVerifier\n"
        "v = MathVerifier(num_workers=2).start()\n"
        "print(v._pool.server.process.pid, *v.worker_pids(), flush=True)\n"
        "v.verify('\\\\boxed{9^{9^{9^{9}}}}', '5')  # a worker busy past its deadline\n"
        "time.sleep(600)\n", encoding="utf-8")
    victim = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(x) for x in victim.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        time.sleep(0.5)
    finally:
        victim.kill()
        victim.wait()
    t_end = time.monotonic() + 10.0
    while any(_alive(p) for p in pids) and time.monotonic() < t_end:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), [p for p in pids if _alive(p)]


def _score_in_daemon(queue: Any, pairs: list[tuple[str, str]]) -> None:
    v = MathVerifier(deadline=5.0, num_workers=1).start()
    t0 = time.monotonic()
    hang = v.verify("\\boxed{9^{9^{9^{9}}}}", "5")
    elapsed = time.monotonic() - t0
    results = v.verify_batch([f"\\boxed{{{a}}}" for _, a in pairs], [g for g, _ in pairs])
    queue.put(([r.reward for r in results], hang.status, elapsed, v.stats["pool"]))
    v.close()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_reward_inside_a_daemonic_worker(start_method: str, verifier: MathVerifier) -> None:
    """Deliberate bug caught: a daemonic process may not start `multiprocessing`
    children, so every pool item scored 0 there. With "fork" the child also inherits
    the parent's running pool (the session `verifier`), which it must not talk to.
    """
    verifier.start()  # a live pool in the parent, inherited by a forked child
    ctx = mp.get_context(start_method)
    queue = ctx.Queue()
    worker = ctx.Process(target=_score_in_daemon, args=(queue, SYMBOLIC_PAIRS), daemon=True)
    worker.start()
    rewards, hang_status, elapsed, pool = queue.get(timeout=300)
    worker.join(timeout=30)
    assert rewards == [1.0] * len(SYMBOLIC_PAIRS)
    assert pool == len(SYMBOLIC_PAIRS) + 1
    assert hang_status == "timeout" and elapsed <= 5.0 + 2 * SLACK  # same deadline as anywhere
    # the parent's pool is untouched by the child
    assert verifier.verify("\\boxed{\\sqrt{8}}", "2\\sqrt{2}").reward == 1.0


def test_verifier_that_cannot_start_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliberate bug caught: a pool that cannot start scored items 0 ("error") instead
    of telling the user; now construction or first use raises `VerifierError`.
    """
    monkeypatch.setattr(sys, "executable", "")
    with pytest.raises(VerifierError, match="starts its worker server with sys.executable"):
        MathVerifier()
    monkeypatch.setattr(sys, "executable", "/bin/false")
    v = MathVerifier(num_workers=1, startup_timeout=20.0)
    assert v.verify("\\boxed{72}", "72").reward == 1.0  # the fast path needs no worker
    with pytest.raises(VerifierError, match="worker server .* exited with code 1"):
        v.verify("\\boxed{\\sqrt{2}}", "\\sqrt{2}")
    v.close()


UNIT_WORDS = ["dollars", "cm", "apples", "square feet", "km", "minutes", "people", "hours"]


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(st.integers(-10**6, 10**6),
                    st.decimals(-1000, 1000, places=2, allow_nan=False, allow_infinity=False)),
    delta=st.sampled_from([0, 0, 7, -3]),  # > 1e-6 relative: decided by the fast path
    unit=st.sampled_from(UNIT_WORDS),
    style=st.sampled_from(["{v} {u}", "{v}\\text{{ {u}}}", "{v} \\text{{{u}}}",
                           "{v}\\,\\mbox{{{u}}}", "\\${v} {u}", "{v} {u}."]),
)
def test_unit_words_in_boxed_score_like_the_bare_number(value, delta, unit, style) -> None:
    """Deliberate bug caught: `\\boxed{18 dollars}` scored 0 against 18 (math-verify
    reads the words as symbols) while "The answer is 18 dollars." scored 1.
    """
    gold = str(value + delta)
    boxed = "Work.\n\\boxed{" + style.format(v=value, u=unit) + "}"
    bare = "Work.\n\\boxed{" + str(value) + "}"
    with_units = fast_verdict(extract_final_answer(boxed), gold)
    plain = fast_verdict(extract_final_answer(bare), gold)
    assert with_units is not None and plain is not None
    assert with_units.reward == plain.reward == (1.0 if delta == 0 else 0.0)
    assert strip_unit_words(f"{gold} {unit}") == gold  # a gold with units is read the same way


@pytest.mark.parametrize("answer", ["5 xy", "2 pi", "5^2", "5 x", "3 \\sqrt{2}", "x dollars"])
def test_unit_stripping_leaves_mathematics_alone(answer: str) -> None:
    assert strip_unit_words(answer) == answer


def test_units_through_the_verifier(verifier: MathVerifier) -> None:
    completions = ["so \\boxed{18 dollars}", "so \\boxed{18\\text{ dollars}}",
                   "\\boxed{19 dollars}", "The answer is 18 dollars.", "\\boxed{2 pi}"]
    rewards = [r.reward for r in verifier.verify_batch(completions, ["18"] * 4 + ["2"])]
    assert rewards == [1.0, 1.0, 0.0, 1.0, 0.0]


@settings(max_examples=200, deadline=None)
@given(
    value=st.integers(-10**6, 10**6),
    other=st.integers(-10**6, 10**6),
    style=st.sampled_from(["\\boxed{{{}}}", "The answer is {}.", "#### {}", "${}"]),
)
def test_numeric_answers_any_format(value: int, other: int, style: str) -> None:
    with_commas = f"{value:,}"
    completion = "Work: 1 + 1 = 2.\n" + style.format(with_commas)
    assert fast_verdict(extract_final_answer(completion), str(value)).reward == 1.0
    expected = 1.0 if other == value else 0.0
    assert fast_verdict(extract_final_answer(completion), str(other)).reward == expected


def test_copies_share_the_pool_and_pickles_rebuild(verifier: MathVerifier) -> None:
    import copy
    import pickle

    assert copy.deepcopy(verifier) is verifier
    clone = pickle.loads(pickle.dumps(verifier))
    assert clone is not verifier and clone.deadline == verifier.deadline
    assert clone.worker_pids() == []
    clone.close()
