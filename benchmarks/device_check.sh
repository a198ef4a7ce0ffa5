#!/usr/bin/env bash
# One unattended run of everything that needs a GPU: correctness checks of the model on the device
# (bf16/fp16 against fp32, GradScaler, SDPA backends, one-process NCCL DDP) and the timed workloads
# of benchmarks/bench_model.py, written to ONE device_check.json and ONE device_check.md.
#
#   bash benchmarks/device_check.sh --prepare                  # here, with PyPI: fill .device/ (1.7 MiB)
#   bash benchmarks/device_check.sh --out DIR                  # on the GPU machine: ~7.5 min on one H200
#   bash benchmarks/device_check.sh --device cpu --quick --out DIR   # tiny config on a CPU, under a minute
#
# Options: --out DIR (default $OUT, else results/device_check), --device cuda|cpu (default: cuda when
# torch sees one), --quick (config/vilbert_tiny.json, bench_model.py --quick), --budget SECONDS (the
# whole run's wall-clock cap, default 500; 300 with --quick). $PYTHON picks the interpreter (default:
# python3, or .venv/bin/python when python3 has no torch). Exit code 0 whenever the report was
# written, even if checks or steps failed: the JSON records every failure.
#
# From an agent session, the device tool call is:
#   run(command="bash benchmarks/device_check.sh --out $OUT", carry=[".device"], timeout_s=540)
# and the two files come back from $OUT (device_check.json, device_check.md); the markdown is also
# the last thing printed. Run --prepare first (and only then): .device/ is git-ignored and the GPU
# machine has no network. The budget (500 s) stays under timeout_s (540 s) so that the report is
# written even if a step hangs; each step also has its own `timeout`. Where the tool grants less
# than 540 s (status: budget_left_s, less the machine's start), pass --budget (that limit - 40).
#
# --prepare downloads, for the GPU machine's Python 3.12 (torch, transformers, safetensors, numpy,
# pyyaml, tqdm, pillow, matplotlib installed; no network), the wheels of what vilbert imports and it
# lacks: lmdb (vilbert.features, at import), tensorboardX (vilbert.training.logging) and its protobuf,
# into .device/wheels; and the offline MiniLM's tokenizer files (not its 90 MB weights) into
# .device/tokenizer for the pretrain-data workload. The run pip-installs missing ones with
# --no-index --target into a scratch folder on PYTHONPATH (nothing in site-packages changes).
#
# The run, in order, each step in its own process under `timeout`, a failure recorded and the next
# step run: the environment (torch, CUDA, GPU, driver, CPUs, git commit); the offline packages; the
# four checks of benchmarks/device_checks.py; the bench_model.py workloads (GPU: the shapes of the
# issue, eager first, compiled last; --quick: `--quick --workload all` once); 12-in-1's detector
# through benchmarks/bench_detector.py (GPU: R-152-FPN 32x8d at 800x1333, before the compiled steps;
# --quick: a tiny one). The report is rewritten after every step, so a run cut short still leaves one.

set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

MODE=run DEVICE="" QUICK=0 OUT_DIR="${OUT:-}" BUDGET=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) MODE=prepare ;;
        --device) DEVICE="${2:?--device needs cpu or cuda}"; shift ;;
        --device=*) DEVICE="${1#*=}" ;;
        --quick) QUICK=1 ;;
        --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
        --out=*) OUT_DIR="${1#*=}" ;;
        --budget) BUDGET="${2:?--budget needs seconds}"; shift ;;
        --budget=*) BUDGET="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "device_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

DEVICE_DIR="$REPO/.device"
PACKAGES=(lmdb tensorboardX protobuf)  # as OFFLINE_PACKAGES in device_checks.py

