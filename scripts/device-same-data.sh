#!/usr/bin/env bash
# Run on the GPU machine from the repository root, after scripts/device-bundle.sh made .bundle: the losses of
# transformers + peft and of lora4j on the same base weights, the same initial adapter and the same token batches,
# compared step by step (tools/same_data_losses.py says how, and why its tolerances are what they are). For each
# configuration, one after the other on the same GPU:
#   python3 tools/same_data_losses.py reference ...   makes the BF16 base model folder (random, seeded), PEFT's initial
#                                                     adapter and the token batches, trains, records every loss
#   lora4j bench -m <model> --init-adapter <adapter> --tokens <tokens.json> --dropout 0 ...   the same steps
#   python3 tools/same_data_losses.py compare ...     the table and the verdict
# Outputs (few files, as the device machine returns at most 8): $OUT/same-data/summary.md (every configuration's
# table and verdict), $OUT/same-data/<config>.log (what each command printed) and $OUT/same-data/results.json (both
# sides' losses and settings). Exit status 1 when a comparison failed.
#
#   scripts/device-same-data.sh [config...]
#
# Configurations (seq 1024, micro-batch 4, 4 accumulation steps, r=16, alpha 32, lr 2e-4, weight decay 0.01, 5
# optimizer steps, --accum micro-batches that every step uses again, lora_dropout 0):
#   quick          two layers of the Mistral-7B shape, LoRA on all linear layers with checkpointing, B non-zero (1.4 GB)
#   lora-qv        Mistral-7B shape, LoRA q_proj,v_proj, no checkpointing (PEFT's B = 0)
#   lora-all-gc    Mistral-7B shape, LoRA on all linear layers, checkpointing, B non-zero
# and, on request:
#   llama3-8b-lora-all-gc   the Llama-3-8B shape (its 128,256-token vocabulary), LoRA all linear, checkpointing
#   full-bf16-2l   two layers of the Mistral-7B shape, full fine-tuning in BF16 (BF16 weights and AdamW moments on both
#                  sides: lora4j's --dtype bfloat16), checkpointing
#   cpu-tiny       the reference's tiny shape on the CPU, both sides (seq 128, micro-batch 2, 2 accumulation steps):
#                  runs on a development machine too, with SAME_DATA_PYTHON (a python with torch, transformers and
#                  peft) and SAME_DATA_LORA4J (how to start lora4j there, e.g. "java ... -jar lora4j-cli.jar")
# Default: quick lora-qv lora-all-gc (about 7 minutes; the 7B base folder, 14.5 GB, is written once for both 7B
# configurations and removed at the end: the machine's disk is 64 GB). Each command is bounded: SAME_DATA_REF_TIMEOUT
# and SAME_DATA_LORA4J_TIMEOUT seconds (default 300 and 240); SAME_DATA_STEPS changes the optimizer steps (default 5);
# SAME_DATA_KEEP=1 keeps the model folders under /tmp/lora4j-same-data.
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp/lora4j-out}/same-data
work=/tmp/lora4j-same-data
mkdir -p "$out" "$work"
ref_timeout=${SAME_DATA_REF_TIMEOUT:-300}
lora4j_timeout=${SAME_DATA_LORA4J_TIMEOUT:-240}
steps=${SAME_DATA_STEPS:-5}
python=${SAME_DATA_PYTHON:-python3}
read -r -a lora4j <<<"${SAME_DATA_LORA4J:-scripts/device-run.sh lora4j}"
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(quick lora-qv lora-all-gc)
summary=$out/summary.md
{
    echo "# Same data, same start: transformers + peft against lora4j"
    echo
    echo "r=16, alpha 32, lr 2e-4, weight decay 0.01, $steps optimizer steps (lora4j: 1 warm-up + $((steps - 1)) timed),"
    echo "lora_dropout 0, the same --accum micro-batches every step; tools/same_data_losses.py states the tolerances."
} > "$summary"
failed=0
previous_shape=

