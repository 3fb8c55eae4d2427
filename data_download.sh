#!/usr/bin/env bash
# data_download.sh -- download and unpack ISIC 2016 Part 3 (lesion classification) for vqlesson.
#
# Data: ISIC 2016 challenge, Part 3 "Lesion Classification", CC-0, International Skin Imaging
# Collaboration. Cite Gutman et al., "Skin Lesion Analysis toward Melanoma Detection: A Challenge
# at ISBI 2016, hosted by ISIC", arXiv:1605.01397, 2016.
#
# Usage: bash data_download.sh [ROOT] [--base-url URL]... [--config FILE.json] [--dataset cifar10]
#        bash data_download.sh --help
#
# A thin wrapper over the Python downloader, vqlesson/data/download.py (python -m vqlesson.data.download,
# or vqlesson.data.download.download_isic2016 / ISIC2016(root, download=True) from Python): it resumes
# an interrupted download, checks SHA-256 and image counts, installs atomically, and does nothing
# when the data is already in place. ROOT defaults to data/isic2016 beside this script (or
# $VQLESSON_DATA_DIR/isic2016 when that is set). Exit status: 0 data in place, 1 download or
# verification failed, 2 bad arguments or no Python.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"

PYTHON=""
for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
        PYTHON="$candidate"
        break
    fi
done
if [[ -z "$PYTHON" ]]; then
    echo "error: Python 3 is needed (as python3 or python); activate the course's environment" \
        "(python -m pip install -e .) and run this again." >&2
    exit 2
fi

# This checkout's vqlesson is the one used, installed or not; the default data folder is the
# one beside this script, wherever it is run from.
export PYTHONPATH="$SCRIPT_DIR${PYTHONPATH:+:$PYTHONPATH}"
export VQLESSON_DATA_DIR="${VQLESSON_DATA_DIR:-$SCRIPT_DIR/data}"
exec "$PYTHON" -m vqlesson.data.download "$@"
