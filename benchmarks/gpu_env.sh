# Sourced by the GPU scripts: the device image has torch, torchvision, pytorch-lightning and
# torchmetrics but not the rest of the stack, which benchmarks/gpu_prepare.sh carried in .whl/.
# Sets PY (the interpreter) and PYTHONPATH.
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  # Bytecode once, on every core: where PYTHONDONTWRITEBYTECODE is set (as on our CPU machine),
  # each process would otherwise compile MONAI, lightly and Hydra anew.
  python3 -m compileall -q -j 0 /tmp/site || echo "warning: some carried files did not compile to bytecode (listed above)" >&2
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
