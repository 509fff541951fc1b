"""OpenID Connect sign-in cost on Kirby's side, next to bare baselines of the same run (not a test).

Run: .venv/bin/python bench/oidc.py [--count N]   (after ``deploy/services up oidc`` and
``eval "$(deploy/services env)"``: the provider at KIRBY_TEST_OIDC_ISSUER)

* ``OidcClient.begin`` (one GET of the discovery document, its checks, state/nonce/PKCE, the URL)
  against a bare ``requests.get`` of the same document.
* ``OidcClient.verify_id_token`` of a real ID token (JWKS cached: kid lookup, RS256 signature,
  iss/aud/exp/iat/nonce) against a bare ``joserfc.jwt.decode`` with the key in hand.
* A whole sign-in as a browser would do it, over HTTP: ``begin``, the provider's login form, its
  redirects, then ``finish`` (the token request and the checks); the provider's share is in it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests
from joserfc import jwt

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from bench._common import load, ms, pct  # noqa: E402
from kirby.config import load_settings  # noqa: E402
from kirby.web.oidc_login import OidcClient  # noqa: E402
from tests.oidc_provider import oidc_variables, sign_in_at_provider  # noqa: E402


def timed(call, count: int) -> list[float]:
    values = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        values.append(time.perf_counter() - started)
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    count = parser.parse_args().count
    issuer = os.environ.get("KIRBY_TEST_OIDC_ISSUER")
    if not issuer:
        sys.exit(
            'bench/oidc.py: KIRBY_TEST_OIDC_ISSUER is unset: deploy/services up oidc; eval "$(deploy/services env)"'
        )
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(environ=oidc_variables(issuer, "http://127.0.0.1:18080"), cwd=Path(folder))
    client = OidcClient.discover(settings)
    print(f"bench/oidc.py against {issuer}; {load()}")

    document = f"{issuer}/.well-known/openid-configuration"
    print(f"begin           kirby {ms(timed(client.begin, count))}")
    print(f"                bare  {ms(timed(lambda: requests.get(document, timeout=10).json(), count))}")

    url, request = client.begin()
    _, id_token = client.finish(request, sign_in_at_provider(url, "ada"), time.time())
    header = json.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "=="))
    key = client._keys.get_by_kid(header["kid"])
    verify = timed(lambda: client.verify_id_token(id_token, request.nonce, time.time()), count * 5)
    bare = timed(lambda: jwt.decode(id_token, key, algorithms=["RS256"]), count * 5)
    for name, values in (("verify_id_token kirby", verify), ("                bare ", bare)):
        print(f"{name} p50 {pct(values, 0.5) * 1e6:7.0f} us  p99 {pct(values, 0.99) * 1e6:7.0f} us  (n={len(values)})")

    def whole() -> None:
        url, request = client.begin()
        client.finish(request, sign_in_at_provider(url, "vic"), time.time())

    print(f"whole sign-in         {ms(timed(whole, max(10, count // 10)))}   {load()}")


if __name__ == "__main__":
    main()
