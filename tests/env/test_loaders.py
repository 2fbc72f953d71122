from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lppo_env import (
    DataError,
    DuplicateIdError,
    FieldMapping,
    MathProblem,
    UnknownDatasetError,
    load_gsm8k,
    load_jsonl,
    load_math,
    load_parquet,
    load_problems,
    load_verl_parquet,
)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gsm8k_all_rows_load(gsm8k: tuple[MathProblem, ...], gsm8k_path: Path) -> None:
    n_lines = sum(1 for line in gsm8k_path.open(encoding="utf-8") if line.strip())
    assert len(gsm8k) == n_lines == 7473
    assert len({p.id for p in gsm8k}) == len(gsm8k)
    first = gsm8k[0]
    assert first.answer == "72"
    assert first.steps == (
        "Natalia sold 48/2 = 24 clips in May.",
        "Natalia sold 48+24 = 72 clips altogether in April and May.",
    )
    assert all("<<" not in p.solution and ">>" not in p.solution for p in gsm8k if p.solution)
    assert all(p.steps and not any(s.startswith("####") for s in p.steps) for p in gsm8k)


def test_gsm8k_via_load_problems_name_and_path(gsm8k_path: Path) -> None:
    by_name = load_problems("gsm8k", path=gsm8k_path)
    by_path = load_problems(gsm8k_path)
    assert by_name == by_path
    assert by_name[5].source == "gsm8k"


@pytest.mark.parametrize(
    ("rows", "row", "field", "reason"),
    [
        ([{"question": "q", "answer": "x\n#### 1"}, {"question": "q"}], 2, "answer",
         "expected a string, got nothing (missing)"),
        ([{"question": 3, "answer": "#### 1"}], 1, "question", "expected a string, got int"),
        ([{"question": "q", "answer": "no hashes"}], 1, "answer",
         "expected a solution ending in '#### <answer>', got 'no hashes'"),
        ([{"question": "q", "answer": "x ####  "}], 1, "answer",
         "expected an answer after '####', got nothing"),
        ([{"question": "  ", "answer": "#### 1"}], 1, "question",
         "expected a non-empty string, got an empty string"),
    ],
)
def test_gsm8k_bad_row_names_file_row_field(
    tmp_path: Path, rows: list[dict], row: int, field: str, reason: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_gsm8k(path)
    assert (err.value.file, err.value.row, err.value.field) == (str(path), row, field)
    assert str(err.value) == f"{path}, row {row}, field {field!r}: {reason}"


def test_invalid_json_line_names_row(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": \n', encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}, row 2: expected valid JSON, got")):
        load_gsm8k(path)


def test_non_object_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "list.jsonl", [[1, 2]])
    with pytest.raises(
        DataError, match=re.escape(f"{path}, row 1: expected a JSON object, got list")
    ):
        load_jsonl(path)


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [
        {"id": "a", "question": "q1", "answer": "1"},
        {"id": "b", "question": "q2", "answer": "2"},
        {"id": "a", "question": "q3", "answer": "3"},
    ])
    with pytest.raises(DuplicateIdError) as err:
        load_jsonl(path, FieldMapping(id="id"))
    assert str(err.value) == (
        f"{path}, row 3, field 'id': expected unique ids, got 'a' again (first at row 1)"
    )


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="expected at least one row, got an empty file"):
        load_jsonl(path)


ROWS = [{"question": f"q{i}?", "answer": str(i)} for i in range(5)]


@settings(max_examples=60, deadline=None)
@given(blanks=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["\n", "  \n", "\t\r\n"])),
                       max_size=6))
def test_blank_lines_are_skipped_anywhere(tmp_path_factory, blanks) -> None:
    """Deliberate bug caught: one trailing blank line rejected the whole file
    ("expected one JSON object per line, got an empty line"). Blank lines anywhere
    change nothing, ids included (they count records, not lines).
    """
    lines = [json.dumps(r) + "\n" for r in ROWS]
    for position, blank in sorted(blanks, reverse=True):
        lines.insert(position, blank)
    path = tmp_path_factory.mktemp("blank") / "blank.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    plain = tmp_path_factory.mktemp("plain") / "blank.jsonl"
    write_jsonl(plain, ROWS)
    assert load_jsonl(path) == load_jsonl(plain)
    assert load_problems(path) == load_problems(plain)


def test_errors_after_blank_lines_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('\n{"question": "q", "answer": "1"}\n\n{"question": "r"}\n\n')
    with pytest.raises(DataError) as err:
        load_jsonl(path)
    assert (err.value.row, err.value.field) == (4, "answer")


