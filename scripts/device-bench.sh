#!/usr/bin/env bash
# Run on the GPU machine from the repository root, after scripts/device-bundle.sh made .bundle: fine-tuning
# throughput and memory, the reference stack and lora4j side by side. For each configuration, in one command and on
# the same GPU, one after the other:
#   python3 .bundle/reference/hf_peft_bench.py ...   transformers + peft (the figures of ../shared/REFERENCE.md)
#   lora4j bench ... --compare <its output>          the same workload: shape, seq, micro-batch, accumulation, rank
# Outputs: $OUT/bench/<config>/{reference.txt,lora4j.txt,lora4j.json}, and $OUT/bench/summary.md (+ summary.json)
# with the targets of the GPU-performance work (tools/bench_summary.py).
#
#   scripts/device-bench.sh [config...]
#
# Configurations (default: the four of the target table, Mistral-7B shape, seq 1024, micro-batch 4, 4 accumulation
# steps, r=16, alpha 32; one warm-up and 2 timed optimizer steps):
#   lora-qv          LoRA on q_proj and v_proj, no gradient checkpointing
#   lora-all-gc      LoRA on all linear layers, gradient checkpointing
#   qlora-all-gc     QLoRA (NF4, double quantization, BF16 compute), all linear, gradient checkpointing
#   full-gc          full fine-tuning, gradient checkpointing
#   full-bf16-gc     the same in BF16 (--dtype bfloat16: BF16 weights, gradients and AdamW moments, as the reference)
# and, on request:
#   lora-all         LoRA on all linear layers without checkpointing
#   lora-all-gc-llama3-8b, qlora-all-gc-llama3-8b   the Llama-3-8B shape (micro-batch 4)
#   qlora-llama3-8b-mb1, qlora-70b-mb1              QLoRA at micro-batch 1: Llama-3-8B, and Llama-2-70B's shape from a
#                                                   config.json (lora4j only: the reference has no 70B shape)
#   seq-sweep-lora-llama3-8b, seq-sweep-qlora-llama3-8b   peak memory against sequence length (see sweep below)
# Each command is bounded (BENCH_REF_TIMEOUT, BENCH_LORA4J_TIMEOUT seconds, default 100 and 140) so that one
# configuration takes at most about four minutes; BENCH_STEPS changes the timed steps (default 2); BENCH_REFERENCE=0
# runs lora4j alone (for trying a change; the figures of record come with the reference beside them).
# BENCH_ROUNDS=N runs the whole list N times over (reference and lora4j alternating, into $OUT/bench/round-<i>/), and
# the summary gives each run's ratio and their median: the clock moves both stacks by a few percent between runs, so
# a target met by a few percent wants more than one.
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp/lora4j-out}/bench
mkdir -p "$out"
ref_timeout=${BENCH_REF_TIMEOUT:-100}
lora4j_timeout=${BENCH_LORA4J_TIMEOUT:-140}
steps=${BENCH_STEPS:-2}
reference=$root/.bundle/reference/hf_peft_bench.py
[ -f "$reference" ] || reference=$root/../shared/reference/hf_peft_bench.py
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(lora-qv lora-all-gc qlora-all-gc full-gc full-bf16-gc)

# Llama 2 70B's shape, for a QLoRA run with random weights (lora4j bench -m <folder> --random-weights).
llama70b=/tmp/lora4j-llama2-70b-shape
mkdir -p "$llama70b"
cat > "$llama70b/config.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 8192,
 "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
 "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "hidden_act": "silu", "torch_dtype": "bfloat16"}
EOF

# run NAME SHAPE MICRO_BATCH REF_MODE GC(gc|-) -- lora4j's method options...
run() {
    local name=$1 shape=$2 mb=$3 mode=$4 gc=$5 steps=${RUN_STEPS:-$steps}
    shift 6
    local dir=$out/$name
    mkdir -p "$dir"
    [ "${BENCH_REFERENCE:-1}" = 0 ] && mode=-
    local start=$SECONDS
    echo "== $name"
    if [ "$mode" != "-" ]; then
        local gcflag=()
        [ "$gc" = gc ] && gcflag=(--gc)
        echo "\$ python3 hf_peft_bench.py --shape $shape --mode $mode ${gcflag[*]} --micro-batch $mb --seq 1024 --accum 4 --steps $steps --rank 16" \
            > "$dir/reference.txt"
        timeout "$ref_timeout" python3 "$reference" --shape "$shape" --mode "$mode" "${gcflag[@]}" --micro-batch "$mb" \
            --seq 1024 --accum 4 --steps "$steps" --rank 16 >> "$dir/reference.txt" 2>&1
        local rc=$?
        [ $rc -eq 124 ] && echo "RESULT {\"shape\": \"$shape\", \"mode\": \"$mode\", \"gc\": $([ "$gc" = gc ] && echo true || echo false), \"micro_batch\": $mb, \"seq\": 1024, \"accum\": 4, \"rank\": 16, \"error\": \"stopped after ${ref_timeout} s\"}" >> "$dir/reference.txt"
        echo "   reference: exit $rc after $((SECONDS - start)) s: $(grep -h '^RESULT' "$dir/reference.txt" | tail -1)"
    fi
    local gcopt=()
    [ "$gc" = gc ] && gcopt=(--gradient-checkpointing)
    local compare=()
    grep -q '^RESULT' "$dir/reference.txt" 2>/dev/null && compare=(--compare "$dir/reference.txt")
    local mid=$SECONDS
    timeout "$lora4j_timeout" scripts/device-run.sh lora4j bench "$@" "${gcopt[@]}" --micro-batch "$mb" --seq 1024 \
        --accum 4 --steps "$steps" --warmup-steps 1 --rank 16 --alpha 32 --device cuda --json "$dir/lora4j.json" \
        "${compare[@]}" > "$dir/lora4j.txt" 2>&1
    local rc=$?
    echo "   lora4j: exit $rc after $((SECONDS - mid)) s"
    if grep -q '^Memory' "$dir/lora4j.txt"; then
        sed -n '/^Memory/,$p' "$dir/lora4j.txt" | sed 's/^/   /'
    else
        tail -8 "$dir/lora4j.txt" | sed 's/^/   ! /'
    fi
}

