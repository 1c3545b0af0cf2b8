#!/usr/bin/env bash
# Rebuild napari_radreport/demo_model from nothing on this machine's CPU, then score it on held-out phantoms.
# The model card's figures come from this script. WORK (default build/demo-model) holds phantoms and runs.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-build/demo-model}
BIN=${BIN:-.venv/bin}
MODEL=napari_radreport/demo_model
DATA=$WORK/phantoms/manifest.jsonl

[ -f "$DATA" ] || "$BIN/radreport" phantoms "$WORK/phantoms" --count 2400 --seed 0 --quiet
# 0a. the encoder's conv stem learns nodules from patches at their positions (image labels alone never taught it)
"$BIN/radreport" train --stage candidates --recipe radreport-demo-phantom --manifest "$DATA" --out "$WORK/candidates" \
    --quiet
# 0b. the encoder and perceiver learn the six labels on top of that stem (kept frozen from here on), so the decoder
#     meets features that already tell the findings apart (without this the small findings stay at the prior)
"$BIN/radreport" train --stage labels --recipe radreport-demo-phantom --encoder "$WORK/candidates" --manifest "$DATA" \
    --out "$WORK/labels" --quiet
# 1. short image-bound answers (diagnosis, questions) first: the decoder cannot lower the loss without the image
"$BIN/radreport" train --recipe radreport-demo-phantom --encoder "$WORK/labels" --manifest "$DATA" \
    --out "$WORK/stage1-questions" --tasks diagnosis qa --epochs 2 --quiet
# 2. reports in every step, with the diagnosis questions beside them (8 texts: a study's two reports and six labels);
#    the recipe's prompt.report_guidance names the study's true labels after each report request, as the engine
#    names its own diagnosis
"$BIN/radreport" train --recipe radreport-demo-phantom --init "$WORK/stage1-questions" --manifest "$DATA" \
    --out "$WORK/stage1-reports" --tasks findings impression diagnosis --texts-per-image 8 --epochs 3 --quiet
# 3. everything, 8 texts per study, so the questions come back beside the reports
"$BIN/radreport" train --recipe radreport-demo-phantom --init "$WORK/stage1-reports" --manifest "$DATA" \
    --out "$WORK/stage1-final" --tasks findings impression qa diagnosis --texts-per-image 8 --epochs 4 --quiet
# 4. questions and reports, two epochs at a third of the lr: every question comes up about twice per study (in
#    step 3 the diagnosis questions and reports take most of the 8 texts). Questions alone here made the Findings
#    of studies whose only finding is cardiomegaly the single word "enlarged" (the heart-size answer)
"$BIN/radreport" train --recipe radreport-demo-phantom --init "$WORK/stage1-final" --manifest "$DATA" \
    --out "$WORK/stage1-last" --tasks findings impression qa --texts-per-image 8 --epochs 2 --lr 1e-4 --quiet
# 5. the grounding head (the model frozen) learns where each finding sentence is from the phantoms' masks
"$BIN/radreport" train --stage grounding --init "$WORK/stage1-last" --manifest "$DATA" --out "$WORK/grounding" \
    --epochs 3 --lr 3e-3 --quiet
# the model card stays; the weights, config and tokenizer are replaced
mkdir -p "$MODEL"
cp "$WORK/grounding"/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} "$MODEL/"
echo "trained in $SECONDS s"
"$BIN/radreport" eval --preset phantom --model "$MODEL" --manifest "$DATA" --split test --out "$WORK/eval-test.json"
