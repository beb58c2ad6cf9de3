#!/bin/sh
# Install Debian's chromium for the browser test when it is missing (CI runs as root with apt).
# Exit 3 means "apt is impossible here" (the test then skips); any other failure fails the test.
set -eu
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "cannot install chromium: this needs root and apt-get (Debian/Ubuntu)" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
[ -x /usr/bin/chromium ]
