#!/usr/bin/env bash
# Sets up what the benchmarks need on a fresh Debian machine: wrk (and h2load) from Debian's
# packages, and a separate virtualenv (bench/.venv) with Tether and pinned competitors.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v wrk >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nghttp2-client >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -e ..
