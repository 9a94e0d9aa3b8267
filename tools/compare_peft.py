#!/usr/bin/env python3
"""LoRA interoperability and training mathematics: lora4j against PEFT, on small random models.

Three checks, on small randomly initialised Llama (GQA, untied), Qwen2 (tied embeddings, q/k/v biases) and Mistral
(sliding window shorter than the sequences) model folders, all FP32 and computed on the CPU in Python:

  (a) PEFT -> lora4j: PEFT creates a LoRA adapter whose B is not zero (init_lora_weights=False), saves it with
      save_pretrained, and records the FP32 logits of a prompt; lora4j loads base + adapter and must give the same
      logits (CPU: max |dlogit| <= 1e-4; CUDA: 1e-3).
  (b) lora4j -> PEFT: lora4j creates an adapter (random B), takes one SGD step on the batch, saves it in PEFT's
      format and records its logits; PEFT loads it with PeftModel.from_pretrained and must give the same logits.
  (c) one training step: the same weights, the PEFT-initialised adapter of (a), the same batch (two rows of
      different lengths, prompt tokens masked with -100), dropout 0. The summed next-token cross-entropy and every
      trainable parameter's gradient (LoRA A and B, biases with bias="all", modules_to_save) must agree; both sides
      write their gradients to safetensors under PEFT's keys.

Run on the GPU machine from the repository root, after scripts/device-bundle.sh has built .bundle:

    python3 tools/compare_peft.py prepare --out /tmp/lora4j-peft
    scripts/device-run.sh java dev.lora4j.lora.PeftComparison /tmp/lora4j-peft/expected.json cpu,cuda \\
        "$OUT/peft-results.json"
    python3 tools/compare_peft.py verify --out /tmp/lora4j-peft --results "$OUT/peft-verify.json"

prepare writes <out>/<case>/model (model folder), <out>/<case>/peft_adapter, <out>/expected.json and
<out>/expected.safetensors (tensor "<case>/logits" = F32 [positions, vocab]; "<case>/grad/<PEFT key>" = F32
gradient of the summed loss). PeftComparison checks (a) and (c) on each device, prints a table, writes the rows as
JSON, and for (b) writes <out>/<case>/lora4j_adapter and <out>/<case>/lora4j_logits.safetensors (from the first
device). verify checks (b) and prints its own table; both exit with status 1 when a row fails.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

import peft
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict

PROMPT_LENGTH = 24
SEED = 1234


def rope_kwargs(theta):
    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    return {"rope_theta": theta}


def cases():
    common = dict(vocab_size=211, hidden_size=64, intermediate_size=152, num_hidden_layers=3, num_attention_heads=4,
                  rms_norm_eps=1e-5, max_position_embeddings=128, bos_token_id=None, eos_token_id=None,
                  pad_token_id=None, **rope_kwargs(10000.0))
    return [
        {
            "name": "llama",
            "model": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                      dict(common, num_key_value_heads=2, tie_word_embeddings=False)),
            # (a, c): every linear layer, lm_head trained in full
            "peft": dict(r=8, lora_alpha=16, target_modules="all-linear", modules_to_save=["lm_head"]),
            # (b): a regular expression, dropout (off at inference), rank-stabilised scaling
            "lora4j": {"r": 6, "lora_alpha": 12, "lora_dropout": 0.1, "use_rslora": True,
                       "target_modules": ".*\\.(q|k|v|o)_proj", "init_lora_weights": False},
        },
        {
            "name": "qwen2",
            "model": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                      dict(common, num_key_value_heads=1, tie_word_embeddings=True, use_sliding_window=False)),
            # q/k/v biases train with bias="all"; per-module ranks and alphas
            "peft": dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                         bias="all", use_rslora=True, rank_pattern={"o_proj": 2}, alpha_pattern={"k_proj": 3}),
            "lora4j": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "bias": "lora_only",
                       "init_lora_weights": False},
        },
        {
            "name": "mistral",
            "model": (transformers.MistralConfig, transformers.MistralForCausalLM,
                      dict(common, num_key_value_heads=2, head_dim=32, sliding_window=8, tie_word_embeddings=False)),
            # layers_to_transform with a list of names; q and v by default
            "peft": dict(r=8, lora_alpha=8, layers_to_transform=[0, 2]),
            "lora4j": {"r": 2, "lora_alpha": 4, "target_modules": ["gate_proj", "up_proj", "down_proj"],
                       "layers_to_transform": [1], "init_lora_weights": False},
        },
    ]


def batch_for(vocab, generator):
    """Two rows of different lengths; the first row's first 5 labels are masked as a prompt would be."""
    rows = [torch.randint(0, vocab, (20,), generator=generator), torch.randint(0, vocab, (13,), generator=generator)]
    labels = [r.clone() for r in rows]
    labels[0][:5] = -100
    labels[1][7] = -100
    return [r.tolist() for r in rows], [l.tolist() for l in labels]


def summed_loss(model, input_ids, labels):
    """transformers' causal-LM loss, summed instead of averaged: position t predicts labels[t + 1]."""
    total = torch.zeros((), dtype=torch.float64)
    tokens = 0
    for ids, lab in zip(input_ids, labels):
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        target = torch.tensor(lab[1:])
        total = total + torch.nn.functional.cross_entropy(logits[:-1], target, ignore_index=-100, reduction="sum").double()
        tokens += int((target != -100).sum())
    return total, tokens


