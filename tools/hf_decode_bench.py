#!/usr/bin/env python3
"""Decode speed of Hugging Face transformers on a model folder, the reference for `lora4j generate`'s tokens/s.

Loads the folder (for example one written by `lora4j init-model --preset mistral-7b`) in BF16 on the GPU, runs a
greedy generation of --new-tokens tokens after a short prompt, ignoring end-of-sequence, and prints one JSON line:
prefill and decode tokens/s and peak GPU memory. Run on the GPU machine, in the same command as lora4j's run:

    python3 tools/hf_decode_bench.py /tmp/m7b --new-tokens 128
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16")
    args = p.parse_args()

    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to("cuda").eval()
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, vocab, (1, args.prompt_tokens), generator=g).to("cuda")

    def generate(n):
        with torch.no_grad():
            return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=0, eos_token_id=None)

    generate(4)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    generate(1)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = generate(args.new_tokens)
    torch.cuda.synchronize()
    total_s = time.perf_counter() - t0
    new = out.shape[1] - args.prompt_tokens
    decode_s = max(total_s - prefill_s, 1e-9)
    print(json.dumps({
        "stack": "transformers " + __import__("transformers").__version__ + ", torch " + torch.__version__,
        "model": args.model, "dtype": args.dtype, "load_s": round(load_s, 2),
        "prompt_tokens": args.prompt_tokens, "new_tokens": int(new),
        "prefill_tokens_per_s": round(args.prompt_tokens / prefill_s, 1),
        "decode_tokens_per_s": round((new - 1) / decode_s, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))


if __name__ == "__main__":
    main()
