#!/usr/bin/env bash
# Start the Dask scheduler on the host that coordinates the devices (a laptop or server on
# the same LAN as the Pis). Devices connect to tls://<this host's LAN address>:8786.
#   ./start-scheduler.sh [LAN_ADDRESS] [PORT]
# Mutual TLS by default: the scheduler's certificate and the CA come from $MCDASK_CERTS
# (default ~/.config/mcdask/certs; `mcdask certs init`, `mcdask certs issue scheduler --role scheduler`),
# and the device gate (mcdask.security.gate) refuses a worker whose certificate does not name it.
# MCDASK_PLAIN_TCP=1 starts a plain-TCP scheduler instead (anyone who reaches the port can run code).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
HOST="${1:-$(hostname -I | awk '{print $1}')}"
PORT="${2:-8786}"
CERTS="${MCDASK_CERTS:-$HOME/.config/mcdask/certs}"
if [ "${MCDASK_PLAIN_TCP:-0}" = 1 ]; then
  echo "scheduler at tcp://$HOST:$PORT (plain TCP, no authentication), dashboard http://$HOST:8787/status"
  exec "$REPO/.venv/bin/dask" scheduler --host "$HOST" --port "$PORT" --dashboard-address "$HOST:8787"
fi
for f in ca.crt scheduler.crt scheduler.key; do
  if [ ! -f "$CERTS/$f" ]; then
    echo "no $CERTS/$f: run \`mcdask certs init\` and \`mcdask certs issue scheduler --role scheduler\`" \
         "(or set MCDASK_CERTS, or MCDASK_PLAIN_TCP=1 for plain TCP)" >&2
    exit 1
  fi
done
echo "scheduler at tls://$HOST:$PORT (mutual TLS, CA $CERTS/ca.crt), dashboard http://$HOST:8787/status"
exec "$REPO/.venv/bin/dask" scheduler --host "$HOST" --port "$PORT" --dashboard-address "$HOST:8787" \
    --protocol tls --tls-ca-file "$CERTS/ca.crt" --tls-cert "$CERTS/scheduler.crt" \
    --tls-key "$CERTS/scheduler.key" --preload mcdask.security.gate
