#!/usr/bin/env bash
# Set up benchmarks/.venv-peers: a separate virtual environment with the two
# peer matching-pursuit SAE implementations, used by benchmarks/_peers.py.
#
#   bash benchmarks/setup_peers.sh            # create / complete / verify
#   bash benchmarks/setup_peers.sh --force    # re-run every install step
#
# What it installs (CPU only; the torch of the main venv is NOT touched):
#   * torch==2.13.0 first (on this workplace pip finds the CPU wheel
#     torch-2.13.0+cpu in /opt/wheels), then every later step runs with a
#     constraints file "torch==2.13.0", so nothing can replace it;
#   * sae-lens==6.54.12 with its normal dependencies (transformer-lens,
#     transformers, datasets, wandb, pandas, pyarrow, ...: about 1.9 GB on
#     disk, no CUDA packages; its package __init__ imports all of it);
#   * overcomplete==0.3.0 with --no-deps, plus only what overcomplete.sae
#     needs: numpy scipy scikit-learn einops tqdm pillow.  Its declared
#     dependencies torchvision/timm/opencv/matplotlib/scikit-image are NOT
#     installed: unconstrained they pull torch 2.15 + ~3 GB of CUDA wheels,
#     and the torchvision that matches torch 2.13 on PyPI (0.28.0) is a CUDA
#     build that fails to load with the CPU torch ("operator torchvision::nms
#     does not exist") - and a broken torchvision also breaks the import of
#     transformers, hence of sae_lens.  _peers.py imports overcomplete.sae
#     without the package's top-level __init__ (which is what imports them).
#     `pip check` therefore reports overcomplete's missing matplotlib,
#     opencv-python, scikit-image, timm and torchvision: expected.
# Every install step is dry-run first and refused if it would bring in torch,
# torchvision, triton or nvidia-*/cuda-* packages.
#
# Time: about 2.5 minutes on a fresh run here (146 s measured: venv 4 s,
# torch 35 s, sae-lens 87 s mostly downloads, overcomplete 10 s, import check
# 10 s); about 15 s when already set up (it then only re-runs the import check).
#
# Environment overrides: PYTHON (base interpreter, default python3.11 or
# python3; sae-lens needs >= 3.10, overcomplete < 3.13), PEERS_VENV,
# SAE_LENS_VERSION, OVERCOMPLETE_VERSION, PEERS_TORCH_PIP_ARGS (extra pip
# arguments for the torch step, e.g. an --index-url of PyTorch's CPU wheel
# index on a machine where plain `pip install torch==2.13.0` is a CUDA build:
# the script refuses a torch that pulls nvidia-*/triton).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv-peers}"
TORCH_VERSION="2.13.0"
SAE_LENS_VERSION="${SAE_LENS_VERSION:-6.54.12}"
OVERCOMPLETE_VERSION="${OVERCOMPLETE_VERSION:-0.3.0}"
OVERCOMPLETE_DEPS=(numpy scipy scikit-learn einops tqdm pillow)
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

START=$SECONDS
say() { echo "[setup_peers +$((SECONDS - START))s] $*"; }
PY="$VENV/bin/python"
CONSTRAINTS="$VENV/peers-constraints.txt"

