#!/bin/sh
# The physical limit for layer decrypt-and-verify on one core, measured by OpenSSL:
# AES-256-CTR and HMAC-SHA256 throughput (16 KiB blocks), and the two combined as one pass
# each over the data (1 / (1/aes + 1/hmac)), as the layer cipher does.
# Run from the workspace root, in the same session as the criterion bench:
#   sh image-rs/benches/openssl_peer.sh   (CORE=n pins another core; default 0)
set -eu
secs=${SECS:-3}
aes=$(taskset -c "${CORE:-0}" openssl speed -seconds "$secs" -bytes 16384 -evp aes-256-ctr 2>/dev/null | awk 'tolower($1) == "aes-256-ctr" {print $2}')
hmac=$(taskset -c "${CORE:-0}" openssl speed -seconds "$secs" -bytes 16384 -hmac sha256 2>/dev/null | awk '/^hmac\(sha256\)/ {print $2}')
# openssl prints thousands of bytes per second with a trailing "k".
aes=${aes%k}; hmac=${hmac%k}
awk -v a="$aes" -v h="$hmac" 'BEGIN {
  am = a * 1000 / 1048576; hm = h * 1000 / 1048576;
  printf "openssl aes-256-ctr:  %.0f MiB/s\nopenssl hmac-sha256:  %.0f MiB/s\ncombined (two passes): %.0f MiB/s\n", am, hm, 1 / (1/am + 1/hm)
}'
