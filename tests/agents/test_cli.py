"""The `lppo` entry point: user errors are one line and exit status 2, before any model loads;
every subcommand's flags and help come from its dataclass; the agents modules import no cycle.

Errors are tested through the real console entry point (`python -m agents.cli`), so a
traceback printed by any layer (argparse, a config, a check) would be seen.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agents.cli import main
from agents.config import TrainConfig
from agents.fields import field_docs

REPO = Path(__file__).resolve().parents[2]


def lppo(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_user_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, exactly one line on stderr naming what is wrong, no traceback."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
    p = tmp_path / "a_file"
    p.write_text("not a directory\n")
    return p


def _unwritable_dir() -> Path:
    """A directory nobody may create files in, root included (/sys on Linux)."""
    d = Path("/sys")
    try:
        with tempfile.TemporaryFile(dir=d):
            pytest.skip("/sys is writable here")
    except OSError:
        return d


# --------------------------------------------------------------------------- missing model
@pytest.mark.parametrize("command", ["eval", "train", "saidpo"])
@pytest.mark.parametrize("model", ["/nonexistent", "./no/such/model", "no/such/model/dir"])
def test_a_missing_model_path_is_one_line(command, model, tmp_path) -> None:
    out = [] if command == "eval" else ["--run-dir", tmp_path / "run"]
    res = lppo(command, "--model", model, *out)
    assert_user_error(res, "--model", f"no such model directory: {model}")


def test_a_model_path_that_is_a_file_or_lacks_config_json(a_file, tmp_path) -> None:
    assert_user_error(lppo("eval", "--model", a_file), "--model", "is a file")
    assert_user_error(lppo("eval", "--model", tmp_path), "--model", "no config.json")


# --------------------------------------------------------------------------- output paths
def test_train_run_dir_that_is_a_file(a_file) -> None:
    assert_user_error(lppo("train", "--run-dir", a_file), "--run-dir", f"{a_file} is a file")
    assert_user_error(
        lppo("train", "--run-dir", a_file / "sub"), "--run-dir", f"cannot create {a_file / 'sub'}"
    )


def test_run_dir_is_checked_before_the_model_is_touched(a_file, tmp_path) -> None:
    """A model directory that cannot load: had the model come first, the error would say so."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert_user_error(lppo("train", "--model", broken, "--run-dir", a_file), "--run-dir")


def test_eval_out_unwritable_fails_before_evaluating(tiny_dir) -> None:
    out = _unwritable_dir() / "result.json"
    res = lppo("eval", "--model", tiny_dir, "--split", "all", "--limit", "1", "--out", out)
    assert_user_error(res, "--out", str(out), "not writable")
    assert res.stdout == ""  # the evaluation prints its result before writing --out


def test_eval_out_that_is_a_directory(tmp_path) -> None:
    assert_user_error(lppo("eval", "--out", tmp_path), "--out", "is a directory, expected a file")


def test_compare_out_and_saidpo_run_dir_that_are_files(a_file) -> None:
    assert_user_error(lppo("compare", "--out", a_file), "--out", f"{a_file} is a file")
    assert_user_error(lppo("saidpo", "--run-dir", a_file), "--run-dir", f"{a_file} is a file")
    assert_user_error(lppo("saidpo", "--tags-cache", a_file.parent), "--tags-cache")


# --------------------------------------------------------------------------- config values
@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ('resume: "false"\n', "resume"),
        ("model: 123\n", "model"),
        ("learner: null\n", "learner"),
        ("lr: fast\n", "lr"),
        ("stepz: 3\n", "stepz"),
    ],
)
def test_train_config_file_errors_name_the_field(tmp_path, yaml_text, field) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    assert_user_error(lppo("train", "--config", cfg), field)


def test_config_file_missing_or_not_a_mapping(tmp_path) -> None:
    assert_user_error(lppo("train", "--config", tmp_path / "nope.yaml"), "nope.yaml", "not exist")
    bad = tmp_path / "list.yaml"
    bad.write_text("- lr\n- 1\n")
    assert_user_error(lppo("train", "--config", bad), str(bad), "mapping")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: [1,\n  steps: {\n")
    assert_user_error(lppo("train", "--config", broken), str(broken), "not valid YAML")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--lr", "fast"], "--lr"),
        (["train", "--resume", "false"], "unrecognized arguments"),
        (["train", "--steps", "2.5"], "--steps"),
        (["train", "--data-kwargs", "{size: 3}"], "--data-kwargs"),
        (["train", "--no-such-flag"], "--no-such-flag"),
        (["eval", "--split", "test"], "--split"),
        (["eval", "--k", "4"], "k values in [1, n_samples=1]"),
        (["compare", "--seeds", "one"], "--seeds"),
        (["saidpo", "--k", "1"], "k >= 2"),
        (["eval", "--data-kwargs", '{"sise": 3}'], "--data-kwargs: cannot build 'default' with"),
        (["train", "--data-kwargs", '{"sise": 3}'], "--data-kwargs: cannot build 'default' with"),
        (["train", "--learner-kwargs", '{"kl_coef": "x"}'], "learner_kwargs: GRPOConfig expects"),
        (["train", "--learner-kwargs", '{"kl_cof": 1}'], "Did you mean 'kl_coef'?"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_flag_errors_are_one_line(argv, needle) -> None:
    assert_user_error(lppo(*argv), needle)


# --------------------------------------------------------------------------- help and success
def test_train_help_lists_every_train_config_field_with_its_help() -> None:
    res = lppo("train", "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    docs = field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text
        assert " ".join(docs[f.name].split()[:6]) in text, f.name


def test_eval_runs_from_its_dataclass_flags(tiny_dir, tmp_path, capsys) -> None:
    out = tmp_path / "new" / "result.json"
    argv = ["eval", "--model", str(tiny_dir), "--split", "all", "--limit", "2"]
    assert main([*argv, "--max-new-tokens", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == str(tiny_dir) and result["split"] == "all"
    assert json.loads(capsys.readouterr().out) == result


# --------------------------------------------------------------------------- imports
def _agents_import_graph() -> dict[str, set[str]]:
    """Module -> agents modules it imports anywhere in its source (lazy imports included)."""
    files = {}
    for p in (REPO / "agents").rglob("*.py"):
        parts = p.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = p
    graph = {}
    for name, p in files.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in files and n != name}
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_agents_modules() -> None:
    """Catches cli <-> compare style cycles, lazy (function-level) imports included."""
    graph = _agents_import_graph()
    assert {"agents.cli", "agents.compare.cli", "agents.saidpo.cli"} <= set(graph)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    "module", ["agents.cli", "agents.compare", "agents.compare.cli", "agents.saidpo.cli"]
)
def test_entry_modules_import_alone_in_a_fresh_interpreter(module) -> None:
    res = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
