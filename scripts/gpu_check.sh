#!/usr/bin/env bash
# The checks that need an NVIDIA GPU (CI has none): the backends' tests with torch, JAX and CuPy on
# the GPU, a few probes of the libraries' GPU kernels, and `npgpt bench` there.
#
#   OUT=results/ bash scripts/gpu_check.sh            # everything, about 8 minutes
#
# First run (an H200, docs/benchmarks.md): tests 80 s, probe 20 s, bench-torch 70 s.
#   PARTS="tests probe" OUT=results/ bash scripts/gpu_check.sh
#
# Run from the repository root, with torch, jax and cupy (CUDA builds) and transformers installed;
# npgpt is used from this checkout (PYTHONPATH), not installed. Every part has its own time limit,
# so one that hangs cannot take the others' time; results land in $OUT.
set -u
OUT=${OUT:-/tmp/npgpt-gpu-check}
PARTS=${PARTS:-"tests probe bench-torch bench-jax-cupy"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python=${PYTHON:-python3}

nvidia-smi -L 2>&1 | tee "$OUT/env.txt"
$python - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import sys, numpy, torch, jax, cupy, transformers
print("python", sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__,
      "cuda", torch.cuda.is_available(), "jax", jax.__version__, jax.devices(), "cupy", cupy.__version__,
      "transformers", transformers.__version__)
EOF

for part in $PARTS; do
    echo "=== $part ($(date +%T))"
    case $part in
    tests)
        # Each pytest worker is its own process: JAX must not take 75 % of the GPU's memory in each.
        XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "${TEST_S:-170}" $python -m pytest -q -p no:cacheprovider \
            -n "${WORKERS:-8}" --timeout 120 -v -m "not slow" -rfE --tb=short ${TESTS:-tests/test_backends.py tests/test_int8.py \
            tests/test_model.py tests/test_api.py tests/test_grad.py tests/test_generate.py} \
            --junitxml "$OUT/tests.xml" >"$OUT/tests.txt" 2>&1
        echo "pytest rc=$?"
        grep -E "FAILED|ERROR|passed|failed" "$OUT/tests.txt" | tail -40
        ;;
    probe)
        timeout 60 $python scripts/gpu_probe.py 2>&1 | tee "$OUT/probe.txt"
        ;;
    bench-torch)
        timeout "${BENCH_S:-200}" $python -m npgpt bench --random --backend torch --compare hf \
            --dtype float32,float16,bfloat16,int8 --precision --new-tokens 64 --baseline-tokens 0 \
            --json >"$OUT/bench_torch.json" 2>"$OUT/bench_torch.err"
        echo "bench rc=$?"
        tail -5 "$OUT/bench_torch.err"
        ;;
    bench-jax-cupy)
        # XLA compiles a program per prompt-length bucket and batch: fewer of them than torch's run, or
        # the three JAX engines alone outlast 160 s (H200, first run).
        timeout "${BENCH_S:-200}" $python -m npgpt bench --random --backend jax,cupy \
            --dtype float32,float16,bfloat16 --batch 1,8 --prompt-len 128 --new-tokens 64 --baseline-tokens 0 \
            --json >"$OUT/bench_jax_cupy.json" 2>"$OUT/bench_jax_cupy.err"
        echo "bench rc=$?"
        tail -5 "$OUT/bench_jax_cupy.err"
        ;;
    *) echo "unknown part $part" ;;
    esac
done
