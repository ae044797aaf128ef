"""What Envoy serves besides the RPCs: /healthz, /openapi.json, /docs, /playground, CORS."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.rest.helpers import assert_status
from tests.support.client import UserClient
from tests.support.envoy import EnvoyProcess, render_module
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def test_healthz_is_200_while_the_server_is_serving(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.headers["x-envoy-upstream-healthchecked-cluster"] is not None


def test_healthz_follows_the_grpc_health_service(
    server_factory: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """/healthz is the upstream's grpc.health.v1 status: 503 once the server drains or stops."""
    server = server_factory()
    proxy = EnvoyProcess(server.target, tmp_path_factory.mktemp("envoy-health")).start()
    try:
        with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            server.terminate()  # health goes NOT_SERVING, then the process exits
            deadline = time.monotonic() + 20
            while client.get("/healthz").status_code != 503:
                assert time.monotonic() < deadline, "/healthz still 200 after the server stopped"
                time.sleep(0.2)
            server.wait()
            assert client.get("/healthz").status_code == 503
    finally:
        proxy.stop()


def test_openapi_document_is_the_generated_one(http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    committed = json.loads((ROOT / "gen" / "openapi" / "parley.swagger.json").read_text())
    assert doc == committed
    assert doc["swagger"] == "2.0"
    assert doc["info"]["title"] == "Parley API"
    assert doc["securityDefinitions"]["bearer"] == {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "description": doc["securityDefinitions"]["bearer"]["description"],
    }
    assert doc["security"] == [{"bearer": []}]
    assert all(path.startswith("/v1/") for path in doc["paths"])
    # Open methods say so; the rest inherit the bearer requirement.
    assert doc["paths"]["/v1/users"]["post"]["security"] == []
    assert doc["paths"]["/v1/tokens"]["post"]["security"] == []
    assert "security" not in doc["paths"]["/v1/users/me"]["get"]
    # Streaming replies are documented as what Envoy sends: SSE, one ChatEvent per event.
    send = doc["paths"]["/v1/sessions/{session}:sendMessage"]["post"]
    assert send["produces"][0] == "text/event-stream"
    assert send["responses"]["200"]["schema"] == {"$ref": "#/definitions/ChatEvent"}
    assert {
        p["name"] for p in doc["paths"]["/v1/sessions/{session}/branches/{branch}"]["get"]["parameters"]
    } == {
        "session",
        "branch",
    }


def test_docs_page_works_offline(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp  # a browser would refuse anything from another origin
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, page.text
    expected_types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        assert asset.startswith("/docs/"), f"{asset} is not served by Envoy"
        response = http.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(expected_types[Path(asset).suffix]), asset
        assert len(response.content) > 100
    init = http.get("/docs/init.js").text
    assert '"/openapi.json"' in init
    bundle = http.get("/docs/swagger-ui-bundle.js")
    assert len(bundle.content) > 500_000  # the whole Swagger UI, not a stub
    assert http.get("/docs/").status_code in (301, 302)


PLAYGROUND = ROOT / "envoy" / "playground"


def test_every_playground_file_is_routed() -> None:
    """render.py's list is the directory: a file added but not listed would be a 404, a file
    listed but missing stops render.py (missing_files)."""
    assert sorted(render_module().PLAYGROUND_FILES) == sorted(p.name for p in PLAYGROUND.iterdir())


def test_playground_is_served_with_its_content_types(http: httpx.Client) -> None:
    page = http.get("/playground")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "media-src 'self' blob:" in csp
    assert "unsafe-inline" not in csp  # no inline script or style anywhere
    assert page.text == (PLAYGROUND / "index.html").read_text(encoding="utf-8")
    expected_types = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    # Every asset the page and its modules name is served from /playground/, with its type.
    wanted = set(re.findall(r'(?:src|href)="(/[^"]+)"', page.text))
    for module in PLAYGROUND.glob("*.js"):
        imports = re.findall(r'from "\./([\w-]+\.js)"', module.read_text(encoding="utf-8"))
        wanted |= {f"/playground/{name}" for name in imports}
    assert "/playground/app.js" in wanted and "/playground/sse.js" in wanted, wanted
    for asset in sorted(wanted):
        assert asset.startswith("/playground/"), f"{asset} is not served by Envoy"
        response = http.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"] == expected_types[Path(asset).suffix], asset
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (PLAYGROUND / Path(asset).name).read_bytes(), asset
    assert http.get("/playground/").headers["location"].endswith("/playground")


def test_a_missing_playground_asset_is_404(http: httpx.Client) -> None:
    for path in ("/playground/missing.js", "/playground/../envoy.yaml", "/playground/app.js/x"):
        assert_status(http.get(path), 404, 5, "NOT_FOUND")


def test_cors_preflight_and_response_headers(http: httpx.Client, alice: UserClient) -> None:
    origin = "http://app.example.test"
    preflight = http.options(
        "/v1/agents",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"]
    assert "authorization" in allowed and "content-type" in allowed
    assert "access-control-allow-credentials" not in preflight.headers

    response = http.get(
        "/v1/users/me", headers={"Origin": origin, "Authorization": f"Bearer {alice.access_token}"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in response.headers["access-control-expose-headers"]
    # Errors carry the CORS headers too, so a browser app can read the JSON status.
    denied = http.get("/v1/users/me", headers={"Origin": origin})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == origin
