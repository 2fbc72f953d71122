from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


def test_blank_line_is_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n\n{"question": "r", "answer": "2"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}, row 2: expected one JSON object")):
        load_jsonl(path)


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
