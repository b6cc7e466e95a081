#!/usr/bin/env bash
# Set up clipbackdoor on a fresh Debian/Ubuntu machine: WordNet (for EDA caption views), a virtual
# environment in .venv with pinned versions, and nltk's view of WordNet. Safe to re-run.
#   bash scripts/install.sh           # the package
#   bash scripts/install.sh --test    # plus the test extras
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

# WordNet comes from Debian's packages; nltk reads it through `clipbackdoor setup-wordnet` below.
if ! dpkg -s wordnet-base wordnet-sense-index >/dev/null 2>&1; then
  sudo=""
  [[ "$(id -u)" != 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python="$candidate"; break
    fi
  done
fi
[[ -n "$python" ]] || { echo "install.sh: needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The constraints pin torch 2.14.1 / torchvision 0.29.1, which install from the package cache; an
# unpinned torch would download gigabytes.
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}"
.venv/bin/clipbackdoor setup-wordnet
