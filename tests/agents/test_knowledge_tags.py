"""Knowledge tags: parsing properties, the JSONL cache and its resume, tiny and real taggers."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.knowledge_tags import (
    FALLBACK_TAG,
    MAX_TAG_CHARS,
    append_tag_cache,
    generate_tags,
    parse_tags,
    read_tag_cache,
    tag_messages,
    tag_problems,
)
from agents.rollout.base import Rollout
from lppo_env import MathProblem
from lppo_env.errors import DataError

# --------------------------------------------------------------------------- parse_tags

# replies built from the pieces a tagger writes: words, separators, list markers, labels
_PIECES = st.sampled_from(
    [
        "Geometry",
        "area of trapezoid and triangles",
        "Trigonometric functions",
        ", ",
        "; ",
        "\n",
        "\n- ",
        "* ",
        "1. ",
        "2) ",
        "•",
        "Knowledge points:",
        "and ",
        " or ",
        ".",
        "**",
        "  ",
        "3",
        "4 - 1 = 3",
        "x" * 70,
        "İ",
        "ß",
        "Ǆ",
        '"',
        "-",
    ]
)
REPLIES = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=25).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(
    text=REPLIES, max_tags=st.integers(1, 5), fallback=st.one_of(st.just(""), st.text(max_size=30))
)
def test_parse_tags_properties(text, max_tags, fallback):
    tags = parse_tags(text, max_tags=max_tags, fallback=fallback)
    assert 1 <= len(tags) <= max_tags
    assert len(set(tags)) == len(tags)
    for tag in tags:
        assert tag and tag == tag.strip() and len(tag) <= MAX_TAG_CHARS
        assert not re.search(r"[,;\n\r•]", tag)
        assert any(c.isalpha() for c in tag)
    assert parse_tags(", ".join(tags), max_tags=max_tags, fallback=fallback) == tags


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Arithmetic, 4 - 1 = 3", ("arithmetic",)),
        (
            "Polynomial division, factorization, and solving quadratic equations.",
            ("polynomial division", "factorization", "solving quadratic equations"),
        ),
        (
            "1. Geometry\n2. Area of trapezoid\n3. Geometry\n4. angles\n5. more",
            (
                "geometry",
                "area of trapezoid",
                "angles",
            ),
        ),
        ("Knowledge points: **Algebra**; - linear equations", ("algebra", "linear equations")),
        ("Trigonometric functions • sine", ("trigonometric functions", "sine")),
    ],
)
def test_parse_tags_examples(reply, expected):
    assert parse_tags(reply) == expected


def test_parse_tags_fallback_and_caps():
    assert parse_tags("3, 4 = 4", fallback="reasoning_gym/chain_sum") == (
        "reasoning_gym/chain_sum",
    )
    assert parse_tags("", fallback="Gsm8k, test") == ("gsm8k test",)  # one tag, cleaned
    assert parse_tags(" ; ", fallback="42") == (FALLBACK_TAG,)
    assert parse_tags("a, b, c, d", max_tags=2) == ("a", "b")
    long = parse_tags("counting " * 20)[0]
    assert long.startswith("counting counting") and len(long) <= MAX_TAG_CHARS
    assert not long.endswith(" ")


def test_parse_tags_rejects_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("expected max_tags to be an int >= 1, got 0")):
        parse_tags("geometry", max_tags=0)
    with pytest.raises(ValueError, match=re.escape("expected text to be a str, got NoneType")):
        parse_tags(None)  # type: ignore[arg-type]


def test_tag_messages_uses_the_paper_examples_and_cap():
    msgs = tag_messages("What is 2 + 3?", max_tags=1)
    assert msgs[0]["role"] == "system" and "at most 1 short knowledge points" in msgs[0]["content"]
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * 2 + ["user"]
    assert msgs[2]["content"] == "Geometry" and msgs[4]["content"] == "Trigonometric functions"
    assert msgs[-1]["content"] == "Problem: What is 2 + 3?\nKnowledge points:"
    assert tag_messages("q")[2]["content"] == "Geometry, area of trapezoid and triangles"


# --------------------------------------------------------------------------- fake tagger


def _problem(i: int, source: str = "toy") -> MathProblem:
    return MathProblem(id=f"p{i}", question=f"What is {i} + {i}?", answer=str(2 * i), source=source)


class ScriptedBackend:
    """Replies "Arithmetic, addition of <n>" to "What is n + n?"; counts the prompts seen."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts: list[str] = []
        self.fail_after = fail_after

    def generate(self, requests, sampling):
        assert sampling.temperature == 0.0  # tagging is greedy
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt  # a killed run
        out = []
        for i, req in enumerate(requests):
            question = req.messages[-1]["content"]
            self.prompts.append(question)
            n = re.search(r"What is (\d+)", question).group(1)
            reply = "" if n == "0" else f"Arithmetic, addition of {n}"
            out.append(Rollout([1], [], [2], [0.0], reply, request_index=i, tag=req.tag))
        return out

    def sync_weights(self, model):
        pass


