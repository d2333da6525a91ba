#!/usr/bin/env bash
# Installs the Debian 12 packages keyward needs to build, test and demo.
# This is the one place that names them. Safe to run again: it installs only
# what is missing, and runs `apt-get update` first when it must install.
set -euo pipefail

packages=(
	# build
	build-essential meson ninja-build pkg-config
	libevent-dev libssl-dev libyaml-dev libjansson-dev libseccomp-dev zlib1g-dev
	node-llhttp
	# unit and end-to-end tests
	libcmocka-dev python3 python3-pytest python3-requests python3-httpx
	python3-botocore nodejs
	curl git openssl ca-certificates
	# make test-valgrind
	valgrind
	# style check (make format-check)
	clang-format
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing+=("$p")
	fi
done

# npm fetches the test vectors (tests/vectors); some nodejs builds bundle
# it, Debian's ships it as a package of its own
if ! command -v npm >/dev/null 2>&1; then
	missing+=(npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	else
		echo "deps: need root (or sudo) to install: ${missing[*]}" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
