"""http/clients.py: who a request comes from, for the limits that count per client."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from progress_relay.http.clients import Clients


def client_of(clients: Clients, peer: str, forwarded: str | None = None) -> str:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    request = make_mocked_request("GET", "/", headers=headers)
    # The peer as aiohttp reports it (request.remote), without a socket.
    request = request.clone(remote=peer)
    return clients.of(request)


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    clients = Clients([])
    assert client_of(clients, "192.0.2.7", "10.0.0.1") == "192.0.2.7"


def test_a_trusted_proxys_last_entry_is_the_client_and_nothing_else_is_believed() -> None:
    clients = Clients(["192.0.2.0/24", "2001:db8::1"])
    assert client_of(clients, "192.0.2.7", "10.0.0.9, 10.0.0.1") == "10.0.0.1"
    assert client_of(clients, "192.0.2.7", " 10.0.0.2 ") == "10.0.0.2"
    assert client_of(clients, "2001:db8::1", "10.0.0.3") == "10.0.0.3"
    assert client_of(clients, "198.51.100.1", "10.0.0.4") == "198.51.100.1"  # not trusted
    # No usable entry: the proxy's own request.
    assert client_of(clients, "192.0.2.7") == "192.0.2.7"
    assert client_of(clients, "192.0.2.7", "unknown") == "192.0.2.7"


def test_an_ipv6_client_is_its_64_and_a_mapped_ipv4_is_ipv4() -> None:
    clients = Clients([])
    assert client_of(clients, "2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert client_of(clients, "2001:db8:1:2:aaaa::9") == "2001:db8:1:2::/64"
    assert client_of(clients, "::ffff:192.0.2.9") == "192.0.2.9"


def test_a_peer_that_is_no_address_is_counted_as_itself() -> None:
    assert client_of(Clients(["127.0.0.1"]), "/run/relay.sock") == "/run/relay.sock"
