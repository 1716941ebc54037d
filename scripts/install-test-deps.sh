#!/usr/bin/env bash
# Installs the programs the integration tests start or call, when they are missing. Everything
# the tests need comes from here: nothing may rely on what happens to be on a developer's machine.
set -euo pipefail

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
# Git servers for the integration tests (tests/common/git_server.rs): nginx + fcgiwrap running
# `git http-backend` for smart HTTP, `git daemon` (in Debian's git package) for git://, openssl
# for htpasswd lines and deterministic fixture bytes (tests/fixtures/*.sh).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v fcgiwrap >/dev/null 2>&1 || [ -x /usr/sbin/fcgiwrap ] || need_apt+=(fcgiwrap)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if command -v git >/dev/null 2>&1; then
  git_exec="$(git --exec-path)"
  { [ -x "$git_exec/git-daemon" ] && [ -x "$git_exec/git-http-backend" ]; } || need_apt+=(git)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
