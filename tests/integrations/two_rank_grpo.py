"""Two steps of LPPOGRPOTrainer, run by `accelerate launch --num_processes 2` (gloo, CPU).

Launched by tests/integrations/test_trl.py::test_two_process_run_observes_each_reward_once.
Each rank writes what its reward function scored (its local rows) and its final
sampler state; the test compares them. Usage: two_rank_grpo.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tiny_lm import tiny_model, tiny_tokenizer  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from lppo_sampling.integrations.trl import LPPOGRPOTrainer  # noqa: E402


def main(out: Path) -> None:
    rank = int(os.environ.get("RANK", "0"))
    log = out / f"rewards_rank{rank}.jsonl"

    def reward(prompts, completions, sample_id, prefix, trainer_state=None, **kw):
        r = [(zlib.crc32(c.encode()) % 5) / 4 for c in completions]
        with open(log, "a", encoding="utf-8") as f:
            for k, p, x in zip(sample_id, prefix, r, strict=True):
                f.write(json.dumps({"key": k, "guided": bool(p), "reward": x}) + "\n")
        return r

    tok = tiny_tokenizer()
    ds = Dataset.from_list([
        {"sample_id": f"s{i}", "prompt": f"What is {i}+{i + 1}?", "answer": str(2 * i + 1),
         "solution": f"Step 1: add {i} and {i + 1}.\nThe answer is {2 * i + 1}."}
        for i in range(2)])      # both prompts in every step: step 2 guides the stuck ones
    args = GRPOConfig(
        output_dir=str(out / "run"), use_cpu=True, max_steps=2, per_device_train_batch_size=4,
        num_generations=4, max_completion_length=8, report_to="none", save_strategy="no",
        bf16=False, loss_type="grpo", ignore_data_skip=True, seed=0, logging_steps=1,
        ddp_backend="gloo")
    trainer = LPPOGRPOTrainer(
        model=tiny_model(tok), reward_funcs=reward, processing_class=tok, train_dataset=ds,
        args=args, strategy="prefix_guidance",
        strategy_kwargs={"stuck_threshold": 1.0},        # every seen sample counts as stuck
        prefix_fn=lambda row, ratio: "Step 1: add.\n", solution_column="solution",
        check_replicas=True)
    trainer.train()
    trainer.lppo_strategy.save(out / f"sampler_rank{rank}.npz")
    (out / f"done_rank{rank}.json").write_text(json.dumps({
        "num_processes": trainer.accelerator.num_processes,
        "backend": torch.distributed.get_backend(),
        "global_step": trainer.state.global_step,
        "observe_events": trainer.lppo_strategy.stats.step}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
