#!/usr/bin/env bash
# One unattended GPU check, within 10 minutes on one GPU: run it whenever a GPU is lent and record
# its summary in benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with one CUDA GPU
#   bash benchmarks/gpu_check.sh --dry-run       # the same parts on the CPU, tiny (tests the script)
#   PYTHON=.venv/bin/python LOG_DIR=/tmp/gc bash benchmarks/gpu_check.sh
#
# Parts, each with its own timeout (seconds; 575 in all), its output in $LOG_DIR/<part>.log:
#   versions      GPU, driver, torch, CUDA, Triton                                            20
#   triton        tests/neurons/fused/triton_gpu_checks.py --quick: the first-use check, the
#                 compiled kernels against the eager loop (delta_T = 0.37), recurrent layers,
#                 bf16 autocast, the cuda:1 guard with two GPUs                                240
#   benchmark     benchmarks/bench_gpu.py --quick: Linear + LIF / AdEx (N = 4096), recurrent
#                 AdEx (N = 256), the default training step; triton against python (speed,
#                 peak memory, outputs), norse/snntorch/spikingjelly where installed          150
#   store_recall  experiment=store_recall_adex, 20 batches of one epoch (the recurrent path)    90
#   bf16_mixed    trainer.precision=bf16-mixed on model=radex with a Linear between two
#                 recurrent layers (the issue's failing case), 10 batches                      75
# A part that fails or runs out of time does not stop the others. Ends with a summary table
# (part, status, seconds, the log's last line); exits 1 if any part did not pass.
#
# --dry-run: the CPU, Triton's interpreter (TRITON_INTERPRET=1) for the triton part (its
# --interpret mode), the benchmark with --device cpu at tiny sizes, fast_dev_run trainings: what
# tests/test_benchmarks.py runs, so the script itself is tested where no GPU is.
# PARTS="versions benchmark" runs only those parts.

set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's snn, installed or not
PYTHON=${PYTHON:-python}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t gpu_check.XXXXXX)}
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
  esac
done
mkdir -p "$LOG_DIR"
PARTS=${PARTS:-"versions triton benchmark store_recall bf16_mixed"}

declare -a SUMMARY=()

# run_part NAME TIMEOUT COMMAND...: runs COMMAND under `timeout`, its output to $LOG_DIR/NAME.log
# (and to the screen), and records the status.
run_part() {
  local name=$1 limit=$2
  shift 2
  case " $PARTS " in *" $name "*) ;; *) return ;; esac
  echo "=== $name (timeout ${limit}s): $*"
  local start=$SECONDS status
  timeout --kill-after=10 "$limit" "$@" > "$LOG_DIR/$name.log" 2>&1
  local rc=$?
  cat "$LOG_DIR/$name.log"
  if [ $rc -eq 0 ]; then status=ok
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMEOUT after ${limit}s"
  else status="FAILED (exit $rc)"
  fi
  local last
  last=$(grep -v '^\s*$' "$LOG_DIR/$name.log" | tail -n 1 | cut -c1-80)
  SUMMARY+=("| $name | $status | $((SECONDS - start)) | ${last//|/\/} |")
}

if [ $DRY -eq 1 ]; then
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
  TRAIN_COMMON=(trainer.accelerator=cpu debug=fdr)
  run_part versions 20 "$PYTHON" -c "import torch, triton; print('dry run on the CPU: torch', torch.__version__, \
'CUDA', torch.version.cuda, 'triton', triton.__version__)"
  run_part triton 240 "$PYTHON" tests/neurons/fused/triton_gpu_checks.py --interpret --quick
  run_part benchmark 150 "$PYTHON" benchmarks/bench_gpu.py --device cpu --quick --cases lif recurrent \
    --sizes 64 --recurrent-sizes 16 --steps 6 --batch 2 --budget 0 --backends triton python
  run_part store_recall 90 "$PYTHON" train.py experiment=store_recall_adex "${TRAIN_COMMON[@]}" \
    dataset.T=100 dataset.task.frame_ms=10 model.decoder_steps=10 model.hidden=[16] \
    "hydra.run.dir=$LOG_DIR/store_recall_run"
  run_part bf16_mixed 75 "$PYTHON" train.py model=radex dataset=store_recall model.feedforward=true \
    "model.hidden=[16,16]" dataset.T=100 dataset.task.frame_ms=10 trainer.precision=bf16-mixed \
    "${TRAIN_COMMON[@]}" "hydra.run.dir=$LOG_DIR/bf16_mixed_run"
else
  TRAIN_COMMON=(trainer=gpu trainer.max_epochs=1 trainer.limit_val_batches=4 trainer.limit_test_batches=4)
  run_part versions 20 bash -c "nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv; \
$PYTHON -c \"import torch, triton; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', \
triton.__version__, torch.cuda.device_count(), 'GPU(s):', torch.cuda.get_device_name())\""
  run_part triton 240 "$PYTHON" tests/neurons/fused/triton_gpu_checks.py --quick
  run_part benchmark 150 "$PYTHON" benchmarks/bench_gpu.py --quick --backends triton python
  run_part store_recall 90 "$PYTHON" train.py experiment=store_recall_adex "${TRAIN_COMMON[@]}" \
    trainer.limit_train_batches=20 "hydra.run.dir=$LOG_DIR/store_recall_run"
  run_part bf16_mixed 75 "$PYTHON" train.py model=radex dataset=store_recall model.feedforward=true \
    "model.hidden=[128,128]" trainer.precision=bf16-mixed "${TRAIN_COMMON[@]}" trainer.limit_train_batches=10 \
    "hydra.run.dir=$LOG_DIR/bf16_mixed_run"
fi

echo
echo "## gpu_check summary ($([ $DRY -eq 1 ] && echo 'dry run, CPU' || echo GPU); logs in $LOG_DIR)"
echo "| part | status | seconds | last line |"
echo "| --- | --- | --- | --- |"
failed=0
for row in "${SUMMARY[@]}"; do
  echo "$row"
  case "$row" in *"| ok |"*) ;; *) failed=1 ;; esac
done
exit $failed
