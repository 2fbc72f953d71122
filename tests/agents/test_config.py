"""Config fields are coerced and checked by their declared type, in every config.

The rules (`agents.fields`) are property-tested on the coercion function, then checked
through each config class and through YAML as a user writes it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agents.args import ArgumentParser, add_dataclass_arguments
from agents.cli import EvalConfig
from agents.compare.cli import CompareConfig
from agents.config import ConfigError, TrainConfig, load_config
from agents.fields import coerce_value, field_docs
from agents.saidpo import SAIDPOConfig

NON_BOOL = st.one_of(
    st.sampled_from(["false", "False", "true", "no", "yes", "0", "1", "", "off"]),
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.lists(st.booleans(), max_size=2),
)
NON_STR = st.one_of(
    st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.text(), max_size=2)
)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- the rules
@given(FINITE)
def test_a_float_written_as_text_is_read_back_exactly(x: float) -> None:
    """Catches a float field that keeps the string, or parses it lossily."""
    assert coerce_value(repr(x), float, "lr") == x
    assert coerce_value(f" {x!r} ", float, "lr") == x


@given(FINITE.filter(lambda x: x > 0))
def test_yaml_floats_without_a_dot_reach_train_config_as_floats(x: float) -> None:
    """PyYAML reads `lr: 1e-05` as the string "1e-05"; the field must hold the float."""
    data = yaml.safe_load(f"lr: {x!r}")
    cfg = TrainConfig.from_dict(data)
    assert isinstance(cfg.lr, float) and cfg.lr == x


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_integers_from_text_and_as_floats(n: int) -> None:
    """Catches an int field that keeps "8" as text, or a float field that refuses an int."""
    assert coerce_value(str(n), int, "steps") == n
    assert coerce_value(float(n), int, "steps") == n
    assert coerce_value(n, float, "lr") == float(n)


@given(FINITE.filter(lambda x: not x.is_integer()))
def test_a_fractional_number_is_not_an_integer(x: float) -> None:
    """Catches silent truncation (steps: 2.5 -> 2)."""
    with pytest.raises(ConfigError, match=r"expects steps to be an integer"):
        coerce_value(x, int, "steps")
    with pytest.raises(ConfigError, match=r"expects steps to be an integer"):
        coerce_value(repr(x), int, "steps")


@given(NON_BOOL)
def test_only_true_and_false_are_bools(value: Any) -> None:
    """Catches truthiness: "false" (a non-empty string) must not become True."""
    with pytest.raises(ConfigError, match=r"^TrainConfig expects resume to be true or false"):
        coerce_value(value, bool, "resume", owner="TrainConfig")


@given(st.booleans())
def test_bools_are_not_numbers(b: bool) -> None:
    """Catches `group_size: true` read as 1."""
    for tp in (int, float):
        with pytest.raises(ConfigError, match="group_size"):
            coerce_value(b, tp, "group_size")


@given(NON_STR)
def test_only_strings_are_strings(value: Any) -> None:
    """Catches `model: 123` turned into "123" and `learner: null` into "None"."""
    with pytest.raises(ConfigError, match=r"expects model to be a string"):
        coerce_value(value, str, "model")


@given(st.text())
def test_strings_pass_unchanged(s: str) -> None:
    assert coerce_value(s, str, "model") == s
    assert coerce_value(s, str | None, "dtype") == s


@given(st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity"]))
def test_non_finite_numbers_are_refused(text: str) -> None:
    """Catches `lr: .nan` passing `lr > 0`-style checks downstream (inf does)."""
    with pytest.raises(ConfigError, match="finite number"):
        coerce_value(text, float, "lr")
    with pytest.raises(ConfigError, match="finite number"):
        coerce_value(float(text), float, "lr")


@given(st.lists(st.integers(min_value=-(10**6), max_value=10**6), max_size=5))
def test_lists_coerce_each_item(xs: list[int]) -> None:
    assert coerce_value([str(x) for x in xs], list[int], "seeds") == xs
    assert coerce_value(tuple(xs), list[int], "seeds") == xs


def test_none_only_where_the_type_allows_it() -> None:
    assert coerce_value(None, float | None, "threshold") is None
    assert coerce_value("0.5", float | None, "threshold") == 0.5
    with pytest.raises(ConfigError, match=r"expects learner to be a string, got None$"):
        coerce_value(None, str, "learner")


def test_fixed_tuples_and_mappings() -> None:
    assert coerce_value([0.9, "0.99"], tuple[float, float], "adam_betas") == (0.9, 0.99)
    with pytest.raises(ConfigError, match="a list of 2 items"):
        coerce_value([0.9], tuple[float, float], "adam_betas")
    with pytest.raises(ConfigError, match="learner_kwargs to be a mapping"):
        coerce_value("kl_coef=1", dict[str, Any], "learner_kwargs")


# --------------------------------------------------------------------------- every config
def _write(tmp_path, text: str):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ('resume: "false"', "resume"),
        ("resume: no_thanks", "resume"),
        ("model: 123", "model"),
        ("learner: null", "learner"),
        ("steps: 2.5", "steps"),
        ("lr: fast", "lr"),
        ("data_kwargs: 64", "data_kwargs"),
    ],
)
def test_train_config_refuses_wrong_types_naming_the_field(tmp_path, yaml_text, field) -> None:
    with pytest.raises(ConfigError, match=rf"^TrainConfig expects {field} to be "):
        load_config(_write(tmp_path, yaml_text))


def test_train_config_from_yaml_reads_numbers_written_without_a_dot(tmp_path) -> None:
    cfg = load_config(_write(tmp_path, "lr: 1e-5\nsteps: 1e1\nresume: false\n"))
    assert (cfg.lr, cfg.steps, cfg.resume) == (1e-5, 10, False)
    assert isinstance(cfg.lr, float) and isinstance(cfg.steps, int)


def test_learner_config_coerces_learner_kwargs_from_yaml() -> None:
    """`learner_kwargs: {kl_coef: 1e-3}` in YAML arrives as a string; the learner gets 1e-3."""
    from agents.learners.grpo import GRPOConfig

    kwargs = yaml.safe_load("{kl_coef: 1e-3, adam_betas: [0.9, 0.95]}")
    cfg = GRPOConfig.from_kwargs(**kwargs)
    assert cfg.kl_coef == 1e-3 and cfg.adam_betas == (0.9, 0.95)
    with pytest.raises(
        ValueError, match=r"GRPOConfig expects use_kl_in_reward to be true or false"
    ):
        GRPOConfig.from_kwargs(use_kl_in_reward="false")
    with pytest.raises(ValueError, match=r"GRPOConfig expects adv_estimator to be a string"):
        GRPOConfig.from_kwargs(adv_estimator=None)


def test_saidpo_compare_and_eval_configs_coerce_and_refuse() -> None:
    assert SAIDPOConfig(lr="1e-6", k="4").lr == 1e-6
    with pytest.raises(ValueError, match=r"SAIDPOConfig expects save_model to be true or false"):
        SAIDPOConfig(save_model="false")
    with pytest.raises(ValueError, match=r"SAIDPOConfig expects model to be a string"):
        SAIDPOConfig(model=123)
    cc = CompareConfig(seeds=["0", 1], strategies=["uniform,lppo"], threshold="0.5")
    assert (cc.seeds, cc.strategies, cc.threshold) == ([0, 1], ["uniform", "lppo"], 0.5)
    with pytest.raises(ConfigError, match=r"CompareConfig expects in_process to be true or false"):
        CompareConfig(in_process="yes")
    with pytest.raises(ConfigError, match=r"EvalConfig expects split to be one of"):
        EvalConfig(split="test")
    with pytest.raises(ConfigError, match=re.escape("expects k values in [1, n_samples=1]")):
        EvalConfig(k=[4])


# --------------------------------------------------------------------------- help text
@pytest.mark.parametrize("cls", [TrainConfig, EvalConfig, CompareConfig, SAIDPOConfig])
def test_every_field_is_a_flag_with_its_doc_as_help(cls) -> None:
    """Catches a field without a flag or without help, whatever the doc style."""
    docs = field_docs(cls)
    parser = add_dataclass_arguments(ArgumentParser(prog="x"), cls)
    text = " ".join(parser.format_help().split())
    for f in dataclasses.fields(cls):
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no help"
        assert "--" + f.name.replace("_", "-") in text
        assert " ".join(docs[f.name].split()[:6]) in text


def test_field_docs_read_attributes_sections_and_metadata() -> None:
    from agents.learners.dpo import DPOConfig

    docs = field_docs(DPOConfig)
    assert all(docs.get(f.name) for f in dataclasses.fields(DPOConfig))  # base + subclass
    assert docs["beta"].startswith("DPO inverse temperature")

    @dataclasses.dataclass
    class C:
        a: int = dataclasses.field(default=1, metadata={"help": "from metadata"})
        b: float = 0.5
        """b: from the literal."""

    assert field_docs(C) == {"a": "from metadata", "b": "from the literal."}


def test_flags_convert_by_the_same_rules() -> None:
    parser = add_dataclass_arguments(ArgumentParser(prog="x"), TrainConfig, defaults=False)
    args = parser.parse_args(["--lr", "1e-5", "--no-resume", "--data-kwargs", '{"size": 8}'])
    assert (args.lr, args.resume, args.data_kwargs) == (1e-5, False, {"size": 8})
    assert not hasattr(args, "steps")  # unset: a --config file's value is kept
    assert math.isclose(TrainConfig(**vars(args)).lr, 1e-5)


def test_train_config_builds_its_learner_config_without_a_model() -> None:
    """learner_kwargs are checked before any model loads; lr and temperature come from the run."""
    cfg = TrainConfig(learner="ppo", lr="2e-6", temperature=0.7, learner_kwargs={"kl_coef": "1e-3"})
    lc = cfg.learner_config()
    assert (type(lc).__name__, lc.kl_coef, lc.lr, lc.temperature) == ("PPOConfig", 1e-3, 2e-6, 0.7)
    with pytest.raises(ConfigError, match=r"^learner_kwargs: PPOConfig expects kl_coef to be"):
        TrainConfig(learner="ppo", learner_kwargs={"kl_coef": "x"}).learner_config()
    with pytest.raises(ConfigError, match=r"^learner: expected a learner name"):
        TrainConfig(learner="grp").learner_config()


@given(st.integers(1, 99), st.integers(-2, 1))
def test_strategy_kwargs_from_yaml_are_converted_by_the_strategy_s_types(
    tmp_path_factory, mantissa, exponent
):
    """Catches: YAML `kappa: 1e1` (a string to PyYAML: no dot) reaching `make_strategy` as is."""
    text = f"{mantissa}e{exponent}"
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(f"strategy: lppo\nstrategy_kwargs:\n  kappa: {text}\n")
    assert isinstance(yaml.safe_load(path.read_text())["strategy_kwargs"]["kappa"], str)
    cfg = load_config(path)
    assert cfg.strategy_kwargs["kappa"] == float(text)
    from lppo_sampling import make_strategy

    make_strategy(cfg.strategy, **cfg.strategy_kwargs)  # accepted as built


@pytest.mark.parametrize("bad", [{"kappa": "abc"}, {"normalize_weights": "false"}])
def test_strategy_kwargs_that_do_not_fit_are_refused_naming_the_argument(bad) -> None:
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=rf"strategy_kwargs\.{name}"):
        TrainConfig(strategy="lppo", strategy_kwargs=bad)
