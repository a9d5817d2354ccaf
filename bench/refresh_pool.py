#!/usr/bin/env python3
"""Make a pool of refresh tokens through a provider's real HTTP flow.

Each of --threads workers logs in once through the provider's own login form
(authorization-code flow with PKCE, scope `openid offline_access`; the logins
one after the other), then, on that SSO session, runs the flow again and again until N tokens are made:
GET the authorization endpoint, follow redirects (through any interaction page the provider needs, e.g. the peer's
consent step) until the redirect URI with a code, then exchange the code at
the token endpoint with client_secret_basic and the PKCE verifier. Every
exchange yields a new refresh token of its own, never used.

Works against Echo and against the peer (oidc-provider), using only their
discovery document and login forms. Writes one refresh token per line to
--out, and one access token (from the last exchange) to --access-token-out.

    bench/refresh_pool.py --issuer http://127.0.0.1:18081 --client-id web \
      --client-secret S --redirect-uri http://127.0.0.1:4999/callback \
      --username alice --password 'correct horse' -n 20000 --out pool.txt
"""
import argparse
import base64
import hashlib
import html
import http.cookiejar
import json
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


class StopAtRedirectUri(urllib.request.HTTPRedirectHandler):
    def __init__(self, redirect_uri):
        self.redirect_uri = redirect_uri

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if newurl.startswith(self.redirect_uri):
            return None  # urllib raises HTTPError: we read the code from Location
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Flow:
    def __init__(self, a, meta, jar):
        self.a, self.meta, self.jar = a, meta, jar
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar), StopAtRedirectUri(a.redirect_uri))
        basic = f"{urllib.parse.quote_plus(a.client_id)}:{urllib.parse.quote_plus(a.client_secret)}"
        self.basic = "Basic " + base64.b64encode(basic.encode()).decode()

    def code(self, login):
        """One authorization request (through the login form if `login`); returns (code, verifier)."""
        verifier = b64url(secrets.token_bytes(32))
        state = b64url(secrets.token_bytes(12))
        q = {
            "response_type": "code", "client_id": self.a.client_id,
            "redirect_uri": self.a.redirect_uri, "scope": self.a.scope,
            "state": state, "nonce": b64url(secrets.token_bytes(12)),
            "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        if self.a.prompt:
            q["prompt"] = self.a.prompt
        req = urllib.request.Request(self.meta["authorization_endpoint"] + "?" + urllib.parse.urlencode(q))
        for _ in range(6):  # login form at most once; bounded
            try:
                resp = self.opener.open(req, timeout=10)
            except urllib.error.HTTPError as e:
                loc = e.headers.get("Location", "")
                if e.code in (301, 302, 303, 307) and loc.startswith(self.a.redirect_uri):
                    p = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
                    if p.get("state") != [state] or "code" not in p:
                        raise RuntimeError(f"bad redirect: {loc}")
                    return p["code"][0], verifier
                raise RuntimeError(f"HTTP {e.code} at {req.full_url}: {e.read()[:300]!r}")
            page = resp.read().decode("utf-8", "replace")
            if not login or 'type="password"' not in page:
                raise RuntimeError(f"unexpected page at {resp.geturl()}: {page[:300]!r}")
            m = re.search(r'<form[^>]*action="([^"]+)"', page)
            fields = {n: html.unescape(v) for n, v in
                      re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)}
            fields.update(username=self.a.username, password=self.a.password)
            req = urllib.request.Request(urllib.parse.urljoin(resp.geturl(), html.unescape(m.group(1))),
                                         urllib.parse.urlencode(fields).encode())
            login = False
        raise RuntimeError("too many steps")

    def tokens(self, code, verifier):
        body = urllib.parse.urlencode({
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": self.a.redirect_uri, "code_verifier": verifier}).encode()
        req = urllib.request.Request(self.meta["token_endpoint"], body, {
            "Authorization": self.basic, "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=10) as r:
            d = json.load(r)
        if "refresh_token" not in d:
            raise RuntimeError(f"no refresh_token in {sorted(d)}")
        return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret", required=True)
    ap.add_argument("--redirect-uri", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--scope", default="openid offline_access")
    ap.add_argument("--prompt", default="", help="e.g. consent (the peer keeps offline_access only with it)")
    ap.add_argument("-n", type=int, required=True, help="refresh tokens to make")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=600, help="bound on the whole run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--access-token-out")
    a = ap.parse_args()
    host = urllib.parse.urlsplit(a.issuer).hostname
    if not (host in ("localhost", "::1") or host.startswith("127.")):
        sys.exit(f"refusing: issuer host {host!r} is not loopback")

    with urllib.request.urlopen(a.issuer + "/.well-known/openid-configuration", timeout=10) as r:
        meta = json.load(r)
    pool, lock, errors, last_access = [], threading.Lock(), [], [None]
    deadline = time.monotonic() + a.max_seconds

    # One password login per worker (its own SSO session, so no two flows of
    # one session run at once), one after the other: Echo's lockout reserves
    # an attempt per login in flight, and refuses more than 5 at once for one
    # account even with the right password.
    flows = []
    for _ in range(a.threads):
        f = Flow(a, meta, http.cookiejar.CookieJar())
        d = f.tokens(*f.code(login=True))
        pool.append(d["refresh_token"])
        last_access[0] = d["access_token"]
        flows.append(f)

    def worker(f):
        while time.monotonic() < deadline:
            with lock:
                if len(pool) >= a.n or errors:
                    return
            try:
                d = f.tokens(*f.code(login=False))
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))
                return
            with lock:
                pool.append(d["refresh_token"])
                last_access[0] = d["access_token"]

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(f,)) for f in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"pool: error after {len(pool)} tokens: {errors[0]}")
    pool = pool[:a.n]
    if len(pool) < a.n:
        sys.exit(f"pool: only {len(pool)} of {a.n} tokens within {a.max_seconds} s")
    if len(set(pool)) != len(pool):
        sys.exit("pool: duplicate refresh tokens")
    with open(a.out, "w") as f:
        f.write("\n".join(pool) + "\n")
    if a.access_token_out:
        with open(a.access_token_out, "w") as f:
            f.write(last_access[0] + "\n")
    print(f"pool: {len(pool)} distinct refresh tokens in {time.monotonic() - t0:.1f} s "
          f"({a.threads} threads, one password login each)", file=sys.stderr)


if __name__ == "__main__":
    main()
