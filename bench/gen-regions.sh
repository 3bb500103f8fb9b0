#!/usr/bin/env bash
# Writes a regions directory of N generated regions (default 500), each with overlays for
# development, staging and production, beside a copy of regions/_defaults.yaml.
#
#   bench/gen-regions.sh DIR [N]
#
# Half the regions deploy to Docker behind HAProxy, half to Kubernetes; region 0 is the
# primary; capacity shares sum to 100. The files look like the real ones (settings, a worker
# service, secrets as references), so validate and diff do the work they do on real regions.
set -euo pipefail

dir=${1:?usage: gen-regions.sh DIR [N]}
n=${2:-500}
here=$(cd "$(dirname "$0")/.." && pwd)

mkdir -p "$dir"
rm -f "$dir"/*.yaml
cp "$here/regions/_defaults.yaml" "$dir/_defaults.yaml"

currencies=(MXN COP USD EUR CUP BRL ARS CLP PEN)
# shares in hundredths of a percent: 10000 split over n regions, the rest on region 0
base=$((10000 / n))
first=$((10000 - base * (n - 1)))

for ((i = 0; i < n; i++)); do
    name=$(printf 'region-%03d' "$i")
    cur=${currencies[$((i % ${#currencies[@]}))]}
    share=$base
    ((i == 0)) && share=$first
    share=$(printf '%d.%02d' $((share / 100)) $((share % 100)))
    primary=false
    ((i == 0)) && primary=true
    {
        printf 'country: Country %d\ncurrency: %s\nlocale: es-%s\ntimezone: America/Mexico_City\n' "$i" "$cur" "${cur:0:2}"
        printf 'primary: %s\ncapacity_share: %s\n' "$primary" "$share"
        if ((i % 2 == 0)); then
            printf 'target:\n  docker:\n    host: ssh://deploy@%s-docker-1.packfy.example\n' "$name"
            printf 'traffic:\n  haproxy:\n    runtime_api: /run/haproxy/admin.sock\n'
            printf '    frontend: http://%s.packfy.example\n' "$name"
            printf '    backends: {backend: packfy_backend, frontend: packfy_frontend, worker: packfy_worker}\n'
        else
            printf 'target:\n  kubernetes:\n    context: packfy-%s\n    namespace: packfy-%s\n' "$name" "$name"
        fi
        printf 'settings:\n  tax_rate: 0.%02d\n  max_package_kg: %d\n  customs_form: F-%d\n' $((i % 30)) $((20 + i % 15)) "$i"
        printf '  postal_code_format: "^[0-9]{5}$"\n  phone_format: "+%d XXX XXX XXXX"\n' $((i % 90 + 1))
        printf 'services:\n  backend:\n    env:\n      REGION_CODE: "%s"\n      FEATURE_%d: "on"\n' "$name" $((i % 7))
        printf '      PAYMENT_KEY: {secret: "env:PAYMENT_KEY_%d"}\n' "$i"
        printf '  worker:\n    image: registry.packfy.example/packfy/worker\n    replicas: %d\n' $((1 + i % 3))
        printf '    command: [worker, --queue, %s]\n' "$name"
        printf '    ports: [{container: 9000}]\n    health: {tcp: {}, interval: 5s, timeout: 2s}\n'
        printf '    resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 500m, memory: 512Mi}}\n'
        printf 'environments:\n'
        printf '  development:\n    services:\n      worker: {replicas: 1}\n'
        printf '  staging:\n    version: 1.0.%d-rc1\n    services:\n      backend: {replicas: 2}\n' "$i"
        printf '  production:\n    services:\n      backend:\n        replicas: %d\n' $((3 + i % 5))
        printf '      worker: {replicas: %d, rollout: {max_surge: 2}}\n' $((2 + i % 4))
    } > "$dir/$name.yaml"
done
