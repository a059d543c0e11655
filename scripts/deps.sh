#!/usr/bin/env bash
# Installs the Debian packages piste's tests use, moto (an S3-compatible server from PyPI, for
# the object storage tests), gunicorn (PyPI: serves moto in the PostgreSQL + S3 bench) and
# oidc-provider-mock (an OpenID provider from PyPI, for the login test), when they are missing.
# Run as root (CI and these build machines are root); otherwise prints the command to run.
set -euo pipefail

# moto: `moto_server` serves S3 on loopback for `server/tests/blob` and `tests/server/storage.rs`.
if ! command -v moto_server >/dev/null 2>&1; then
	pip=$(command -v pip3 || command -v pip || true)
	if [[ -z $pip ]]; then
		echo "moto_server is missing and there is no pip: install Python 3 with pip, then: pip install 'moto[server]'" >&2
		exit 1
	fi
	echo "installing moto[server] with $pip" >&2
	"$pip" install --quiet 'moto[server]'
	hash -r
	command -v moto_server >/dev/null 2>&1 || {
		echo "pip installed moto but \`moto_server\` is not on PATH ($PATH)" >&2
		exit 1
	}
fi

# gunicorn: `benches/pg-s3.sh` serves moto's S3 application under it (one process, threads, kept-alive
# connections): moto_server's development server cost twice the CPU per request.
if ! command -v gunicorn >/dev/null 2>&1; then
	pip=$(command -v pip3 || command -v pip || true)
	if [[ -z $pip ]]; then
		echo "gunicorn is missing and there is no pip: install Python 3 with pip, then: pip install gunicorn" >&2
		exit 1
	fi
	echo "installing gunicorn with $pip" >&2
	"$pip" install --quiet gunicorn
	hash -r
	command -v gunicorn >/dev/null 2>&1 || {
		echo "pip installed gunicorn but \`gunicorn\` is not on PATH ($PATH)" >&2
		exit 1
	}
fi

# oidc-provider-mock: a real OpenID provider on loopback for the login test (tests/server/login.rs).
if ! command -v oidc-provider-mock >/dev/null 2>&1; then
	pip=$(command -v pip3 || command -v pip || true)
	if [[ -z $pip ]]; then
		echo "oidc-provider-mock is missing and there is no pip: install Python 3 with pip, then: pip install oidc-provider-mock" >&2
		exit 1
	fi
	echo "installing oidc-provider-mock with $pip" >&2
	"$pip" install --quiet oidc-provider-mock
	hash -r
	command -v oidc-provider-mock >/dev/null 2>&1 || {
		echo "pip installed oidc-provider-mock but \`oidc-provider-mock\` is not on PATH ($PATH)" >&2
		exit 1
	}
fi

# nginx + fcgiwrap (https git), openssh (ssh git): transport tests; docker-registry, skopeo, umoci,
# apache2-utils (htpasswd): the image build and push tests (`runner/tests/oci`) and `make bench-image`;
# tar + zstd: archives are tar.zst (tests open them with `tar --zstd` and `zstd -t`; the
# archiving benchmark compares with `zstd -1` and `gzip -1`).
PACKAGES=(git busybox-static postgresql chromium procps openssl curl nginx fcgiwrap openssh-server openssh-client docker-registry skopeo umoci apache2-utils tar zstd gzip)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
	echo "missing Debian packages: ${missing[*]}" >&2
	echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
