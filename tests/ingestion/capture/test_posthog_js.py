"""posthog-js, as installed from the npm registry, on a shop's page in headless Chromium,
pointed at a live Lodestar on another origin."""

import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db import connection

from ingestion.models import Event, IdentityLink
from tests.conftest import watch_errors

POSTHOG_JS = "posthog-js@1.449.2"
# Installed by the test set-up (not committed; var/ is ignored), as a shop would.
NODE_DIR = Path(__file__).resolve().parents[3] / "var" / "node"
BUNDLE = NODE_DIR / "node_modules" / "posthog-js" / "dist" / "array.full.no-external.js"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="session")
def posthog_js_bundle() -> str:
    if not BUNDLE.exists():
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("LODESTAR_REQUIRE_SERVICES") == "1":
                pytest.fail("npm is needed to install posthog-js")
            pytest.skip("npm is needed to install posthog-js")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(NODE_DIR), "--no-save", "--no-audit",
                        "--no-fund", "--ignore-scripts", POSTHOG_JS],
                       check=True, capture_output=True, timeout=300)
    return BUNDLE.read_text()


@pytest.fixture
def shop_site():
    """The shop's own web server: another origin than Lodestar's, so the SDK's requests
    are cross-origin as in production (and on loopback like it, which Chromium requires
    of a page that calls a loopback address)."""
    servers = []

    def serve(page_html: str, bundle: str) -> str:
        files = {"/": ("text/html", page_html), "/favicon.ico": ("image/x-icon", ""),
                 "/posthog.js": ("application/javascript", bundle)}

        class Shop(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                content_type, body = files.get(self.path, ("text/plain", "not found"))
                data = body.encode()
                self.send_response(200 if self.path in files else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield serve
    for server in servers:
        server.shutdown()


SHOP_PAGE = """<!doctype html><html><head><title>Shop</title>
<script src="/posthog.js"></script></head><body><h1>Linen shirt</h1><script>
window.posthog.init(%(key)s, {api_host: %(host)s, autocapture: false,
  disable_session_recording: true, request_batching: false, opt_out_useragent_filter: true,
  capture_pageleave: false, advanced_disable_toolbar_metrics: true,
  loaded: (ph) => {
    ph.capture('search', {query: 'linen'});
    ph.identify('shopper-1');
  }});
</script></body></html>"""


def test_pageview_custom_event_and_identify_arrive_without_console_errors(
        live_server, api_key, posthog_js_bundle, shop_site, browser):
    page = browser.new_page()
    errors = watch_errors(page)
    captured = []
    page.on("response", lambda response: captured.append(response.status)
            if response.url.startswith(live_server.url) and response.request.method == "POST"
            and "/e" in response.url else None)
    page.goto(shop_site(SHOP_PAGE % {"key": json.dumps(api_key),
                                     "host": json.dumps(live_server.url)}, posthog_js_bundle))
    deadline = time.monotonic() + 20
    while len(captured) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    page.close()

    assert captured and set(captured) == {200}
    assert errors == []
    stored = outside_playwright(lambda: (
        dict(Event.objects.values_list("type", "user__user_id")),
        Event.objects.filter(type="search").values_list("properties", flat=True).first(),
        list(IdentityLink.objects.values_list("alias__user_id", "person__user_id"))))
    names, search_properties, links = stored
    assert {"$pageview", "search", "$identify"} <= set(names)
    assert search_properties["query"] == "linen"
    # The search came before identify(), under the anonymous id identify() linked.
    assert names["search"] != "shopper-1"
    assert links == [(names["search"], "shopper-1")]


def outside_playwright(query):
    """Runs ``query`` in a thread of its own: Django refuses synchronous queries in a
    thread where Playwright's event loop ran."""
    results = []

    def run():
        try:
            results.append(query())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return results[0]
