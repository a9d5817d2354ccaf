#!/bin/sh
# The compose file's one-shot `bootstrap`: registers Echo's own services as
# clients of identity, with the secrets' files compose mounts in
# /run/secrets, before any of them starts (what `echod up` does for itself;
# docs/packaging.md). Idempotent: a client that exists is left as it is.
# Secrets go through standard input, never argv.
set -eu

secrets=/run/secrets

registered() {
  echod client list | awk 'NR > 1 { print $1 }' | grep -qx "$1"
}

if ! registered gateway; then
  echod client add gateway --secret-stdin <"$secrets/gateway_client_secret" \
    --redirect-uri "$ECHO_GATEWAY_PUBLIC_URL/callback" \
    --post-logout-redirect-uri "$ECHO_GATEWAY_PUBLIC_URL/signed-out" \
    --grant authorization_code --grant refresh_token --grant client_credentials --grant token_exchange \
    --audience gateway --audience audit --audience docs \
    --scope openid --scope profile --scope offline_access --scope audit.read --scope audit.write
fi
if ! registered worker; then
  echod client add worker --secret-stdin <"$secrets/worker_client_secret" \
    --grant client_credentials --audience parser --audience docs --audience audit \
    --scope docs.index --scope audit.write
fi
if ! registered docs; then
  echod client add docs --secret-stdin <"$secrets/docs_client_secret" \
    --grant client_credentials --audience audit --scope audit.write
fi
if ! registered parser; then
  echod client add parser --secret-stdin <"$secrets/parser_client_secret" \
    --grant client_credentials --audience audit --scope audit.write
fi
echo "bootstrap: clients gateway, worker, docs and parser registered"
