"""The same fine-tuning steps in transformers + peft and in lora4j, on the same base weights, the same initial adapter
and the same token batches, and their losses compared step by step.

    python3 tools/same_data_losses.py reference --shape mistral-7b --mode lora-qv --out /tmp/same-data
        writes /tmp/same-data/model/         the base model, random-initialised in BF16 with a fixed seed (save_pretrained)
               /tmp/same-data/adapter/       PEFT's initial LoRA adapter (save_pretrained right after get_peft_model)
               /tmp/same-data/tokens.json    the token batches, in the layout lora4j bench --tokens reads
               /tmp/same-data/reference.json the loss of every optimizer step and of every micro-batch
        after training --steps optimizer steps of --accum micro-batches, as reference/hf_peft_bench.py does.

    lora4j bench -m /tmp/same-data/model --init-adapter /tmp/same-data/adapter --tokens /tmp/same-data/tokens.json \
        --dropout 0 --method lora --target-modules q_proj,v_proj --rank 16 --alpha 32 --seq 1024 --micro-batch 4 \
        --accum 4 --warmup-steps 1 --steps 4 --json /tmp/same-data/lora4j.json    (5 steps in all, as --steps 5 above)

    python3 tools/same_data_losses.py compare /tmp/same-data/reference.json /tmp/same-data/lora4j.json

scripts/device-same-data.sh runs all three on the GPU machine. `reference` needs torch, transformers and peft (not
bitsandbytes: the comparison is of 16-bit LoRA); `compare` needs only the standard library.

How the reference trains: the steps of reference/hf_peft_bench.py (torch AdamW, lr 2e-4, weight decay 0.01, fused on
the GPU; labels = input ids; r=16, lora_alpha=2r, bias "none"; each micro-batch's loss.backward(), then opt.step()
and zero_grad; BF16 weights and activations, the adapters in F32 as PEFT keeps them), with these differences, each an
option, that make the two runs comparable:
  * lora_dropout 0 (--dropout): torch and lora4j draw dropout masks from different generators, so with dropout the
    losses could agree only statistically.
  * the token batches: --accum micro-batches of their own ids, which every step uses again (as lora4j's synthetic
    batches are), so that the loss falls as the adapter learns them and the change since step 1 measures training;
    hf_peft_bench.py reuses one micro-batch for everything (--same-batch); --distinct-batches gives every micro-batch
    of every step its own ids (the change since step 1 then mostly measures the data).
  * each micro-batch's loss is divided by --accum before backward (--loss-scaling mean), as transformers' Trainer
    and lora4j do: the gradients are those of the step's mean token loss. hf_peft_bench.py backpropagates the plain
    sum (--loss-scaling sum), gradients --accum times larger; AdamW's update m/(sqrt(v)+eps) is the same up to eps,
    so the two differ only where |gradient| is near eps = 1e-8.
PEFT's initial adapter has B = 0, so the first step's loss is the base model's, whatever A is: step 1 then checks the
forward pass and the loss on the same weights and tokens, and the later steps check A through the gradients of B.
--nonzero-b [STD] draws B from N(0, STD^2) (seeded; 0.1 if no STD is given) before the adapter is saved, so that the
first loss depends on A, B and the scaling too; the reference then also records the first step's loss with B = 0.

`compare` passes a step when all of these hold (relative difference = |lora4j - reference| / reference):
  * step 1 within --first-rtol 2e-3. Both evaluate the same BF16 weights on the same tokens before any update; they
    differ only in where activations are rounded to BF16 (8 significant bits: up to 2^-9 = 2e-3 relative per
    rounding) and in the order of sums (transformers rounds each layer's output, the norms' outputs and the logits
    to BF16; lora4j keeps norm statistics, softmax and the loss in F32). These errors are unbiased and independent
    across the thousands of tokens a step averages, so the mean loss moves far less than one rounding: torch in BF16
    against lora4j's CPU backend (F32 activations) differs by 2e-6 to 3e-5 relative on the tiny shape, and by 1e-8
    with --compute-dtype float32. 2e-3, one BF16 rounding of the loss itself, leaves room for 32 layers of BF16 on
    both sides. It is a coarse bound all the same: a random model's loss on random tokens lies only a little above
    ln(vocab) (0.06 nats on the tiny shape), and an error that makes the model predict more uniformly can hide under
    0.02 nats; the relative differences printed, not only the verdict, tell how close the two are.
    With a non-zero B, lora4j's step-1 loss must also lie within half of the way from the reference's to the B = 0
    loss: the mean loss of a random model on random tokens moves little with the adapter (about 5e-3 nats for
    B ~ N(0, 0.1^2) on the tiny shape, under the relative tolerance), so this is what shows that lora4j started from
    the adapter rather than from B = 0.
  * later steps within --rtol 1e-2: the levels agree. This alone is weak, because the loss of a random model moves
    by only a few hundredths of a nat in a few steps: lora4j at half the learning rate stays within 7e-3 of the
    reference on the tiny shape.
  * the change since step 1 within --change-rtol 0.25 of the reference's change, plus --change-atol 2e-3 nats for the
    BF16 noise of two losses: the training agrees. Adam's first updates are nearly lr * sign(gradient), so gradient
    elements near zero whose sign differs between the runs move by 2 lr and the trajectories drift apart a little
    (about 0.5% of the change on the tiny shape in BF16); a wrong learning rate, a missing bias correction or weight
    decay, gradients of the wrong weights or of the wrong scale move the change by far more than 25% (half the
    learning rate: -0.031 against the reference's -0.059 after one step).
"""
import argparse
import json
import math
import os
import sys
import time

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def shapes():
    from transformers import LlamaConfig, MistralConfig

    def mistral(layers):
        return MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                             rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False)
    return {
        # The shapes of reference/hf_peft_bench.py.
        "mistral-7b": lambda: mistral(32),
        "llama3-8b": lambda: LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                         max_position_embeddings=8192, rope_theta=500000.0),
        # Quick checks: two layers of the Mistral shape (1.4 GB of BF16 weights), and the reference's tiny shape.
        "mistral-7b-2l": lambda: mistral(2),
        "tiny": lambda: LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                    num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048),
        # Small enough to keep in the repository: the recorded run that lora4j's tests reproduce on the CPU.
        "micro": lambda: LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
    }


