#!/usr/bin/env bash
# The ablation of docs/ablation.md from nothing, on CPU, spread over PROCESSES single-thread processes:
#   bash examples/ablation_grid.sh [WORK_DIR] [PROCESSES]        (defaults runs/ablation_grid and 2)
# The table lands in WORK_DIR/out/table.md. Run it again after a stop: finished tokenizers, the evaluator and every
# result already written are kept (a training cut short starts again from its first step).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-runs/ablation_grid}"
processes="${2:-2}"
data="$work/procedural-10k"
mkdir -p "$work/logs"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1

# 1. Data: the bundled model's 10,000 procedural clips (train 8,000 / val 500 / test 1,500).
if [ ! -f "$data/semantics.jsonl" ]; then
    python -m moscale.synthetic --output_dir "$data" --num_clips 10000 --seed 0
fi

# 2. The two tokenizers, on one budget: the cpu-small preset at batch 64 for 14 epochs of 125 steps, lr x0.3 at
#    epochs 10 and 12 (the first bundled build's tokenizer). Only --scales differs; ablation.py checks it from their
#    logs. Then the contrastive evaluator behind FID and R-precision.
train_vq() {
    local output="$1"
    shift
    if [ -f "$output/model.safetensors" ]; then return; fi
    local resume=""
    if ls "$output"/checkpoints/checkpoint_* >/dev/null 2>&1; then resume="--resume_from_checkpoint latest"; fi
    python examples/train_vq.py --preset cpu-small --data_dir "$data" --output_dir "$output" --cache_dir "$work/cache" \
        --seed 0 --train_batch_size 64 --num_train_epochs 14 --lr_decay_epochs 10 12 --lr_warmup_steps 200 \
        --checkpointing_steps 250 --validation_steps 1000 --logging_steps 25 "$@" $resume
}
train_vq "$work/vq" >"$work/logs/vq.log" 2>&1 &
shared_vq=$!
train_vq "$work/vq_single_scale" --scales 1 >"$work/logs/vq_single_scale.log" 2>&1 &
single_scale_vq=$!
if [ ! -f "$work/evaluator/model.safetensors" ]; then
    python examples/train_evaluator.py --data_dir "$data" --output_dir "$work/evaluator" --cache_dir "$work/cache" \
        --max_train_steps 800 --train_batch_size 64 --learning_rate 3e-4 --lr_warmup_steps 50 \
        --hidden_size 128 --num_layers 2 --num_heads 4 --embedding_dim 128 --seed 0 >"$work/logs/evaluator.log" 2>&1
fi
wait "$shared_vq" || { echo "the shared tokenizer failed: see $work/logs/vq.log"; exit 1; }
wait "$single_scale_vq" || { echo "the single-scale tokenizer failed: see $work/logs/vq_single_scale.log"; exit 1; }

# 3. The grid, one (variant, seed) per job: MoScale at gamma_max 0, 0.3, 0.6 and 0.9 (each sampled without and
#    with TR) and the next-token baseline on the single-scale tokenizer, 3 training seeds; the finest-scale control
#    once. Every variant: 800 steps of batch 64, hidden size 128, 3 layers; 256 test clips.
common=(
    --data_dir "$data" --vq_model "$work/vq" --single_scale_vq_model "$work/vq_single_scale"
    --evaluator_path "$work/evaluator" --output_dir "$work/out" --cache_dir "$work/cache"
    --max_train_steps 800 --train_batch_size 64 --num_eval_clips 256 --skip_existing
    --hidden_size 128 --num_layers 3 --num_attention_heads 4 --condition_dim 128 --text_pool_head_dim 64
)
jobs=()
for gamma_max in 0 0.6 0.3 0.9; do
    for seed in 0 1 2; do jobs+=("--seeds $seed --gamma_max_values $gamma_max --next_token_tokenizers"); done
done
for seed in 0 1 2; do jobs+=("--seeds $seed --gamma_max_values --next_token_tokenizers single_scale"); done
jobs+=("--seeds 0 --gamma_max_values --next_token_tokenizers finest_scale")

# Each process takes the next job nobody has claimed; a claim is a folder, so two processes never share one.
rm -rf "$work/claims" && mkdir -p "$work/claims"
run_jobs() {
    local index
    for index in "${!jobs[@]}"; do
        mkdir "$work/claims/$index" 2>/dev/null || continue
        python examples/ablation.py "${common[@]}" --no_ceilings ${jobs[$index]} >"$work/logs/job_$index.log" 2>&1 ||
            echo "job $index (${jobs[$index]}) failed: see $work/logs/job_$index.log"
    done
}
for _ in $(seq "$processes"); do run_jobs & done
wait

# 4. The ceilings (ground truth and the tokenizers' reconstructions), then the table over every result written.
python examples/ablation.py "${common[@]}" --seeds 0 --gamma_max_values --next_token_tokenizers >"$work/logs/table.log" 2>&1
echo "table: $work/out/table.md"
