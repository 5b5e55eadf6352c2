# shellcheck shell=bash
# Sourced by scripts/test and scripts/run-local: make this clone ready to run.
#   bootstrap_python  - python3 (>= 3.11) with venv, then .venv with requirements-dev.txt + `pip install -e .`
#                       (skipped when .venv's stamp matches the requirement files: fast when warm)
#   bootstrap_slurm   - scripts/local-slurm start (installs/builds the clusters the first time)
#   bootstrap_headnode - what the head node kit's tests need: nginx (never started by its
#                       package: the tests run their own), openssl, util-linux's setpriv,
#                       systemd's systemd-analyze (to check the kit's units; not PID 1)
# Expects REPO (the repository root). Root or sudo is needed for apt and the clusters.

bs_log() { printf '[bootstrap %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
bs_die() { bs_log "ERROR: $*"; exit 1; }
bs_sudo() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

bs_apt() { # install only the missing packages, without recommends
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  bs_log "apt-get install ${missing[*]}"
  bs_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  bs_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

bs_python_ok() { # PY: python >= 3.11 with a working venv + ensurepip
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

bootstrap_python() {
  local py=${PYTHON:-python3} stamp want venv=$REPO/.venv
  command -v "$py" >/dev/null || bs_apt python3
  command -v "$py" >/dev/null || bs_die "no $py"
  if ! bs_python_ok "$py"; then
    [[ $(command -v "$py") == /usr/bin/* ]] && bs_apt python3-venv
    bs_python_ok "$py" || bs_die "$py is not >= 3.11 with venv (set PYTHON=...)"
  fi
  command -v curl >/dev/null || bs_apt curl ca-certificates
  want=$(cat "$REPO/requirements.txt" "$REPO/requirements-dev.txt" "$REPO/pyproject.toml" | sha256sum | cut -c1-64)
  stamp=$venv/.slurm-trigger-deps
  if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import sys' 2>/dev/null \
     && [[ $(cat "$stamp" 2>/dev/null) == "$want" ]]; then
    return 0
  fi
  if ! [[ -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    bs_log "creating .venv with $("$py" --version)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
  fi
  bs_log "pip install -r requirements-dev.txt -e ."
  (cd "$REPO" && "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt -e .) \
    || bs_die "pip install failed"
  echo "$want" >"$stamp"
}

bootstrap_slurm() {
  bs_sudo "$REPO/scripts/local-slurm" start "${1:-all}"
}

bootstrap_headnode() {
  local p missing=() guard=0
  for p in nginx openssl util-linux systemd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  # a package's postinst must not start a system nginx on :80 (policy-rc.d 101 = "not now")
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | bs_sudo tee /usr/sbin/policy-rc.d >/dev/null
    bs_sudo chmod 0755 /usr/sbin/policy-rc.d; guard=1
  fi
  bs_apt "${missing[@]}"
  if ((guard)); then bs_sudo rm -f /usr/sbin/policy-rc.d; fi
}
