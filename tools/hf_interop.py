#!/usr/bin/env python3
"""Checks that lora4j's safetensors and config.json I/O interoperates with the Python stack, both ways.

Step 1 (Python writes): safetensors files with every dtype torch and lora4j share (plus an empty tensor and a
scalar) through safetensors.torch.save_file, and three tiny random models (Llama with llama3 RoPE scaling and
biases, Mistral with a sliding window and head_dim != hidden/heads, Qwen2 with tied embeddings and sliding
windows from max_window_layers on) through save_pretrained with small shards, so the folders have an index.
expected.json records what Python knows: each tensor's dtype, shape and SHA-256 of its bytes, and each model's
config as transformers resolved it (head_dim, KV heads, RoPE, per-layer sliding windows, tokens ids...).

Step 2 (lora4j reads and writes): dev.lora4j.io.HuggingFaceInteropTest checks all of that against lora4j's
SafetensorsFile, ModelFolder and ModelConfig, then writes <dir>/java/: every tensor file rewritten by
SafetensorsWriter, and every model folder rewritten (config.json by ModelConfig.toJson, shards by
SafetensorsWriter.writeSharded).

Step 3 (Python reads): safe_open on each lora4j-written file (tensors bitwise equal to the originals),
AutoConfig on each lora4j config.json (same resolved config), AutoModelForCausalLM.from_pretrained on each
lora4j-written folder: same weights bitwise and the same logits as the original model.

Run on the GPU machine from the repository root (after scripts/device-bundle.sh built .bundle here):

    python3 tools/hf_interop.py write /tmp/interop \\
      && LORA4J_INTEROP_DIR=/tmp/interop scripts/device-run.sh tests --select-class dev.lora4j.io.HuggingFaceInteropTest \\
      && python3 tools/hf_interop.py verify /tmp/interop
"""
import hashlib
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
INPUT_IDS = [[1, 5, 9, 33, 2, 17, 200, 301, 42, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]]


def tensor_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def random_tensor(dtype, shape, gen):
    n = 1
    for d in shape:
        n *= d
    if dtype == torch.bool:
        return torch.randint(0, 2, (n,), generator=gen).bool().reshape(shape)
    size = torch.tensor([], dtype=dtype).element_size()
    raw = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)


def model_cases():
    L = transformers
    return {
        "llama": L.LlamaConfig(
            vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=4, max_position_embeddings=256, attention_bias=True, mlp_bias=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            bos_token_id=1, eos_token_id=[2, 3], tie_word_embeddings=False),
        "mistral": L.MistralConfig(
            vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, sliding_window=16, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        "qwen2": L.Qwen2Config(
            vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8,
            num_key_value_heads=2, use_sliding_window=True, sliding_window=16, max_window_layers=1,
            tie_word_embeddings=True, bos_token_id=None, eos_token_id=4, max_position_embeddings=512),
    }


def resolved(config):
    """The config as transformers resolved it, in the terms lora4j's ModelConfig uses."""
    rope = dict(config.rope_parameters or {})
    layers = config.num_hidden_layers
    if config.model_type == "qwen2":
        windows = [(config.sliding_window or 0) if config.layer_types[i] == "sliding_attention" else 0 for i in range(layers)]
    elif config.model_type == "mistral":
        windows = [config.sliding_window or 0] * layers
    else:
        windows = [0] * layers
    eos = config.eos_token_id
    eos = [] if eos is None else (eos if isinstance(eos, list) else [eos])
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "model_type": config.model_type, "architectures": config.architectures,
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": layers,
        "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
        "head_dim": head_dim, "rms_norm_eps": config.rms_norm_eps,
        "max_position_embeddings": config.max_position_embeddings,
        "rope_theta": rope.get("rope_theta"), "rope_type": rope.get("rope_type", "default"),
        "rope_factor": rope.get("factor"), "rope_low_freq_factor": rope.get("low_freq_factor"),
        "rope_high_freq_factor": rope.get("high_freq_factor"),
        "rope_original_max_position_embeddings": rope.get("original_max_position_embeddings"),
        "sliding_windows": windows, "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id, "eos_token_ids": eos,
    }


