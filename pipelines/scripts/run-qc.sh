#!/bin/bash
# Stand-in for a run's aggregate QC (MultiQC, say): after every align task, whatever
# their outcome (afterany), over what they wrote.
set -euo pipefail
echo "QC of run $SLURM_TRIGGER_SET: $SLURM_TRIGGER_MEMBER_COUNT samples"
cat "$RESULTS"/*.sample 2>/dev/null | sort | uniq -c || true
