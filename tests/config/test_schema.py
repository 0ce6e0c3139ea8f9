"""The OpenAPI schema is exact: schemathesis (the real CLI, from the dev dependencies)
fuzzes every client-app operation with an API key, the capture endpoints with their SDKs'
credentials and the analytics operations as a logged-in product manager, against a live
server. Any server error, undocumented status code, schema-valid request refused or
schema-violating request accepted fails the test."""

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = ",".join(["not_a_server_error", "status_code_conformance", "negative_data_rejection",
                   "positive_data_acceptance", "response_schema_conformance"])
# Bounded so the four runs take about a minute in CI; the seed makes a failure repeatable.
EXAMPLES_PER_OPERATION = 25
SEED = 20261203
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema_file(tmp_path) -> Path:
    path = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(path), "--validate")
    return path


def fuzz(schema_file: Path, base_url: str, *, paths: str, credentials: list[str],
         phases: str = "examples,coverage,fuzzing") -> None:
    """No stateful phase: the schema declares no links between operations, and the ones
    schemathesis infers feed one operation's reply fields (a row error's empty ``field``)
    into another's parameters regardless of their declared constraints."""
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [executable, "run", str(schema_file), "--url", base_url, "--checks", CHECKS,
         "--include-path-regex", paths, "--max-examples", str(EXAMPLES_PER_OPERATION),
         "--seed", str(SEED), "--workers", "1", "--no-color", "--phases", phases,
         # The credentials are the ones passed here, never generated or left out.
         "--generation-with-security-parameters", "false", *credentials],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.config.schemathesis_hooks",
             "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_client_app_operations(live_server, api_key, schema_file):
    fuzz(schema_file, live_server.url,
         paths=r"^/api/v1/(events|items|users|recommendations|sentiment)",
         credentials=["--header", f"Authorization: Api-Key {api_key}"])


def test_sdk_capture_operations(live_server, api_key, schema_file):
    fuzz(schema_file, live_server.url, paths=r"^/batch/$",
         credentials=["--header", f"Authorization: Bearer {api_key}"])
    basic = base64.b64encode(f"{api_key}:".encode()).decode()
    fuzz(schema_file, live_server.url, paths=r"^/v1/batch$",
         credentials=["--header", f"Authorization: Basic {basic}"])


def test_analytics_operations_as_a_product_manager(live_server, pm_user, schema_file):
    browser = Client()
    browser.force_login(pm_user)
    session = browser.cookies["sessionid"].value
    # Not the coverage phase: its boundary values (start=2000-01-01) skip the hooks that
    # keep ranges within MAX_RANGE_DAYS; the fuzzing phase generates through them.
    fuzz(schema_file, live_server.url, paths=r"^/api/v1/analytics/",
         credentials=["--header", f"Cookie: sessionid={session}"],
         phases="examples,fuzzing")


def test_the_hooks_know_the_apis_range_rules():
    from analytics.insights import common
    from tests.config import schemathesis_hooks as hooks

    assert (hooks.MAX_RANGE_DAYS, hooks.EARLIEST_DAY, hooks.LATEST_DAY) == (
        common.MAX_RANGE_DAYS, common.EARLIEST_DAY, common.LATEST_DAY)
