#!/usr/bin/env bash
# The mini model's whole recipe (issue 5), from a clean checkout to checkpoints/codi2-mini:
#
#   bash scripts/train_mini.sh            # full size: under 5 h 35 min on an idle 2-core CPU, 7 h 30 min on a slower one (README: stage times)
#   bash scripts/train_mini.sh --smoke    # the same stages at toy sizes, a few minutes (CI runs it)
#
# 1. world data (runs/mini/data/{stage1,train,icl,vidx,mrx,icl7,img8,mr13,mr15,ed14,open12,vgen,gram,two,two_t,oos,oos_t,iclg,mrg,vgeng,openg,test,opentest,...})
#    and the world judges (runs/mini/judges)
# 2. component pre-training, two chains side by side on one thread each (train/mini):
#      A: encoder -> decoders image+video (the video decoder's text encoder first)
#      B: llm -> decoder audio -> 2000 more vocoder steps with the level term
#    then 1400 more video-UNet steps (VID_MORE) beside the trainer stages 1-5 (into runs/mini/decoders.more,
#    moved into runs/mini/decoders after stage 5)
# 3. the LoRA + projector + head stages through the trainer: mini-stage1 (projector alignment), then
#    mini-stage2 (instruction tuning) from stage 1's export, mini-stage3 (a second pass weighted to the
#    image and sound phases) from stage 2's, mini-stage4 (+ 6000 in-context editing records) from stage 3's,
#    mini-stage5 (+ 3000 video records and 2000 three-round editing records, the text and video phases weighted
#    up) from stage 4's, mini-stage6 (+ 8000 in-context picture records and 3000 fresh picture-editing /
#    text -> picture records) from stage 5's, mini-stage7 (the editing pass: + 10000 three-round editing
#    dialogues, 2000 picture and sound edits and 3000 open-prompt records) from stage 6's, stage 8
#    (mini-video-head.yaml: the video head re-fitted, everything else frozen) from stage 7's, mini-stage9 (a second
#    in-context picture pass: stage 6's mix for 2000 steps) from stage 8's, and stage 10 (the video head again)
#    from stage 9's, mini-stage11 (people's words: the request grammar's train frames for every task, chat layouts,
#    two-attribute picture edits and out-of-scope prompts, beside half the instruction set in the templates) from
#    stage 10's, mini-stage12 (a second pass of that mix, the text phase weighted up) from stage 11's, mini-stage13
#    (a short third pass, the text phase weighted up again) from stage 12's, mini-stage14 (the video head again)
#    from stage 13's, mini-stage15 (under-specified requests: stage 7's open prompts and open prompts in the
#    grammar's words, added to stage 11's mix) from stage 14's and mini-stage16 (the video head again) from stage 15's;
#    beside them, 6000 more image-UNet steps, 3000 on a zero-terminal-SNR schedule, then 2000 steps of the VAE's
#    decoder half alone (its encoder frozen); that VAE goes into the video decoder too, which shares its latents
# 4. the components compared with those of the bundle about to be replaced (python -m train.mini.reproduce ->
#    runs/mini/reproduce.json), the bundle (stage 16's export + the judges) and `codi2 eval --suite world` on the
#    test split and the open-prompt test set, then on the test split in the request grammar's held-out frames with
#    held-out two-attribute edits and out-of-scope prompts
#
# Every step skips itself when its artifact exists, so re-running after a crash resumes (the trainer stages and
# the component steps also resume from their own checkpoints). RUN=DIR and OUT=DIR move the work and bundle folders; EVAL_N=N sets
# the held-out records per task of the final evaluation (default 30).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source .venv/bin/activate