def write(root):
    shutil.rmtree(root, ignore_errors=True)
    py = os.path.join(root, "py")
    os.makedirs(os.path.join(py, "tensors"))
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    expected = {"tensor_files": {}, "models": {}}

    tensors = {}
    for name, dtype in DTYPES.items():
        tensors["t." + name.lower()] = random_tensor(dtype, (3, 5), gen)
    tensors["empty"] = torch.zeros((4, 0, 2), dtype=torch.bfloat16)
    tensors["scalar"] = torch.tensor(3.25, dtype=torch.float64)
    files = {"all.safetensors": tensors, "one.safetensors": {"w": random_tensor(torch.float32, (7, 3), gen)}}
    for fname, content in files.items():
        save_file(content, os.path.join(py, "tensors", fname), metadata={"format": "pt", "source": "python"})
        inv = {v: k for k, v in DTYPES.items()}
        expected["tensor_files"][fname] = {
            n: {"dtype": inv[t.dtype], "shape": list(t.shape), "sha256": hashlib.sha256(tensor_bytes(t)).hexdigest()}
            for n, t in content.items()}

    for case, config in model_cases().items():
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        folder = os.path.join(py, case)
        model.save_pretrained(folder, max_shard_size="40KB")
        with torch.no_grad():
            logits = model(torch.tensor(INPUT_IDS)).logits[0]
        save_file({"logits": logits.contiguous()}, os.path.join(root, case + "-logits.safetensors"))
        saved = transformers.AutoConfig.from_pretrained(folder)
        state = {k: v for k, v in model.state_dict().items()}
        expected["models"][case] = {
            "config": resolved(saved),
            "sharded": os.path.exists(os.path.join(folder, "model.safetensors.index.json")),
            "tensors": {k: {"shape": list(v.shape), "sha256": hashlib.sha256(tensor_bytes(v)).hexdigest()}
                        for k, v in state.items() if not (saved.tie_word_embeddings and k == "lm_head.weight")},
        }
    with open(os.path.join(root, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)
    print("wrote", root)


def verify(root):
    py, java = os.path.join(root, "py"), os.path.join(root, "java")
    with open(os.path.join(root, "expected.json")) as f:
        expected = json.load(f)
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    for fname, entries in expected["tensor_files"].items():
        path = os.path.join(java, "tensors", fname)
        with safe_open(path, "pt") as f, safe_open(os.path.join(py, "tensors", fname), "pt") as g:
            check(list(f.keys()) == list(g.keys()) or sorted(f.keys()) == sorted(g.keys()), f"{fname}: same tensor names")
            check(f.metadata() == g.metadata(), f"{fname}: same metadata {f.metadata()}")
            for name in entries:
                a, b = f.get_tensor(name), g.get_tensor(name)
                check(a.dtype == b.dtype and a.shape == b.shape and tensor_bytes(a) == tensor_bytes(b),
                      f"{fname}/{name}: {a.dtype} {tuple(a.shape)} bitwise equal")

    for case, exp in expected["models"].items():
        folder = os.path.join(java, case)
        config = transformers.AutoConfig.from_pretrained(folder)
        got = resolved(config)
        for key, want in exp["config"].items():
            check(got[key] == want, f"{case}: config {key} = {got[key]!r} (want {want!r})")
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        original = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(py, case), dtype=torch.float32).eval()
        a, b = model.state_dict(), original.state_dict()
        check(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{case}: weights bitwise equal")
        with torch.no_grad():
            logits = model(torch.tensor(INPUT_IDS)).logits[0]
        with safe_open(os.path.join(root, case + "-logits.safetensors"), "pt") as f:
            want = f.get_tensor("logits")
        check(torch.equal(logits, want), f"{case}: logits equal to the original model's "
              f"(max diff {(logits - want).abs().max().item():.3g})")

    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "verify"):
        sys.exit(__doc__)
    (write if sys.argv[1] == "write" else verify)(sys.argv[2])
