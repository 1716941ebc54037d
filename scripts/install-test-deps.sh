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
# Shell conventions (tests/shell.rs): completion scripts parsed by each shell, man pages rendered.
command -v man >/dev/null 2>&1 || need_apt+=(man-db)
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)
command -v fish >/dev/null 2>&1 || need_apt+=(fish)
# docs/deploy/ units are checked with systemd-analyze (tests/deploy.rs).
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# The replay benchmark (benches/replay.sh) measures peak memory with GNU time and compares with
# restic.
[ -x /usr/bin/time ] || need_apt+=(time)
command -v restic >/dev/null 2>&1 || need_apt+=(restic)
# Git LFS tests (tests/lfs_infra.rs, tests/fixtures/lfs.sh): the real `git lfs` client.
command -v git-lfs >/dev/null 2>&1 || need_apt+=(git-lfs)
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

# S3 servers for the s3:// target tests (tests/common/s3_server.rs): moto's server (any
# credentials) and s3s-fs (checks signatures). s3s-fs 0.17 needs a newer Rust than ours.
if ! command -v moto_server >/dev/null 2>&1 || ! moto_server --help >/dev/null 2>&1; then
  echo "== installing moto[server] (pip)"
  python3 -m pip install -q 'moto[server]'
  # pyenv installs console scripts behind shims that need a rehash to appear.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "== installing s3s-fs 0.14.1 (cargo, a few minutes)"
  cargo install s3s-fs@0.14.1 --locked --features binary
fi

# LFS server for the LFS tests (tests/common/lfs_server.rs): giftless under gunicorn. giftless
# 0.6.2's wheel declares no dependencies, so they are listed here; newer PyJWT makes uploads fail
# with 401, marshmallow 4 and webargs 8.7 break its schemas.
if ! command -v gunicorn >/dev/null 2>&1 \
  || ! python3 -c 'import giftless.wsgi_entrypoint' >/dev/null 2>&1; then
  echo "== installing giftless 0.6.2 + gunicorn (pip)"
  python3 -m pip install -q 'giftless==0.6.2' gunicorn flask 'marshmallow<4' flask-marshmallow \
    flask-classful 'webargs<8.7' figcan python-dotenv pyyaml 'PyJWT<2.10' cryptography \
    cachetools python-dateutil typing-extensions requests
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
