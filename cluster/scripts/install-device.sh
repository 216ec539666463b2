#!/usr/bin/env bash
# Install mcdask on one machine of a real deployment and, given a role, start its part at boot.
#   install-device.sh SOURCE                                          install only (a device's packages)
#   install-device.sh SOURCE worker SCHEDULER NAME KIND MEMORY_LIMIT  a device: its dask worker at boot
#   install-device.sh SOURCE scheduler HOST [PORT]                    the scheduler, listening on HOST
# SOURCE: a checkout of mcdask (a folder), or what pip installs it from, e.g.
#   git+https://github.com/OWNER/mcdask.git@main  or  https://HOST/mcdask-0.1.0-py3-none-any.whl
# e.g. install-device.sh ~/mcdask worker tls://192.168.1.10:8786 pi3-00 pi3 900MiB
# Goes to $MCDASK_PREFIX (default /opt/mcdask: venv/, and the services' working directory),
# run by $MCDASK_USER (default: you). Units: python -m cluster.recipe (cluster/README.md).
# Mutual TLS by default: a worker of a tls:// scheduler needs ca.crt, NAME.crt and NAME.key in
# $MCDASK_PREFIX/certs, the scheduler ca.crt, scheduler.crt and scheduler.key (`mcdask certs`);
# MCDASK_PLAIN_TCP=1 makes a plain-TCP scheduler (and give workers a tcp:// address).
# A device runs LiteRT by default: mcdask[litert] (no TensorFlow), and a worker that gets LiteRT
# ready. MCDASK_BACKEND=tensorflow makes a TensorFlow device (mcdask[device]); deploy on it with
# `mcdask run --backend tensorflow`.
set -euo pipefail
usage() { sed -n '2,10p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
SOURCE="$1"
ROLE="${2:-}"
case "$ROLE" in
  "") EXTRA=device ;;
  worker) [ $# -eq 6 ] || usage; EXTRA=device ;;
  scheduler) [ $# -ge 3 ] && [ $# -le 4 ] || usage; EXTRA=scheduler ;;
  *) usage ;;
esac
BACKEND="${MCDASK_BACKEND:-litert}"
case "$BACKEND" in
  tensorflow) ;;
  litert) [ "$EXTRA" = scheduler ] || EXTRA=litert ;;
  *) echo "MCDASK_BACKEND=$BACKEND: choose tensorflow or litert" >&2; exit 2 ;;
esac
PREFIX="${MCDASK_PREFIX:-/opt/mcdask}"
RUN_AS="${MCDASK_USER:-$(id -un)}"
need_certs() {  # the certificate NAME and the CA in $PREFIX/certs, before anything is installed
  for f in ca.crt "$1.crt" "$1.key"; do
    if [ ! -f "$PREFIX/certs/$f" ]; then
      echo "no $PREFIX/certs/$f: on the machine with the CA run \`mcdask certs issue $1$2\` and copy ca.crt," \
           "$1.crt and $1.key from its ~/.config/mcdask/certs to $PREFIX/certs here" >&2
      exit 1
    fi
  done
}
TLS_FLAG=--tls
case "$ROLE" in
  worker) [[ "$3" != tls://* ]] || need_certs "$4" "" ;;
  scheduler) if [ "${MCDASK_PLAIN_TCP:-0}" = 1 ]; then TLS_FLAG=--no-tls; else need_certs scheduler " --role scheduler"; fi ;;
esac
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

arch="$(uname -m)"
case "$arch" in
  aarch64|x86_64) ;;
  *) echo "unsupported architecture $arch: TensorFlow 2.21 wheels exist for aarch64 and x86_64 only;" \
          "install a 64-bit OS on the Pi (Raspberry Pi OS 64-bit or Ubuntu Server arm64)" >&2; exit 1 ;;
esac

# Python 3.11-3.13 with venv and pip (Raspberry Pi OS 12: 3.11; Ubuntu 24.04: 3.12)
if command -v apt-get >/dev/null; then
  packages="python3 python3-venv python3-pip"
  case "$SOURCE" in git+*) packages="$packages git" ;; esac
  $SUDO apt-get update -q
  # shellcheck disable=SC2086  # one word per package
  $SUDO apt-get install -y -q $packages
fi
PY=""
for candidate in python3 python3.13 python3.12 python3.11; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))'; then
    PY="$(command -v "$candidate")"
    break
  fi
done
if [ -z "$PY" ]; then
  echo "no Python 3.11-3.13 found; install one (python3 on Raspberry Pi OS 12 or Ubuntu 24.04 is)" >&2
  exit 1
fi

if [ -d "$SOURCE" ]; then
  SPEC="$(cd "$SOURCE" && pwd)[$EXTRA]"
else
  SPEC="mcdask[$EXTRA] @ $SOURCE"
fi
$SUDO mkdir -p "$PREFIX"
$SUDO chown "$RUN_AS" "$PREFIX"
"$PY" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
# pyproject selects tensorflow-cpu on x86-64 and tensorflow (aarch64 wheels) elsewhere
"$PREFIX/venv/bin/python" -m pip install -q "$SPEC"
"$PREFIX/venv/bin/python" -c "import mcdask, distributed, mcdask.runtime.plugin, cluster.preload
print('mcdask', mcdask.__version__, 'distributed', distributed.__version__)"

install_unit() {  # SERVICE, then the arguments of python -m cluster.recipe
  local service="$1" unit
  shift
  unit="$(mktemp)"
  "$PREFIX/venv/bin/python" -m cluster.recipe "$@" --prefix "$PREFIX" --user "$RUN_AS" >"$unit"
  $SUDO install -m 644 "$unit" "/etc/systemd/system/$service.service"
  rm -f "$unit"
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable --now "$service"
  echo "$service enabled; logs: journalctl -u $service -f"
}
case "$ROLE" in
  worker) install_unit mcdask-worker worker-unit --scheduler "$3" --name "$4" --kind "$5" --memory-limit "$6" \
            --backend "$BACKEND" ;;
  scheduler) install_unit mcdask-scheduler scheduler-unit --host "$3" --port "${4:-8786}" "$TLS_FLAG" ;;
esac