SHAPE_NAMES = ["mistral-7b", "llama3-8b", "mistral-7b-2l", "tiny", "micro"]


# ---- reference --------------------------------------------------------------------------------------------------

def reference(a):
    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    device = a.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU (use --device cpu for a small shape)")
    os.makedirs(a.out, exist_ok=True)
    model_dir, adapter_dir = a.model_dir or os.path.join(a.out, "model"), os.path.join(a.out, "adapter")
    tokens_file, result_file = os.path.join(a.out, "tokens.json"), os.path.join(a.out, "reference.json")
    cfg = shapes()[a.shape]()
    cfg._attn_implementation = "sdpa"
    t0 = time.time()

    # The base model: random-initialised in BF16 on the device, as hf_peft_bench.py makes it, and saved; or the one
    # an earlier run saved with the same shape and seed (a 7B folder is 14.5 GB: written once for several runs).
    made = {"shape": a.shape, "seed": a.seed, "dtype": "bfloat16"}
    marker = os.path.join(model_dir, "same_data_model.json")
    if os.path.isfile(marker) and json.load(open(marker)) == made:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map={"": device},
                                                     attn_implementation="sdpa")
        action = "loaded from"
    else:
        torch.manual_seed(a.seed)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg)
        torch.set_default_dtype(torch.float32)
        if os.path.isfile(marker):
            os.remove(marker)
        model.save_pretrained(model_dir)
        with open(marker, "w") as f:
            json.dump(made, f)
        action = "saved to"
    say(f"base model ({a.shape}, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, BF16) {action}"
        f" {model_dir} in {time.time() - t0:.1f} s")
    if a.compute_dtype == "float32":
        # The saved BF16 values, computed in F32: for a check against lora4j's CPU backend, whose activations are F32.
        model = model.float()

    # The token batches: by default one step's worth (--accum micro-batches) that every step uses again, as lora4j's
    # synthetic batches are: the losses then fall as the adapter learns them, which is what the comparison of the
    # changes since step 1 needs. --same-batch: one micro-batch for everything, as hf_peft_bench.py;
    # --distinct-batches: every micro-batch of every step its own.
    g = torch.Generator().manual_seed(a.seed + 1)
    count = 1 if a.same_batch else a.steps * a.accum if a.distinct_batches else a.accum
    batches = [torch.randint(0, cfg.vocab_size, (a.micro_batch, a.seq), generator=g) for _ in range(count)]
    with open(tokens_file, "w") as f:
        json.dump({"made_by": "tools/same_data_losses.py", "shape": a.shape, "vocab_size": cfg.vocab_size,
                   "seed": a.seed + 1, "micro_batches": [b.tolist() for b in batches]}, f, separators=(",", ":"))
    batches = [b.to(device) for b in batches]

    # The adapter, as hf_peft_bench.py adds it; saved before any step (and after --nonzero-b). --mode full: no
    # adapter, every weight trains in BF16 with BF16 AdamW moments, as hf_peft_bench.py's full mode.
    full = a.mode == "full"
    if a.gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not full:
            model.enable_input_require_grads()
    if not full:
        targets = ["q_proj", "v_proj"] if a.mode == "lora-qv" else ALL
        torch.manual_seed(a.seed + 2)
        model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, target_modules=targets,
                                                 lora_dropout=a.dropout, bias="none", task_type="CAUSAL_LM"))
    zero_b_loss = None
    if full:
        pass
    elif a.nonzero_b:
        # The first step's loss with PEFT's B = 0, to say how far the non-zero B moves it.
        model.train()
        with torch.no_grad():
            zero_b_loss = sum(model(input_ids=batches[i % len(batches)], labels=batches[i % len(batches)]).loss.item()
                              for i in range(a.accum)) / a.accum
        gb = torch.Generator(device="cpu").manual_seed(a.seed + 3)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_B." in name:
                    p.copy_(torch.randn(p.shape, generator=gb, dtype=torch.float32) * a.nonzero_b)
    params = [p for p in model.parameters() if p.requires_grad]
    if not full:
        model.save_pretrained(adapter_dir)
        if os.path.isfile(os.path.join(adapter_dir, "README.md")):
            os.remove(os.path.join(adapter_dir, "README.md"))  # PEFT's empty model card
        say(f"initial adapter ({len(params)} tensors, {sum(p.numel() for p in params):,} parameters, dtype"
            f" {params[0].dtype}) saved to {adapter_dir}")
    else:
        say(f"full fine-tuning: {len(params)} tensors, {sum(p.numel() for p in params):,} parameters, dtype"
            f" {params[0].dtype}")

    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay, fused=device == "cuda")
    model.train()
    step_losses, micro_losses, seconds = [], [], []
    for step in range(a.steps):
        t = time.time()
        losses = []
        for i in range(a.accum):
            ids = batches[(step * a.accum + i) % len(batches)]
            out = model(input_ids=ids, labels=ids)
            (out.loss / a.accum if a.loss_scaling == "mean" else out.loss).backward()
            losses.append(out.loss.detach().item())
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.time() - t)
        # Every micro-batch has micro_batch x (seq - 1) targets: the step's mean token loss is the mean of theirs.
        step_losses.append(sum(losses) / len(losses))
        micro_losses.append(losses)
        say(f"step {step + 1}: loss {step_losses[-1]:.6f} ({seconds[-1]:.2f} s)")
    res = {"shape": a.shape, "mode": a.mode, "gc": a.gc, "micro_batch": a.micro_batch, "seq": a.seq,
           "accum": a.accum, "steps": a.steps, "rank": a.rank, "alpha": a.alpha, "dropout": a.dropout,
           "lr": a.lr, "weight_decay": a.weight_decay, "loss_scaling": a.loss_scaling, "nonzero_b": a.nonzero_b,
           "batches": len(batches), "seed": a.seed, "device": device, "compute_dtype": a.compute_dtype,
           "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "model": model_dir, "adapter": adapter_dir, "tokens": tokens_file,
           "step_losses": step_losses, "micro_batch_losses": micro_losses, "zero_b_first_loss": zero_b_loss,
           "step_seconds": seconds}
    with open(result_file, "w") as f:
        json.dump(res, f, indent=1)
    say(f"wrote {result_file}")
    print("RESULT " + json.dumps({k: res[k] for k in ("shape", "mode", "steps", "step_losses")}), flush=True)


