"""The client's address behind TRUSTED_PROXY_COUNT proxies."""

from config.client_address import client_address, login_address


def test_behind_a_proxy_the_address_is_the_one_the_proxy_added(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # The client wrote the first entry; the load balancer appended the second.
    assert client_address({"HTTP_X_FORWARDED_FOR": "10.0.0.1, 203.0.113.5",
                           "REMOTE_ADDR": "10.1.1.1"}) == "203.0.113.5"
    assert client_address({"REMOTE_ADDR": "10.1.1.1"}) == ""
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address({"HTTP_X_FORWARDED_FOR": "10.0.0.1",
                           "REMOTE_ADDR": "10.1.1.1"}) == "10.1.1.1"


def test_the_login_lockout_gets_an_address_or_none(settings, rf):
    settings.TRUSTED_PROXY_COUNT = 1

    def address(forwarded: str) -> str | None:
        return login_address(rf.get("/login/", HTTP_X_FORWARDED_FOR=forwarded))

    assert address("203.0.113.5") == "203.0.113.5"
    # Proxies that add the client's port (Azure Application Gateway), or no address.
    assert address("203.0.113.5:51234") == "203.0.113.5"
    assert address("[2001:db8::1]:443") == "2001:db8::1"
    assert address("2001:db8::1") == "2001:db8::1"
    assert address("unknown") is None
