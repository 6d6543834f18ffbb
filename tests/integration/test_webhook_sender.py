"""The webhook sender connects to the very address it checked, over real sockets on loopback."""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from services.aggregator.sender import BODY_BYTES, RETRY_AFTER_MAX_S, HttpSender
from shared.netguard import parse_networks, resolve
from tests.receiver import Receiver, ScriptedResolver

SECRET = "whsec_" + base64.b64encode(b"sender-test-secret-0123456").decode()
ONLY_127_0_0_1 = parse_networks("127.0.0.1/32")


def signed(body: bytes) -> dict[str, str]:
    at = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": "msg_sender_test",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_sender_test", at, body.decode()),
    }


@pytest.fixture
def allowed_receiver():
    receiver = Receiver(SECRET).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def refused_receiver(allowed_receiver):
    """Listens on 127.0.0.2 at the allowed receiver's port: where a rebound name would lead."""
    receiver = Receiver(SECRET, host="127.0.0.2")
    receiver.port = allowed_receiver.port
    receiver.start()
    yield receiver
    receiver.stop()


async def post(sender: HttpSender, url: str):
    body = b'{"type":"test","data":{}}'
    return await sender.post(url, signed(body), body)


async def test_a_name_rebound_between_check_and_connect_never_reaches_the_refused_address(
    allowed_receiver, refused_receiver
):
    port = allowed_receiver.port
    resolver = ScriptedResolver(["127.0.0.1"], ["127.0.0.2"])
    url = f"http://rebind.test:{port}/hook"
    # Check time (as when the endpoint is saved): the name answers the allowed address.
    checked = await resolve("rebind.test", port, ONLY_127_0_0_1, resolver)
    assert checked == (ipaddress.ip_address("127.0.0.1"),)
    sender = HttpSender(timeout_s=10, allowed_networks=ONLY_127_0_0_1, resolver=resolver)
    try:
        # Connect time: the name now answers 127.0.0.2, and that is what gets checked.
        first = await post(sender, url)
        assert first.refused
        assert first.status is None
        assert "rebind.test resolves to 127.0.0.2, a loopback (127.0.0.0/8) address" in (
            first.error or ""
        )
        answers = [await post(sender, url) for _ in range(20)]  # keeps flipping
    finally:
        await sender.close()
    assert refused_receiver.calls == 0
    assert [a.status for a in answers] == [200, None] * 10
    assert [a.refused for a in answers] == [False, True] * 10
    assert allowed_receiver.calls == 10
    assert allowed_receiver.bad_signatures == 0
    assert allowed_receiver.host_headers == [f"rebind.test:{port}"] * 10
    assert resolver.asked == [("rebind.test", port)] * 22  # once per attempt, never twice


async def test_a_name_with_one_refused_address_among_several_is_refused(allowed_receiver):
    resolver = ScriptedResolver(["127.0.0.1", "10.0.0.1"])
    sender = HttpSender(timeout_s=10, allowed_networks=ONLY_127_0_0_1, resolver=resolver)
    try:
        answer = await post(sender, f"http://multi.test:{allowed_receiver.port}/hook")
    finally:
        await sender.close()
    assert answer.refused
    assert "multi.test resolves to 10.0.0.1, a private (10.0.0.0/8) address" in (answer.error or "")
    assert allowed_receiver.calls == 0


async def test_an_unreachable_first_address_falls_back_to_the_next_checked_one(allowed_receiver):
    resolver = ScriptedResolver(["127.0.0.3", "127.0.0.1"])  # nothing listens on 127.0.0.3
    sender = HttpSender(
        timeout_s=10, allowed_networks=parse_networks("127.0.0.0/8"), resolver=resolver
    )
    try:
        answer = await post(sender, f"http://two.test:{allowed_receiver.port}/hook")
    finally:
        await sender.close()
    assert (answer.status, answer.error) == (200, None)
    assert allowed_receiver.calls == 1


async def test_https_verifies_the_name_and_sends_it_as_sni_while_dialling_the_checked_address():
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example.test").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    receiver = Receiver(SECRET, tls=server_tls).start()
    port = receiver.port
    resolver = ScriptedResolver(["127.0.0.1"])  # every name is this loopback receiver
    sender = HttpSender(
        timeout_s=10, allowed_networks=ONLY_127_0_0_1, resolver=resolver, ssl_context=client_tls
    )
    try:
        good = await post(sender, f"https://hooks.example.test:{port}/hook")
        wrong_name = await post(sender, f"https://other.example.test:{port}/hook")
        bare_ip = await post(sender, f"https://127.0.0.1:{port}/hook")
    finally:
        await sender.close()
        receiver.stop()
    assert (good.status, good.error) == (200, None)
    assert receiver.host_headers == [f"hooks.example.test:{port}"]
    assert receiver.calls == 1  # neither failure got as far as a request
    for failed in (wrong_name, bare_ip):
        assert failed.status is None
        assert not failed.refused
        assert "CERTIFICATE_VERIFY_FAILED" in (failed.error or "")
    assert "Hostname mismatch" in (wrong_name.error or "")
    assert "IP address mismatch" in (bare_ip.error or "")
    # The name went out as SNI, also where the certificate did not match it; no SNI for an IP.
    assert receiver.server_names == ["hooks.example.test", "other.example.test", None]
    assert resolver.asked == [("hooks.example.test", port), ("other.example.test", port)]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[64:ff9b::7f00:1]:{port}/", "a NAT64 (64:ff9b::/96) address"),
        ("http://[::ffff:127.0.0.1]:{port}/", "IPv4-mapped address embedding 127.0.0.1"),
        ("http://[::1/x", "not a valid URL"),
        ("http://evil@127.0.0.1:{port}/", "must not contain a user name or password"),
        ("http://127.0.0.1:99999/", "not a valid URL (Port out of range"),
    ],
)
async def test_refused_and_malformed_urls_are_refused_before_any_lookup(
    allowed_receiver, url, reason
):
    resolver = ScriptedResolver(["127.0.0.1"])
    sender = HttpSender(timeout_s=10, resolver=resolver)
    try:
        answer = await post(sender, url.format(port=allowed_receiver.port))
    finally:
        await sender.close()
    assert answer.refused
    assert reason in (answer.error or "")
    assert resolver.asked == []
    assert allowed_receiver.calls == 0


async def test_a_name_that_does_not_resolve_now_is_a_failure_to_retry_not_a_refusal():
    async def failing(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    sender = HttpSender(timeout_s=10, resolver=failing)
    try:
        answer = await post(sender, "https://hooks.example.test/hook")
    finally:
        await sender.close()
    assert not answer.refused
    assert answer.status is None
    assert "hooks.example.test does not resolve" in (answer.error or "")


async def test_the_answer_keeps_a_storable_first_kilobyte_and_a_bounded_retry_after(
    allowed_receiver,
):
    allowed_receiver.status = 503
    allowed_receiver.answer_body = b"\x00" + b"x" * 50_000
    sender = HttpSender(timeout_s=10, allowed_networks=ONLY_127_0_0_1)
    try:
        retry_after = {}
        for value in ("inf", "nan", "1e30", "-5", "120"):
            allowed_receiver.answer_headers = {"Retry-After": value}
            answer = await post(sender, allowed_receiver.url)
            retry_after[value] = answer.retry_after_s
    finally:
        await sender.close()
    assert answer.status == 503
    assert answer.body == "\N{REPLACEMENT CHARACTER}" + "x" * (BODY_BYTES - 1)
    assert retry_after == {"inf": None, "nan": None, "1e30": RETRY_AFTER_MAX_S, "-5": 0, "120": 120}
