#!/usr/bin/env bash
# Provisions a Trustee KBS started with bench/trustee/kbs-config.toml for the side-by-side load
# run: the resource default/key/1 (the bytes of $1), Trustee's sample reference values (so that
# sample evidence is "affirming" under its default attestation policy) and a resource policy
# that releases to affirming sample evidence (Trustee's default resource policy refuses sample).
# The admin API is open (InsecureAllowAll in the config): loopback benchmarks only.
# Usage: bench/trustee/provision.sh SECRET_FILE [KBS_URL]
set -euo pipefail
secret=${1:?usage: provision.sh SECRET_FILE [KBS_URL]}
kbs=${2:-http://127.0.0.1:18080}
here=$(cd "$(dirname "$0")" && pwd)
curl -fsS -X POST --data-binary @"$secret" -H 'content-type: application/octet-stream' \
    "$kbs/kbs/v0/resource/default/key/1"
# The sample verifier reports launch_digest "abcde" and platform 1.4; the load generator's
# sample evidence carries svn "1".
values=$(printf '%s' '{"svn":["1"],"launch_digest":["abcde"],"major_version":1,"minimum_minor_version":1}' | base64 -w0)
curl -fsS -X POST -H 'content-type: application/json' \
    --data "{\"version\":\"0.1.0\",\"type\":\"sample\",\"payload\":\"$values\"}" \
    "$kbs/kbs/v0/reference-value"
policy=$(basenc --base64url -w0 < "$here/resource-policy.rego" | tr -d '=')
curl -fsS -X POST -H 'content-type: application/json' --data "{\"policy\":\"$policy\"}" \
    "$kbs/kbs/v0/resource-policy"
echo "provisioned $kbs"