# same NAME SHAPE MODE GC(gc|-) TARGETS [reference options...]; DEVICE, SEQ, MB and ACCUM may be set for one call.
same() {
    local name=$1 shape=$2 mode=$3 gc=$4 targets=$5 device=${DEVICE:-cuda} seq=${SEQ:-1024} mb=${MB:-4} accum=${ACCUM:-4}
    shift 5
    local dir=$work/$name models=$work/models log=$out/$name.log
    # One base folder at a time on disk: a new shape replaces the last one.
    if [ -n "$previous_shape" ] && [ "$previous_shape" != "$shape" ] && [ "${SAME_DATA_KEEP:-0}" != 1 ]; then
        rm -rf "${models:?}/$previous_shape"
    fi
    previous_shape=$shape
    rm -rf "$dir"
    mkdir -p "$dir"
    local gcref=() gcopt=()
    [ "$gc" = gc ] && gcref=(--gc) && gcopt=(--gradient-checkpointing)
    echo "== $name"
    local start=$SECONDS
    {
        echo "\$ python3 tools/same_data_losses.py reference --shape $shape --mode $mode ${gcref[*]} --steps $steps $* --out $dir"
        PYTHONUNBUFFERED=1 timeout "$ref_timeout" "$python" tools/same_data_losses.py reference --shape "$shape" \
            --mode "$mode" "${gcref[@]}" --steps "$steps" --seq "$seq" --micro-batch "$mb" --accum "$accum" --rank 16 \
            --device "$device" "$@" --out "$dir" --model-dir "$models/$shape" 2>&1
        echo "exit $? after $((SECONDS - start)) s"
    } > "$log"
    echo "   reference: $(tail -1 "$log")"
    local mid=$SECONDS
    {
        echo
        local what=(--init-adapter "$dir/adapter" --dropout 0 --method lora --target-modules "$targets" --rank 16 --alpha 32)
        [ "$mode" = full ] && what=(--method full --dtype bfloat16)
        echo "\$ lora4j bench -m $models/$shape ${what[*]} --tokens $dir/tokens.json ${gcopt[*]} ..."
        timeout "$lora4j_timeout" "${lora4j[@]}" bench -m "$models/$shape" "${what[@]}" --tokens "$dir/tokens.json" \
            "${gcopt[@]}" --seq "$seq" --micro-batch "$mb" --accum "$accum" --warmup-steps 1 --steps $((steps - 1)) \
            --device "$device" --gemm-size 0 --json "$dir/lora4j.json" 2>&1
        echo "exit $? after $((SECONDS - mid)) s"
    } >> "$log"
    echo "   lora4j: $(tail -1 "$log")"
    {
        echo
        echo "## $name ($shape, $mode$([ "$gc" = gc ] && echo ", gradient checkpointing"), seq $seq x $mb x $accum on $device${*:+, $*})"
        echo
        echo '```'
    } >> "$summary"
    if [ -f "$dir/reference.json" ] && [ -f "$dir/lora4j.json" ]; then
        python3 tools/same_data_losses.py compare "$dir/reference.json" "$dir/lora4j.json" --micro-batches \
            --json "$dir/compare.json" > "$dir/compare.txt" 2>&1 || failed=1
        cat "$dir/compare.txt" >> "$summary"
        tail -1 "$dir/compare.txt" | sed 's/^/   /'
    else
        echo "no comparison: $([ -f "$dir/reference.json" ] || echo "the reference wrote no losses; ")$([ -f "$dir/lora4j.json" ] || echo "lora4j wrote no JSON; ")see $name.log" \
            | tee -a "$summary" | sed 's/^/   /'
        failed=1
    fi
    echo '```' >> "$summary"
}

for c in "${configs[@]}"; do
    case "$c" in
        quick)        same "$c" mistral-7b-2l lora-all gc all-linear --nonzero-b ;;
        full-bf16-2l) same "$c" mistral-7b-2l full gc - ;;
        lora-qv)      same "$c" mistral-7b lora-qv - q_proj,v_proj ;;
        lora-all-gc)  same "$c" mistral-7b lora-all gc all-linear --nonzero-b ;;
        llama3-8b-lora-all-gc) same "$c" llama3-8b lora-all gc all-linear --nonzero-b ;;
        cpu-tiny)     DEVICE=cpu SEQ=128 MB=2 ACCUM=2 same "$c" tiny lora-all gc all-linear --nonzero-b ;;
        *) echo "unknown configuration $c" >&2; failed=1 ;;
    esac
done
[ "${SAME_DATA_KEEP:-0}" = 1 ] || rm -rf "$work/models"

# Both sides' losses and settings in one file (the device machine returns few files).
python3 - "$work" "$out/results.json" "${configs[@]}" <<'EOF'
import json, os, sys
work, target, names = sys.argv[1], sys.argv[2], sys.argv[3:]
def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
results = {}
for n in names:
    lora4j = read(os.path.join(work, n, "lora4j.json"))
    results[n] = {"reference": read(os.path.join(work, n, "reference.json")),
                  "lora4j": lora4j["results"][0] if lora4j and lora4j.get("results") else None,
                  "verdict": read(os.path.join(work, n, "compare.json"))}
with open(target, "w") as f:
    json.dump(results, f, indent=1)
EOF
echo "wrote $summary"
exit $failed
