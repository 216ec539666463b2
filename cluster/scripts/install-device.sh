#!/usr/bin/env bash
# Install mcdask on one device (Raspberry Pi OS 64-bit / Ubuntu aarch64, or x86-64) and,
# optionally, the systemd unit that starts its Dask worker at boot.
#   ./install-device.sh [SCHEDULER_ADDRESS DEVICE_NAME KIND MEMORY_LIMIT]
# e.g. ./install-device.sh tls://192.168.1.10:8786 pi3-00 pi3 900MiB
# A tls:// scheduler (the default recipe) needs ca.crt, DEVICE_NAME.crt and DEVICE_NAME.key in
# $MCDASK_CERTS (default ~/.config/mcdask/certs), issued on the host by `mcdask certs issue DEVICE_NAME`.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
arch="$(uname -m)"
case "$arch" in
  aarch64|x86_64) ;;
  *) echo "unsupported architecture $arch: TensorFlow 2.21 wheels exist for aarch64 and x86_64 only;" \
          "install a 64-bit OS on the Pi (Raspberry Pi OS 64-bit or Ubuntu Server arm64)" >&2; exit 1 ;;
esac
PY="$(command -v python3.11 || true)"
if [ -z "$PY" ]; then
  echo "python3.11 not found; install it (e.g. via conda: conda env create -f $REPO/environment.yml)" >&2
  exit 1
fi
"$PY" -m venv "$REPO/.venv"
"$REPO/.venv/bin/python" -m pip install -q --upgrade pip
# pyproject selects tensorflow-cpu on x86-64 and tensorflow (aarch64 wheels) elsewhere
"$REPO/.venv/bin/python" -m pip install -q -e "$REPO"
"$REPO/.venv/bin/python" -c "import tensorflow as tf, distributed; print('tensorflow', tf.__version__, 'distributed', distributed.__version__)"
if [ $# -ge 4 ]; then
  CERTS="${MCDASK_CERTS:-$HOME/.config/mcdask/certs}"
  TLS_ARGS=""
  if [[ "$1" == tls://* ]]; then
    for f in ca.crt "$2.crt" "$2.key"; do
      if [ ! -f "$CERTS/$f" ]; then
        echo "no $CERTS/$f: on the host run \`mcdask certs issue $2\` and copy ca.crt, $2.crt and $2.key" \
             "from its ~/.config/mcdask/certs to $CERTS here" >&2
        exit 1
      fi
    done
    TLS_ARGS="--tls-ca-file $CERTS/ca.crt --tls-cert $CERTS/$2.crt --tls-key $CERTS/$2.key"
  fi
  unit=/etc/systemd/system/mcdask-worker.service
  sed -e "s|^User=.*|User=$(id -un)|" \
      -e "s|^Environment=SCHEDULER=.*|Environment=SCHEDULER=$1|" \
      -e "s|^Environment=DEVICE_NAME=.*|Environment=DEVICE_NAME=$2|" \
      -e "s|^Environment=RESOURCES=.*|Environment=RESOURCES=$3=1|" \
      -e "s|^Environment=MEMORY_LIMIT=.*|Environment=MEMORY_LIMIT=$4|" \
      -e "s|^Environment=\"TLS_ARGS=.*|Environment=\"TLS_ARGS=$TLS_ARGS\"|" \
      -e "s|/home/pi/mcdask|$REPO|" "$REPO/cluster/scripts/mcdask-worker.service" | sudo tee "$unit" >/dev/null
  sudo systemctl daemon-reload
  sudo systemctl enable --now mcdask-worker
  echo "worker $2 enabled; logs: journalctl -u mcdask-worker -f"
fi