def test_invalid_utf8_names_file_and_row(tmp_path: Path) -> None:
    """Deliberate bug caught: a UnicodeDecodeError without the file or the line."""
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(ROWS[0]).encode() + b"\n"
    latin1 = b'{"question": "caf\xe9?", "answer": "1"}\n'
    path.write_bytes(good + good.replace(b"q0?", b"q1?") + latin1)
    message = (f"{path}, row 3: expected UTF-8 text, got byte 0xe9 at column 18 "
               "(re-save the file as UTF-8)")
    for load in (load_jsonl, load_problems, lambda p: load_problems("jsonl", path=p)):
        with pytest.raises(DataError) as err:
            load(path)
        assert str(err.value) == message and err.value.row == 3
    first = tmp_path / "first.jsonl"  # the format sniffer reads the first line
    first.write_bytes(b'{"question": "\xff", "answer": "#### 1"}\n')
    with pytest.raises(DataError, match=re.escape(f"{first}, row 1: expected UTF-8 text")):
        load_problems(first)
    with pytest.raises(DataError, match=re.escape(f"{first}, row 1: expected UTF-8 text")):
        load_gsm8k(first)


def test_corrupt_parquet_names_file_and_rows(tmp_path: Path) -> None:
    """Deliberate bug caught: `load_problems` on a damaged Parquet file raised
    pyarrow's ArrowInvalid/OSError, naming neither the file nor the rows.
    """
    path = tmp_path / "c.parquet"
    table = pa.table({"question": [f"q{i}?" for i in range(6)],
                      "answer": [str(i) for i in range(6)]})
    pq.write_table(table, path, row_group_size=2, compression="NONE")
    data = path.read_bytes()
    offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset

    damaged = tmp_path / "damaged.parquet"  # the page header of rows 3-4 overwritten
    damaged.write_bytes(data[:offset] + b"\xff" * 12 + data[offset + 12:])
    for load in (load_problems, load_parquet):
        with pytest.raises(DataError) as err:
            load(damaged)
        assert err.value.file == str(damaged) and err.value.row == 3
        assert str(err.value).startswith(
            f"{damaged}, row 3: expected readable Parquet data, got OSError in row group 1 "
            "(rows 3-4): ")
        assert "\n" not in str(err.value)

    halved = tmp_path / "halved.parquet"
    halved.write_bytes(data[: len(data) // 2])
    for load in (load_problems, load_parquet, load_verl_parquet):
        with pytest.raises(DataError, match=re.escape(
                f"{halved}: expected a readable Parquet file, got ArrowInvalid: ")):
            load(halved)


def test_id_column_is_used_by_default(tmp_path: Path) -> None:
    """Deliberate bug caught: an `id` column was ignored unless mapped, so ids were
    replaced by row numbers and duplicate ids passed.
    """
    path = write_jsonl(tmp_path / "ids.jsonl", [
        {"id": "alpha", "question": "q1", "answer": "1"},
        {"id": 7, "question": "q2", "answer": "2"},
    ])
    assert [p.id for p in load_jsonl(path)] == ["alpha", "7"]
    assert [p.id for p in load_problems(path)] == ["alpha", "7"]
    assert [p.id for p in load_jsonl(path, FieldMapping(id=None))] == ["ids-0", "ids-1"]
    gsm = write_jsonl(tmp_path / "g.jsonl", [{"id": "g1", "question": "q", "answer": "#### 1"}])
    assert [p.id for p in load_gsm8k(gsm)] == ["g1"]


def test_duplicate_ids_name_the_file_and_both_rows(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text("".join([
        json.dumps({"id": "a", "question": "q1", "answer": "1"}) + "\n", "\n",
        json.dumps({"id": "b", "question": "q2", "answer": "2"}) + "\n",
        json.dumps({"id": "a", "question": "q3", "answer": "3"}) + "\n",
    ]), encoding="utf-8")
    for load in (load_jsonl, load_problems):
        with pytest.raises(DuplicateIdError) as err:
            load(path)
        assert str(err.value) == (
            f"{path}, row 4, field 'id': expected unique ids, got 'a' again (first at row 1)"
        )
    parquet = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"id": ["x", "y", "x"], "question": ["a", "b", "c"],
                             "answer": ["1", "2", "3"]}), parquet)
    with pytest.raises(DuplicateIdError, match=re.escape(
            f"{parquet}, row 3, field 'id': expected unique ids, got 'x' again (first at row 1)")):
        load_problems(parquet)


def test_id_column_missing_on_a_later_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"id": "a", "question": "q1", "answer": "1"}, {"question": "q2", "answer": "2"},
    ])
    with pytest.raises(DataError, match=re.escape(
            f"{path}, row 2, field 'id': expected a string or an integer id, got nothing")):
        load_jsonl(path)


MATH_SOLUTION = ("We add the fractions: $\\frac{1}{2} + \\frac{1}{4} = \\frac{3}{4}$.\n"
                 "Then we check the sum against the picture.\n"
                 "So the answer is $\\boxed{\\frac{3}{4}}$.")


