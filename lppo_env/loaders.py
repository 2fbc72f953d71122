"""Loaders: files (GSM8K, MATH, generic JSONL/Parquet, verl Parquet) and named datasets.

Why strict: a row that is silently skipped or half-parsed shows up weeks later as a
sampler statistic with no problem behind it. Every loader validates each row and
raises one `DataError` naming the file, the 1-based row and the field; nothing is
dropped (blank JSONL lines are not rows), and duplicate ids are an error
(`DuplicateIdError`) naming both rows. Rows are JSONL line numbers, or Parquet row
indices + 1, so an error points at the line to open.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lppo_env.answers import last_boxed, strip_calculator_annotations
from lppo_env.errors import DataError, UnknownDatasetError
from lppo_env.prefix import split_steps
from lppo_env.problems import MathProblem, check_unique_ids

__all__ = [
    "FieldMapping",
    "load_gsm8k",
    "load_math",
    "load_jsonl",
    "load_parquet",
    "load_verl_parquet",
    "load_problems",
    "dataset_names",
]

_MISSING = object()


@dataclass(frozen=True)
class FieldMapping:
    """Where each `MathProblem` field lives in a generic row.

    Each value is a field name, or a dotted path into nested objects
    ("reward_model.ground_truth"); None means "not present".

    Attributes:
        id: id field (default "id"); rows are numbered "<file stem>-<record index>" when it
            is None, or when it is absent from the first row. Once the first row has it,
            every row must.
        question: question field (required).
        answer: gold-answer field (required; str or a number).
        solution: worked-solution field, or None.
        tags: field holding a str or a list of str, or None.
    """

    id: str | None = "id"
    question: str = "question"
    answer: str = "answer"
    solution: str | None = None
    tags: str | None = None


def _get(row: Mapping[str, Any], path: str) -> Any:
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _type_name(value: Any) -> str:
    return "nothing (missing)" if value is _MISSING else type(value).__name__


class _Row:
    """One raw row plus where it came from, with typed getters that raise `DataError`."""

    def __init__(self, data: Any, file: Path, row: int, index: int) -> None:
        self.file, self.row, self.index = file, row, index  # line (1-based), record (0-based)
        if not isinstance(data, Mapping):
            raise DataError(f"expected a JSON object, got {type(data).__name__}",
                            file=file, row=row)
        self.data = data

    def error(self, field: str, reason: str) -> DataError:
        return DataError(reason, file=self.file, row=self.row, field=field)

    def text(self, field: str) -> str:
        value = _get(self.data, field)
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, got {_type_name(value)}")
        if not value.strip():
            raise self.error(field, "expected a non-empty string, got an empty string")
        return value

    def optional_text(self, field: str | None) -> str | None:
        if field is None or _get(self.data, field) in (_MISSING, None):
            return None
        return self.text(field)

    def answer(self, field: str) -> str:
        value = _get(self.data, field)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(field, f"expected a string or a number, got {_type_name(value)}")
        text = str(value).strip()
        if not text:
            raise self.error(field, "expected a non-empty answer, got an empty string")
        return text

    def key(self, field: str) -> str:
        value = _get(self.data, field)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(field, f"expected a string or an integer id, got {_type_name(value)}")
        if not str(value).strip():
            raise self.error(field, "expected a non-empty id, got an empty string")
        return str(value)

    def tags(self, field: str | None) -> tuple[str, ...]:
        if field is None:
            return ()
        value = _get(self.data, field)
        if value is _MISSING or value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value):
            return tuple(value)
        raise self.error(field, f"expected a string or a list of strings, got {value!r:.60}")


def _decode_line(raw: bytes, path: Path, row: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"expected UTF-8 text, got byte 0x{raw[e.start]:02x} at column "
                        f"{e.start + 1} (re-save the file as UTF-8)", file=path, row=row) from None


def _read_jsonl(path: Path) -> Iterator[_Row]:
    """Rows of a JSONL file; blank lines (anywhere, e.g. a trailing one) are skipped."""
    index = 0
    with path.open("rb") as f:
        for row, raw in enumerate(f, start=1):
            line = _decode_line(raw, path, row)
            if row == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"expected valid JSON, got {e.msg} at column {e.colno}",
                                file=path, row=row) from e
            yield _Row(data, path, row, index)
            index += 1


def _one_line(error: Exception) -> str:
    """Pyarrow's messages span lines; an error here is one line."""
    return " ".join(str(error).split())[:200]


