#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers, for checking lora4j's forward pass end to end.

Builds small, randomly initialised Llama, Mistral and Qwen2 models with transformers, saves each as a Hugging Face
model folder (config.json + model.safetensors, F32 and a BF16 copy), and records what transformers computes for
fixed prompts: the FP32 logits of every position and a 32-token greedy continuation. lora4j then loads the same
folders and compares (dev.lora4j.model.LogitsComparison).

The cases cover what differs between the architectures:
  llama       grouped-query attention (8 heads / 4 KV heads), llama3 rope scaling with all three frequency bands
  llama_bias  Llama with attention_bias and mlp_bias (q/k/v/o and MLP biases), plain rope
  mistral     sliding window 16 on every layer with prompts longer than the window, head_dim 32 != hidden/heads
  qwen2       tied embeddings, q/k/v biases, GQA 8/2, sliding window 16 on layers >= max_window_layers (1)
Each also has a "<case>_bf16" twin whose weights are stored in BF16; its reference logits are computed in FP32
from those same BF16 values, so lora4j's CPU backend must match it as closely as the F32 case.

Run on the GPU machine (python3 with torch and transformers, no internet needed), from the repository root, after
scripts/device-bundle.sh has built .bundle on the development machine:

    python3 tools/compare_logits.py --out /tmp/lora4j-logits
    scripts/device-run.sh java dev.lora4j.model.LogitsComparison /tmp/lora4j-logits/expected.json cpu,cuda \\
        "$OUT/logits-results.json"