# pip, minus this machine's noise about missing local index folders
pip_() {
  "$PY" -m pip --disable-pip-version-check "$@" \
    2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

# dry-run an install; refuse it if it would bring in torch/CUDA packages
guarded_install() {
  local plan
  plan="$(pip_ install --dry-run "$@" 2>&1 | grep '^Would install' || true)"
  if [[ -z "$plan" ]]; then
    say "  nothing to install for: $*"
    return 0
  fi
  say "  dry-run: $plan"
  if grep -qE '(^| )(torch|torchvision|torchaudio|triton|nvidia-[^ ]*|cuda-[^ ]*)-[0-9]' <<<"$plan"; then
    echo "ERROR: 'pip install $*' would install torch/CUDA packages (see the dry-run above); refusing." >&2
    exit 1
  fi
  pip_ install -q "$@"
}

torch_ok() {
  "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null
}

verify() {
  torch_ok || { echo "ERROR: torch in $VENV is not $TORCH_VERSION" >&2; return 1; }
  "$PY" "$HERE/_peers.py" --versions 2>&1 | grep -v "UserWarning\|warnings.warn\|^\s*$" || return 1
}

# ---------------------------------------------------------------- fast path
if [[ $FORCE -eq 0 && -x "$PY" ]] \
   && "$PY" -m pip show "sae-lens" 2>/dev/null | grep "^Version: $SAE_LENS_VERSION$" >/dev/null \
   && "$PY" -m pip show "overcomplete" 2>/dev/null | grep -i "^Version: $OVERCOMPLETE_VERSION$" >/dev/null; then
  say "$VENV already has sae-lens $SAE_LENS_VERSION and overcomplete $OVERCOMPLETE_VERSION; checking imports"
  if verify; then
    say "already set up; nothing to do (use --force to re-run the installs)"
    exit 0
  fi
  say "import check failed; re-running the install steps"
fi

# ---------------------------------------------------------------- 1. venv
if [[ ! -x "$PY" ]]; then
  BASE_PY="${PYTHON:-}"
  if [[ -z "$BASE_PY" ]]; then
    BASE_PY="$(command -v python3.11 || command -v python3)"
  fi
  say "creating venv $VENV with $BASE_PY ($("$BASE_PY" --version 2>&1))"
  "$BASE_PY" -m venv "$VENV"
else
  say "venv $VENV exists ($("$PY" --version 2>&1))"
fi
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

# ---------------------------------------------------------------- 2. torch
if torch_ok; then
  say "torch $TORCH_VERSION already installed"
else
  say "installing torch==$TORCH_VERSION ${PEERS_TORCH_PIP_ARGS:-}"
  # shellcheck disable=SC2086
  guarded_torch_plan="$(pip_ install --dry-run ${PEERS_TORCH_PIP_ARGS:-} "torch==$TORCH_VERSION" 2>&1 | grep '^Would install' || true)"
  say "  dry-run: $guarded_torch_plan"
  if grep -qE '(^| )(triton|nvidia-[^ ]*|cuda-[^ ]*)-[0-9]' <<<"$guarded_torch_plan"; then
    echo "ERROR: torch==$TORCH_VERSION from this index is a CUDA build (it pulls nvidia-*/triton)." >&2
    echo "       Set PEERS_TORCH_PIP_ARGS='--index-url <PyTorch CPU wheel index>' and re-run." >&2
    exit 1
  fi
  # shellcheck disable=SC2086
  pip_ install -q ${PEERS_TORCH_PIP_ARGS:-} "torch==$TORCH_VERSION"
fi
say "torch: $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"

# ---------------------------------------------------------------- 3. sae-lens
say "installing sae-lens==$SAE_LENS_VERSION (with its dependencies, torch constrained)"
guarded_install -c "$CONSTRAINTS" "sae-lens==$SAE_LENS_VERSION"

# ---------------------------------------------------------------- 4. overcomplete
say "installing overcomplete==$OVERCOMPLETE_VERSION (--no-deps) + ${OVERCOMPLETE_DEPS[*]}"
say "  (pip will complain that overcomplete's matplotlib/opencv-python/scikit-image/timm/torchvision"
say "   are not installed: expected, see the header of this script)"
guarded_install --no-deps "overcomplete==$OVERCOMPLETE_VERSION"
guarded_install -c "$CONSTRAINTS" "${OVERCOMPLETE_DEPS[@]}"

# A torchvision left over from an earlier attempt breaks `import transformers`.
if "$PY" -m pip show torchvision >/dev/null 2>&1 && ! "$PY" -c "import torchvision" >/dev/null 2>&1; then
  say "removing torchvision (installed but cannot load with this torch)"
  pip_ uninstall -y -q torchvision
fi

# ---------------------------------------------------------------- 5. verify
say "verifying"
verify || { echo "ERROR: import check failed" >&2; exit 1; }
say "done in $((SECONDS - START))s: $VENV"