def say(line):
    print(line, file=sys.stderr, flush=True)


# ---- compare ----------------------------------------------------------------------------------------------------

def lora4j_result(path, index):
    with open(path) as f:
        doc = json.load(f)
    results = doc.get("results")
    if not isinstance(results, list) or not results:
        raise SystemExit(f"{path}: not the --json output of lora4j bench (no \"results\" array)")
    if index is None:
        if len(results) > 1:
            raise SystemExit(f"{path} holds {len(results)} configurations; choose one with --result N (from 1)")
        index = 1
    if not 1 <= index <= len(results):
        raise SystemExit(f"{path}: --result {index} is not between 1 and {len(results)}")
    r = results[index - 1]
    if "step_losses" not in r:
        raise SystemExit(f"{path}: result {index} has no \"step_losses\" (written by an older lora4j bench?)")
    return r


def compare(a):
    with open(a.reference) as f:
        ref = json.load(f)
    mine = lora4j_result(a.lora4j, a.result)
    # problems make the comparison meaningless and fail it; notes are worth knowing but change nothing.
    problems, notes = [], []
    if mine.get("error"):
        problems.append(f"lora4j's run failed: {mine['error']}")
    if not mine.get("tokens"):
        problems.append("lora4j trained on its synthetic batches (no --tokens), not on the reference's")
    full = ref.get("mode") == "full"
    if full and mine.get("method") != "full":
        problems.append(f"the reference fine-tuned in full, lora4j ran {mine.get('method')}")
    if not full and not mine.get("init_adapter"):
        problems.append("lora4j drew its own initial adapter (no --init-adapter): its A is not the reference's")
    # Full fine-tuning has no adapter: its rank, alpha and dropout are the benchmark's unused defaults.
    for key in ("seq", "micro_batch", "accum") + (() if full else ("rank",)):
        if key in mine and key in ref and mine[key] != ref[key]:
            problems.append(f"{key} differs: reference {ref[key]}, lora4j {mine[key]}")
    for key in (("lr", "weight_decay") if full else ("alpha", "dropout", "lr", "weight_decay")):
        if key in mine and key in ref and not math.isclose(mine[key], ref[key], rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"{key} differs: reference {ref[key]}, lora4j {mine[key]}")
    if mine.get("gc") is not None and mine.get("gc") != ref.get("gc"):
        notes.append(f"gradient checkpointing: reference {ref.get('gc')}, lora4j {mine.get('gc')} (it changes no loss)")
    if ref.get("dropout", 0) > 0:
        notes.append(f"lora_dropout {ref['dropout']}: the dropout masks differ, so the losses agree only statistically")

    r_steps, m_steps = ref["step_losses"], mine["step_losses"]
    n = min(len(r_steps), len(m_steps))
    if len(r_steps) != len(m_steps):
        notes.append(f"the reference ran {len(r_steps)} steps and lora4j {len(m_steps)} (warm-up included):"
                     f" comparing the first {n}")
    if n == 0:
        problems.append("no step to compare")
    finite = lambda v: v is not None and math.isfinite(v)
    zero_b = ref.get("zero_b_first_loss")
    rows = []
    for k in range(n):
        r, m = r_steps[k], m_steps[k]
        if not (finite(r) and finite(m)):
            rows.append([k + 1, r, m, None, None, None, None, "FAIL"])
            continue
        diff = m - r
        rel = abs(diff) / abs(r)
        tol = a.first_rtol if k == 0 else a.rtol
        verdict = rel <= tol
        if k == 0 and finite(zero_b):
            # A non-zero initial B moves the first loss away from the base model's; lora4j must land nearer the
            # reference than halfway back to B = 0, or it did not start from the same adapter.
            verdict = verdict and abs(diff) <= 0.5 * abs(r - zero_b)
        change = None
        if k > 0 and finite(r_steps[0]) and finite(m_steps[0]):
            dr, dm = r - r_steps[0], m - m_steps[0]
            allowed = a.change_rtol * abs(dr) + a.change_atol
            change = (dr, dm, allowed)
            verdict = verdict and abs(dm - dr) <= allowed
        rows.append([k + 1, r, m, diff, rel, tol, change, "PASS" if verdict else "FAIL"])
    ok = not problems and all(r[-1] == "PASS" for r in rows)

    print(f"reference: {a.reference} ({ref.get('shape')}, {ref.get('mode')}, torch {ref.get('torch')},"
          f" transformers {ref.get('transformers')}, peft {ref.get('peft')}, {ref.get('device')},"
          f" {ref.get('compute_dtype')})")
    print(f"lora4j:    {a.lora4j} ({mine.get('configuration')}, {mine.get('device')})")
    if full:
        print(f"data:      {mine.get('tokens')}; full fine-tuning ({mine.get('base_precision')} weights), no adapter")
    else:
        print(f"data:      {mine.get('tokens')}; initial adapter {mine.get('init_adapter')}"
              f"{'; B ~ N(0, ' + str(ref['nonzero_b']) + '^2)' if ref.get('nonzero_b') else ' (B = 0)'}")
    if finite(zero_b) and n > 0 and finite(r_steps[0]) and finite(m_steps[0]):
        print(f"adapter:   the non-zero B moves the reference's step-1 loss by {r_steps[0] - zero_b:+.6f} from B = 0's"
              f" {zero_b:.6f}; lora4j differs from the reference there by {m_steps[0] - r_steps[0]:+.6f}"
              f" (at most half the move passes)")
    for line in notes:
        print("note:      " + line)
    for line in problems:
        print("problem:   " + line)
    print()
    table = [["step", "reference loss", "lora4j loss", "difference", "relative", "tolerance",
              "change since step 1: reference / lora4j (allowed difference)", "verdict"]]
    for k, r, m, diff, rel, tol, change, verdict in rows:
        table.append([str(k), fmt(r, 6), fmt(m, 6), fmt(diff, 6, signed=True), sci(rel), sci(tol),
                      "-" if change is None else f"{change[0]:+.6f} / {change[1]:+.6f} (±{change[2]:.6f})", verdict])
    print(markdown(table))
    if a.micro_batches:
        print()
        mt = [["step", "micro-batch", "reference loss", "lora4j loss", "relative"]]
        for k in range(n):
            for i, (r, m) in enumerate(zip(ref["micro_batch_losses"][k], mine["micro_batch_losses"][k])):
                rel = abs(m - r) / abs(r) if finite(r) and finite(m) else None
                mt.append([str(k + 1), str(i + 1), fmt(r, 6), fmt(m, 6), sci(rel)])
        print(markdown(mt))
    print()
    passed = sum(1 for r in rows if r[-1] == "PASS")
    print(f"{'PASS' if ok else 'FAIL'}: {passed} of {n} steps agree (step 1 within {a.first_rtol:g} relative,"
          f" later steps within {a.rtol:g} relative and their change since step 1 within {a.change_rtol:g} of the"
          f" reference's + {a.change_atol:g})" + (f"; {len(problems)} problem(s) above" if problems else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"pass": ok, "problems": problems, "notes": notes, "first_rtol": a.first_rtol, "rtol": a.rtol,
                       "change_rtol": a.change_rtol, "change_atol": a.change_atol,
                       "steps": [{"step": r[0], "reference": r[1], "lora4j": r[2], "difference": r[3],
                                  "relative": r[4], "verdict": r[-1]} for r in rows]}, f, indent=1)
    return 0 if ok else 1