prepare() {
    # The local venv: it has pip, PyPI (or its mirror) and the offline MiniLM whose tokenizer we copy.
    local py="${PYTHON:-$REPO/.venv/bin/python}"
    rm -rf "$DEVICE_DIR/wheels" "$DEVICE_DIR/tokenizer"
    mkdir -p "$DEVICE_DIR/wheels" "$DEVICE_DIR/tokenizer" || return 1
    # The versions the tests ran with here, where installed; else the newest.
    local specs=() pkg version
    for pkg in "${PACKAGES[@]}"; do
        version="$("$py" -c "from importlib.metadata import version; print(version('$pkg'))" 2>/dev/null)"
        specs+=("$pkg${version:+==$version}")
    done
    echo "downloading ${specs[*]} for CPython 3.12 manylinux x86_64"
    "$py" -m pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
        --no-deps --dest "$DEVICE_DIR/wheels" "${specs[@]}" || { echo "pip download failed" >&2; return 1; }
    local minilm
    minilm="$("$py" -c "import vilbert.offline as o; print(o.minilm_path())")" \
        || { echo "no offline MiniLM" >&2; return 1; }
    local name
    # config.json (600 bytes) too: AutoTokenizer reads the model type from it.
    for name in vocab.txt tokenizer.json tokenizer_config.json special_tokens_map.json config.json; do
        [ -f "$minilm/$name" ] && cp "$minilm/$name" "$DEVICE_DIR/tokenizer/"
    done
    local bytes
    bytes="$(du -sb "$DEVICE_DIR" | cut -f1)"
    ls -l "$DEVICE_DIR/wheels" "$DEVICE_DIR/tokenizer"
    echo ".device/: $((bytes / 1024)) KiB (carry limit 64 MiB)"
    if [ "$bytes" -gt $((50 * 1024 * 1024)) ]; then
        echo "device_check.sh: .device/ is over 50 MiB, too close to the carry limit" >&2
        return 1
    fi
}

if [ "$MODE" = prepare ]; then
    prepare
    exit $?
fi

# -- the run -----------------------------------------------------------------------------------

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif python3 -c "import torch" >/dev/null 2>&1; then
    PY=python3
elif [ -x "$REPO/.venv/bin/python" ]; then
    PY="$REPO/.venv/bin/python"
else
    PY=python3
fi
OUT_DIR="${OUT_DIR:-$REPO/results/device_check}"
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")" || exit 2
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs" "$WORK/bench" "$WORK/site"
export PYTHONPATH="$REPO:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ -z "$DEVICE" ]; then
    DEVICE="$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)"
fi
if [ "$DEVICE" = cpu ] && [ "$QUICK" = 0 ]; then
    echo "device_check.sh: the full plan is sized for one H200; on a CPU add --quick" >&2
    exit 2
fi
if [ "$DEVICE" = cpu ]; then
    # One thread a process: on a shared 2-core machine two OpenMP threads fighting another job for
    # a core made the tiny pretraining step 40x slower (3.2 s instead of 87 ms).
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
fi
if [ -z "$BUDGET" ]; then
    if [ "$QUICK" = 1 ]; then BUDGET=300; else BUDGET=500; fi
fi
QUICK_FLAG=()
[ "$QUICK" = 1 ] && QUICK_FLAG=(--quick)
BERT=()
[ -f "$DEVICE_DIR/tokenizer/vocab.txt" ] && BERT=(--bert_model "$DEVICE_DIR/tokenizer")

START="$(date +%s)"
RESERVE=5     # seconds kept for the last report
MIN_STEP=15   # a step with less time than this left is skipped, not started

seconds_left() { echo $((START + BUDGET - RESERVE - $(date +%s))); }

write_report() {
    "$PY" benchmarks/device_checks.py report --work "$WORK" --out "$OUT_DIR" --device "$DEVICE" \
        --budget "$BUDGET" ${QUICK_FLAG[@]+"${QUICK_FLAG[@]}"} "$@" \
        || echo "device_check.sh: the report could not be written with $PY" >&2
}

# run_step NAME KIND LIMIT_S ESTIMATE_S COMMAND...: run COMMAND under `timeout` (LIMIT_S, cut to the
# budget left), its output in the work folder, one line in steps.tsv; then rewrite the report.
run_step() {
    local name="$1" kind="$2" limit="$3" estimate="$4"
    shift 4
    local left
    left="$(seconds_left)"
    if [ "$left" -lt "$MIN_STEP" ]; then
        echo "[device_check] $name: skipped, ${left}s of the budget left"
        printf '%s\t%s\tskipped\t0\t0\t%s\t%s\n' "$name" "$kind" "$estimate" "$*" >>"$WORK/steps.tsv"
        write_report
        return
    fi
    [ "$left" -lt "$limit" ] && limit="$left"
    echo "[device_check] $name (limit ${limit}s, estimate ${estimate}s)"
    local t0 t1 rc
    t0="$(date +%s.%N)"
    timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    t1="$(date +%s.%N)"
    local seconds
    seconds="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$rc" "$seconds" "$limit" "$estimate" "$*" \
        >>"$WORK/steps.tsv"
    if [ "$rc" -eq 0 ]; then
        grep -E '^(precision|gradscaler|sdpa|ddp): |\(ours\): ' "$WORK/logs/$name.log" | sed 's/^/    /'
        echo "    ok in ${seconds}s"
    else
        echo "    rc=$rc after ${seconds}s$( [ "$rc" -eq 124 ] && echo ' (timeout)'); last lines:"
        tail -n 20 "$WORK/logs/$name.log" | sed 's/^/    | /'
    fi
    write_report
}

