#!/bin/bash
# Stand-in for an aligner: everything it needs arrives as SLURM_TRIGGER_* variables.
# This file is a template too: a dollar sign and a lower-case name in braces is a
# template variable, so shell variables here are upper case.
set -euo pipefail
READS=$SLURM_TRIGGER_S3_URI
case $SLURM_TRIGGER_KEY in
  *_R1.fastq.gz) MATE=${READS%_R1.fastq.gz}_R2.fastq.gz ;;
  *) MATE= ;;
esac
echo "aligning ${READS} ${MATE:+and ${MATE} }against ${REFERENCE}"
echo "version: ${SLURM_TRIGGER_VERSION_ID:-unversioned}"
printf '%s' "$SLURM_TRIGGER_KEY" | sha256sum
sleep 1
echo "done: job ${SLURM_JOB_ID:-?} for ${SLURM_TRIGGER_IDEMPOTENCY_KEY}"
