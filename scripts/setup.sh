#!/usr/bin/env bash
# Installs everything the harness and its tests need, from nothing. Safe to run again (fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# --with-report-tools: also pdflatex (booktabs, multirow) and headless Chromium, which the report tests use
REPORT_TOOLS=0
[ "${1:-}" = "--with-report-tools" ] && REPORT_TOOLS=1

# Debian's Fashion-MNIST (offline-installable here); skipped where apt or root is missing.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
        || echo "setup: could not install dataset-fashion-mnist; the fashion-mnist plugin will say how to get it" >&2
fi

if [ "$REPORT_TOOLS" = 1 ] && { ! command -v pdflatex >/dev/null || ! command -v chromium >/dev/null \
        || ! kpsewhich multirow.sty >/dev/null 2>&1; }; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            texlive-latex-recommended texlive-latex-extra chromium >/dev/null
    else
        echo "setup: --with-report-tools needs apt and root; install pdflatex (texlive-latex-extra) and chromium" >&2
    fi
fi

# torch first, pinned to the build this project is tested with (torchvision must match it).
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    "$PY" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
fi
"$PY" -m pip install --quiet -e ".[test]"
command -v pyenv >/dev/null && pyenv rehash || true   # make the `harness` console script visible
"$PY" -c "import harness.api.compat as c; c.import_robustbench()"   # robustbench + the autoattack alias work
echo "setup: done ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