def test_generate_tags_maps_ids_and_falls_back_to_source():
    problems = [_problem(i) for i in range(3)]
    tags = generate_tags(ScriptedBackend(), problems, max_tags=2)
    assert tags == {
        "p0": ("toy",),  # empty reply -> the source
        "p1": ("arithmetic", "addition of 1"),
        "p2": ("arithmetic", "addition of 2"),
    }
    assert generate_tags(ScriptedBackend(), []) == {}


def test_generate_tags_rejects_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("expected backend to be a RolloutBackend")):
        generate_tags(object(), [_problem(1)])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=re.escape("expected problems with distinct ids, got 'p1' twice")
    ):
        generate_tags(ScriptedBackend(), [_problem(1), _problem(1)])
    with pytest.raises(
        ValueError, match=re.escape("expected max_new_tokens to be an int >= 1, got 0")
    ):
        generate_tags(ScriptedBackend(), [_problem(1)], max_new_tokens=0)


# --------------------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path):
    path = tmp_path / "sub" / "tags.jsonl"
    assert read_tag_cache(path) == {}
    append_tag_cache(path, {"a": ["geometry", "área"], "b": ("algebra",)})
    append_tag_cache(path, {"c": ["trigonometric functions"]})
    assert read_tag_cache(path) == {
        "a": ("geometry", "área"),
        "b": ("algebra",),
        "c": ("trigonometric functions",),
    }
    assert [json.loads(x)["id"] for x in path.read_text(encoding="utf-8").splitlines()] == [
        "a",
        "b",
        "c",
    ]
    with pytest.raises(
        ValueError, match=re.escape("expected tags to map non-empty ids to non-empty lists")
    ):
        append_tag_cache(path, {"d": []})


def test_tag_problems_resumes_after_a_kill(tmp_path):
    problems = [_problem(i) for i in range(1, 8)]
    cache = tmp_path / "tags.jsonl"
    whole = tag_problems(ScriptedBackend(), problems, cache=None, chunk_size=3)
    killed = ScriptedBackend(fail_after=3)  # dies in its second chunk
    with pytest.raises(KeyboardInterrupt):
        tag_problems(killed, problems, cache=cache, chunk_size=3)
    assert set(read_tag_cache(cache)) == {"p1", "p2", "p3"}
    again = ScriptedBackend()
    assert tag_problems(again, problems, cache=cache, chunk_size=3) == whole
    asked = [re.search(r"What is (\d+)", q).group(1) for q in again.prompts]
    assert asked == ["4", "5", "6", "7"]  # only the untagged ones
    done = ScriptedBackend()
    assert tag_problems(done, problems[::-1], cache=cache) == whole
    assert done.prompts == []  # everything cached: the tagger is not called
    assert len(cache.read_text().splitlines()) == 7  # appended, never duplicated


