"""Build signatures (BUILDER_SIGNING_KEY): HMAC-SHA256 over (build id, image id, sha256).

The key lives outside the database, so a role that can write the database (a compromised login, a
trigger someone attached to a builder table) cannot make a build deployable: when the key is set,
the builder signs what it built and tested when the build succeeds, and the deployment refuses any
build whose signature is missing or does not verify.
"""

from __future__ import annotations

import hashlib
import hmac

VERSION = "agent-builder/build/v1"


def _message(build_id: int, image_id: str | None, artifact_sha256: str | None) -> bytes:
    # One field per line; none of the fields can contain a newline (an integer, a Docker image id,
    # a hex digest), so no two different triples share a message.
    return f"{VERSION}\n{int(build_id)}\n{image_id or ''}\n{artifact_sha256 or ''}".encode("utf-8")


def sign(key: str, build_id: int, image_id: str | None, artifact_sha256: str | None) -> str:
    return hmac.new(key.encode("utf-8"), _message(build_id, image_id, artifact_sha256), hashlib.sha256).hexdigest()


def verify(key: str, build_id: int, image_id: str | None, artifact_sha256: str | None, signature: str | None) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(sign(key, build_id, image_id, artifact_sha256), signature)
