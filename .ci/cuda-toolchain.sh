# Sourced by .ci/run: installs nvcc from PyPI into the CI tool cache and exports the variables
# that candle's CUDA build scripts read, so that `cargo check --features cuda` works on a machine
# without a GPU or a system CUDA toolkit.
#
# candle-kernels' build script runs nvcc even for `cargo check`. The CUDA 12 nvcc wheels carry no
# nvcc binary, so this uses the CUDA 13 wheels. cudarc 0.19.10 has bindings for CUDA 13.0 to 13.4,
# hence the upper bound. nvcc needs the CCCL headers (<nv/target>) from nvidia-cuda-cccl too.
# `pip install --target` does not merge into an existing directory, so all wheels go in with one
# call into a fresh directory.

cuda_tools="${SSGAN_CI_TOOLS:-$HOME/.cache/ssgan-ci-tools}/cuda"
cuda_top="$cuda_tools/nvidia/cu13"
if [ ! -x "$cuda_top/bin/nvcc" ] || [ ! -e "$cuda_top/include/nv/target" ]; then
  echo "installing nvcc 13.x from PyPI into $cuda_tools (for the cuda feature check)"
  rm -rf "$cuda_tools"
  python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --target "$cuda_tools" \
    'nvidia-cuda-nvcc>=13.0,<13.5' 'nvidia-cuda-crt>=13.0,<13.5' \
    'nvidia-cuda-runtime>=13.0,<13.5' 'nvidia-nvvm>=13.0,<13.5' \
    'nvidia-cuda-cccl>=13.0,<13.5'
fi
if [ ! -x "$cuda_top/bin/nvcc" ] || [ ! -e "$cuda_top/include/nv/target" ]; then
  echo "nvcc or <nv/target> missing under $cuda_top after installing the CUDA 13 wheels" >&2
  exit 1
fi

export PATH="$cuda_top/bin:$PATH"
export CUDA_ROOT="$cuda_top"
export CUDA_PATH="$cuda_top"
# No GPU to query: build the kernels for sm_90 (H100/H200).
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