def test_cache_drops_a_torn_last_line_and_repairs_it(tmp_path):
    cache = tmp_path / "tags.jsonl"
    cache.write_text('{"id": "a", "tags": ["geometry"]}\n{"id": "b", "tags": ["alg')
    assert read_tag_cache(cache) == {"a": ("geometry",)}
    append_tag_cache(cache, {"b": ["algebra"]})
    assert read_tag_cache(cache) == {"a": ("geometry",), "b": ("algebra",)}
    assert cache.read_text().endswith('"algebra"]}\n')
    # a whole last row without its newline is kept, and the next append starts a new line
    cache.write_text('{"id": "a", "tags": ["geometry"]}')
    append_tag_cache(cache, {"b": ["algebra"]})
    assert read_tag_cache(cache) == {"a": ("geometry",), "b": ("algebra",)}


@pytest.mark.parametrize(
    ("row", "where", "reason"),
    [
        ("[1, 2]", "row 2", "expected a JSON object, got list"),
        ('{"tags": ["x"]}', "row 2, field 'id'", "expected a non-empty string, got None"),
        (
            '{"id": "b", "tags": []}',
            "row 2, field 'tags'",
            "expected a non-empty list of non-empty strings, got []",
        ),
        ('{"id": "b", "tags": "geometry"}', "row 2, field 'tags'", "expected a non-empty list"),
        ('{"id": "b", "tags": ["x", " "]}', "row 2, field 'tags'", "expected a non-empty list"),
        (
            '{"id": "a", "tags": ["other"]}',
            "row 2, field 'id'",
            "expected one tagging per id, got 'a' again",
        ),
        ('{"id": "b", "tags": ["x"', "row 2", "expected a JSON object, got invalid JSON"),
    ],
)
def test_cache_bad_rows_name_file_row_and_field(tmp_path, row, where, reason):
    cache = tmp_path / "tags.jsonl"
    cache.write_text('{"id": "a", "tags": ["geometry"]}\n' + row + "\n")  # complete line: not torn
    with pytest.raises(DataError, match=re.escape(f"{cache}, {where}: {reason}")):
        read_tag_cache(cache)
    with pytest.raises(ValueError):  # DataError is a ValueError; appending refuses too
        append_tag_cache(cache, {"c": ["x"]})


# --------------------------------------------------------------------------- tiny and real models


def test_generate_tags_on_the_tiny_model(tiny_policy):
    from agents.rollout.base import RolloutRequest, SamplingConfig
    from agents.rollout.hf import HFBackend

    problems = [_problem(i, source="arith") for i in range(1, 6)]
    backend = HFBackend(tiny_policy, batch_size=8)
    tags = generate_tags(backend, problems, max_tags=2, max_new_tokens=12, seed=3)
    assert list(tags) == [p.id for p in problems]
    # each problem's tags are its own greedy reply to the tagging prompt, parsed
    replies = backend.generate(
        [RolloutRequest(tag_messages(p.question, max_tags=2)) for p in problems],
        SamplingConfig(temperature=0.0, max_new_tokens=12),
    )
    assert [tags[p.id] for p in problems] == [
        parse_tags(r.text, max_tags=2, fallback="arith") for r in replies
    ]
    assert generate_tags(backend, problems[::-1], max_tags=2, max_new_tokens=12) == tags


@pytest.mark.slow
def test_default_model_tags_arithmetic_problems(tmp_path):
    from agents.policy import load_policy
    from agents.rollout.hf import HFBackend
    from lppo_env import load_problems

    try:
        policy = load_policy("default")
    except (OSError, FileNotFoundError, ModuleNotFoundError) as e:
        pytest.skip(f"default model not available: {e}")
    problems = load_problems("default", size=48)[:4]
    cache = tmp_path / "tags.jsonl"
    tags = tag_problems(HFBackend(policy, batch_size=4), problems, cache=cache, max_new_tokens=24)
    assert set(tags) == {p.id for p in problems} and read_tag_cache(cache) == tags
    from_model = [t for p in problems if (t := tags[p.id]) != parse_tags("", fallback=p.source)]
    assert len(from_model) >= len(problems) // 2, tags  # the model, not the fallback, tagged most
    words = ("arithmetic", "addition", "subtraction", "integer", "number")
    assert any(w in tag for t in from_model for tag in t for w in words), tags