# sweep NAME METHOD REF_SEQS LORA4J_SEQS: the longest sequence that LoRA or QLoRA (Llama-3-8B shape, all linear layers,
# gradient checkpointing, micro-batch 1, one micro-batch per step) trains in, for the 24 GiB question: the reference
# at each length of REF_SEQS (a process each; "-" skips it: bitsandbytes is not installed there for QLoRA), lora4j at
# each of LORA4J_SEQS in one invocation; every row reports its peak, and tools/bench_summary.py picks the longest
# that stays within 24 GiB.
sweep() {
    local name=$1 method=$2 ref_seqs=$3 seqs=$4
    local dir=$out/$name
    mkdir -p "$dir"
    echo "== $name"
    : > "$dir/reference.txt"
    if [ "$ref_seqs" != "-" ] && [ "${BENCH_REFERENCE:-1}" != 0 ]; then
        for s in ${ref_seqs//,/ }; do
            local start=$SECONDS
            echo "\$ python3 hf_peft_bench.py --shape llama3-8b --mode lora-all --gc --micro-batch 1 --seq $s --accum 1 --steps 1 --rank 16" >> "$dir/reference.txt"
            timeout "$ref_timeout" python3 "$reference" --shape llama3-8b --mode lora-all --gc --micro-batch 1 --seq "$s" \
                --accum 1 --steps 1 --rank 16 >> "$dir/reference.txt" 2>&1
            echo "   reference seq $s: exit $? after $((SECONDS - start)) s: $(grep -h '^RESULT' "$dir/reference.txt" | tail -1)"
        done
    fi
    local mid=$SECONDS
    timeout "$lora4j_timeout" scripts/device-run.sh lora4j bench --preset llama3-8b --method "$method" \
        --target-modules all-linear --gradient-checkpointing --micro-batch 1 --seq "$seqs" --accum 1 --steps 1 \
        --warmup-steps 1 --rank 16 --alpha 32 --device cuda --gemm-size 0 --json "$dir/lora4j.json" > "$dir/lora4j.txt" 2>&1
    echo "   lora4j: exit $? after $((SECONDS - mid)) s"
    sed -n '/^Memory/,/^$/p' "$dir/lora4j.txt" | sed 's/^/   /'
}

rounds=${BENCH_ROUNDS:-1}
base=$out
folders=()
for round in $(seq 1 "$rounds"); do
out=$base
if [ "$rounds" -gt 1 ]; then
    out=$base/round-$round
    echo "== round $round of $rounds"
fi
mkdir -p "$out"
folders+=("$out")
for c in "${configs[@]}"; do
    case "$c" in
        lora-qv)      run "$c" mistral-7b 4 lora-qv - -- --preset mistral-7b --method lora --target-modules q_proj,v_proj ;;
        lora-all)     run "$c" mistral-7b 4 lora-all - -- --preset mistral-7b --method lora --target-modules all-linear ;;
        lora-all-gc)  run "$c" mistral-7b 4 lora-all gc -- --preset mistral-7b --method lora --target-modules all-linear ;;
        qlora-all-gc) run "$c" mistral-7b 4 qlora-all gc -- --preset mistral-7b --method qlora --target-modules all-linear ;;
        full-gc)      run "$c" mistral-7b 4 full gc -- --preset mistral-7b --method full ;;
        full-bf16-gc) run "$c" mistral-7b 4 full gc -- --preset mistral-7b --method full --dtype bfloat16 ;;
        lora-all-gc-llama3-8b)  run "$c" llama3-8b 4 lora-all gc -- --preset llama3-8b --method lora --target-modules all-linear ;;
        qlora-all-gc-llama3-8b) run "$c" llama3-8b 4 qlora-all gc -- --preset llama3-8b --method qlora --target-modules all-linear ;;
        qlora-llama3-8b-mb1)    run "$c" llama3-8b 1 qlora-all gc -- --preset llama3-8b --method qlora --target-modules all-linear ;;
        # One timed step: the figure asked of the 70B shape is its peak memory.
        qlora-70b-mb1)          RUN_STEPS=1 run "$c" llama2-70b 1 - gc -- -m "$llama70b" --random-weights --method qlora --target-modules all-linear ;;
        seq-sweep-lora-llama3-8b)  sweep "$c" lora 4096,8192,12288 12288,16384,20480,24576 ;;
        seq-sweep-qlora-llama3-8b) sweep "$c" qlora - 24576,32768,40960,49152 ;;
        *) echo "unknown configuration $c" >&2 ;;
    esac
done
done
python3 tools/bench_summary.py "${folders[@]}" --markdown "$base/summary.md" --json "$base/summary.json"