check() {  # check NAME LIMIT ESTIMATE
    run_step "check_$1" check "$2" "$3" "$PY" benchmarks/device_checks.py check "$1" --device "$DEVICE" \
        ${QUICK_FLAG[@]+"${QUICK_FLAG[@]}"} --out "$WORK/checks.jsonl"
}

bench() {  # bench NAME LIMIT ESTIMATE ARGS...: one bench_model.py run, its rows in bench/NAME.jsonl
    local name="$1" limit="$2" estimate="$3"
    shift 3
    run_step "$name" bench "$limit" "$estimate" "$PY" benchmarks/bench_model.py --device "$DEVICE" \
        --json "$WORK/bench/$name.jsonl" "$@"
}

bench_detector() {  # bench_detector NAME LIMIT ESTIMATE ARGS...: one bench_detector.py run (12-in-1's detector)
    local name="$1" limit="$2" estimate="$3"
    shift 3
    run_step "$name" bench "$limit" "$estimate" "$PY" benchmarks/bench_detector.py --device "$DEVICE" \
        --json "$WORK/bench/$name.jsonl" "$@"
}

echo "[device_check] $DEVICE$([ "$QUICK" = 1 ] && echo ', quick'), python $PY, budget ${BUDGET}s, out $OUT_DIR"

# Estimates (seconds, one H200, 16 cores) include each process's start: importing torch, CUDA
# context, building a 239 M-parameter model (~10 s). Eager bench steps: 3 warm-up + 10 timed steps
# plus one FLOP-counted step. GPU total ~450 s (7.5 min): setup 10, checks 80, eager bench 170,
# the detector 30, compiled bench 160.
run_step env setup 60 5 "$PY" benchmarks/device_checks.py env --out "$WORK/env.json"                 # ~5 s
run_step install setup 120 5 "$PY" benchmarks/device_checks.py install --wheels "$DEVICE_DIR/wheels" \
    --target "$WORK/site"                                                                             # ~5 s

check precision 90 20    # two models, fp32 + bf16 + fp16 forwards at batch 32: ~20 s
check gradscaler 90 20   # 7 fp16 train_steps at batch 32, weight snapshots: ~20 s
check sdpa 90 20         # 4 backends x 3 dtypes x 2 modes x 3 shapes at batch 64, 4 profiled calls: ~20 s
check ddp 90 20          # NCCL init, two forward/backward + two train_steps at batch 16: ~20 s

if [ "$QUICK" = 1 ]; then
    # tiny config, the 7 workloads, batch 2: ~30 s on a CPU
    bench bench_quick 240 30 --quick --workload all ${BERT[@]+"${BERT[@]}"}
    # a tiny detector of 12-in-1's structure, batch 2 of 80x120 images: ~8 s on a CPU
    bench_detector extract_vmb_quick 120 10 --quick
else
    bench pretrain_bf16 120 20 --workload pretrain --precision bf16 --batch 256                       # ~20 s
    bench pretrain_fp32 120 30 --workload pretrain --precision fp32 --batch 256                       # ~30 s
    bench pretrain_fp16 120 20 --workload pretrain --precision fp16 --batch 256                       # ~20 s
    bench score_bf16_b500 90 15 --workload score --precision bf16 --batch 500                         # ~15 s
    bench score_bf16_b1000 90 15 --workload score --precision bf16 --batch 1000                       # ~15 s
    bench vqa_bf16 120 20 --workload vqa --precision bf16 --batch 256                                 # ~20 s
    # writes a 512-record store (~270 MB), then the real dataset and loader with 12 workers: ~50 s
    bench pretrain_data_bf16 150 50 --workload pretrain-data --precision bf16 --batch 256 \
        --num_workers 12 ${BERT[@]+"${BERT[@]}"}
    # 12-in-1's detector (R-152-FPN 32x8d, random weights, fp32): 5 batches of 4 images of 800x1333,
    # selection included; building the 200 M-parameter model twice on the CPU is most of it: ~30 s
    bench_detector extract_vmb_x152 120 30 --config x152 --batch 4 --steps 5 --size 800x1333
    # Compiled last: the slowest and least certain (Inductor compiles the forward and backward, then
    # once more when a second batch's target count makes shapes dynamic).
    bench pretrain_bf16_compile 200 90 --workload pretrain --precision bf16 --batch 256 --compile      # ~90 s
    bench vqa_bf16_compile 180 70 --workload vqa --precision bf16 --batch 256 --compile               # ~70 s
fi

echo
echo "[device_check] done in $(($(date +%s) - START))s; $OUT_DIR/device_check.json and device_check.md:"
echo
write_report --print
exit 0