Optionally give the models a real tokenizer (its vocabulary size becomes the models'), which also checks that
lora4j tokenizes the prompts to the same ids as transformers:

    python3 tools/compare_logits.py --out /tmp/lora4j-logits --tokenizer ../shared/assets/tokenizers/mistral

Output: <out>/<case>/ model folders, <out>/expected.json (cases, prompt ids, greedy tokens, file names) and
<out>/expected-logits.safetensors (tensor "<case>/<prompt>" = F32 [positions, vocab] logits of the prompt followed
by the greedy continuation, computed in one forward pass).
"""
import argparse
import copy
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file

GREEDY_TOKENS = 32
PROMPT_TEXTS = [
    "Once upon a time, in a small village by the sea, there lived an old fisherman who had never once caught a fish,"
    " yet every morning he rowed out beyond the harbour with a song",
    "The capital of France is",
]


def rope_kwargs(theta, scaling=None):
    """RoPE settings for both config styles: transformers 5 takes rope_parameters, 4.x rope_theta + rope_scaling."""
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params = dict(scaling, rope_theta=theta)
        return {"rope_parameters": params}
    kw = {"rope_theta": theta}
    if scaling:
        kw["rope_scaling"] = scaling
    return kw


def cases(vocab):
    common = dict(vocab_size=vocab, hidden_size=128, intermediate_size=344, num_hidden_layers=3,
                  num_attention_heads=8, rms_norm_eps=1e-5, max_position_embeddings=256,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}
    return {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                  dict(common, num_key_value_heads=4, tie_word_embeddings=False, **rope_kwargs(500000.0, llama3))),
        "llama_bias": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                       dict(common, num_key_value_heads=8, attention_bias=True, mlp_bias=True,
                            tie_word_embeddings=False, **rope_kwargs(10000.0))),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                    dict(common, num_key_value_heads=2, head_dim=32, sliding_window=16, tie_word_embeddings=False,
                         **rope_kwargs(10000.0))),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                  dict(common, num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=True,
                       sliding_window=16, max_window_layers=1, **rope_kwargs(1000000.0))),
    }


def randomise(model, seed):
    """Weights large enough that logits are far from uniform (transformers' std 0.02 gives near-ties everywhere),
    norm weights around 1, biases nonzero. Seeded, so a rerun writes the same models."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # Scaled so that a tied output layer (Qwen2 case) gives logits of a few units, like the others.
                p.copy_(3 * torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


def greedy(model, ids, n):
    """Greedy continuation by full forward passes (no cache): the plainest statement of greedy decoding."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq])).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
    return seq[len(ids):]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the model folders and expected.json")
    ap.add_argument("--tokenizer", help="folder with tokenizer.json (+ tokenizer_config.json) to give the models")
    ap.add_argument("--vocab", type=int, default=512, help="vocabulary size when no tokenizer is given")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    tokenizer = None
    vocab = args.vocab
    if args.tokenizer:
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
        vocab = len(tokenizer)
        prompts = [{"text": t, "ids": tokenizer(t)["input_ids"]} for t in PROMPT_TEXTS]
    else:
        g = torch.Generator().manual_seed(args.seed)
        prompts = [{"ids": torch.randint(0, vocab, (40,), generator=g).tolist()},
                   {"ids": torch.randint(0, vocab, (5,), generator=g).tolist()}]

    expected = {"transformers": transformers.__version__, "torch": torch.__version__, "greedy_tokens": GREEDY_TOKENS,
                "logits_file": "expected-logits.safetensors", "cases": []}
    logits_out = {}
    for index, (name, (config_cls, model_cls, kw)) in enumerate(cases(vocab).items()):
        config = config_cls(**kw)
        config._attn_implementation = "eager"
        model = model_cls(config).eval()
        randomise(model, args.seed + index)
        for dtype_name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
            case = name if dtype_name == "f32" else name + "_bf16"
            folder = os.path.join(args.out, case)
            shutil.rmtree(folder, ignore_errors=True)
            if dtype == torch.bfloat16:
                # The reference for BF16-stored weights: the same values, computed in FP32. Built by loading
                # rounded weights into a fresh FP32 model rather than by casting one back and forth, which would
                # also round the rotary inv_freq buffer to BF16.
                rounded = {k: v.to(torch.bfloat16).to(torch.float32) for k, v in model.state_dict().items()}
                stored = model_cls(copy.deepcopy(config)).eval()
                stored.load_state_dict(rounded)
                stored.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
                reference = model_cls(copy.deepcopy(config)).eval()
                reference.load_state_dict(rounded)
            else:
                model.save_pretrained(folder, safe_serialization=True)
                reference = model
            if args.tokenizer:
                for f in ("tokenizer.json", "tokenizer_config.json"):
                    if os.path.exists(os.path.join(args.tokenizer, f)):
                        shutil.copy(os.path.join(args.tokenizer, f), folder)
            entry = {"name": case, "folder": case, "architecture": model_cls.__name__,
                     "weights_dtype": dtype_name.upper(), "prompts": []}
            for p, prompt in enumerate(prompts):
                tokens = greedy(reference, prompt["ids"], GREEDY_TOKENS)
                seq = torch.tensor([prompt["ids"] + tokens])
                with torch.no_grad():
                    logits32 = reference(seq).logits[0].float()
                    ref64 = model_cls(copy.deepcopy(config)).eval()
                    ref64.load_state_dict(reference.state_dict())
                    logits64 = ref64.double()(seq).logits[0]
                key = f"{case}/{p}"
                logits_out[key] = logits32.contiguous()
                entry["prompts"].append(dict(prompt, greedy=tokens, logits=key,
                                             hf_fp32_vs_fp64=float((logits32.double() - logits64).abs().max()),
                                             max_abs_logit=float(logits32.abs().max())))
            expected["cases"].append(entry)
            print(f"{case:12s} {entry['architecture']:20s} vocab {vocab}: "
                  + ", ".join(f"prompt {i}: {len(p['ids'])} tokens, HF fp32 vs fp64 {p['hf_fp32_vs_fp64']:.2e}"
                              for i, p in enumerate(entry["prompts"])), flush=True)
    save_file(logits_out, os.path.join(args.out, expected["logits_file"]))
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(f"wrote {len(expected['cases'])} model folders and expected.json to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
