#!/usr/bin/env bash
# Trains the bundled demo models (models/digits-image, models/spoken-digits-audio,
# models/wordnet-text, models/spoken-commands-ctc) with d2v's own `pretrain` and `finetune`, on the
# demo data of `d2v data`. For each: pretrain on the whole training split (labels and transcripts
# unused), fine-tune (classifiers: on a small labelled subset; the speech recognizer `ctc`: on the
# transcripts, with CTC), and fine-tune the same model from scratch with the identical command (minus
# --init) as the baseline recorded in the shipped checkpoint's provenance. See docs/demo-models.md.
#
#   scripts/train_demo_models.sh                  # everything (about 1 h 20 min on 2 idle CPU cores)
#   scripts/train_demo_models.sh image audio ctc  # some of them
#
# Environment: RUNS (default runs/demo), DATA (default data), D2V (default: d2v on PATH or .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/demo}
DATA=${DATA:-data}
if [ -z "${D2V:-}" ]; then
  if command -v d2v >/dev/null 2>&1; then D2V=d2v; else D2V=.venv/bin/d2v; fi
fi
MODALITIES=("$@")
[ ${#MODALITIES[@]} -gt 0 ] || MODALITIES=(image audio text ctc)

declare -A DATASET=([image]=digits [audio]=spoken-digits [text]=wordnet [ctc]=spoken-commands)
for modality in "${MODALITIES[@]}"; do
  dataset=${DATASET[$modality]:-}
  [ -z "$dataset" ] || [ -d "$DATA/$dataset" ] || $D2V data --out "$DATA" --only "$dataset"
done

ship() {  # ship <finetune run> <model name>
  rm -rf "models/$2"
  mkdir -p models
  cp -r "$1/best" "models/$2"
  echo "shipped models/$2: $(python3 -c "import json,sys; m=json.load(open('models/$2/config.json'))['provenance']; \
print('test accuracy %.1f%%, from scratch %.1f%%' % (100*m['metrics']['test_accuracy'], 100*m['baseline']['test_accuracy']))")"
}

ship_recognizer() {  # ship_recognizer <finetune run> <model name>
  rm -rf "models/$2"
  mkdir -p models
  cp -r "$1/best" "models/$2"
  echo "shipped models/$2: $(python3 -c "import json,sys; m=json.load(open('models/$2/config.json'))['provenance']; \
print('test WER %.1f%% CER %.1f%%, from scratch WER %.1f%% CER %.1f%%' % (100*m['metrics']['test_wer'], \
100*m['metrics']['test_cer'], 100*m['baseline']['test_wer'], 100*m['baseline']['test_cer']))")"
}

for modality in "${MODALITIES[@]}"; do
  case $modality in
  image)
    rm -rf "$RUNS"/digits-*
    # digits: 8x8 digits fill the frame and are not mirror-symmetric, so milder crops and no flips
    $D2V pretrain --modality image --data "$DATA/digits" --out "$RUNS/digits-pretrain" --steps 800 --batch-size 16 \
      --crop-scale-min 0.6 --hflip false --ema-decay 0.99 --ema-end-decay 0.999 --ema-anneal-end-step 800 \
      --progress false
    FT=(--data "$DATA/digits" --labels-per-class 10 --epochs 40 --batch-size 16 --crop-scale-min 0.8 --hflip false
        --progress false)
    $D2V finetune --modality image --out "$RUNS/digits-scratch" "${FT[@]}"
    $D2V finetune --init "$RUNS/digits-pretrain/final" --out "$RUNS/digits-finetune" "${FT[@]}" \
      --name digits-image --save-dtype float16 --baseline "$RUNS/digits-scratch"
    ship "$RUNS/digits-finetune" digits-image
    ;;
  audio)
    rm -rf "$RUNS"/speech-*
    $D2V pretrain --modality audio --data "$DATA/spoken-digits" --out "$RUNS/speech-pretrain" --steps 600 \
      --batch-size 16 --ema-decay 0.99 --ema-end-decay 0.999 --ema-anneal-end-step 600 --progress false
    # the clips are trimmed (d2v data); --trim-silence records that in the checkpoint, so the server trims its inputs too
    FT=(--data "$DATA/spoken-digits" --labels-per-class 10 --epochs 40 --batch-size 16 --trim-silence true --progress false)
    $D2V finetune --modality audio --out "$RUNS/speech-scratch" "${FT[@]}"
    $D2V finetune --init "$RUNS/speech-pretrain/final" --out "$RUNS/speech-finetune" "${FT[@]}" \
      --name spoken-digits-audio --save-dtype float16 --baseline "$RUNS/speech-scratch"
    ship "$RUNS/speech-finetune" spoken-digits-audio
    ;;
  text)
    rm -rf "$RUNS"/text-*
    # pretrain on the training split's glosses (labels unused; the tokenizer is trained on them too);
    # mean pooling instead of the reference's first-token head (docs/demo-models.md explains both)
    $D2V pretrain --modality text --data "$DATA/wordnet" --splits train --out "$RUNS/text-pretrain" --steps 1200 \
      --batch-size 32 --max-tokens 64 --lr 1e-3 --ema-decay 0.99 --ema-end-decay 0.999 --ema-anneal-end-step 1200 \
      --progress false
    FT=(--data "$DATA/wordnet" --labels-per-class 50 --epochs 20 --batch-size 32 --lr 1e-3 --max-tokens 64
        --head mean_pool --progress false)
    $D2V finetune --modality text --tokenizer "$RUNS/text-pretrain/tokenizer.model" --out "$RUNS/text-scratch" "${FT[@]}"
    $D2V finetune --init "$RUNS/text-pretrain/final" --out "$RUNS/text-finetune" "${FT[@]}" \
      --name wordnet-text --save-dtype float16 --baseline "$RUNS/text-scratch"
    ship "$RUNS/text-finetune" wordnet-text
    ;;
  ctc)
    rm -rf "$RUNS"/commands-*
    # pretrain on the transcribed set's training clips (transcripts unused), the audio recipe above
    $D2V pretrain --modality audio --data "$DATA/spoken-commands" --out "$RUNS/commands-pretrain" --steps 600 \
      --batch-size 16 --ema-decay 0.99 --ema-end-decay 0.999 --ema-anneal-end-step 600 --progress false
    # CTC with the reference recipe (tri-stage, frozen extractor, layerdrop, channel masks); for the tiny model,
    # 2,240 clips of 0.9 s and a CPU: lr 2e-3, 4,000 updates, and time masks of half the reference's span and
    # rate (docs/demo-models.md); the clips are trimmed, and --trim-silence makes the server trim too
    FT=(--task ctc --data "$DATA/spoken-commands" --steps 4000 --batch-size 16 --lr 2e-3 --mask-prob 0.25
        --mask-length 5 --val-every 400 --trim-silence true --progress false)
    $D2V finetune --modality audio --out "$RUNS/commands-scratch" "${FT[@]}"
    $D2V finetune --init "$RUNS/commands-pretrain/final" --out "$RUNS/commands-finetune" "${FT[@]}" \
      --name spoken-commands-ctc --save-dtype float16 --baseline "$RUNS/commands-scratch"
    ship_recognizer "$RUNS/commands-finetune" spoken-commands-ctc
    ;;
  *) echo "unknown model $modality (image, audio, text, ctc)" >&2; exit 2 ;;
  esac
done
