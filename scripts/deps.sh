#!/bin/sh
# Installs the Debian packages tocha's build needs, when run as root and any is missing.
# Called by `make test` and `make demo`; does nothing when everything is present.
set -e
pkgs="lua5.4 liblua5.4-dev libopenblas-openmp-dev libpng-dev libjpeg-dev libzstd-dev libcairo2-dev libsqlite3-dev libpq-dev"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing packages:$missing (run: sudo apt-get install$missing)" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
