#!/bin/bash
# Stand-in for a multi-band composite: one job sees the scan's 16 bands, in order.
set -euo pipefail
stage() {  # where the job reads object $1: the bucket mounted at DATA, else a copy from S3
  if [[ -n ${DATA:-} ]]; then printf '%s/%s\n' "$DATA" "$1"; return; fi
  local DEST=${TMPDIR:-/tmp}/st-$SLURM_JOB_ID/${1##*/}; mkdir -p "${DEST%/*}"
  aws s3 cp --only-show-errors "s3://$SLURM_TRIGGER_BUCKET/$1" "$DEST" && printf '%s\n' "$DEST"
}
mkdir -p "$RESULTS"
mapfile -t KEYS <<< "$SLURM_TRIGGER_MEMBERS"
for KEY in "${KEYS[@]}"; do
  echo "band: $(stage "$KEY")"
done
printf '%s\n' "$SLURM_TRIGGER_MEMBERS" > "$RESULTS/${SLURM_JOB_ID}.bands"
echo "composite of ${#KEYS[@]} bands for $SLURM_TRIGGER_SET"
