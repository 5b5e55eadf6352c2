#!/bin/bash
# Stand-in for aligning one sample of a run: array task i aligns member i, an R1
# file; its R2 is beside it (the run's marker says every file is in).
set -euo pipefail
stage() {  # where the job reads object $1: the bucket mounted at DATA, else a copy from S3
  if [[ -n ${DATA:-} ]]; then printf '%s/%s\n' "$DATA" "$1"; return; fi
  local DEST=${TMPDIR:-/tmp}/st-$SLURM_JOB_ID/${1##*/}; mkdir -p "${DEST%/*}"
  aws s3 cp --only-show-errors "s3://$SLURM_TRIGGER_BUCKET/$1" "$DEST" && printf '%s\n' "$DEST"
}
V=SLURM_TRIGGER_MEMBER_$SLURM_ARRAY_TASK_ID
KEY=${!V}
R1=$(stage "$KEY")
R2=$(stage "${KEY%_R1_001.fastq.gz}_R2_001.fastq.gz")
mkdir -p "$RESULTS"
echo "task $SLURM_ARRAY_TASK_ID of $SLURM_TRIGGER_MEMBER_COUNT: aligning $R1 and $R2 against $REFERENCE"
printf '%s\n' "$KEY" > "$RESULTS/${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.sample"
