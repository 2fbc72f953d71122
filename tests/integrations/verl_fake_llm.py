"""The LLM server of the verl V1 run test: the one piece that replaces a GPU engine.

It is a Ray actor that verl's own load balancer routes to and verl's `LLMServerClient`
calls (`server.generate.remote(...)`), in place of a vLLM replica. It lives in its own
module so Ray's worker processes can import it (the test puts this directory on their
PYTHONPATH).
"""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class FakeLLMServer:
    """'What is i+i?' is answered right for even i; for odd i only on its 4th, 8th, ...
    request (so a group goes [0, 0], then [0, 1]: learning progress), and always when the
    prompt ends in the expert prefix (`Step 1: add i and i.`). Records every prompt."""

    def __init__(self, model_dir: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.prompts: list[list[int]] = []
        self.calls: dict[int, int] = {}
        self.global_steps = None   # the weight version, set by the weight sync (as vLLM's is)

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None,
                       video_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.prompts.append(list(prompt_ids))
        text = self.tokenizer.decode(prompt_ids)
        i = int(text.split("What is ")[-1].split("+")[0])
        guided = text.rstrip().endswith(f"add {i} and {i}.")
        c = self.calls[i] = self.calls.get(i, -1) + (0 if guided else 1)
        answer = 2 * i if (guided or i % 2 == 0 or c % 4 == 3) else 2 * i + 1
        ids = self.tokenizer.encode(f" The answer is {answer}.", add_special_tokens=False)
        ids.append(self.tokenizer.eos_token_id)
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids), stop_reason="completed",
                           extra_fields={"global_steps": self.global_steps})

    async def set_global_steps(self, global_steps: int) -> None:
        """What the rollout's weight update calls on a vLLM server after new weights."""
        self.global_steps = global_steps

    def recorded(self) -> list[list[int]]:
        return list(self.prompts)
