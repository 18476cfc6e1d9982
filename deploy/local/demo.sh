#!/usr/bin/env bash
# Runs the demo: the Google-side emulator, the adapter and the built-in CA as separate processes
# on loopback. Simulated ChromeOS devices and users (RSA-2048 and P-256 keys) ask for certificates;
# the emulator verifies each one against the CA and the device key and prints a table.
# Exits 0 only if every process received a verified certificate.
set -euo pipefail
cd "$(dirname "$0")/../.."

REST_PORT=${DEMO_REST_PORT:-8480}
PUBSUB_PORT=${DEMO_PUBSUB_PORT:-8481}
VA_PORT=${DEMO_VA_PORT:-8443}
OPS_PORT=${DEMO_OPS_PORT:-8482}
COUNT=${DEMO_COUNT:-24}
work=.demo
bin=bin

rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "==> creating the built-in CA in $work/ca"
"$bin/certprov-adapter" init-ca --dir "$work/ca" --cn "certprov demo CA"

echo "==> starting the Google-side emulator (REST :$REST_PORT, Pub/Sub :$PUBSUB_PORT)"
"$bin/certprov-emulator" serve --listen "127.0.0.1:$REST_PORT" --pubsub-listen "127.0.0.1:$PUBSUB_PORT" \
  --project demo --topic certprov --subscription certprov-adapter --directory-records >"$work/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q "emulator ready" "$work/emulator.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "emulator ready" "$work/emulator.log" || { echo "emulator did not start:"; cat "$work/emulator.log"; exit 1; }

export CERTPROV_GOOGLE_ENDPOINT="http://127.0.0.1:$REST_PORT/"
export CERTPROV_PUBSUB_ENDPOINT="127.0.0.1:$PUBSUB_PORT"
export CERTPROV_VERIFIEDACCESS_ENDPOINT="http://127.0.0.1:$REST_PORT/"
export CERTPROV_VERIFIEDACCESS_LISTEN="127.0.0.1:$VA_PORT"
export CERTPROV_OPS_LISTEN="127.0.0.1:$OPS_PORT"
echo "==> validating configs/demo.yaml"
"$bin/certprov-adapter" validate --config configs/demo.yaml

echo "==> starting the adapter (log: $work/adapter.log)"
"$bin/certprov-adapter" run --config configs/demo.yaml >"$work/adapter.log" 2>&1 &
pids+=($!)

echo "==> provisioning $COUNT devices and users"
set +e
"$bin/certprov-emulator" provision --emulator "http://127.0.0.1:$REST_PORT" --count "$COUNT" \
  --mix device-rsa,device-ec,user-rsa,user-ec --customer C0demo --profile device --user-profile user \
  --ca-ref builtin --ca-cert "$work/ca/ca.crt" --sign-delay 300ms --timeout 2m
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "demo FAILED; last adapter log lines:"
  tail -n 30 "$work/adapter.log"
  exit $rc
fi

echo "==> Verified Access enrollment (the emulator plays the Chrome extension)"
va() {
  "$bin/certprov-emulator" va-enroll --adapter "http://127.0.0.1:$VA_PORT" --emulator "http://127.0.0.1:$REST_PORT" \
    --ca-cert "$work/ca/ca.crt" "$@"
}
va_failed=0
echo "--- v2, machine key (RSA), healthy device:"
va --profile machine --scope machine --identity example.com --key rsa || va_failed=1
echo "--- v1, user key (P-256):"
va --profile user --scope user --identity alice@example.com --key ecdsa || va_failed=1
echo "--- v2, machine key on a device without disk encryption (the policy must refuse it):"
set +e
out=$(va --profile machine --scope machine --identity example.com --signals '{"deviceSignals":{"diskEncryption":"DISK_ENCRYPTION_DISABLED"}}' 2>&1)
set -e
echo "$out"
echo "$out" | grep -q POLICY_DENIED || { echo "expected POLICY_DENIED"; va_failed=1; }
if [ $va_failed -ne 0 ]; then
  echo "demo FAILED (Verified Access); last adapter log lines:"
  tail -n 30 "$work/adapter.log"
  exit 1
fi
if command -v curl >/dev/null; then
  echo "==> ops listener (http://127.0.0.1:$OPS_PORT): readiness and what the metrics counted"
  ready=0
  for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >"$work/readyz.json" 2>/dev/null && { ready=1; break; }
    sleep 0.2
  done
  if [ $ready -ne 1 ]; then
    echo "demo FAILED: /readyz is not 200:"; cat "$work/readyz.json" 2>/dev/null; exit 1
  fi
  curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" | grep -E '^certprov_(processes_finished_total|verifiedaccess_enrollments_total|directory_lookups_total)\{' || true
fi
echo "demo OK"
