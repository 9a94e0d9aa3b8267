#!/usr/bin/env bash
# Run on the GPU machine from the repository root (after scripts/device-bundle.sh made .bundle): every check that
# needs the GPU or the Python stack, each step's output in its own file under $OUT, going on after a failure.
#   scripts/device-checks.sh [step...]   steps: info tests tokenizers interop logits peft train decode bench qlora-7b
#                                        qlora-format (default: all)
#                                        and bench (fine-tuning throughput beside transformers + peft; not in the
#                                        default list: each configuration takes up to four minutes, so run it on its
#                                        own, with BENCH_CONFIGS naming the configurations of scripts/device-bench.sh)
set -uo pipefail
out=${OUT:-/tmp/lora4j-out}
mkdir -p "$out"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(info tests tokenizers interop logits peft train decode qlora-format)
run_step() {
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    tail -25 "$out/$name.log"
}
for step in "${steps[@]}"; do
    case "$step" in
        info)
            run_step info bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; scripts/device-run.sh java dev.lora4j.cuda.CudaInfo; scripts/device-run.sh lora4j devices'
            ;;
        tests)
            run_step tests scripts/device-run.sh tests --details=summary --details-theme=ascii --fail-if-no-tests
            ;;
        tokenizers)
            run_step tokenizers bash -c 'python3 tools/compare_tokenizers.py --out /tmp/tokenizer-expected.jsonl \
                && LORA4J_TOKENIZER_EXPECTED=/tmp/tokenizer-expected.jsonl LORA4J_TOKENIZER_RESULTS='"$out"'/tokenizer-comparison.txt \
                   scripts/device-run.sh tests --details=summary --select-class dev.lora4j.tokenizer.TokenizerComparisonTest'
            ;;
        interop)
            run_step interop bash -c 'python3 tools/hf_interop.py write /tmp/interop \
                && LORA4J_INTEROP_DIR=/tmp/interop scripts/device-run.sh tests --details=summary --select-class dev.lora4j.io.HuggingFaceInteropTest \
                && python3 tools/hf_interop.py verify /tmp/interop'
            ;;
        logits)
            run_step logits bash -c 'python3 tools/compare_logits.py --out /tmp/lora4j-logits \
                && scripts/device-run.sh java dev.lora4j.model.LogitsComparison /tmp/lora4j-logits/expected.json cpu,cuda '"$out"'/logits-results.json'
            ;;
        peft)
            # Adapters both ways and one training step against peft 0.21 (tools/compare_peft.py).
            run_step peft bash -c 'python3 tools/compare_peft.py prepare --out /tmp/lora4j-peft \
                && scripts/device-run.sh java dev.lora4j.lora.PeftComparison /tmp/lora4j-peft/expected.json cpu,cuda '"$out"'/peft-results.json \
                && python3 tools/compare_peft.py verify --out /tmp/lora4j-peft --results '"$out"'/peft-verify.json'
            ;;
        train)
            # The README's fine-tuning demo on the GPU, then the same on the CPU for the losses side by side.
            run_step train bash -c 'scripts/device-run.sh lora4j init-model --preset tiny -o /tmp/tiny --force >/dev/null \
                && scripts/device-run.sh lora4j train --config lora4j-train/examples/sotu-demo.yaml \
                       --model-name-or-path /tmp/tiny --output-dir /tmp/sotu-cuda --device cuda \
                && scripts/device-run.sh lora4j train --config lora4j-train/examples/sotu-demo.yaml \
                       --model-name-or-path /tmp/tiny --output-dir /tmp/sotu-cpu --device cpu'
            ;;
        decode)
            # Decode speed of a Mistral-7B-shaped random model: lora4j on the GPU, then transformers on the same folder.
            run_step decode bash -c 'scripts/device-run.sh lora4j init-model --preset mistral-7b -o /tmp/m7b --force \
                && scripts/device-run.sh lora4j inspect -m /tmp/m7b \
                && for i in 1 2; do scripts/device-run.sh lora4j generate -m /tmp/m7b --device cuda --greedy \
                       --max-new-tokens 128 --ignore-eos -p "It was the best of times, it was the worst of times," | tail -c 300; done \
                && python3 tools/hf_decode_bench.py /tmp/m7b --new-tokens 128'
            ;;
        bench)
            # lora4j bench and reference/hf_peft_bench.py on the same workloads, one after the other
            # (scripts/device-bench.sh; tables under $OUT/bench, summary in $OUT/bench/summary.md). Two configurations
            # by default keep the step under ten minutes.
            run_step bench bash -c 'scripts/device-bench.sh '"${BENCH_CONFIGS:-lora-qv lora-all-gc}"
            ;;
        qlora-7b)
            # Issue 4's headline run: a Mistral-7B-shaped model with random BF16 weights written to disk, quantized to
            # NF4 (double quantization, BF16 compute) on load, then QLoRA r=16 on all linear layers with gradient
            # checkpointing, seq 1024, micro-batch 4. The JVM's resident host memory is sampled every 0.2 s while it
            # loads and trains (VmHWM is the kernel's own high-water mark); GPU figures come from lora4j bench.
            run_step qlora-7b bash -c 'set -e; d=/tmp/lora4j-m7b
                [ -f $d/config.json ] || scripts/device-run.sh lora4j init-model --preset mistral-7b -o $d --force
                du -sh $d
                scripts/device-run.sh lora4j bench -m $d --method qlora --target-modules all-linear --rank 16 --alpha 32 \
                    --seq 1024 --micro-batch 4 --accum 4 --steps ${QLORA_STEPS:-1} --warmup-steps 1 --gradient-checkpointing \
                    --device cuda --json '"$out"'/qlora-7b.json > '"$out"'/qlora-7b-bench.txt 2>&1 &
                pid=$!; peak=0
                while kill -0 $pid 2>/dev/null; do
                    for p in $(pgrep -f "lora4j-cli.jar bench" || true); do
                        rss=$(awk "/VmRSS/ {print \$2}" /proc/$p/status 2>/dev/null || echo 0)
                        [ "${rss:-0}" -gt "$peak" ] && peak=$rss && grep -E "VmHWM|RssAnon|RssFile" /proc/$p/status > '"$out"'/qlora-7b-host-memory.txt || true
                    done
                    sleep 0.2
                done
                wait $pid; rc=$?
                echo "peak sampled VmRSS: $((peak / 1024)) MiB"; cat '"$out"'/qlora-7b-host-memory.txt || true
                cat '"$out"'/qlora-7b-bench.txt; exit $rc'
            ;;
        qlora-format)
            # 4-bit checkpoints against transformers' bitsandbytes form (tools/bnb_checkpoint.py, docs/qlora-format.md):
            # lora4j quantize on the GPU (NF4, double quantization) and on the CPU (FP4, block 128, small shards),
            # each checked name by name and dequantized by PyTorch; then a checkpoint PyTorch writes in that form,
            # read back by lora4j and generated from.
            run_step qlora-format bash -c 'set -e; d=/tmp/lora4j-bnb; rm -rf $d; mkdir -p $d
                scripts/device-run.sh lora4j init-model --preset 100m --layers 2 -o $d/dense --force
                scripts/device-run.sh lora4j quantize -m $d/dense -o $d/nf4 --device cuda --force \
                    --dequantized-dump $d/nf4.dump.safetensors
                python3 tools/bnb_checkpoint.py check $d/nf4 --dump $d/nf4.dump.safetensors --dense $d/dense
                scripts/device-run.sh lora4j quantize -m $d/dense -o $d/fp4 --device cpu --force --quant-type fp4 \
                    --no-double-quant --block-size 128 --max-shard-size 20MB --dequantized-dump $d/fp4.dump.safetensors
                python3 tools/bnb_checkpoint.py check $d/fp4 --dump $d/fp4.dump.safetensors --dense $d/dense --block-size 128
                scripts/device-run.sh lora4j inspect -m $d/nf4
                python3 tools/bnb_checkpoint.py write $d/dense $d/torch-nf4 --expected $d/torch-nf4.expected.safetensors
                scripts/device-run.sh java dev.lora4j.quant.DequantizedDump $d/torch-nf4 $d/torch-nf4.lora4j.safetensors cuda
                python3 tools/bnb_checkpoint.py compare $d/torch-nf4.expected.safetensors $d/torch-nf4.lora4j.safetensors
                for dev in cuda cpu; do scripts/device-run.sh lora4j generate -m $d/torch-nf4 --device $dev --greedy \
                    --max-new-tokens 16 --ignore-eos -p "It was the best of times"; done'
            ;;
        *)
            echo "unknown step $step" >&2
            ;;
    esac
done
