#!/usr/bin/env bash
# Installs the system pieces socialrx needs when they are missing: Java 17+ and Maven (to fetch and
# run the Kafka broker), PostgreSQL (the databases), Chromium (the web app's browser tests drive
# Debian's chromium: Playwright cannot download its own browsers here). Debian/Ubuntu with apt-get;
# as root, or via sudo.
set -euo pipefail

need=()
if ! command -v java >/dev/null 2>&1 || ! java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then
  need+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "socialrx: installing ${need[*]} (apt-get)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "socialrx: please install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's package starts a cluster on 5432; socialrx runs its own servers, so leave the default alone.
