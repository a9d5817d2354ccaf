#!/bin/sh
# Writes the compose set's secrets, one file each under ./secrets (0700;
# files 0600), each random (openssl rand) and the URLs made from them. A
# file that exists is kept, so running it again changes nothing; delete a
# file to make it anew (then restart what reads it). docs/packaging.md.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets

# secret NAME VALUE: writes secrets/NAME unless it exists.
secret() {
  [ -e "secrets/$1" ] || printf '%s\n' "$2" > "secrets/$1"
}
hex() { openssl rand -hex 32; }

secret postgres_password "$(hex)"
secret redis_password "$(hex)"
secret master_key "$(hex)"
# 32 bytes, base64url without padding.
secret audit_signing_key "$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=')"
for client in gateway worker docs parser; do
  secret "${client}_client_secret" "$(hex)"
done

postgres=$(cat secrets/postgres_password)
redis=$(cat secrets/redis_password)
for database in identity audit docs; do
  secret "${database}_database_url" "postgres://echo:$postgres@postgres:5432/$database"
done
secret redis_url "redis://:$redis@redis:6379/0"
secret redis.conf "requirepass $redis
appendonly yes"
echo "secrets in $(pwd)/secrets"
