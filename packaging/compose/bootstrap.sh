#!/bin/sh
# The compose file's one-shot `bootstrap`: registers Echo's own services as
# clients of identity, with the secrets of .env, before any of them starts
# (what `echod up` does for itself; docs/packaging.md). Idempotent: a client
# that exists is left as it is. Secrets go through standard input, never argv.
set -eu

registered() {
  echod client list | awk 'NR > 1 { print $1 }' | grep -qx "$1"
}

if ! registered gateway; then
  printf '%s\n' "$ECHO_GATEWAY_CLIENT_SECRET" | echod client add gateway --secret-stdin \
    --redirect-uri "$ECHO_GATEWAY_PUBLIC_URL/callback" \
    --post-logout-redirect-uri "$ECHO_GATEWAY_PUBLIC_URL/signed-out" \
    --grant authorization_code --grant refresh_token --grant client_credentials --grant token_exchange \
    --audience gateway --audience audit --audience docs \
    --scope openid --scope profile --scope offline_access --scope audit.read --scope audit.write
fi
if ! registered worker; then
  printf '%s\n' "$ECHO_WORKER_CLIENT_SECRET" | echod client add worker --secret-stdin \
    --grant client_credentials --audience parser --audience docs --audience audit \
    --scope docs.index --scope audit.write
fi
if ! registered docs; then
  printf '%s\n' "$ECHO_DOCS_CLIENT_SECRET" | echod client add docs --secret-stdin \
    --grant client_credentials --audience audit --scope audit.write
fi
if ! registered parser; then
  printf '%s\n' "$ECHO_PARSER_CLIENT_SECRET" | echod client add parser --secret-stdin \
    --grant client_credentials --audience audit --scope audit.write
fi
echo "bootstrap: clients gateway, worker, docs and parser registered"