def _parquet_file(path: Path) -> Any:
    """The opened file (footer and schema read), or a `DataError` naming the file."""
    import pyarrow.parquet as pq  # only parquet users pay for pyarrow

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several unrelated types for bad files
        raise DataError(f"expected a readable Parquet file, got {type(e).__name__}: "
                        f"{_one_line(e)}", file=path) from e


def _read_parquet(path: Path) -> Iterator[_Row]:
    """Rows of a Parquet file, read one row group at a time.

    Why by row group: a damaged page then names the rows it holds ("row 1001, ...
    row group 1 (rows 1001-2000)") instead of failing the whole file without a place.
    """
    file = _parquet_file(path)
    first = 1
    for group in range(file.num_row_groups):
        n = file.metadata.row_group(group).num_rows
        try:
            rows = file.read_row_group(group).to_pylist()
        except Exception as e:  # corrupt pages, bad UTF-8 in a string column, ...
            raise DataError(
                f"expected readable Parquet data, got {type(e).__name__} in row group "
                f"{group} (rows {first}-{first + n - 1}): {_one_line(e)}", file=path, row=first,
            ) from e
        for offset, data in enumerate(rows):
            yield _Row(data, path, first + offset, first + offset - 1)
        first += n


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"expected an existing file, got {str(p)!r}", file=p)
    return p


def _finish(
    problems: list[MathProblem], path: Path, rows: list[int]
) -> tuple[MathProblem, ...]:
    if not problems:
        raise DataError("expected at least one row, got an empty file", file=path)
    check_unique_ids(problems, file=str(path), rows=rows)
    return tuple(problems)


class _Ids:
    """Ids of a file's rows: its `field` when the first row has it, else numbered.

    Why decided by the first row: a file either carries stable ids (then every row
    must, or two kinds of ids would mix) or it does not (then the row number is the id).
    """

    def __init__(self, path: Path, field: str | None) -> None:
        self.path, self.field = path, field
        self.use_field: bool | None = None if field is not None else False

    def __call__(self, row: _Row) -> str:
        if self.use_field is None:
            self.use_field = _get(row.data, self.field) is not _MISSING  # type: ignore[arg-type]
        if self.use_field:
            return row.key(self.field)  # type: ignore[arg-type]
        return f"{self.path.stem}-{row.index}"


