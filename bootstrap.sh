#!/usr/bin/env bash
# Install everything seawall needs on a Debian 12 machine (run as root), into ./.venv.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

# Debian packages: Python for the venv, the lab's substrate (LXC, debootstrap,
# nftables, apt-cacher-ng), and Vagrant with its LXC provider.
packages=(python3 python3-venv python3-pip git openssh-client iproute2 lxc debootstrap nftables
          apt-cacher-ng vagrant vagrant-lxc redis-server)
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
.venv/bin/pip install -q -e '.[dev]'
