"""lppo_env: math problems as a Gymnasium text environment with a safe math-verify reward.

Importing this package is cheap (no torch, no reasoning-gym, no math-verify in the
caller): heavy modules load on first use. It registers `lppo/MathReasoning-v0` for
`gymnasium.make` by string entry point.
"""

from __future__ import annotations

import gymnasium

from lppo_env.answers import (
    contains_answer,
    extract_final_answer,
    parse_number,
    strip_unit_words,
)
from lppo_env.default_data import (
    arithmetic_problems,
    default_problems,
    gsm_symbolic_problems,
)
from lppo_env.env import (
    DEFAULT_SYSTEM_PROMPT,
    MathReasoningEnv,
    group_options,
    make_group_env,
)
from lppo_env.errors import (
    DataError,
    DuplicateIdError,
    LppoEnvError,
    UnknownDatasetError,
    VerifierError,
)
from lppo_env.loaders import (
    FieldMapping,
    dataset_names,
    load_gsm8k,
    load_jsonl,
    load_math,
    load_parquet,
    load_problems,
    load_verl_parquet,
)
from lppo_env.prefix import Prefix, make_prefix, split_steps
from lppo_env.problems import MathProblem, split_problems
from lppo_env.spaces import UnicodeText
from lppo_env.verify import (
    MathVerifier,
    VerifyResult,
    compute_score,
    default_verifier,
    fast_verdict,
    make_trl_reward,
)

__all__ = [
    # problems and data
    "MathProblem",
    "FieldMapping",
    "load_problems",
    "load_gsm8k",
    "load_math",
    "load_jsonl",
    "load_parquet",
    "load_verl_parquet",
    "dataset_names",
    "default_problems",
    "arithmetic_problems",
    "gsm_symbolic_problems",
    "split_problems",
    # prefixes
    "Prefix",
    "make_prefix",
    "split_steps",
    # answers and reward
    "extract_final_answer",
    "parse_number",
    "contains_answer",
    "strip_unit_words",
    "MathVerifier",
    "VerifyResult",
    "fast_verdict",
    "default_verifier",
    "compute_score",
    "make_trl_reward",
    # environment
    "MathReasoningEnv",
    "UnicodeText",
    "DEFAULT_SYSTEM_PROMPT",
    "make_group_env",
    "group_options",
    "ENV_ID",
    # errors
    "LppoEnvError",
    "DataError",
    "DuplicateIdError",
    "UnknownDatasetError",
    "VerifierError",
]

ENV_ID = "lppo/MathReasoning-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="lppo_env.env:MathReasoningEnv")
