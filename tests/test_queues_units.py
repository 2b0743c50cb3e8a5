"""Queue parts without NATS: attributes, receipt handles, ack subjects, message headers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth.secrets import ServerSecrets
from gateway.bus.queues import DeliveryRef, parse_ack_subject
from gateway.errors import BadRequest
from gateway.queues.attributes import QueueAttributes, RedrivePolicy
from gateway.queues.deliveries import DeliveryState
from gateway.queues.errors import InvalidReceiptHandle
from gateway.queues.handles import ReceiptHandle
from gateway.queues.messages import decode_attributes, encode_attributes, validate_attributes, validate_entry_ids
from gateway.settings import Settings
from gateway.topics import Namespace


def make_secrets(tmp_path: Path, secret: str = "s" * 32) -> ServerSecrets:
    return ServerSecrets.load(Settings.from_env({}, data_dir=tmp_path, secret_key=secret, admin_key="a" * 32))


NS = Namespace("alice", "shop")
REF = DeliveryRef(stream_seq=42, delivery_seq=57, delivered=3, timestamp_ns=1_795_642_153_537_492_101)


# -- attributes ----------------------------------------------------------------------------------


def test_defaults_are_sqs_defaults_capped_by_the_gateway_limit() -> None:
    attributes = QueueAttributes.default(1024 * 1024)
    assert attributes.to_json() == {
        "visibility_timeout": 30,
        "message_retention_seconds": 345_600,
        "delay_seconds": 0,
        "receive_wait_seconds": 0,
        "max_message_bytes": 262_144,
        "redrive_policy": None,
    }
    assert QueueAttributes.default(65_536).max_message_bytes == 65_536


def test_update_changes_only_what_is_given_and_round_trips() -> None:
    base = QueueAttributes.default(1024 * 1024)
    changed = base.updated(
        {"visibility_timeout": 0, "redrive_policy": {"dead_letter_queue": "dlq", "max_receive_count": 5}},
        max_message_bytes=1024 * 1024,
    )
    assert changed.visibility_timeout == 0
    assert changed.redrive_policy == RedrivePolicy("dlq", 5)
    assert changed.message_retention_seconds == base.message_retention_seconds
    assert QueueAttributes.from_json(changed.to_json()) == changed
    assert changed.updated({"redrive_policy": None}, max_message_bytes=1024 * 1024).redrive_policy is None


@pytest.mark.parametrize(
    "changes",
    [
        {"visibility_timeout": 43_201},
        {"visibility_timeout": 1.5},
        {"delay_seconds": -1},
        {"max_message_bytes": 2 * 1024 * 1024},
        {"nope": 1},
        {"redrive_policy": {"dead_letter_queue": "", "max_receive_count": 1}},
        {"redrive_policy": {"dead_letter_queue": "d", "max_receive_count": 1001}},
        {"redrive_policy": {"dead_letter_queue": "d", "max_receive_count": 1, "extra": 1}},
    ],
)
def test_invalid_changes_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        QueueAttributes.default(1024 * 1024).updated(changes, max_message_bytes=1024 * 1024)


# -- receipt handles -------------------------------------------------------------------------------


def test_handle_round_trips_and_is_url_safe(tmp_path: Path) -> None:
    secrets = make_secrets(tmp_path)
    text = ReceiptHandle("0123456789abcdef", REF).encode(secrets, NS)
    assert all(c.isalnum() or c in "-_" for c in text)
    assert ReceiptHandle.decode(text, secrets, NS) == ReceiptHandle("0123456789abcdef", REF)


def test_handle_is_scoped_to_namespace_and_secret(tmp_path: Path) -> None:
    secrets = make_secrets(tmp_path)
    text = ReceiptHandle("0123456789abcdef", REF).encode(secrets, NS)
    with pytest.raises(InvalidReceiptHandle):
        ReceiptHandle.decode(text, secrets, Namespace("alice", "other"))
    with pytest.raises(InvalidReceiptHandle):
        ReceiptHandle.decode(text, secrets, Namespace("bob", "shop"))
    other_server = make_secrets(tmp_path / "other", "t" * 32)
    with pytest.raises(InvalidReceiptHandle):
        ReceiptHandle.decode(text, other_server, NS)


@given(position=st.integers(min_value=0, max_value=52), bit=st.integers(min_value=0, max_value=7))
def test_any_changed_bit_is_refused(tmp_path_factory: pytest.TempPathFactory, position: int, bit: int) -> None:
    secrets = make_secrets(tmp_path_factory.mktemp("s"))
    text = ReceiptHandle("0123456789abcdef", REF).encode(secrets, NS)
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[position] ^= 1 << bit
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidReceiptHandle):
        ReceiptHandle.decode(forged, secrets, NS)


@pytest.mark.parametrize("text", ["", "x", "!!!!", "A" * 129, "AAAA" * 18])
def test_malformed_handles_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(InvalidReceiptHandle):
        ReceiptHandle.decode(text, make_secrets(tmp_path), NS)


# -- JetStream ack subjects and delivery state -------------------------------------------------------


def test_ack_subjects_of_both_formats_parse() -> None:
    stream, ref = parse_ack_subject("$JS.ACK.FGQ_ab.worker.2.1.4.1795642153537492101.0")
    assert (stream, ref) == ("FGQ_ab", DeliveryRef(1, 4, 2, 1795642153537492101))
    stream, ref = parse_ack_subject("$JS.ACK.hub.ACCHASH.FGQ_ab.worker.2.1.4.1795642153537492101.0.token")
    assert (stream, ref) == ("FGQ_ab", DeliveryRef(1, 4, 2, 1795642153537492101))
    with pytest.raises(ValueError):
        parse_ack_subject("_INBOX.abc")


def test_delivery_state_current_handle() -> None:
    assert DeliveryState().current == 1
    assert DeliveryState(handed_out=0, skipped=1).current == 1
    assert DeliveryState(handed_out=4, skipped=1).current == 4


# -- message attributes and batch ids -------------------------------------------------------------------


def test_message_attributes_round_trip_through_a_header() -> None:
    attributes = validate_attributes({"trace": 'ü\n"x"', "a.b-c_d": ""})
    header = encode_attributes(attributes)
    assert header.isascii() and "\n" not in header
    assert decode_attributes(header) == attributes
    assert decode_attributes("%%%") == {}


@pytest.mark.parametrize("value", [[], {"a b": "x"}, {"a": 1}, {str(i): "v" for i in range(11)}, {"": "x"}])
def test_invalid_message_attributes(value: object) -> None:
    with pytest.raises(BadRequest):
        validate_attributes(value)


@pytest.mark.parametrize("ids", [["a", "a"], [""], ["x" * 81], [None], ["a b"]])
def test_invalid_entry_ids(ids: list[object]) -> None:
    with pytest.raises(BadRequest):
        validate_entry_ids(ids)