def fmt(v, digits, signed=False):
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def sci(v):
    return "-" if v is None else f"{v:.2e}"


def markdown(rows):
    width = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, width)) + " |"
    return "\n".join([line(rows[0]), line(["-" * w for w in width])] + [line(r) for r in rows[1:]])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reference", help="write model, adapter and tokens, train, record the losses")
    r.add_argument("--shape", default="mistral-7b-2l", choices=SHAPE_NAMES)
    r.add_argument("--mode", default="lora-qv", choices=["lora-qv", "lora-all", "full"],
                   help="full: every weight trains in BF16 (lora4j: --method full --dtype bfloat16)")
    r.add_argument("--out", required=True, help="folder for model/, adapter/, tokens.json and reference.json")
    r.add_argument("--model-dir", help="where the base model goes instead of OUT/model; a model an earlier run saved"
                                       " there with the same --shape and --seed is loaded instead of made again")
    r.add_argument("--gc", action="store_true", help="gradient checkpointing")
    r.add_argument("--micro-batch", type=int, default=4)
    r.add_argument("--seq", type=int, default=1024)
    r.add_argument("--accum", type=int, default=4)
    r.add_argument("--steps", type=int, default=5, help="optimizer steps in all (lora4j: warm-up + timed)")
    r.add_argument("--rank", type=int, default=16)
    r.add_argument("--alpha", type=float, default=None, help="default: twice the rank")
    r.add_argument("--dropout", type=float, default=0.0)
    r.add_argument("--lr", type=float, default=2e-4)
    r.add_argument("--weight-decay", type=float, default=0.01)
    r.add_argument("--loss-scaling", choices=["mean", "sum"], default="mean",
                   help="mean: each micro-batch's loss / accum (Trainer, lora4j); sum: as hf_peft_bench.py")
    r.add_argument("--nonzero-b", type=float, nargs="?", const=0.1, default=0.0, metavar="STD",
                   help="draw lora_B from N(0, STD^2) (STD 0.1 if not given) so that the first loss depends on the adapter")
    layout = r.add_mutually_exclusive_group()
    layout.add_argument("--same-batch", action="store_true", help="one micro-batch for everything, as hf_peft_bench.py")
    layout.add_argument("--distinct-batches", action="store_true",
                        help="every micro-batch of every step its own ids (default: --accum micro-batches every step uses)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--compute-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="float32: the BF16 weights computed in F32, to compare with lora4j's CPU backend")
    c = sub.add_parser("compare", help="compare reference.json with lora4j bench's --json output")
    c.add_argument("reference")
    c.add_argument("lora4j")
    c.add_argument("--result", type=int, default=None, help="which of lora4j's configurations (from 1)")
    c.add_argument("--first-rtol", type=float, default=2e-3)
    c.add_argument("--rtol", type=float, default=1e-2)
    c.add_argument("--change-rtol", type=float, default=0.25)
    c.add_argument("--change-atol", type=float, default=2e-3)
    c.add_argument("--micro-batches", action="store_true", help="also print every micro-batch's losses")
    c.add_argument("--json", help="write the verdict as JSON too")
    a = p.parse_args()
    if a.command == "reference":
        if a.alpha is None:
            a.alpha = 2.0 * a.rank
        for name in ("micro_batch", "seq", "accum", "steps", "rank"):
            if getattr(a, name) < (2 if name == "seq" else 1):
                p.error(f"--{name.replace('_', '-')} is too small: {getattr(a, name)}")
        reference(a)
        return 0
    return compare(a)


if __name__ == "__main__":
    sys.exit(main())
