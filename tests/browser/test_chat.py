"""The playground in a real browser: log in, create an agent and a session, watch a reply grow
as its Server-Sent Events arrive, stop one, reload mid-reply and see it resume, Arabic laid out
right to left, an expired access token refreshed.

The agents' model is the scripted upstream's ``gated-N`` (tests/support/openai_standin.py): its
first chunk (``part0 ``) comes at once, each next one only when the test opens the gate, so the
test, not a clock, decides when the reply grows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import jwt
from playwright.sync_api import Page, expect

from tests.browser.playground import Playground
from tests.conftest import TEST_JWT_SECRET
from tests.support.envoy import EnvoyProcess


def parts(n: int) -> str:
    return " ".join(f"part{i}" for i in range(n))


def test_log_in_create_an_agent_and_watch_a_reply_stream(
    page: Page, stack: EnvoyProcess, gate: Callable[[int], None], shot: Callable[[str], object]
) -> None:
    pg = Playground(page, stack.base_url).open()
    expect(page.get_by_role("heading", name="Log in or create an account")).to_be_visible()
    shot("login")
    pg.register()
    shot("logged-in")
    pg.create_agent(
        "Storyteller",
        model="standin/gated-4",
        instructions="Tell long stories.",
        voice="en-us",
        language="en",
    )
    pg.create_session("First chat")
    shot("session")

    pg.send("Tell me a story.")
    expect(pg.message("Tell me a story.")).to_have_class(re.compile(r"\buser\b"))
    reply = pg.replies.last
    expect(reply.locator(".text")).to_have_text(parts(1))
    expect(reply.locator(".badge")).to_have_text("writing…")
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    shot("streaming-1")
    for seen in (2, 3):
        gate(1)
        expect(reply.locator(".text")).to_have_text(parts(seen))
        expect(reply.locator(".badge")).to_have_text("writing…")  # still going: it grew mid-reply
    shot("streaming-3")
    gate(1)
    expect(reply.locator(".text")).to_have_text(parts(4))
    expect(reply.locator(".badge")).to_have_count(0)  # complete
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_hidden()
    pg.wait_idle()
    shot("complete")

    with pg.rest() as rest:
        agents = rest.get("/v1/agents").json()["agents"]
        messages = rest.get(f"/v1/{pg.storage('view')['session']}/messages").json()["messages"]
    assert [(a["displayName"], a["model"], a["instructions"], a["voice"], a["language"]) for a in agents] == [
        ("Storyteller", "standin/gated-4", "Tell long stories.", "en-us", "en")
    ]
    assert [(m["role"], m["text"].strip(), m["status"]) for m in messages] == [
        ("ROLE_USER", "Tell me a story.", "STATUS_COMPLETE"),
        ("ROLE_ASSISTANT", parts(4), "STATUS_COMPLETE"),
    ]
    assert pg.storage("inflight") is None


def test_stop_cancels_the_reply(
    page: Page, stack: EnvoyProcess, gate: Callable[[int], None], shot: Callable[[str], object]
) -> None:
    pg = Playground(page, stack.base_url).open()
    pg.register()
    pg.create_agent("Talker", model="standin/gated-50")
    pg.create_session("Stopped")
    pg.send("Talk for a long time.")
    reply = pg.replies.last
    gate(1)
    expect(reply.locator(".text")).to_have_text(parts(2))
    shot("before-stop")
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(reply.locator(".badge")).to_have_text("stopped")
    expect(page.locator("#notice")).to_have_text("Reply stopped.")
    shot("stopped")
    pg.wait_idle()
    with pg.rest() as rest:
        name = pg.replies.last.get_attribute("data-name")
        message = rest.get(f"/v1/{name}").json()["message"]
    assert (message["status"], message["stopReason"]) == ("STATUS_INCOMPLETE", "STOP_REASON_CANCELLED")
    assert message["text"].strip() == parts(2)


def test_a_reload_mid_reply_resumes_the_stream(
    page: Page, stack: EnvoyProcess, gate: Callable[[int], None], shot: Callable[[str], object]
) -> None:
    pg = Playground(page, stack.base_url).open()
    pg.register()
    pg.create_agent("Patient", model="standin/gated-6")
    pg.create_session("Reloaded")
    pg.send("Count slowly.")
    gate(1)
    expect(pg.replies.last.locator(".text")).to_have_text(parts(2))
    saved = pg.storage("inflight")
    assert saved["text"].strip() == parts(2)
    shot("before-reload")

    resumed: list[str] = []
    page.on("request", lambda r: resumed.append(r.url) if ":stream" in r.url else None)
    page.reload()
    # The reply is still being written (background: true) and shows what was seen before at once.
    reply = pg.replies.last
    expect(reply.locator(".text")).to_have_text(parts(2))
    expect(reply.locator(".badge")).to_have_text("writing…")
    shot("after-reload")
    assert len(resumed) == 1, resumed
    assert resumed[0].endswith(f":stream?startingAfter={saved['seq']}"), resumed
    assert saved["seq"] > 1  # not from the start: the events after the last one seen

    gate(4)
    # Exactly the rest of the reply, nothing seen twice.
    expect(reply.locator(".text")).to_have_text(parts(6))
    expect(reply.locator(".badge")).to_have_count(0)
    pg.wait_idle()
    shot("resumed-to-the-end")
    assert pg.storage("inflight") is None


def test_arabic_is_laid_out_right_to_left(
    page: Page, stack: EnvoyProcess, shot: Callable[[str], object]
) -> None:
    pg = Playground(page, stack.base_url).open()
    pg.register()
    pg.create_agent("مرشد", model="standin/plain", language="ar")
    pg.create_session("عربي")
    arabic = "مرحبا! ما هو اسم جيد لقطة؟"
    pg.send(arabic)
    pg.wait_idle()
    expect(pg.replies.last.locator(".text")).to_have_text("Hello there.")
    question = pg.message(arabic).locator(".text")
    assert question.get_attribute("dir") == "auto"
    assert question.evaluate("e => getComputedStyle(e).direction") == "rtl"
    assert pg.replies.last.locator(".text").evaluate("e => getComputedStyle(e).direction") == "ltr"
    box = page.get_by_label("Message", exact=True)
    assert box.get_attribute("dir") == "auto"
    box.fill("سؤال آخر")
    assert box.evaluate("e => getComputedStyle(e).direction") == "rtl"
    expect(page.locator("#agents [aria-current=true] span")).to_have_attribute("dir", "auto")
    shot("arabic")


def test_an_expired_access_token_is_refreshed(page: Page, stack: EnvoyProcess) -> None:
    pg = Playground(page, stack.base_url).open()
    pg.register()
    pg.create_agent("Kept", model="standin/plain")
    before = pg.storage("tokens")
    claims = jwt.decode(before["accessToken"], options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 1000, exp=now - 120)  # expired two minutes ago (the leeway is 5 s)
    expired = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")
    page.evaluate(
        "tokens => sessionStorage.setItem('parley.tokens', JSON.stringify(tokens))",
        {**before, "accessToken": expired},
    )
    statuses: list[tuple[str, int]] = []
    page.on(
        "response", lambda r: statuses.append((r.url.removeprefix(stack.base_url).split("?")[0], r.status))
    )
    page.reload()
    expect(page.locator("#agents")).to_contain_text("Kept")
    after = pg.storage("tokens")
    assert ("/v1/agents", 401) in statuses
    assert ("/v1/tokens:refresh", 200) in statuses
    assert after["accessToken"] not in (before["accessToken"], expired)
    assert after["refreshToken"] != before["refreshToken"]  # refresh tokens are single-use

    # A refresh token that no longer works ends the session: back to the login form.
    page.evaluate(
        "tokens => sessionStorage.setItem('parley.tokens', JSON.stringify(tokens))",
        {**after, "accessToken": expired, "refreshToken": before["refreshToken"]},
    )
    page.reload()
    expect(page.get_by_role("heading", name="Log in or create an account")).to_be_visible()
    expect(page.locator("#notice")).to_contain_text("please log in again")
    assert pg.storage("tokens") is None
