#!/usr/bin/env bash
# Installs the Debian packages piste's tests use, moto (an S3-compatible server from PyPI, for
# the object storage tests), gunicorn (PyPI: serves moto in the PostgreSQL + S3 bench),
# oidc-provider-mock (an OpenID provider from PyPI, for the login test) and PyJWT (for the ID
# token test), when they are missing.
# Run as root (CI and these build machines are root); otherwise prints the command to run.
set -euo pipefail

# pip_install WHAT CHECK PACKAGE: installs PACKAGE from PyPI unless the shell command CHECK
# already succeeds, and fails saying what to do when there is no pip or CHECK still fails.
pip_install() {
	local what=$1 check=$2 package=$3 pip
	bash -c "$check" >/dev/null 2>&1 && return 0
	pip=$(command -v pip3 || command -v pip || true)
	if [[ -z $pip ]]; then
		echo "$what is missing and there is no pip: install Python 3 with pip, then: pip install '$package'" >&2
		exit 1
	fi
	echo "installing $package with $pip" >&2
	"$pip" install --quiet "$package"
	bash -c "$check" >/dev/null 2>&1 || {
		echo "pip installed $package but \`$what\` is still not usable (PATH: $PATH)" >&2
		exit 1
	}
}

# moto: `moto_server` serves S3 on loopback for `server/tests/blob` and `tests/server/storage.rs`.
pip_install moto_server 'command -v moto_server' 'moto[server]'
# gunicorn: `benches/pg-s3.sh` serves moto's S3 application under it (one process, threads,
# kept-alive connections: werkzeug's development server costs a connection and a thread per request).
pip_install gunicorn 'command -v gunicorn' gunicorn
# oidc-provider-mock: the OpenID Connect provider of the web login test.
pip_install oidc-provider-mock 'command -v oidc-provider-mock' oidc-provider-mock
# PyJWT with its crypto extra: an independent check of the ID tokens the server signs
# (tests/server/id_tokens.rs verifies them against the published JWKS).
pip_install PyJWT "python3 -c 'import jwt, jwt.algorithms; jwt.algorithms.ECAlgorithm'" 'pyjwt[crypto]'

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
