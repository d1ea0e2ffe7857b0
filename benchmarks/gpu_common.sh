# Sourced by the GPU scripts (after they define PY and log): name the machine, then decode the two data
# sets into devs's cache once, so that the parallel jobs after it find them ready.
#   gpu_prelude LOG_FILE CIFAR FASHION FASHION_ROOT
gpu_prelude() {
  local log_file=$1 cifar=$2 fashion=$3 fashion_root=$4
  log "start on $(hostname): $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo no GPU)"
  $PY -c "import torch, devs; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'devs', devs.__version__)" \
    2>&1 | tee -a "$log_file"
  $PY - "$cifar" "$fashion" "$fashion_root" <<'PYEOF' 2>&1 | tee -a "$log_file"
import sys
from devs.data import load_dataset
cifar, fashion, fashion_root = sys.argv[1:4]
for name, root in ((cifar, None), (fashion, fashion_root or None)):
    d = load_dataset(name, root=root); print("cached", d.name, len(d.train), len(d.test))
PYEOF
  log "data ready"
}
