"""A voice message from the browser: MediaRecorder records the fake microphone (Chromium plays
a WAV that espeak-ng made of QUESTION as its input), the playground sends the WebM/Opus
recording with SendVoiceMessage, shows what the server heard (the local Whisper) and plays the
reply's audio (the local espeak-ng), assembled from the stream's audio chunks."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.playground import Playground
from tests.support.envoy import EnvoyProcess


def test_record_and_send_a_voice_message(
    page: Page, stack: EnvoyProcess, shot: Callable[[str], object]
) -> None:
    pg = Playground(page, stack.base_url).open()
    pg.register()
    pg.create_agent("Listener", model="standin/plain", language="en")
    pg.create_session("Spoken")

    record = page.get_by_role("button", name="Record voice")
    record.click()
    expect(page.get_by_role("button", name="Stop and send")).to_have_attribute("aria-pressed", "true")
    # Record a little over the question (it lasts about 2 s): wait until the page says so.
    page.wait_for_function(
        "() => parseFloat(document.getElementById('record-time').textContent.replace('recording ', '')) >= 3"
    )
    shot("recording")
    page.get_by_role("button", name="Stop and send").click()
    expect(page.locator("#record-time")).to_contain_text("audio/webm")

    heard = pg.messages.first.locator(".text")
    # Whisper base hears espeak-ng through Chromium's fake microphone well, not perfectly.
    expect(heard).to_have_text(re.compile(r"what is the capital", re.IGNORECASE), timeout=120_000)
    reply = pg.replies.last
    expect(reply.locator(".text")).to_have_text("Hello there.")
    pg.wait_idle()
    audio = reply.locator("audio")
    expect(audio).to_have_attribute("src", re.compile(r"^blob:"))
    duration = audio.evaluate(
        """a => new Promise((resolve, reject) => {
             if (a.readyState >= 1) return resolve(a.duration);
             a.addEventListener('loadedmetadata', () => resolve(a.duration));
             a.addEventListener('error', () => reject(new Error('the reply audio does not play')));
             a.load();
           })"""
    )
    assert duration > 0.3, duration  # "Hello there." spoken
    shot("voice-reply")

    with pg.rest() as rest:
        spoken = rest.get(f"/v1/{pg.messages.first.get_attribute('data-name')}").json()["message"]
    assert spoken["transcriptLanguage"] == "en"
    assert float(spoken["audioDuration"].rstrip("s")) >= 1.0