def prepare(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    expected = {"peft_version": peft.__version__, "transformers_version": transformers.__version__,
                "torch_version": torch.__version__, "tensors_file": "expected.safetensors", "cases": []}
    tensors = {}
    for case in cases():
        name = case["name"]
        config_cls, model_cls, kwargs = case["model"]
        config = config_cls(**kwargs)
        base = model_cls(config).float().eval()
        # Norm weights away from 1 and non-zero biases, so that their gradients and roles show.
        with torch.no_grad():
            for n, p in base.named_parameters():
                if n.endswith("norm.weight"):
                    p.add_(0.1 * torch.randn_like(p))
                if n.endswith(".bias"):
                    p.normal_(0, 0.05)
        folder = os.path.join(out, name, "model")
        base.save_pretrained(folder, safe_serialization=True)

        lora = LoraConfig(init_lora_weights=False, lora_dropout=0.0, task_type="CAUSAL_LM", **case["peft"])
        model = get_peft_model(base, lora)
        model.eval()
        adapter_dir = os.path.join(out, name, "peft_adapter")
        model.save_pretrained(adapter_dir, safe_serialization=True)
        trainable, all_params = model.get_nb_trainable_parameters()

        gen = torch.Generator().manual_seed(SEED + len(expected["cases"]))
        prompt = torch.randint(0, config.vocab_size, (PROMPT_LENGTH,), generator=gen).tolist()
        with torch.no_grad():
            tensors[f"{name}/logits"] = model(input_ids=torch.tensor([prompt])).logits[0].float().contiguous()

        input_ids, labels = batch_for(config.vocab_size, gen)
        model.zero_grad(set_to_none=True)
        loss, tokens = summed_loss(model, input_ids, labels)
        loss.backward()
        grads = {n: p.grad.detach().float().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        # PEFT's own renaming (adapter name dropped, modules_to_save copies under the module's name), as it saves.
        keyed = get_peft_model_state_dict(model, state_dict=grads, save_embedding_layers=False)
        for k, g in keyed.items():
            tensors[f"{name}/grad/{k}"] = g.contiguous()

        expected["cases"].append({
            "name": name,
            "folder": os.path.relpath(folder, out),
            "peft_adapter": os.path.relpath(adapter_dir, out),
            "prompt": prompt,
            "logits": f"{name}/logits",
            "batch": {"input_ids": input_ids, "labels": labels},
            "loss_sum": float(loss),
            "tokens": tokens,
            "grad_prefix": f"{name}/grad/",
            "grad_keys": sorted(keyed.keys()),
            "trainable_params": trainable,
            "all_params": all_params,
            "lora4j_adapter_config": case["lora4j"],
            "lora4j_adapter": os.path.join(name, "lora4j_adapter"),
            "lora4j_logits": os.path.join(name, "lora4j_logits.safetensors"),
        })
        print(f"{name}: trainable params: {trainable:,d} || all params: {all_params:,d}; loss {float(loss):.6f} over"
              f" {tokens} tokens; {len(keyed)} gradient tensors")
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)
    print(f"wrote {out}/expected.json")


def verify(out, results_path):
    with open(os.path.join(out, "expected.json")) as f:
        expected = json.load(f)
    rows = []
    for case in expected["cases"]:
        name = case["name"]
        adapter_dir = os.path.join(out, case["lora4j_adapter"])
        logits_file = os.path.join(out, case["lora4j_logits"])
        if not os.path.isdir(adapter_dir) or not os.path.isfile(logits_file):
            rows.append({"case": name, "check": "lora4j adapter in PEFT", "pass": False,
                         "note": f"missing {adapter_dir} or {logits_file}: run PeftComparison first"})
            continue
        base = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out, case["folder"]), dtype=torch.float32)
        model = PeftModel.from_pretrained(base, adapter_dir).eval()
        theirs = load_file(logits_file)
        prompt = [int(t) for t in theirs["prompt"].tolist()]
        with torch.no_grad():
            ours = model(input_ids=torch.tensor([prompt])).logits[0].float()
        diff = float((ours - theirs["logits"]).abs().max())
        spread = float(ours.abs().max())
        # The adapter must matter: logits without it differ clearly.
        with model.disable_adapter(), torch.no_grad():
            plain = model(input_ids=torch.tensor([prompt])).logits[0].float()
        effect = float((ours - plain).abs().max())
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            written = json.load(f)
        ok = diff <= 1e-4 and effect > 1e-3
        rows.append({"case": name, "check": "lora4j adapter in PEFT", "max_abs_diff": diff, "tolerance": 1e-4,
                     "adapter_effect": effect, "max_abs_logit": spread,
                     "target_modules": written.get("target_modules"), "pass": ok,
                     "note": "" if effect > 1e-3 else "the adapter changes nothing: check that it loaded"})
    print(f"{'case':<8} {'check':<24} {'max|dlogit|':>11} {'tolerance':>9} {'adapter effect':>14}  ok")
    for r in rows:
        print(f"{r['case']:<8} {r['check']:<24} {r.get('max_abs_diff', float('nan')):>11.3e} "
              f"{r.get('tolerance', float('nan')):>9.0e} {r.get('adapter_effect', float('nan')):>14.3e}  "
              f"{'PASS' if r['pass'] else 'FAIL'} {r['note']}")
    failed = sum(not r["pass"] for r in rows)
    print(f"all {len(rows)} checks pass" if failed == 0 else f"{failed} of {len(rows)} checks FAIL")
    if results_path:
        os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
        with open(results_path, "w") as f:
            json.dump({"peft_version": peft.__version__, "rows": rows}, f, indent=2)
        print(f"results written to {results_path}")
    return failed == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "verify"])
    parser.add_argument("--out", required=True, help="working folder shared with PeftComparison")
    parser.add_argument("--results", help="verify: where to write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    if args.step == "prepare":
        prepare(args.out)
    else:
        sys.exit(0 if verify(args.out, args.results) else 1)


if __name__ == "__main__":
    main()
