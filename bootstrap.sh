#!/usr/bin/env bash
# Install everything seawall needs on a Debian 12 machine (run as root), into ./.venv.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

# Debian packages: exactly those in controller-packages.txt (one a line, '#'
# comments), the list the lab's own pre-check and a unit test read too.
# Among them lxc-templates: the lab's containers include its
# /usr/share/lxc/config/debian.common.conf.
mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' controller-packages.txt)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  # Keep Debian from starting daemons (apt-cacher-ng on every address, lxc-net's
  # NAT bridge): the lab starts what it needs, bound to its own bridge.
  policy=/usr/sbin/policy-rc.d
  ours=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; ours=1; fi
  trap '[ "$ours" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev,plot]'
