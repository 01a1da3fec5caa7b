"""The S3 target's client (aiobotocore, no boto3 layer): its session takes the keys and the
region as configured, and once made it holds no table only its making needed, yet works."""

from __future__ import annotations

import gc
import types

import pytest
from botocore.regions import EndpointResolver

import akoshad.targets.s3.client as s3client
from akoshad.targets.s3.target import S3Target
from tests.s3server import WeedServer


async def test_the_session_takes_the_keys_and_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    keyed = S3Target(bucket="b", access_key_id="a", secret_access_key="s")
    session = s3client._session(keyed)
    assert session.get_config_variable("region") == "eu-west-3"  # AWS: "auto" is the chain's
    creds = await session.get_credentials()
    assert (creds.access_key, creds.secret_key) == ("a", "s")
    # no keys configured: botocore's chain (here the environment)
    chain = s3client._session(S3Target(bucket="b", endpoint="http://127.0.0.1:1"))
    creds = await chain.get_credentials()
    assert creds.access_key == "from-env"
    assert chain.get_config_variable("region") == "auto"  # a custom endpoint: as configured
    named = S3Target(bucket="b", region="ap-south-1")
    assert s3client._session(named).get_config_variable("region") == "ap-south-1"


def _endpoint_tables(client: object) -> list[EndpointResolver]:
    """The endpoints tables (``EndpointResolver`` with partitions) the client keeps alive:
    what its objects reach, not through functions, classes or modules (the test process has
    other botocore clients)."""
    gc.collect()
    found, seen, todo = [], set(), [client]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        if isinstance(obj, EndpointResolver) and obj._endpoint_data.get("partitions"):
            found.append(obj)
        todo.extend(gc.get_referents(obj))
    return found


async def test_the_client_lets_go_of_the_endpoints_table_and_still_works(
    s3: WeedServer, system_id: str
) -> None:
    t = s3.s3_target(system_id)
    await t.start()
    try:
        assert _endpoint_tables(t._client) == []  # botocore's endpoints.json, held until let go
        assert t._client._loader._cache == {}
        key = f"systems/{system_id}/uploads/u1/a.json"
        assert await t.put_bytes(key, b'{"a": 1}', "application/json") == 8
        assert await t.head(key) == 8
        assert b"".join([c async for c in t.read(key)]) == b'{"a": 1}'
        assert [k async for k in t.list_keys(f"systems/{system_id}/")] == [key]
        await t.delete_keys([key])
        assert await t.head(key) is None
    finally:
        await t.close()
