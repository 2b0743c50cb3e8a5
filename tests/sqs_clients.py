"""AWS clients of a test gateway: credentials from an API key, boto3 over the JSON or the Query protocol.

Current botocore speaks JSON 1.0 to SQS. For the Query protocol the client is
built from the SQS service model of Debian's ``awscli`` (botocore 1.29's, the
last with ``protocol: query`` and its flattened wire names), loaded through a
botocore data path: the same requests older SDKs send.
"""

from __future__ import annotations

import functools
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config

from tests.harness import Gateway

QUERY_MODEL = Path("/usr/lib/python3/dist-packages/awscli/botocore/data/sqs/2012-11-05/service-2.json")
PROTOCOLS = ("json", "query")


@dataclass(frozen=True)
class AwsUser:
    user_id: str
    key_id: str
    api_key: str
    access_key_id: str
    secret_access_key: str


def aws_user(gateway: Gateway, plan: str = "free", **key: Any) -> AwsUser:
    user_id = "u" + secrets.token_hex(5)
    response = gateway.admin("POST", "/api/v1/admin/users", json={"user_id": user_id, "plan": plan})
    assert response.status_code == 201, response.text
    response = gateway.admin("POST", f"/api/v1/admin/users/{user_id}/keys", json={"name": "sqs", **key})
    assert response.status_code == 201, response.text
    body = response.json()
    return AwsUser(user_id, body["id"], body["key"], body["access_key_id"], body["secret_access_key"])


@functools.cache
def _query_data_path() -> Path:
    """A botocore data directory holding the Query-protocol SQS model (made once per process)."""
    root = Path(tempfile.mkdtemp(prefix="fg-sqs-model-"))
    target = root / "sqs" / "2012-11-05"
    target.mkdir(parents=True)
    shutil.copy(QUERY_MODEL, target / "service-2.json")
    return root


def sqs_client(
    gateway: Gateway,
    user: AwsUser,
    protocol: str = "json",
    *,
    region: str = "default",
    secret: str | None = None,
    access_key_id: str | None = None,
    retries: int = 1,  # retries after the first attempt (botocore's max_attempts)
    read_timeout: float = 30,
    connect_timeout: float = 10,
) -> Any:
    session = botocore.session.get_session()
    if protocol == "query":
        loader = session.get_component("data_loader")
        loader.search_paths.insert(0, str(_query_data_path()))
    client = boto3.Session(botocore_session=session).client(
        "sqs",
        endpoint_url=gateway.base_url,
        region_name=region,
        aws_access_key_id=access_key_id or user.access_key_id,
        aws_secret_access_key=secret or user.secret_access_key,
        config=Config(
            retries={"mode": "standard", "max_attempts": retries},
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
        ),
    )
    assert client.meta.service_model.protocol == protocol
    return client
