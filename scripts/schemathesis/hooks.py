"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Tester-side helpers live here; everything else the tester knows comes from openapi.yaml.
"""

import base64
import hashlib
import os
import re
import uuid
from pathlib import Path

import schemathesis
import yaml
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.generation.meta import TestPhase

_DOCUMENT = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())

# `format: page-cursor` (openapi.yaml, components/schemas/PageCursor): a list cursor is opaque and
# only positions the server wrote are valid, which no JSON Schema keyword can say. Valid ones are
# built the way the server builds them (shared/src/tasks/list.rs: unpadded base64url of
# "<unix microseconds>:<task id>"), from the start of PostgreSQL's timestamptz range (4714 BC) to
# the end of year 9999 (the server's date type stops there); negative generation still sends
# strings that break the documented alphabet and length.
_PG_MIN_UNIX_MICROS = -210_866_803_200_000_000
_PG_END_UNIX_MICROS = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z, exclusive


def _cursor(micros: int, task_id) -> str:
    raw = f"{micros}:{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


schemathesis.openapi.format(
    "page-cursor",
    st.builds(
        _cursor,
        st.integers(min_value=_PG_MIN_UNIX_MICROS, max_value=_PG_END_UNIX_MICROS - 1),
        st.uuids(),
    ),
)

# `format: sync-token` (openapi.yaml, components/schemas/SyncToken): a `since` token is bound to its
# user and valid only up to the positions that user reached, which no JSON Schema keyword can say.
# The run's user (SCHEMATHESIS_USER, set by schemathesis.sh) always has position 0, and nothing of
# theirs is purged during a run, so the token for (started 0, position 0) is valid; it is built the
# way the server builds it (shared/src/tasks/changes.rs): unpadded base64url of [1][started u64]
# [position u64][first 8 bytes of SHA-256("tasks-api sync token\0" + those 17 bytes + user id)].
def _sync_token(user: str) -> str:
    fields = bytes([1]) + (0).to_bytes(8, "big") + (0).to_bytes(8, "big")
    tag = hashlib.sha256(b"tasks-api sync token\0" + fields + user.encode()).digest()[:8]
    return base64.urlsafe_b64encode(fields + tag).decode().rstrip("=")


_SYNC_TOKEN = _sync_token(os.environ.get("SCHEMATHESIS_USER", ""))
schemathesis.openapi.format("sync-token", st.just(_SYNC_TOKEN))

_CONDITIONAL_HEADERS = ("If-Match", "If-None-Match")


# TESTER WORKAROUND (schemathesis 4.32.5, coverage phase): for a header whose pattern needs
# characters outside [A-Za-z0-9] it sends "0" and still calls the case positive, and it fills an
# optional `cursor` from `pattern`/`minLength` without the `page-cursor` format. Those values
# break the document, so a 400 for them is right and is no finding. The same holds for `since`
# (`format: sync-token`), filled from `pattern` with a token no server issued. A positive case keeps every
# value the document allows; one it does not allow is dropped (the parameters are optional)
# or, for a cursor, replaced by a real one derived from it.
_ENTITY_TAG_CONDITION = re.compile(_DOCUMENT["components"]["schemas"]["EntityTagCondition"]["pattern"])
_SERVER_CURSOR = re.compile(r"^(-?[0-9]+):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


def _is_server_cursor(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except ValueError:
        return False
    found = _SERVER_CURSOR.match(text)
    return (
        found is not None
        and _PG_MIN_UNIX_MICROS <= int(found.group(1)) < _PG_END_UNIX_MICROS
        and _cursor(int(found.group(1)), found.group(2)) == value
    )


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    headers = case.headers or {}
    for name in _CONDITIONAL_HEADERS:
        value = headers.get(name)
        if isinstance(value, str) and not _ENTITY_TAG_CONDITION.search(value):
            del headers[name]
    query = case.query or {}
    cursor = query.get("cursor")
    if cursor is not None and not _is_server_cursor(cursor):
        digest = hashlib.sha256(str(cursor).encode()).digest()
        micros = int.from_bytes(digest[:6], "big")
        query["cursor"] = _cursor(micros, uuid.UUID(bytes=digest[16:32]))
    if query.get("since") is not None:
        query["since"] = _SYNC_TOKEN
    return case


# TESTER LIMITATION (stateful phase): its checks assume each POST creates a new task and that a
# deleted task stays gone, but a request that repeats an earlier key and request is a replay
# (CONTRACT.md "Safe retries"): the earlier 201 (a task since deleted: ST302) or 200 (a toggle
# after DELETE: ST301) again, answered before existence is checked, as the contract requires.
# In stateful scenarios a well-formed key is therefore made unique per request; replays, 422 and
# malformed keys are still exercised by the other phases (and tests/idempotency*.rs).
_IDEMPOTENCY_KEY = re.compile(
    _DOCUMENT["components"]["parameters"]["IdempotencyKey"]["schema"]["pattern"]
)
_stateful_keys = iter(range(1, 1 << 62))


@schemathesis.hook("map_case")
def unique_keys_in_stateful_scenarios(context, case):
    meta = case.meta
    if meta is None or meta.phase.name != TestPhase.STATEFUL:
        return case
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and _IDEMPOTENCY_KEY.search(key):
        headers["Idempotency-Key"] = f"stateful-{next(_stateful_keys)}"
    return case
