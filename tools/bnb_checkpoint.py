#!/usr/bin/env python3
"""4-bit checkpoints in the form transformers writes for bitsandbytes, checked with PyTorch alone (no bitsandbytes).

The form (docs/qlora-format.md): every nn.Linear transformers converts to bnb.nn.Linear4bit (for Llama-family
models: the seven projections of each layer; not lm_head, not the embeddings or norms) is saved as
    <module>.weight                                U8  [ceil(n/2), 1]   two 4-bit codes per byte, element 2j high
    <module>.bias                                  (dense, if any)
    <module>.weight.absmax                         F32 [blocks], or U8 [blocks] with double quantization
    <module>.weight.quant_map                      F32 [16]             the nf4/fp4 table
    <module>.weight.nested_absmax                  F32 [ceil(blocks/256)]   double quantization only
    <module>.weight.nested_quant_map               F32 [256]            the dynamic map, double quantization only
    <module>.weight.quant_state.bitsandbytes__nf4  U8  [len]            json.dumps of the quant state (or __fp4)
and config.json gets a "quantization_config" block (BitsAndBytesConfig.to_dict()).

The quantization below is bitsandbytes' published algorithm as its CUDA kernels compute it (kQuantizeBlockwise with
dQuantizeNF4 / dQuantizeFP4 decision trees and dQuantize for the 8-bit absmax codes; IEEE float32 arithmetic), and
the dequantization is dequantize_4bit's: value = quant_map[code] * absmax, with double quantization
absmax = nested_quant_map[absmax_code] * nested_absmax[block // 256] + nested_offset, all in float32.

Subcommands
  check FOLDER --dump DUMP [--dense DENSE]
      FOLDER is a 4-bit model folder written by `lora4j quantize ... --dequantized-dump DUMP`. Checks that it holds
      exactly the tensor names (in transformers' state-dict order), dtypes and shapes transformers writes for the
      model config.json describes (the module tree comes from transformers itself, built on the meta device), that
      each quant state is the JSON json.dumps writes with the right values, that the code tables are bitsandbytes',
      and that the PyTorch dequantization of every weight equals lora4j's (DUMP). With DENSE (the 16-bit source)
      it also re-quantizes every weight with the published algorithm and checks lora4j's codes and scales are the
      same, and reports the quantization error.
  write DENSE OUT [--quant-type nf4|fp4] [--double-quant|--no-double-quant] [--block-size 64]
        [--compute-dtype bfloat16] --expected EXPECTED
      Quantizes the 16-bit model folder DENSE with PyTorch into OUT in transformers' form (as save_pretrained of a
      model loaded with BitsAndBytesConfig would), and writes EXPECTED: every 4-bit weight dequantized (F32), for
      comparison with what lora4j reads from OUT (java dev.lora4j.quant.DequantizedDump OUT LORA4J_DUMP).
  compare EXPECTED LORA4J_DUMP
      Compares two dequantized dumps tensor by tensor.

Every subcommand ends with one line "bnb_checkpoint <subcommand>: PASS" or "... FAIL (n problems)" and exits 0 or 1.
Run on the GPU machine from the repository root (see scripts/device-checks.sh, step qlora-format):

    scripts/device-run.sh lora4j init-model --preset tiny --layers 2 -o /tmp/bnb/dense --force
    scripts/device-run.sh lora4j quantize -m /tmp/bnb/dense -o /tmp/bnb/nf4 --force --dequantized-dump /tmp/bnb/nf4.dump.safetensors
    python3 tools/bnb_checkpoint.py check /tmp/bnb/nf4 --dump /tmp/bnb/nf4.dump.safetensors --dense /tmp/bnb/dense
    python3 tools/bnb_checkpoint.py write /tmp/bnb/dense /tmp/bnb/torch-nf4 --expected /tmp/bnb/torch-nf4.expected.safetensors
    scripts/device-run.sh java dev.lora4j.quant.DequantizedDump /tmp/bnb/torch-nf4 /tmp/bnb/torch-nf4.lora4j.safetensors
    python3 tools/bnb_checkpoint.py compare /tmp/bnb/torch-nf4.expected.safetensors /tmp/bnb/torch-nf4.lora4j.safetensors
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

# ---- bitsandbytes' tables (functional.py: get_4bit_type, create_dynamic_map; csrc/kernels.cu) ----------------------

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]
FP4_RAW = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0]
# dQuantizeNF4's decision tree, as the 15 thresholds it compares against (x > t), ascending.
NF4_THRESHOLDS = [-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
                  -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
                  0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
                  0.5016634166240692, 0.6427869200706482, 0.8614784181118011]
# dQuantizeFP4: sign bit from x < 0, then |x| against these (x > t); the rank picks the 3-bit code.
FP4_THRESHOLDS = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333]
FP4_CODE_OF_RANK = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011]
QUANT_STATE_KEYS = ["quant_type", "blocksize", "dtype", "shape"]
NESTED_KEYS = ["nested_blocksize", "nested_dtype", "nested_offset"]
TORCH_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8,
             "F64": torch.float64, "I8": torch.int8, "I32": torch.int32, "I64": torch.int64}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}


def quant_map(quant_type):
    data = torch.tensor(NF4 if quant_type == "nf4" else FP4_RAW)  # float32, as get_4bit_type builds it
    return data / data.abs().max()


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes.functional.create_dynamic_map, step by step."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    data += [0] * (256 - len(data))
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


# ---- the published algorithm, in float32 -------------------------------------------------------------------------

def codes_4bit(x, quant_type):
    """dQuantizeNF4 / dQuantizeFP4 of already-scaled float32 values (NaN gets code 0, as in the kernels)."""
    if quant_type == "nf4":
        c = torch.bucketize(x, torch.tensor(NF4_THRESHOLDS, dtype=torch.float32), right=False)
    else:
        rank = torch.bucketize(x.abs(), torch.tensor(FP4_THRESHOLDS, dtype=torch.float32), right=False)
        c = torch.tensor(FP4_CODE_OF_RANK)[rank] + torch.where(x < 0, 8, 0)
    return torch.where(torch.isnan(x), 0, c).to(torch.uint8)


def blockwise_absmax(x, blocksize):
    n = x.numel()
    blocks = -(-n // blocksize)
    padded = torch.zeros(blocks * blocksize, dtype=torch.float32)
    padded[:n] = x
    return padded.view(blocks, blocksize).abs().amax(dim=1), padded


def quantize_4bit(weight, quant_type, blocksize):
    """kQuantizeBlockwise for 4 bits: absmax per block, x * (1/absmax), codes packed two per byte."""
    x = weight.reshape(-1).float()
    n = x.numel()
    absmax, padded = blockwise_absmax(x, blocksize)
    scale = 1.0 / absmax
    scaled = (padded.view(-1, blocksize) * scale[:, None]).reshape(-1)[:n]
    if n % 2:
        scaled = torch.cat([scaled, torch.zeros(1)])
    c = codes_4bit(scaled, quant_type)
    packed = (c[0::2] << 4) | c[1::2]
    return packed.reshape(-1, 1), absmax


def nearest_code_8bit(code, x):
    """dQuantize<0>: seven halving steps from index 127, then the nearer neighbour against float32 midpoints."""
    pivot = torch.full(x.shape, 127, dtype=torch.long)
    upper_p = torch.full(x.shape, 255, dtype=torch.long)
    lower_p = torch.zeros(x.shape, dtype=torch.long)
    lower = torch.full(x.shape, -1.0)
    upper = torch.full(x.shape, 1.0)
    val = code[pivot]
    for i in (64, 32, 16, 8, 4, 2, 1):
        gt = x > val
        lower_p, lower = torch.where(gt, pivot, lower_p), torch.where(gt, val, lower)
        upper_p, upper = torch.where(gt, upper_p, pivot), torch.where(gt, upper, val)
        pivot = torch.where(gt, pivot + i, pivot - i)
        val = code[pivot]
    upper = torch.where(upper_p == 255, code[255], upper)
    lower = torch.where(lower_p == 0, code[0], lower)
    gt = x > val
    up = torch.where(x > (upper + val) * 0.5, upper_p, pivot)
    down = torch.where(x < (lower + val) * 0.5, lower_p, pivot)
    return torch.where(gt, up, down).to(torch.uint8)


def quantize_blockwise_8bit(x, code, blocksize=256):
    absmax, padded = blockwise_absmax(x, blocksize)
    scale = 1.0 / absmax
    scaled = (padded.view(-1, blocksize) * scale[:, None]).reshape(-1)[:x.numel()]
    return nearest_code_8bit(code, scaled), absmax


def dequantize(packed, absmax, qmap, blocksize, shape, nested=None):
    """dequantize_4bit in float32; nested = (nested_absmax, nested_quant_map, nested_offset) with double quantization."""
    n = math.prod(shape)
    if nested is not None:
        nested_absmax, nested_map, offset = nested
        a = nested_map[absmax.long()]
        idx = torch.arange(a.numel()) // 256
        a = a * nested_absmax[idx]
        absmax = a + torch.tensor(offset, dtype=torch.float32)
    p = packed.reshape(-1)
    c = torch.stack([p >> 4, p & 0xF], dim=1).reshape(-1)[:n].long()
    values = qmap[c] * absmax[torch.arange(n) // blocksize]
    return values.reshape(shape)


def is_float32(v):
    return struct.unpack("f", struct.pack("f", v))[0] == v


# ---- model structure from transformers ----------------------------------------------------------------------------

def skeleton(folder):
    """The model config.json describes, on the meta device, and the Linear modules transformers quantizes in it."""
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(folder)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    skip = None
    for where in ("transformers.quantizers.quantizers_utils", "transformers.integrations.bitsandbytes",
                  "transformers.integrations"):
        try:
            skip = __import__(where, fromlist=["get_keys_to_not_convert"]).get_keys_to_not_convert(model)
            break
        except Exception:
            continue
    if skip is None:
        skip = ["lm_head"]

    def converted(name):
        # quantizers_utils.py: should_convert_module
        import re
        return not any(re.match(k + r"\.", name) or re.match(k, name) or name.endswith(k) for k in skip)

    linear = {name: m for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and converted(name)}
    return cfg, model, linear, skip


def expected_tensors(model, cfg, linear):
    """name -> (dtype or None for 'as the dense model', shape), in the order save_pretrained writes them."""
    state = model.state_dict()
    out = {}
    for key, t in state.items():
        if key == "lm_head.weight" and getattr(cfg, "tie_word_embeddings", False):
            continue  # tied: save_pretrained drops it
        module = key.rsplit(".", 1)[0]
        if module in linear and key.endswith(".bias"):
            continue  # placed with its weight below
        if module in linear and key.endswith(".weight"):
            n = t.numel()
            out[key] = ("U8", [(n + 1) // 2, 1])
            if linear[module].bias is not None:
                out[module + ".bias"] = (None, list(linear[module].bias.shape))
            out[key + ".absmax"] = ("absmax", None)
            out[key + ".quant_map"] = ("F32", [16])
            out[key + ".nested_absmax"] = ("nested", None)
            out[key + ".nested_quant_map"] = ("nested", [256])
            out[key + ".quant_state"] = ("state", None)
        else:
            out[key] = (None, list(t.shape))
    return out


# ---- safetensors folders ------------------------------------------------------------------------------------------

def weight_files(folder):
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return [single]
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        index = json.load(f)
    files = []
    for shard in index["weight_map"].values():
        if shard not in files:
            files.append(shard)
    return [os.path.join(folder, s) for s in sorted(files)]


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


class Folder:
    def __init__(self, folder):
        self.files = weight_files(folder)
        self.where = {}
        self.info = {}
        self.order = []
        for path in self.files:
            for name, entry in header(path).items():
                self.where[name] = path
                self.info[name] = (entry["dtype"], entry["shape"])
                self.order.append(name)
        self.handles = {p: safe_open(p, framework="pt") for p in self.files}

    def get(self, name):
        return self.handles[self.where[name]].get_tensor(name)


class Problems:
    def __init__(self):
        self.items = []

    def add(self, text):
        self.items.append(text)
        if len(self.items) <= 40:
            print("  PROBLEM " + text)

    def finish(self, command):
        if self.items:
            print("bnb_checkpoint %s: FAIL (%d problems)" % (command, len(self.items)))
            sys.exit(1)
        print("bnb_checkpoint %s: PASS" % command)


def compare_values(name, expected, actual, problems, tolerance):
    if list(expected.shape) != list(actual.shape):
        problems.add("%s: shape %s against %s" % (name, list(actual.shape), list(expected.shape)))
        return 0, 0.0
    e, a = expected.float(), actual.float()
    same = ((e == a) | (torch.isnan(e) & torch.isnan(a))).sum().item()
    diff = (e - a).abs().max().item() if e.numel() else 0.0
    scale = e.abs().max().item() or 1.0
    if diff > tolerance * scale:
        problems.add("%s: dequantized values differ by up to %.3g (%.3g of the largest), %d of %d equal"
                     % (name, diff, diff / scale, same, e.numel()))
    return same, diff


# ---- check --------------------------------------------------------------------------------------------------------

def check(args):
    problems = Problems()
    with open(os.path.join(args.folder, "config.json")) as f:
        config = json.load(f)
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        problems.add("config.json has no quantization_config")
        problems.finish("check")
    expected_keys = {"_load_in_4bit", "_load_in_8bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage",
                     "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "llm_int8_enable_fp32_cpu_offload",
                     "llm_int8_has_fp16_weight", "llm_int8_skip_modules", "llm_int8_threshold", "load_in_4bit",
                     "load_in_8bit", "quant_method"}
    try:  # transformers' own view of the block, when it can build the config without bitsandbytes
        import transformers
        theirs = transformers.BitsAndBytesConfig(**{k: v for k, v in q.items() if not k.startswith("_")}).to_dict()
        expected_keys = set(theirs.keys())
        for k, v in theirs.items():
            if q.get(k) != v and not (k == "quant_method" and str(v).endswith("bitsandbytes")):
                problems.add("quantization_config.%s is %r; BitsAndBytesConfig.to_dict() gives %r" % (k, q.get(k), v))
        print("  quantization_config compared with transformers %s BitsAndBytesConfig.to_dict()" % transformers.__version__)
    except Exception as e:  # noqa: BLE001 - bitsandbytes missing makes some versions refuse to build it
        print("  (BitsAndBytesConfig not constructible here: %s; checking the documented keys)" % type(e).__name__)
    if set(q.keys()) != expected_keys:
        problems.add("quantization_config keys differ: extra %s, missing %s"
                     % (sorted(set(q) - expected_keys), sorted(expected_keys - set(q))))
    if q.get("quant_method") != "bitsandbytes" or q.get("load_in_4bit") is not True or q.get("bnb_4bit_quant_storage") != "uint8":
        problems.add("quantization_config is not bitsandbytes 4-bit in uint8: %r" % q)
    qtype = q.get("bnb_4bit_quant_type")
    double = q.get("bnb_4bit_use_double_quant")

    cfg, model, linear, skip = skeleton(args.folder)
    print("  %s: %d Linear modules transformers quantizes (not %s)" % (type(model).__name__, len(linear), skip))
    expected = expected_tensors(model, cfg, linear)
    folder = Folder(args.folder)
    dense = Folder(args.dense) if args.dense else None
    dump = safe_open(args.dump, framework="pt") if args.dump else None

    names = []
    for name, (kind, shape) in expected.items():
        if kind == "nested" and not double:
            continue
        names.append(name + ".bitsandbytes__" + qtype if kind == "state" else name)
    if set(folder.order) != set(names):
        problems.add("tensor names differ from transformers': extra %s, missing %s"
                     % (sorted(set(folder.order) - set(names))[:6], sorted(set(names) - set(folder.order))[:6]))
    elif folder.order != names:
        # Not a problem: safetensors itself orders a file's tensors by dtype and name, and shards may put an
        # oversize tensor first; loaders go by name.
        print("  (tensors not in state-dict order across files, first at %s)"
              % next(a for a, b in zip(folder.order, names) if a != b))
    print("  %d tensors in %d file(s); %d expected" % (len(folder.order), len(folder.files), len(names)))

    nested_map = create_dynamic_map()
    qmap = quant_map(qtype)
    weights = 0
    exact = total = 0
    for module in linear:
        w = module + ".weight"
        if w not in folder.info:
            continue
        weights += 1
        shape = list(model.get_submodule(module).weight.shape)
        n = math.prod(shape)
        state_name = w + ".quant_state.bitsandbytes__" + qtype
        if state_name not in folder.info:
            problems.add("%s: no quant state" % w)
            continue
        raw = bytes(folder.get(state_name).numpy())
        text = raw.decode("utf-8")
        state = json.loads(text)
        keys = QUANT_STATE_KEYS + (NESTED_KEYS if double else [])
        if list(state.keys()) != keys:
            problems.add("%s: keys %s, expected %s" % (state_name, list(state.keys()), keys))
            continue
        if json.dumps(state) != text:
            problems.add("%s: the JSON is not what json.dumps writes: %r" % (state_name, text))
        bs = state["blocksize"]
        dense_dtype = TORCH_NAMES[ST_DTYPES[dense.info[w][0]]] if dense else None
        if state["quant_type"] != qtype or state["shape"] != shape or bs not in (64, 128, 256, 512, 1024, 2048, 4096) \
                or state["dtype"] not in TORCH_NAMES.values() or (dense_dtype and state["dtype"] != dense_dtype):
            problems.add("%s: %s (expected %s, shape %s, dtype %s)" % (state_name, text, qtype, shape, dense_dtype))
            continue
        if args.block_size and bs != args.block_size:
            problems.add("%s: blocksize %d, expected %d" % (state_name, bs, args.block_size))
        blocks = -(-n // bs)
        shapes = {w: ("U8", [(n + 1) // 2, 1]), w + ".absmax": ("U8" if double else "F32", [blocks]),
                  w + ".quant_map": ("F32", [16]), state_name: ("U8", [len(raw)])}
        if double:
            shapes[w + ".nested_absmax"] = ("F32", [-(-blocks // 256)])
            shapes[w + ".nested_quant_map"] = ("F32", [256])
            if state["nested_blocksize"] != 256 or state["nested_dtype"] != "float32" \
                    or not isinstance(state["nested_offset"], float) or not is_float32(state["nested_offset"]):
                problems.add("%s: nested fields %s" % (state_name, text))
        wrong = [part for part, want in shapes.items() if folder.info.get(part) != want]
        for part in wrong:
            problems.add("%s: %s, expected %s" % (part, folder.info.get(part, "missing"), shapes[part]))
        if wrong:
            continue
        bias = module + ".bias"
        if bias in folder.info and dense and folder.info[bias] != dense.info[bias]:
            problems.add("%s: %s, the dense model has %s" % (bias, folder.info[bias], dense.info[bias]))
        if not torch.equal(folder.get(w + ".quant_map"), qmap) or \
                (folder.get(w + ".quant_map").view(torch.int32) != qmap.view(torch.int32)).any():
            problems.add("%s.quant_map is not bitsandbytes' %s table (bit for bit)" % (w, qtype))
        packed = folder.get(w)
        absmax = folder.get(w + ".absmax")
        nested = None
        if double:
            nmap = folder.get(w + ".nested_quant_map")
            if not torch.equal(nmap, nested_map):
                problems.add("%s.nested_quant_map differs from create_dynamic_map() in %d places"
                             % (w, (nmap != nested_map).sum().item()))
            nested = (folder.get(w + ".nested_absmax"), nmap, state["nested_offset"])
        values = dequantize(packed, absmax, folder.get(w + ".quant_map"), bs, shape, nested)
        if dump is not None:
            same, _ = compare_values(w, values, dump.get_tensor(w), problems, args.tolerance)
            exact += same
            total += values.numel()
        if dense:
            original = dense.get(w).float()
            p2, a2 = quantize_4bit(original, qtype, bs)
            if not torch.equal(p2, packed):
                problems.add("%s: %d of %d bytes of codes differ from the published algorithm's"
                             % (w, (p2 != packed).sum().item(), packed.numel()))
            if double:
                offset = torch.tensor(state["nested_offset"], dtype=torch.float32)
                codes8, nabs = quantize_blockwise_8bit(a2 - offset, nested_map)
                if not torch.equal(codes8, absmax) or not torch.equal(nabs, nested[0]):
                    problems.add("%s: the 8-bit absmax codes or their scales differ from dQuantize's (%d codes)"
                                 % (w, (codes8 != absmax).sum().item()))
                torch_mean = a2.mean().item()
                if torch_mean != state["nested_offset"] and args.verbose:
                    print("    %s: nested_offset %r, torch's float32 mean %r" % (w, state["nested_offset"], torch_mean))
            elif not torch.equal(a2, absmax):
                problems.add("%s.absmax differs from the blocks' absmax" % w)
            err = (values - original).norm() / original.norm()
            if args.verbose:
                print("    %s: relative RMS quantization error %.4f" % (w, err.item()))
            if err > 0.3:
                problems.add("%s: relative quantization error %.3f is implausibly large" % (w, err.item()))
    for name in folder.order:
        if name in expected and expected[name][0] is None and dense:
            if folder.info[name] != dense.info.get(name):
                problems.add("%s: %s, the dense model has %s" % (name, folder.info[name], dense.info.get(name)))
            elif not torch.equal(folder.get(name), dense.get(name)):
                problems.add("%s: not copied bit for bit from the dense model" % name)
    print("  %d 4-bit weights (%s, %s double quantization)" % (weights, qtype, "with" if double else "without"))
    if dump is not None:
        print("  dequantized by PyTorch vs lora4j: %d of %d values bitwise equal" % (exact, total))
    problems.finish("check")


# ---- write --------------------------------------------------------------------------------------------------------

def write(args):
    problems = Problems()
    cfg, model, linear, skip = skeleton(args.dense)
    dense = Folder(args.dense)
    os.makedirs(args.out, exist_ok=True)
    qtype, bs, double = args.quant_type, args.block_size, args.double_quant
    qmap = quant_map(qtype)
    nested_map = create_dynamic_map()
    tensors, expected = {}, {}
    for key in model.state_dict():
        if key not in dense.info:
            continue
        module = key.rsplit(".", 1)[0]
        t = dense.get(key)
        if module in linear and key.endswith(".weight"):
            packed, absmax = quantize_4bit(t, qtype, bs)
            state = {"quant_type": qtype, "blocksize": bs, "dtype": TORCH_NAMES[t.dtype], "shape": list(t.shape)}
            nested = None
            if double:
                offset = absmax.mean()  # bitsandbytes: _absmax.mean(), a float32 tensor
                codes8, nabs = quantize_blockwise_8bit(absmax - offset, nested_map)
                tensors[key + ".absmax"] = codes8
                tensors[key + ".nested_absmax"] = nabs
                tensors[key + ".nested_quant_map"] = nested_map.clone()
                state.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset.item()})
                nested = (nabs, nested_map, offset.item())
            else:
                tensors[key + ".absmax"] = absmax
            tensors[key] = packed
            tensors[key + ".quant_map"] = qmap.clone()
            tensors[key + ".quant_state.bitsandbytes__" + qtype] = torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)
            expected[key] = dequantize(packed, tensors[key + ".absmax"], qmap, bs, list(t.shape), nested)
        else:
            tensors[key] = t
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    save_file(expected, args.expected, metadata={"format": "pt"})
    with open(os.path.join(args.dense, "config.json")) as f:
        config = json.load(f)
    block = {"_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": args.compute_dtype,
             "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": qtype, "bnb_4bit_use_double_quant": double,
             "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
             "llm_int8_skip_modules": None, "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
             "quant_method": "bitsandbytes"}
    try:
        import transformers
        block = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qtype,
                                                bnb_4bit_use_double_quant=double,
                                                bnb_4bit_compute_dtype=getattr(torch, args.compute_dtype)).to_dict()
        block["quant_method"] = "bitsandbytes"
    except Exception as e:  # noqa: BLE001
        print("  (BitsAndBytesConfig not constructible here: %s; writing the documented block)" % type(e).__name__)
    config["quantization_config"] = block
    with open(os.path.join(args.out, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in os.listdir(args.dense):
        if name.startswith("tokenizer") or name in ("generation_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(args.dense, name), os.path.join(args.out, name))
    print("  wrote %s: %d 4-bit weights (%s, block %d, %s double quantization); expected values in %s"
          % (args.out, len(expected), qtype, bs, "with" if double else "without", args.expected))
    problems.finish("write")


def compare(args):
    problems = Problems()
    e = safe_open(args.expected, framework="pt")
    a = safe_open(args.actual, framework="pt")
    if set(e.keys()) != set(a.keys()):
        problems.add("names differ: only expected %s, only lora4j %s"
                     % (sorted(set(e.keys()) - set(a.keys()))[:5], sorted(set(a.keys()) - set(e.keys()))[:5]))
    exact = total = 0
    for name in sorted(set(e.keys()) & set(a.keys())):
        same, _ = compare_values(name, e.get_tensor(name), a.get_tensor(name), problems, args.tolerance)
        exact += same
        total += e.get_tensor(name).numel()
    print("  %d tensors, %d of %d values bitwise equal" % (len(set(e.keys()) & set(a.keys())), exact, total))
    problems.finish("compare")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check")
    c.add_argument("folder")
    c.add_argument("--dump", help="lora4j's dequantized weights (lora4j quantize --dequantized-dump)")
    c.add_argument("--dense", help="the 16-bit model the folder was quantized from")
    c.add_argument("--block-size", type=int)
    c.add_argument("--tolerance", type=float, default=1e-6, help="largest difference, relative to a tensor's largest value")
    c.add_argument("--verbose", action="store_true")
    w = sub.add_parser("write")
    w.add_argument("dense")
    w.add_argument("out")
    w.add_argument("--quant-type", default="nf4", choices=["nf4", "fp4"])
    w.add_argument("--double-quant", dest="double_quant", action="store_true", default=True)
    w.add_argument("--no-double-quant", dest="double_quant", action="store_false")
    w.add_argument("--block-size", type=int, default=64)
    w.add_argument("--compute-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    w.add_argument("--expected", required=True)
    m = sub.add_parser("compare")
    m.add_argument("expected")
    m.add_argument("actual")
    m.add_argument("--tolerance", type=float, default=1e-6)
    args = p.parse_args()
    {"check": check, "write": write, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
