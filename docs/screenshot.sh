#!/usr/bin/env bash
# Screenshot report pages in headless Chromium (Debian: apt-get install chromium), to check how they read.
# usage: docs/screenshot.sh PAGE.html OUT.png [height]   one page, the window that tall (default 2600 px)
#        docs/screenshot.sh --all [RUNS] [OUTDIR]        every family's page: the default runs of
#                                                       bench/bench_defaults.py in RUNS (default runs/defaults; a run
#                                                       missing there is trained first, a page always rewritten), each
#                                                       page whole to OUTDIR/NAME.png (default runs/screenshots)
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3

shot() {  # page, png, height
  local page out profile
  page=$(realpath "$1"); out=$(realpath -m "$2")
  command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
  profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --window-size=1200,"$3" --screenshot="$out" "file://$page" 2>/dev/null
  rm -rf "$profile"
}

whole() {  # png: cut the empty window below the page's last line
  "$python" - "$1" <<'EOF'
import sys
import numpy as np
from PIL import Image
path = sys.argv[1]
im = Image.open(path).convert("RGB")
a = np.asarray(im)
used = np.flatnonzero((np.abs(a.astype(int) - a[-1, 0].astype(int)).sum(2) > 0).any(1))
im.crop((0, 0, im.width, int(used[-1]) + 41 if used.size else im.height)).save(path, optimize=True)
EOF
}

if [ "${1:-}" != "--all" ]; then
  shot "$1" "$2" "${3:-2600}"
  realpath -m "$2"
  exit 0
fi
runs=${2:-runs/defaults}; outdir=${3:-runs/screenshots}
mkdir -p "$outdir"
"$python" bench/bench_defaults.py --runs "$runs" --reuse | while read -r page; do
  png="$outdir/$(basename "$(dirname "$page")").png"
  shot "$page" "$png" 16000
  whole "$png"
  echo "$png"
done
