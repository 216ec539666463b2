#!/usr/bin/env bash
# Start the Dask scheduler on the host that coordinates the devices (a laptop or server on
# the same LAN as the Pis). Devices connect to tcp://<this host's LAN address>:8786.
#   ./start-scheduler.sh [LAN_ADDRESS] [PORT]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
HOST="${1:-$(hostname -I | awk '{print $1}')}"
PORT="${2:-8786}"
echo "scheduler at tcp://$HOST:$PORT, dashboard http://$HOST:8787/status"
exec "$REPO/.venv/bin/dask" scheduler --host "$HOST" --port "$PORT" --dashboard-address "$HOST:8787"
