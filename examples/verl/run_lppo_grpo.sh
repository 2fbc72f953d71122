#!/usr/bin/env bash
# LPPO with verl on one GPU node. Needs verl==0.9.1 and lppo installed on every Ray node.
#   MODEL_PATH=Qwen/Qwen2.5-Math-1.5B GSM8K=path/to/gsm8k_train.jsonl examples/verl/run_lppo_grpo.sh
# Optional: N_GPUS (default 8), DATA_DIR (default data/verl). Extra arguments go to verl as
# Hydra overrides (e.g. trainer.total_epochs=2; `--cfg job` prints the config and exits).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MODEL_PATH:?set MODEL_PATH to a Hugging Face model id or a local model directory}"
N_GPUS=${N_GPUS:-8}
DATA_DIR=$(realpath -m "${DATA_DIR:-data/verl}")
if [[ ! -f "$DATA_DIR/train.parquet" ]]; then
  : "${GSM8K:?set GSM8K to a GSM8K train JSONL (or put train/val.parquet in DATA_DIR)}"
  python examples/verl/prepare_data.py "$GSM8K" --out "$DATA_DIR"
fi
python -m verl.trainer.main_ppo \
  --config-path="$PWD/examples/verl" --config-name=lppo_grpo \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  data.train_files="$DATA_DIR/train.parquet" data.val_files="$DATA_DIR/val.parquet" \
  data.lppo.prefix_fn.path="$PWD/examples/verl/lppo_prefix.py" \
  trainer.n_gpus_per_node="$N_GPUS" \
  "$@"
