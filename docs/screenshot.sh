#!/usr/bin/env bash
# Screenshot a report page in headless Chromium (Debian: apt-get install chromium), to check how it reads.
# usage: docs/screenshot.sh runs/demo/report.html docs/report-demo.png [height]
set -euo pipefail
page=$(realpath "$1"); out=$(realpath -m "$2"); height=${3:-2600}
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1200,"$height" --screenshot="$out" "file://$page" 2>/dev/null
rm -rf "$profile"
echo "$out"
