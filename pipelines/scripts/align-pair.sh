#!/bin/bash
# Stand-in for a paired-end aligner (bwa mem, say). The mates arrive only in the
# environment, never in this text: SLURM_TRIGGER_MEMBER_R1 and _R2 are their keys.
# This file is a template too: shell variables here are upper case.
set -euo pipefail
stage() {  # where the job reads object $1: the bucket mounted at DATA, else a copy from S3
  if [[ -n ${DATA:-} ]]; then printf '%s/%s\n' "$DATA" "$1"; return; fi
  local DEST=${TMPDIR:-/tmp}/st-$SLURM_JOB_ID/${1##*/}; mkdir -p "${DEST%/*}"
  aws s3 cp --only-show-errors "s3://$SLURM_TRIGGER_BUCKET/$1" "$DEST" && printf '%s\n' "$DEST"
}
R1=$(stage "$SLURM_TRIGGER_MEMBER_R1")
R2=$(stage "$SLURM_TRIGGER_MEMBER_R2")
mkdir -p "$RESULTS"
echo "aligning pair $SLURM_TRIGGER_SET: $R1 and $R2 against $REFERENCE"
printf '%s\n' "$SLURM_TRIGGER_MEMBERS" > "$RESULTS/${SLURM_JOB_ID}.pair"
echo "done: job $SLURM_JOB_ID for $SLURM_TRIGGER_IDEMPOTENCY_KEY"
