#!/bin/bash
# Run a study on a Slurm cluster: one array task per job, stage by stage (train -> quantize -> eval/bits/speed ->
# report). The jobs come from the machine-readable plan (llmdiet study --list --json).
#   bash scripts/slurm_study.sh recipes/configs/reference.yaml
# Each array task runs `llmdiet study --job NAME`; a finished job is skipped (fingerprint), an interrupted one
# resumes, so re-submitting after a failure is safe. Training jobs run under `accelerate launch` (set
# TRAIN_PROCS=4 for 4 GPUs per student); the others run in one process. Adjust the #SBATCH-style options below.
set -euo pipefail
# the study's jobs of one kind (train, quantize, eval, bits), in order, read from the machine-readable plan
PICK='import json, sys; print("\n".join(j["name"] for j in json.load(sys.stdin)["jobs"] if j["kind"] == sys.argv[1]))'
jobs_of() {  # jobs_of CONFIG KIND
  llmdiet study --config "$1" --list --json | python -c "$PICK" "${2%/}"
}
if [ "${1:-}" = "--job-at" ]; then  # --job-at CONFIG KIND INDEX: the name of one array task's job
  jobs_of "$2" "$3" | sed -n "$(($4 + 1))p"
  exit 0
fi
CONFIG=${1:?usage: bash scripts/slurm_study.sh CONFIG.yaml}
TRAIN_PROCS=${TRAIN_PROCS:-1}
GPU_OPTS=${GPU_OPTS:-"--gres=gpu:${TRAIN_PROCS} --cpus-per-task=8 --time=08:00:00"}
CPU_OPTS=${CPU_OPTS:-"--cpus-per-task=8 --time=04:00:00"}

submit() {  # submit one array over the jobs of a kind; prints the Slurm job id (nothing if there are none)
  local kind=$1 opts=$2 dep=$3 launcher=$4 n
  n=$(jobs_of "$CONFIG" "$kind" | wc -l)
  [ "$n" -gt 0 ] || return 0
  # shellcheck disable=SC2086
  sbatch --parsable $opts ${dep:+--dependency=afterok:$dep} --array=0-$((n - 1)) --job-name="study-${kind%/}" \
    --wrap "JOB=\$(bash scripts/slurm_study.sh --job-at $CONFIG $kind \$SLURM_ARRAY_TASK_ID); \
            $launcher recipes/study.py --config $CONFIG --job \"\$JOB\""
}

TRAIN=$(submit train/ "$GPU_OPTS" "" "accelerate launch --num_processes $TRAIN_PROCS")
QUANT=$(submit quantize/ "$CPU_OPTS" "$TRAIN" python)
EVAL=$(submit eval/ "$CPU_OPTS" "${QUANT:-$TRAIN}" python)
BITS=$(submit bits/ "$CPU_OPTS" "$TRAIN" python)
SPEED=$(submit speed "$CPU_OPTS" "${QUANT:-$TRAIN}" python)  # one job: every model timed in interleaved rounds
DEPS=$(echo "$EVAL:$BITS:$SPEED" | sed 's/::*/:/g; s/^://; s/:$//')
sbatch --parsable $CPU_OPTS ${DEPS:+--dependency=afterok:$DEPS} --job-name=study-report \
  --wrap "llmdiet study --config $CONFIG --report"
echo "submitted: train $TRAIN, quantize ${QUANT:-none}, eval $EVAL, bits ${BITS:-none}, speed ${SPEED:-none};" \
  "STUDY.md when all finish"