def test_math_style_answer_holding_the_solution(tmp_path: Path) -> None:
    """Deliberate bug caught: a file whose answer field holds the whole worked solution
    loaded with answer = that solution (no completion could match it) and no steps.
    """
    steps = ("We add the fractions: $\\frac{1}{2} + \\frac{1}{4} = \\frac{3}{4}$.",
             "Then we check the sum against the picture.")
    generic = write_jsonl(tmp_path / "generic.jsonl", [
        {"question": "What is $1/2 + 1/4$?", "answer": MATH_SOLUTION},
        {"question": "What is 2+3?", "answer": "$\\boxed{5}$"},
    ])
    math_like = write_jsonl(tmp_path / "math_like.jsonl", [
        {"problem": "What is $1/2 + 1/4$?", "answer": MATH_SOLUTION, "level": "Level 1"},
    ])
    for problems in (load_jsonl(generic), load_problems(generic), load_problems(math_like),
                     load_math(math_like)):
        p = problems[0]
        assert (p.answer, p.solution, p.steps) == ("\\frac{3}{4}", MATH_SOLUTION, steps)
    bare = load_jsonl(generic)[1]
    assert (bare.answer, bare.solution, bare.steps) == ("5", None, ())
    unclosed = write_jsonl(tmp_path / "u.jsonl", [{"question": "q", "answer": "so \\boxed{5"}])
    with pytest.raises(DataError, match=re.escape(
            f"{unclosed}, row 1, field 'answer': expected a closed \\boxed{{}} answer")):
        load_jsonl(unclosed)


def test_math_loader_uses_last_boxed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "What is $1/2 + 1/4$?", "level": "Level 1", "type": "Algebra",
         "solution": "We add: $\\frac{1}{2} + \\frac{1}{4} = \\frac{3}{4}$. So the answer is "
                     "$\\boxed{\\frac{3}{4}}$."},
        {"problem": "p2", "solution": "Thus $\\boxed{5}$.", "answer": "5", "unique_id": "u2"},
    ])
    problems = load_math(path)
    assert problems[0].answer == "\\frac{3}{4}"
    assert problems[0].tags == ("level:Level 1", "type:Algebra")
    assert problems[0].steps == ("We add: $\\frac{1}{2} + \\frac{1}{4} = \\frac{3}{4}$.",)
    assert problems[1].id == "u2"
    assert load_problems(path) == problems


def test_math_loader_requires_boxed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "p", "solution": "no box here"}])
    with pytest.raises(DataError, match=re.escape(
            f"{path}, row 1, field 'solution': expected a \\boxed{{}} answer, got 'no box here'")):
        load_math(path)


def test_generic_jsonl_mapping_with_nested_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [
        {"meta": {"uid": 7}, "q": "What is 2+2?", "gold": 4, "cot": "2+2 = 4\n#### 4",
         "topic": ["arith"]},
    ])
    mapping = FieldMapping(id="meta.uid", question="q", answer="gold", solution="cot", tags="topic")
    (p,) = load_jsonl(path, mapping)
    assert (p.id, p.answer, p.steps, p.tags) == ("7", "4", ("2+2 = 4",), ("arith",))


def test_generic_answer_of_wrong_type(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": [1]}])
    with pytest.raises(DataError, match=re.escape(
            f"{path}, row 1, field 'answer': expected a string or a number, got list")):
        load_jsonl(path)


def test_generic_parquet_and_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table({"question": ["a?", "b?"], "answer": ["1", None]}), path)
    with pytest.raises(DataError, match=re.escape(
            f"{path}, row 2, field 'answer': expected a string or a number, got NoneType")):
        load_parquet(path)
    pq.write_table(pa.table({"question": ["a?", "b?"], "answer": ["1", "2"]}), path)
    assert [p.answer for p in load_problems(path)] == ["1", "2"]


def verl_table(rows: int, *, missing_truth_at: int | None = None) -> pa.Table:
    return pa.table({
        "data_source": ["openai/gsm8k"] * rows,
        "prompt": [[{"role": "user", "content": f"Q{i}? Let's think step by step."}]
                   for i in range(rows)],
        "ability": ["math"] * rows,
        "reward_model": [{"style": "rule",
                          "ground_truth": None if i == missing_truth_at else str(i)}
                         for i in range(rows)],
        "extra_info": [{"split": "train", "index": 10 + i,
                        "answer": f"step one\n1 + {i - 1} = {i} <<1+{i - 1}={i}>>\n#### {i}"}
                       for i in range(rows)],
    })


def test_verl_parquet(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(verl_table(3), path)
    problems = load_verl_parquet(path)
    assert [p.id for p in problems] == ["10", "11", "12"]
    assert problems[2].answer == "2"
    assert problems[2].question == "Q2? Let's think step by step."
    assert problems[2].steps == ("step one", "1 + 1 = 2")
    assert problems[0].source == "openai/gsm8k"
    assert load_problems(path) == problems
    assert load_problems("verl", path=path) == problems


def test_verl_parquet_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(verl_table(3, missing_truth_at=1), path)
    with pytest.raises(DataError) as err:
        load_verl_parquet(path)
    assert (err.value.row, err.value.field) == (2, "reward_model.ground_truth")
    assert str(err.value).endswith("expected a string or a number, got NoneType")


def test_unknown_dataset_suggests_a_name() -> None:
    with pytest.raises(UnknownDatasetError, match=re.escape("Did you mean 'gsm_symbolic'?")):
        load_problems("gsm_symbolc")


def test_file_format_name_needs_path() -> None:
    with pytest.raises(ValueError, match=re.escape("load_problems('gsm8k') expects path=<file>")):
        load_problems("gsm8k")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected an existing file"):
        load_gsm8k(tmp_path / "nope.jsonl")