smoke=0
[[ "${1:-}" == "--smoke" ]] && smoke=1
if (( smoke )); then
  RUN="${RUN:-runs/mini-smoke}"; OUT="${OUT:-$RUN/codi2-mini}"
  # the same code paths at toy sizes
  ENC=(steps=8 batch_size=8 pool_size=64 eval_n=16 eval_every=0 warmup_steps=2)
  LLM=(steps=8 batch_size=2 block_size=64 n_records=300 n_val_records=20 n_captions=200 warmup_steps=2)
  DEC=(image.vae_steps=4 image.unet_steps=6 image.pool_size=32 image.batch_size=4 image.vae_batch_size=4
       video.unet_steps=3 video.pool_size=8 video.batch_size=2 video.frame_batch_size=2 video.text_encoder_steps=3
       audio.vae_steps=3 audio.vocoder_steps=3 audio.unet_steps=4 audio.pool_size=16 audio.batch_size=4
       audio.vae_batch_size=4 eval_n=0)
  IMG_MORE=(image.vae_steps=0 image.unet_steps=2 image.pool_size=32 image.batch_size=4 eval_n=0)
  IMG_ZSNR=(image.vae_steps=0 image.unet_steps=2 image.pool_size=32 image.batch_size=4 image.zero_snr=true
            image.prediction_type=v_prediction image.high_noise_fraction=0.3 image.high_noise_from=850 eval_n=0)
  IMG_VAE=(image.vae_steps=2 image.vae_decoder_only=true image.unet_steps=0 image.pool_size=32 image.vae_batch_size=4
           eval_n=0)
  VID_MORE=(video.unet_steps=2 video.text_encoder_steps=0 video.frame_every=0 video.batch_size=2 video.pool_size=8 video.high_noise_fraction=0.5
            video.high_noise_from=850 eval_n=0)
  VOC_LEVEL=(audio.vae_steps=0 audio.unet_steps=0 audio.vocoder_steps=2 audio.vocoder_level_weight=20
             audio.pool_size=16 audio.batch_size=4 eval_n=0)
  N_STAGE1=48; N_TRAIN=96; N_ICL=16; N_VID=12; N_MRX=8; N_ICL7=8; N_IMG8=8; N_VGEN=8; N_TEST=32; JUDGES=(--n 200 --n-eval 50 --epochs 1)
  ST1=(max_steps=6 batch_size=4 save_every=3 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST2=(max_steps=6 batch_size=4 save_every=3 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST3=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST4=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST5=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST6=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST7=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST8=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST9=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST10=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST11=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST12=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST13=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST14=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST15=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  ST16=(max_steps=4 batch_size=4 save_every=2 log_every=2 optim.warmup_steps=1 data.bad_min_seen=20)
  N_GRAM=32; N_TWO=8; N_TWO_T=4; N_OOS=8; N_OOS_T=4; N_ICLG=8; N_MRG=8; N_VGENG=8; N_HTEST=32; N_HEXTRA=4
  N_MR13=8; N_MR15=8; N_ED14=8; N_OPEN12=8; N_OPENTEST=4; N_OPENG=8
  N_GRAM2=16; N_TWO2=4; N_OOS2=4; N_ICLG2=4; N_MRG2=4; N_OPENG2=4
  EVAL=(--n 1 --steps 2)
else
  RUN="${RUN:-runs/mini}"; OUT="${OUT:-checkpoints/codi2-mini}"
  ENC=(); LLM=(); DEC=(); ST1=(); ST2=(); ST3=(); ST4=(); ST5=(); ST6=(); ST7=(); ST8=(); ST9=(); ST10=(); ST11=(); ST12=(); ST13=(); ST14=(); ST15=(); ST16=()
  EVAL=(--n "${EVAL_N:-30}")
  IMG_MORE=(image.vae_steps=0 image.unet_steps=6000)
  # then onto a zero-terminal-SNR schedule (as the video decoder), 30 % of the timesteps at t >= 850 (docs/mini_model.md: Pictures)
  IMG_ZSNR=(image.vae_steps=0 image.unet_steps=3000 image.lr=2.0e-4 image.zero_snr=true image.prediction_type=v_prediction
            image.high_noise_fraction=0.3 image.high_noise_from=850)
  # and the VAE's decoder half alone, its encoder (the latents every UNet was trained on) frozen (docs/mini_model.md: Pictures)
  IMG_VAE=(image.vae_steps=2000 image.vae_decoder_only=true image.vae_lr=5.0e-4 image.unet_steps=0)
  # clips only, half of them at t >= 850, where the direction of motion is set (docs/mini_model.md: Video)
  VID_MORE=(video.unet_steps=1400 video.text_encoder_steps=0 video.frame_every=0 video.batch_size=8 video.high_noise_fraction=0.5
            video.high_noise_from=850 video.lr=5.0e-4)
  # the vocoder again with the spectral-convergence level term on: log-mel L1 alone leaves held tones quiet
  VOC_LEVEL=(audio.vae_steps=0 audio.unet_steps=0 audio.vocoder_steps=2000 audio.vocoder_level_weight=20
             audio.vocoder_lr=5.0e-4)
  N_STAGE1=4000; N_TRAIN=12000; N_ICL=6000; N_VID=3000; N_MRX=2000; N_ICL7=8000; N_IMG8=3000; N_VGEN=3000
  N_MR13=4000; N_MR15=6000; N_ED14=2000; N_OPEN12=3000; N_OPENTEST=60; N_OPENG=6000
  N_GRAM2=16000; N_TWO2=2000; N_OOS2=2000; N_ICLG2=5000; N_MRG2=3000; N_OPENG2=3000
  N_GRAM=32000; N_TWO=4000; N_TWO_T=500; N_OOS=4000; N_OOS_T=200; N_ICLG=10000; N_MRG=6000; N_VGENG=1500
  N_HTEST=2400; N_HEXTRA=$(( 2 * ${EVAL_N:-30} ))
  N_TEST=800; JUDGES=()
fi
mkdir -p "$RUN/logs"
RUN="$(cd "$RUN" && pwd)"  # absolute from here on (RUN may be given relative or absolute)
log() { echo "[train_mini $(date +%H:%M:%S)] $*"; }
# configs/model/mini.yaml reads its component paths from these
export CODI2_MINI_ENCODER="$RUN/encoder.pth" CODI2_MINI_LLM="$RUN/llm"
export CODI2_MINI_TOKENIZER="$RUN/llm/tokenizer.model" CODI2_MINI_DECODERS="$RUN/decoders"

# ---- 1. data and judges
STAGE1_TASKS=(caption_image caption_audio caption_video gen_image gen_audio gen_video image_to_audio audio_to_image
              image_audio_to_video)
build() {  # build OUT_DIR N SPLIT WORLD_SEED [--tasks ...]
  local dir=$1 n=$2 split=$3 seed=$4; shift 4
  [[ -f "$dir/manifest.jsonl" ]] && return 0
  log "world data -> $dir ($n records, $split, world seed $seed)"
  codi2 build-data world --out "$dir" --n "$n" --seed "$seed" --split "$split" "$@" \
      > "$RUN/logs/data_$(basename "$dir").log" 2>&1
}
build "$RUN/data/stage1" "$N_STAGE1" train 0 --tasks "${STAGE1_TASKS[@]}"
build "$RUN/data/train" "$N_TRAIN" train 0
build "$RUN/data/icl" "$N_ICL" train 1 --tasks icl_edit_image icl_edit_audio  # stage 4's extra exemplar edits
build "$RUN/data/vidx" "$N_VID" train 2 --tasks caption_video gen_video image_audio_to_video  # stage 5's
build "$RUN/data/mrx" "$N_MRX" train 3 --tasks multi_round_edit  # stage 5's three-round editing dialogues
build "$RUN/data/icl7" "$N_ICL7" train 7 --tasks icl_edit_image  # stage 6's in-context picture edits
build "$RUN/data/img8" "$N_IMG8" train 8 --tasks edit_image gen_image  # stage 6's fresh picture records
build "$RUN/data/mr13" "$N_MR13" train 13 --tasks multi_round_edit  # stage 7's three-round editing dialogues
build "$RUN/data/mr15" "$N_MR15" train 15 --tasks multi_round_edit  # (two builds: 4000 + 6000)
build "$RUN/data/ed14" "$N_ED14" train 14 --tasks edit_image edit_audio  # stage 7's fresh picture and sound edits
build "$RUN/data/open12" "$N_OPEN12" train 12 --tasks gen_open_image gen_open_audio joint_open  # stage 7's open prompts
build "$RUN/data/vgen" "$N_VGEN" train 6 --tasks gen_video  # stages 8 and 10: the video-head re-fits
# stage 11: people's words (data_builders/world/grammar.py); --frames train: the grammar's train frames only
build "$RUN/data/gram" "$N_GRAM" train 20 --frames train  # every task in the grammar's words and chat layouts
build "$RUN/data/two" "$N_TWO" train 22 --frames train --tasks edit_image_two  # two edits in one request
build "$RUN/data/two_t" "$N_TWO_T" train 23 --tasks edit_image_two
build "$RUN/data/oos" "$N_OOS" train 24 --frames train --tasks out_of_scope  # prompts outside the world
build "$RUN/data/oos_t" "$N_OOS_T" train 25 --tasks out_of_scope
build "$RUN/data/iclg" "$N_ICLG" train 21 --frames train --tasks icl_edit_image icl_edit_audio
build "$RUN/data/mrg" "$N_MRG" train 26 --frames train --tasks multi_round_edit
build "$RUN/data/vgeng" "$N_VGENG" train 27 --frames train --tasks gen_video  # stage 14's, beside vgen
# stage 15: under-specified requests in people's words (one to three attributes named, the rest left open)
build "$RUN/data/openg" "$N_OPENG" train 28 --frames train --tasks gen_open_image gen_open_audio joint_open
# and the grammar's second train set (--frames train2: the first held-out frames and more synonyms)
build "$RUN/data/gram2" "$N_GRAM2" train 40 --frames train2
build "$RUN/data/two2" "$N_TWO2" train 41 --frames train2 --tasks edit_image_two
build "$RUN/data/oos2" "$N_OOS2" train 42 --frames train2 --tasks out_of_scope
build "$RUN/data/iclg2" "$N_ICLG2" train 43 --frames train2 --tasks icl_edit_image icl_edit_audio
build "$RUN/data/mrg2" "$N_MRG2" train 44 --frames train2 --tasks multi_round_edit
build "$RUN/data/openg2" "$N_OPENG2" train 45 --frames train2 --tasks gen_open_image gen_open_audio joint_open
build "$RUN/data/test" "$N_TEST" test 0
# the held-out check: the test split in the grammar's held-out frames, held-out two-attribute edits and
# out-of-scope prompts (each task EVAL_N records)
build "$RUN/data/test_heldout" "$N_HTEST" test 0 --frames heldout
build "$RUN/data/test_extra" "$N_HEXTRA" test 30 --frames heldout --tasks edit_image_two out_of_scope  # EVAL_N each
build "$RUN/data/test_extra_t" "$N_HEXTRA" test 30 --tasks edit_image_two out_of_scope  # the same, in the templates
build "$RUN/data/opentest" "$N_OPENTEST" test 10 --tasks joint_open  # open prompts: joint vs separate replies
build "$RUN/data/opentest_h" "$N_OPENTEST" test 10 --frames heldout --tasks joint_open  # the same, held-out frames
if [[ ! -f "$RUN/judges/judges.json" ]]; then
  log "judges -> $RUN/judges"
  python -m data_builders.world.judges --out "$RUN/judges" --threads 1 "${JUDGES[@]}" > "$RUN/logs/judges.log" 2>&1
fi

# ---- 2. components: two single-thread chains side by side
chain_a() {
  [[ -f "$RUN/encoder.pth" ]] || codi2 train-component encoder configs/train/mini-encoder.yaml \
      out="$RUN/encoder.pth" "${ENC[@]}" >> "$RUN/logs/encoder.log" 2>&1
  for m in image video; do  # video reuses the image VAE (read from $RUN/decoders/image/vae)
    [[ -f "$RUN/decoders/$m/model_index.json" || ( $m == video && -f "$RUN/decoders.more/video/model_index.json" ) ]] \
      || codi2 train-component decoder configs/train/mini-decoders.yaml \
        out="$RUN/decoders" "modalities=[$m]" "${DEC[@]}" >> "$RUN/logs/decoder_$m.log" 2>&1
  done
}
chain_b() {
  [[ -f "$RUN/llm/config.json" ]] || codi2 train-component llm configs/train/mini-llm.yaml \
      out="$RUN/llm" "${LLM[@]}" >> "$RUN/logs/llm.log" 2>&1
  [[ -f "$RUN/decoders/audio/model_index.json" ]] || codi2 train-component decoder configs/train/mini-decoders.yaml \
      out="$RUN/decoders" "modalities=[audio]" "${DEC[@]}" >> "$RUN/logs/decoder_audio.log" 2>&1
  if [[ ! -f "$RUN/decoders/.vocoder-level" ]]; then  # then the vocoder with the level term (docs/mini_model.md: Sound)
    codi2 train-component decoder configs/train/mini-decoders.yaml init="$RUN/decoders" out="$RUN/decoders" \
        "modalities=[audio]" "${VOC_LEVEL[@]}" >> "$RUN/logs/decoder_audio_level.log" 2>&1
    touch "$RUN/decoders/.vocoder-level"
  fi
}
log "components (logs in $RUN/logs)"
chain_a & pa=$!
chain_b & pb=$!
wait $pa || { log "chain A (encoder, image/video decoders) failed: see $RUN/logs"; exit 1; }
wait $pb || { log "chain B (llm, audio decoder) failed: see $RUN/logs"; exit 1; }

# VID_MORE: more video-UNet steps, beside trainer stages 1-5 (which read only the video decoder's text encoder, and
# VID_MORE does not train it). It writes $RUN/decoders.more/video, moved into $RUN/decoders/video after stage 5, so
# stages 1-5 see one video decoder throughout.
video_more() {
  [[ -f "$RUN/decoders/.video-refined" || -f "$RUN/decoders.more/video/model_index.json" ]] \
    || codi2 train-component decoder configs/train/mini-decoders.yaml init="$RUN/decoders" out="$RUN/decoders.more" \
        "modalities=[video]" "${VID_MORE[@]}" >> "$RUN/logs/decoder_video_more.log" 2>&1
}
log "video decoder: ${VID_MORE[*]} -> $RUN/decoders.more (beside the trainer stages)"
video_more & pv=$!

# ---- 3. LoRA + projector + head stages (the trainer of train/), and beside them more image-UNet steps:
# the trainer needs the decoders only for their frozen text encoders (head targets), never their UNets
image_step() {  # image_step MARKER LOG OVERRIDES...: one more run on the image decoder, skipped once MARKER exists
  local marker="$RUN/decoders/.$1" logf="$RUN/logs/$2.log"; shift 2
  [[ -f "$marker" ]] && return 0
  codi2 train-component decoder configs/train/mini-decoders.yaml init="$RUN/decoders" out="$RUN/decoders" \
      "modalities=[image]" "$@" > "$logf" 2>&1
  touch "$marker"
}
refine_image() {
  image_step image-refined decoder_image_more "${IMG_MORE[@]}"
  image_step image-zero-snr decoder_image_zero_snr "${IMG_ZSNR[@]}"
  image_step image-vae-sharpened decoder_image_vae "${IMG_VAE[@]}"
}
log "image decoder: ${IMG_MORE[*]}, then ${IMG_ZSNR[*]}, then ${IMG_VAE[*]} (beside the trainer stages)"
refine_image & pr=$!
export OMP_NUM_THREADS=1  # two single-thread jobs share the two cores
if [[ ! -f "$RUN/stage1/final/config.yaml" ]]; then
  log "stage 1: projector alignment"
  codi2 train configs/train/mini-stage1.yaml output_dir="$RUN/stage1" \
      "data.manifests=[$RUN/data/stage1/manifest.jsonl]" "${ST1[@]}" >> "$RUN/logs/stage1.log" 2>&1
fi
if [[ ! -f "$RUN/stage2/final/config.yaml" ]]; then
  log "stage 2: instruction tuning"
  codi2 train configs/train/mini-stage2.yaml output_dir="$RUN/stage2" model.pipeline="$RUN/stage1/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl]" "${ST2[@]}" >> "$RUN/logs/stage2.log" 2>&1
fi
if [[ ! -f "$RUN/stage3/final/config.yaml" ]]; then
  log "stage 3: instruction tuning, image and sound phases weighted up"
  codi2 train configs/train/mini-stage3.yaml output_dir="$RUN/stage3" model.pipeline="$RUN/stage2/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl]" "${ST3[@]}" >> "$RUN/logs/stage3.log" 2>&1
fi
if [[ ! -f "$RUN/stage4/final/config.yaml" ]]; then
  log "stage 4: in-context editing pass (+ $RUN/data/icl)"
  codi2 train configs/train/mini-stage4.yaml output_dir="$RUN/stage4" model.pipeline="$RUN/stage3/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl]" "${ST4[@]}" \
      >> "$RUN/logs/stage4.log" 2>&1
fi
if [[ ! -f "$RUN/stage5/final/config.yaml" ]]; then
  log "stage 5: video and multi-round pass (+ $RUN/data/vidx, $RUN/data/mrx)"
  codi2 train configs/train/mini-stage5.yaml output_dir="$RUN/stage5" model.pipeline="$RUN/stage4/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/vidx/manifest.jsonl,$RUN/data/mrx/manifest.jsonl]" \
      "${ST5[@]}" >> "$RUN/logs/stage5.log" 2>&1
fi
wait $pr || { log "image decoder refinement failed: see $RUN/logs/decoder_image_*.log"; exit 1; }
wait $pv || { log "video decoder refinement failed: see $RUN/logs/decoder_video_more.log"; exit 1; }
if [[ -f "$RUN/decoders.more/video/model_index.json" ]]; then  # a kill between the two steps redoes both
  rm -rf "$RUN/decoders/video"
  mv "$RUN/decoders.more/video" "$RUN/decoders/video"
fi
rmdir "$RUN/decoders.more" 2> /dev/null || true
touch "$RUN/decoders/.video-refined"
if [[ ! -f "$RUN/decoders/.video-vae-sharpened" ]]; then  # the video decoder shares the image VAE's latents: it
  rm -rf "$RUN/decoders/video/vae"                          # takes the sharpened decoder half too (its head targets'
  cp -r "$RUN/decoders/image/vae" "$RUN/decoders/video/vae"  # cache keys change, so stage 6 recomputes them once)
  touch "$RUN/decoders/.video-vae-sharpened"
fi
unset OMP_NUM_THREADS  # the image UNet is done: stages 6-8 have both cores
if [[ ! -f "$RUN/stage6/final/config.yaml" ]]; then
  log "stage 6: in-context picture pass (+ $RUN/data/icl7, $RUN/data/img8)"
  codi2 train configs/train/mini-stage6.yaml output_dir="$RUN/stage6" model.pipeline="$RUN/stage5/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/icl7/manifest.jsonl,$RUN/data/img8/manifest.jsonl,$RUN/data/vidx/manifest.jsonl,$RUN/data/mrx/manifest.jsonl]" \
      "${ST6[@]}" >> "$RUN/logs/stage6.log" 2>&1
fi
if [[ -f "$RUN/stage7/train_config.json" ]] && grep -q '"stage": "projector_alignment"' "$RUN/stage7/train_config.json"; then
  # a run folder from before the editing pass, whose stage 7 was the video-head re-fit (now stage 8)
  log "$RUN/stage7 holds the old video-head re-fit, not the editing pass: mv $RUN/stage7 $RUN/stage7-video-head, then re-run"
  exit 1
fi
if [[ ! -f "$RUN/stage7/final/config.yaml" ]]; then
  log "stage 7: editing pass (+ $RUN/data/mr13, mr15, ed14, open12)"
  codi2 train configs/train/mini-stage7.yaml output_dir="$RUN/stage7" model.pipeline="$RUN/stage6/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/mrx/manifest.jsonl,$RUN/data/mr13/manifest.jsonl,$RUN/data/mr15/manifest.jsonl,$RUN/data/ed14/manifest.jsonl,$RUN/data/open12/manifest.jsonl]" \
      "${ST7[@]}" >> "$RUN/logs/stage7.log" 2>&1
fi
if [[ ! -f "$RUN/stage8/final/config.yaml" ]]; then
  log "stage 8: the video head re-fitted to stage 7's LLM (everything else frozen; + $RUN/data/vgen)"
  codi2 train configs/train/mini-video-head.yaml output_dir="$RUN/stage8" model.pipeline="$RUN/stage7/final" \
      "data.manifests=[$RUN/data/vgen/manifest.jsonl]" "${ST8[@]}" >> "$RUN/logs/stage8.log" 2>&1
fi
if [[ ! -f "$RUN/stage9/final/config.yaml" ]]; then
  log "stage 9: a second in-context picture pass (stage 6's mix, 2000 steps)"
  codi2 train configs/train/mini-stage9.yaml output_dir="$RUN/stage9" model.pipeline="$RUN/stage8/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/icl7/manifest.jsonl,$RUN/data/img8/manifest.jsonl,$RUN/data/vidx/manifest.jsonl,$RUN/data/mrx/manifest.jsonl]" \
      "${ST9[@]}" >> "$RUN/logs/stage9.log" 2>&1
fi
if [[ ! -f "$RUN/stage10/final/config.yaml" ]]; then
  log "stage 10: the video head re-fitted to stage 9's LLM (everything else frozen; + $RUN/data/vgen)"
  codi2 train configs/train/mini-video-head.yaml output_dir="$RUN/stage10" model.pipeline="$RUN/stage9/final" \
      "data.manifests=[$RUN/data/vgen/manifest.jsonl]" "${ST10[@]}" >> "$RUN/logs/stage10.log" 2>&1
fi
# Stages 11-14: people's words (docs/mini_model.md#peoples-words)
if [[ ! -f "$RUN/stage11/final/config.yaml" ]]; then
  log "stage 11: people's words (templates: train, icl, icl7, img8, vidx, mrx, mr15; words: gram, two, two_t, oos, oos_t, iclg, mrg)"
  codi2 train configs/train/mini-stage11.yaml output_dir="$RUN/stage11" model.pipeline="$RUN/stage10/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/icl7/manifest.jsonl,$RUN/data/img8/manifest.jsonl,$RUN/data/vidx/manifest.jsonl,$RUN/data/mrx/manifest.jsonl,$RUN/data/mr15/manifest.jsonl,$RUN/data/gram/manifest.jsonl,$RUN/data/two/manifest.jsonl,$RUN/data/two_t/manifest.jsonl,$RUN/data/oos/manifest.jsonl,$RUN/data/oos_t/manifest.jsonl,$RUN/data/iclg/manifest.jsonl,$RUN/data/mrg/manifest.jsonl]" \
      "${ST11[@]}" >> "$RUN/logs/stage11.log" 2>&1
fi
if [[ ! -f "$RUN/stage12/final/config.yaml" ]]; then
  log "stage 12: people's words, a second pass (stage 11's mix, the text phase weighted up)"
  codi2 train configs/train/mini-stage12.yaml output_dir="$RUN/stage12" model.pipeline="$RUN/stage11/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/icl7/manifest.jsonl,$RUN/data/img8/manifest.jsonl,$RUN/data/vidx/manifest.jsonl,$RUN/data/mrx/manifest.jsonl,$RUN/data/mr15/manifest.jsonl,$RUN/data/gram/manifest.jsonl,$RUN/data/two/manifest.jsonl,$RUN/data/two_t/manifest.jsonl,$RUN/data/oos/manifest.jsonl,$RUN/data/oos_t/manifest.jsonl,$RUN/data/iclg/manifest.jsonl,$RUN/data/mrg/manifest.jsonl]" \
      "${ST12[@]}" >> "$RUN/logs/stage12.log" 2>&1
fi
if [[ ! -f "$RUN/stage13/final/config.yaml" ]]; then
  log "stage 13: people's words, a short third pass (the text phase weighted up again)"
  codi2 train configs/train/mini-stage13.yaml output_dir="$RUN/stage13" model.pipeline="$RUN/stage12/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/icl7/manifest.jsonl,$RUN/data/img8/manifest.jsonl,$RUN/data/vidx/manifest.jsonl,$RUN/data/mrx/manifest.jsonl,$RUN/data/mr15/manifest.jsonl,$RUN/data/gram/manifest.jsonl,$RUN/data/two/manifest.jsonl,$RUN/data/two_t/manifest.jsonl,$RUN/data/oos/manifest.jsonl,$RUN/data/oos_t/manifest.jsonl,$RUN/data/iclg/manifest.jsonl,$RUN/data/mrg/manifest.jsonl]" \
      "${ST13[@]}" >> "$RUN/logs/stage13.log" 2>&1
fi
if [[ ! -f "$RUN/stage14/final/config.yaml" ]]; then
  log "stage 14: the video head re-fitted to stage 13's LLM (everything else frozen; + $RUN/data/vgen, vgeng)"
  codi2 train configs/train/mini-stage14.yaml output_dir="$RUN/stage14" model.pipeline="$RUN/stage13/final" \
      "data.manifests=[$RUN/data/vgen/manifest.jsonl,$RUN/data/vgeng/manifest.jsonl]" "${ST14[@]}" \
      >> "$RUN/logs/stage14.log" 2>&1
fi
if [[ ! -f "$RUN/stage15/final/config.yaml" ]]; then
  log "stage 15: under-specified requests and the second train set (stage 11's mix + open12, openg, gram2, two2, oos2, iclg2, mrg2, openg2)"
  codi2 train configs/train/mini-stage15.yaml output_dir="$RUN/stage15" model.pipeline="$RUN/stage14/final" \
      "data.manifests=[$RUN/data/train/manifest.jsonl,$RUN/data/icl/manifest.jsonl,$RUN/data/icl7/manifest.jsonl,$RUN/data/img8/manifest.jsonl,$RUN/data/vidx/manifest.jsonl,$RUN/data/mrx/manifest.jsonl,$RUN/data/mr15/manifest.jsonl,$RUN/data/gram/manifest.jsonl,$RUN/data/two/manifest.jsonl,$RUN/data/two_t/manifest.jsonl,$RUN/data/oos/manifest.jsonl,$RUN/data/oos_t/manifest.jsonl,$RUN/data/iclg/manifest.jsonl,$RUN/data/mrg/manifest.jsonl,$RUN/data/open12/manifest.jsonl,$RUN/data/openg/manifest.jsonl,$RUN/data/gram2/manifest.jsonl,$RUN/data/two2/manifest.jsonl,$RUN/data/oos2/manifest.jsonl,$RUN/data/iclg2/manifest.jsonl,$RUN/data/mrg2/manifest.jsonl,$RUN/data/openg2/manifest.jsonl]" \
      "${ST15[@]}" >> "$RUN/logs/stage15.log" 2>&1
fi
if [[ ! -f "$RUN/stage16/final/config.yaml" ]]; then
  log "stage 16: the video head re-fitted to stage 15's LLM (everything else frozen; + $RUN/data/vgen, vgeng)"
  codi2 train configs/train/mini-stage16.yaml output_dir="$RUN/stage16" model.pipeline="$RUN/stage15/final" \
      "data.manifests=[$RUN/data/vgen/manifest.jsonl,$RUN/data/vgeng/manifest.jsonl]" "${ST16[@]}" \
      >> "$RUN/logs/stage16.log" 2>&1
fi
FINAL="$RUN/stage16/final"

# ---- 4. bundle and evaluate
if [[ -f "$OUT/recipe.json" ]]; then  # before it is replaced: do the components match the bundle's, figure for figure?
  log "components against $OUT/recipe.json -> $RUN/reproduce.json"
  python -m train.mini.reproduce "$RUN" --bundle "$OUT" --out "$RUN/reproduce.json" | tee -a "$RUN/logs/reproduce.log" \
      || log "some components differ from $OUT's (see $RUN/reproduce.json); going on"
fi
log "bundle -> $OUT"
python -m train.mini.bundle "$FINAL" "$OUT" --judges "$RUN/judges" --sampling-from configs/model/mini.yaml
log "world evaluation -> $RUN/eval"
codi2 eval --suite world --model "$OUT" --data "$RUN/data/test" "$RUN/data/test_extra_t" "$RUN/data/opentest" --out "$RUN/eval" --resume "${EVAL[@]}" \
    >> "$RUN/logs/eval.log" 2>&1
grep -A40 "Mini-world targets" "$RUN/eval/report.md" || tail -n 30 "$RUN/logs/eval.log"
log "world evaluation, held-out frames -> $RUN/eval_heldout"
codi2 eval --suite world --model "$OUT" --data "$RUN/data/test_heldout" "$RUN/data/test_extra" "$RUN/data/opentest_h" --out "$RUN/eval_heldout" \
    --resume "${EVAL[@]}" >> "$RUN/logs/eval_heldout.log" 2>&1
grep -A40 "Mini-world targets" "$RUN/eval_heldout/report.md" || tail -n 30 "$RUN/logs/eval_heldout.log"
log "done: $OUT"
