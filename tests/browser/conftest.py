"""Fixtures of the browser tests: the real stack (a Parley server and Envoy, as ``make run``
starts them) whose model is the scripted OpenAI-compatible stand-in, and Debian's Chromium
(``apt-get install chromium``) driven by Playwright for Python. Playwright is only the driver:
it launches the system browser by ``executable_path`` and never downloads one of its own.

Each test gets a new tab of one browser, so its sessionStorage (the playground's tokens) is its
own; the screenshots of its steps go to ``tests/browser/artifacts/<test>/`` (git-ignored; CI keeps
them as artifacts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from tests.support.envoy import EnvoyProcess
from tests.support.openai_standin import StandIn, running_standin
from tests.support.server import ServerProcess

CHROMIUM = Path(os.environ.get("PARLEY_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: What the fake microphone says (espeak-ng, at test time).
QUESTION = "What is the capital of France?"
#: Chromium flags: headless, no sandbox (CI runs as root), and nothing that reaches the network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def standin() -> Iterator[str]:
    with running_standin() as url:
        yield url


@pytest.fixture(scope="session")
def stack(
    server_factory: Callable[..., ServerProcess], standin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    """Envoy in front of a server whose agents may use ``standin/<behaviour>`` models."""
    server = server_factory(
        tmp_path_factory.mktemp("browser-server"),
        openai_compatible=json.dumps({"standin": {"base_url": standin}}),
        provider_max_retries="0",
    )
    envoy = EnvoyProcess(server.target, tmp_path_factory.mktemp("browser-envoy"))
    envoy.start()
    yield envoy
    envoy.stop()


@pytest.fixture
def gate() -> Callable[[int], None]:
    """``gate(n)`` lets a ``standin/gated-N`` reply send ``n`` more chunks (its first is free).
    Each test starts with a new, closed gate."""
    StandIn.gate = threading.Semaphore(0)

    def release(n: int = 1) -> None:
        StandIn.gate.release(n)

    return release


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV of QUESTION, the fake microphone's input (Chromium plays it in a loop)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is missing (scripts/install-system-deps.sh installs it)")
    path = tmp_path_factory.mktemp("voice") / "question.wav"
    subprocess.run([espeak, "-v", "en-us", "-w", str(path), QUESTION], check=True)
    return path


# Package scope: Playwright's sync API runs an event loop in this thread while it is open, and
# the async tests after this package (pytest-asyncio) need the thread without one.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(
    playwright: Playwright, stack: EnvoyProcess, question_wav: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserContext]:
    """Debian's Chromium with a fresh profile, a fake microphone playing ``question_wav`` and
    microphone access granted to the playground's origin."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: bash scripts/install-test-browser.sh (apt-get install chromium)")
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            *CHROMIUM_FLAGS,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={question_wav}",
        ],
        viewport={"width": 1360, "height": 860},
        locale="en-US",
    )
    context.grant_permissions(["microphone"], origin=stack.base_url)
    context.set_default_timeout(20_000)
    yield context
    context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A new tab; the test fails if the page threw or logged an error (other than the browser's
    own "Failed to load resource" lines for HTTP errors the playground handles)."""
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console.error: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield tab
    tab.close()
    assert not problems, problems


@pytest.fixture
def shot(page: Page, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``shot("step")`` saves a screenshot of the page as artifacts/<test>/<NN>-step.png."""
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = 0

    def take(step: str) -> Path:
        nonlocal count
        count += 1
        path = folder / f"{count:02d}-{step}.png"
        page.screenshot(path=str(path))
        return path

    return take