def _boxed_solution(row: _Row, field: str, text: str) -> tuple[str, str | None]:
    r"""(answer, solution) of an answer field: a full solution yields its `\boxed{}` answer.

    MATH-style files often keep the whole worked solution under "answer"; taking it
    as the gold answer would make every completion wrong and leave no prefix steps.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return text, None
    boxed = last_boxed(text)
    if not boxed:
        raise row.error(field, f"expected a closed \\boxed{{}} answer, got {text[-60:]!r}")
    # a field with reasoning steps besides the boxed line is a worked solution
    return boxed, (text if split_steps(text) else None)


def _make(row: _Row, **fields: Any) -> MathProblem:
    try:
        return MathProblem(**fields)
    except DataError as e:
        raise DataError(e.reason, file=row.file, row=row.row, field=e.field) from e


def load_gsm8k(path: str | Path) -> tuple[MathProblem, ...]:
    """Load GSM8K JSONL (`question`, `answer` = worked solution ending in `#### N`).

    The solution keeps the original text minus calculator annotations (`<<48/2=24>>`),
    so a prefix reads as prose; the gold answer is the text after the last `####`.
    Ids come from an `id` field when the rows have one, else "<file stem>-<0-based
    record index>" (blank lines do not count), stable for a given file.
    """
    path = _check_file(path)
    problems, rows = [], []
    ids = _Ids(path, "id")
    for row in _read_jsonl(path):
        question = row.text("question")
        raw = row.text("answer")
        if "####" not in raw:
            raise row.error(
                "answer", f"expected a solution ending in '#### <answer>', got {raw[-60:]!r}"
            )
        answer = raw.rsplit("####", 1)[1].strip()
        if not answer:
            raise row.error("answer", "expected an answer after '####', got nothing")
        solution = strip_calculator_annotations(raw)
        problems.append(_make(
            row, id=ids(row), question=question, answer=answer,
            solution=solution, steps=split_steps(solution), source="gsm8k",
        ))
        rows.append(row.row)
    return _finish(problems, path, rows)


def load_math(path: str | Path) -> tuple[MathProblem, ...]:
    r"""Load MATH-style JSONL (`problem`, `solution` with a `\boxed{}` answer).

    Optional fields: `answer` (overrides the boxed one; when it holds a whole worked
    solution, as in some MATH exports, its `\boxed{}` content is the answer and the
    text is the solution), `unique_id` or `id`, `level` and `type` (become tags
    "level:..", "type:..").
    """
    path = _check_file(path)
    problems, rows = [], []
    for row in _read_jsonl(path):
        question = row.text("problem")
        solution_given = _get(row.data, "solution") not in (_MISSING, None)
        if _get(row.data, "answer") not in (_MISSING, None):
            answer, from_answer = _boxed_solution(row, "answer", row.answer("answer"))
            solution = (row.text("solution") if solution_given or from_answer is None
                        else from_answer)
        else:
            solution = row.text("solution")
            answer = last_boxed(solution) or ""
            if not answer:
                raise row.error(
                    "solution", f"expected a \\boxed{{}} answer, got {solution[-60:]!r}"
                )
        id_field = next((f for f in ("unique_id", "id") if f in row.data), None)
        pid = row.key(id_field) if id_field else f"{path.stem}-{row.index}"
        tags = tuple(
            f"{f}:{row.data[f]}"
            for f in ("level", "type")
            if isinstance(row.data.get(f), (str, int))
        )
        problems.append(_make(
            row, id=pid, question=question, answer=answer, solution=solution,
            steps=split_steps(solution), source="math", tags=tags,
        ))
        rows.append(row.row)
    return _finish(problems, path, rows)


def _generic(rows: Iterator[_Row], path: Path, mapping: FieldMapping) -> tuple[MathProblem, ...]:
    problems, numbers = [], []
    ids = _Ids(path, mapping.id)
    for row in rows:
        solution = row.optional_text(mapping.solution)
        answer, from_answer = _boxed_solution(row, mapping.answer, row.answer(mapping.answer))
        if solution is None:
            solution = from_answer
        if solution is not None:
            solution = strip_calculator_annotations(solution)
        problems.append(_make(
            row,
            id=ids(row),
            question=row.text(mapping.question),
            answer=answer,
            solution=solution,
            steps=split_steps(solution) if solution else (),
            source=path.stem,
            tags=row.tags(mapping.tags),
        ))
        numbers.append(row.row)
    return _finish(problems, path, numbers)


def load_jsonl(path: str | Path, mapping: FieldMapping | None = None) -> tuple[MathProblem, ...]:
    """Load any JSONL file through a `FieldMapping` (default: `question`, `answer`)."""
    path = _check_file(path)
    return _generic(_read_jsonl(path), path, mapping or FieldMapping())


def load_parquet(path: str | Path, mapping: FieldMapping | None = None) -> tuple[MathProblem, ...]:
    """Load any Parquet file through a `FieldMapping`; nested columns use dotted paths."""
    path = _check_file(path)
    return _generic(_read_parquet(path), path, mapping or FieldMapping())


def load_verl_parquet(path: str | Path) -> tuple[MathProblem, ...]:
    """Load a verl RL Parquet file (`prompt`, `reward_model.ground_truth`, `extra_info.index`).

    The question is `extra_info.question` when present (verl's preprocessors keep the
    raw question there; `prompt` carries their own answer-format instruction, which
    would fight our system prompt), else the content of the last user turn of
    `prompt`. A worked solution is taken from `extra_info.solution`, or from
    `extra_info.answer` when it is a GSM8K-style solution with `####`.
    """
    path = _check_file(path)
    problems, rows = [], []
    for row in _read_parquet(path):
        prompt = _get(row.data, "prompt")
        if not isinstance(prompt, (list, tuple)) or not prompt:
            raise row.error(
                "prompt", f"expected a non-empty list of chat messages, got {_type_name(prompt)}"
            )
        if isinstance(_get(row.data, "extra_info.question"), str):
            question = row.text("extra_info.question")
        else:
            users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
            if (
                not users
                or not isinstance(users[-1].get("content"), str)
                or not users[-1]["content"].strip()
            ):
                raise row.error("prompt", "expected a user message with string content, got none")
            question = users[-1]["content"]
        answer = row.answer("reward_model.ground_truth")
        pid = row.key("extra_info.index")
        solution = row.optional_text("extra_info.solution") if isinstance(
            _get(row.data, "extra_info.solution"), str) else None
        extra_answer = _get(row.data, "extra_info.answer")
        if solution is None and isinstance(extra_answer, str) and "####" in extra_answer:
            solution = extra_answer
        if solution is not None:
            solution = strip_calculator_annotations(solution)
        source = _get(row.data, "data_source")
        problems.append(_make(
            row, id=pid, question=question, answer=answer, solution=solution,
            steps=split_steps(solution) if solution else (),
            source=source if isinstance(source, str) and source else "verl",
        ))
        rows.append(row.row)
    return _finish(problems, path, rows)


def _sniff_jsonl(path: Path) -> Callable[[Path], tuple[MathProblem, ...]]:
    """The loader for a JSONL file, from its first non-blank line."""
    row: Any = None
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    row = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return load_jsonl  # reports the bad row with its location
                break
    if isinstance(row, dict):
        answer = row.get("answer")
        if isinstance(answer, str) and "####" in answer and "question" in row:
            return load_gsm8k
        if "problem" in row and ("solution" in row or (
                isinstance(answer, str) and "\\boxed" in answer)):
            return load_math
    return load_jsonl


def _sniff_parquet(path: Path) -> Callable[[Path], tuple[MathProblem, ...]]:
    names = set(_parquet_file(path).schema_arrow.names)
    return load_verl_parquet if {"prompt", "reward_model"} <= names else load_parquet


_FILE_FORMATS: dict[str, Callable[..., tuple[MathProblem, ...]]] = {
    "gsm8k": load_gsm8k,
    "math": load_math,
    "jsonl": load_jsonl,
    "parquet": load_parquet,
    "verl": load_verl_parquet,
}


def _embedded() -> dict[str, Callable[..., tuple[MathProblem, ...]]]:
    from lppo_env import default_data  # imports reasoning-gym lazily in its builders

    return dict(default_data.DATASETS)


def dataset_names() -> tuple[str, ...]:
    """Names `load_problems` accepts: embedded datasets, then file formats (need `path=`)."""
    return tuple(_embedded()) + tuple(_FILE_FORMATS)


def load_problems(
    name_or_path: str | Path,
    *,
    path: str | Path | None = None,
    mapping: FieldMapping | None = None,
    **kwargs: Any,
) -> tuple[MathProblem, ...]:
    """Load problems by dataset name or from a file.

    Examples: `load_problems("default")`, `load_problems("arithmetic", difficulty=3)`,
    `load_problems("gsm_symbolic", size=500, seed=1)`,
    `load_problems("gsm8k", path="gsm8k_train.jsonl")`, `load_problems("data.parquet")`.

    Args:
        name_or_path: an embedded dataset name ("default", "arithmetic", "gsm_symbolic"),
            a file format name ("gsm8k", "math", "jsonl", "parquet", "verl") used with
            `path=`, or a path to a `.jsonl` / `.parquet` file (format sniffed from its
            first row / its columns).
        path: the file, for file format names.
        mapping: field mapping for generic JSONL/Parquet files.
        **kwargs: builder options for embedded datasets (`size`, `seed`, `difficulty`).

    Returns:
        The problems in file or generation order, with unique ids.
    """
    name = str(name_or_path)
    embedded = _embedded()
    if name in embedded:
        if path is not None or mapping is not None:
            raise ValueError(f"load_problems expects no path/mapping for embedded dataset {name!r}")
        return embedded[name](**kwargs)
    if kwargs:
        raise ValueError(f"load_problems expects builder options only for embedded datasets, "
                         f"got {sorted(kwargs)} for {name!r}")
    if name in _FILE_FORMATS:
        if path is None:
            raise ValueError(f"load_problems({name!r}) expects path=<file>, got none")
        loader = _FILE_FORMATS[name]
        return loader(path, mapping) if name in ("jsonl", "parquet") else loader(path)
    file = Path(name)
    if file.is_file():
        suffix = file.suffix.lower()
        if suffix == ".jsonl":
            loader = _sniff_jsonl(file)
        elif suffix == ".parquet":
            loader = _sniff_parquet(file)
        else:
            raise DataError(f"expected a .jsonl or .parquet file, got {suffix or 'no suffix'!r}",
                            file=file)
        return loader(file, mapping) if loader in (load_jsonl, load_parquet) else loader(file)
    names = dataset_names()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownDatasetError(
        f"expected a dataset name in {list(names)} or an existing file, got {name!r}.{hint}"
    )
