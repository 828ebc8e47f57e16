#!/usr/bin/env bash
# Runs one training job on every host of a Cloud TPU VM pod slice (e.g. v4-32, v5e-64).
#
#   TPU_NAME=my-pod ZONE=us-central2-b bash launch/tpu_pod.sh \
#       --config=configs/esc50.py:backbone=envnetv2,strategy=intermix,fold=1 --workdir=/mnt/shared/runs/esc50-f1
#
# Every host clones/updates the same revision of this repo, installs it with JAX's TPU wheels, and runs the same
# command; jax.distributed.initialize() (--distributed) discovers the pod topology by itself. Each host reads its
# own shard of the data; process 0 writes logs, summaries and reports; checkpoints are written collectively by
# orbax, so the workdir must be a filesystem path every host sees (a gcsfuse or Filestore mount; gs:// URLs are
# not supported for the workdir). Prepare datasets once beforehand into a shared --config.data_dir on that mount
# (docs/scaling.md, "TPU pods").
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU zone}"
REPO_URL="${REPO_URL:-$(git config --get remote.origin.url)}"
REV="${REV:-$(git rev-parse HEAD)}"
PROJECT_FLAG=()
[ -n "${PROJECT:-}" ] && PROJECT_FLAG=(--project="$PROJECT")
ARGS=$(printf '%q ' "$@")
REMOTE=$(cat <<EOS
set -euo pipefail
if [ ! -d ~/intermix_jax ]; then git clone -q "$REPO_URL" ~/intermix_jax; fi
cd ~/intermix_jax && git fetch -q && git checkout -q "$REV"
python3 -m venv ~/intermix_venv && . ~/intermix_venv/bin/activate
pip install -q -U pip && pip install -q -e . && pip install -q -U "jax[tpu]"
python -m intermix_jax.main --distributed $ARGS
EOS
)
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$REMOTE"
