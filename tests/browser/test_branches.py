"""The branch tree in a real browser: fork at a reply, switch between branches, edit a user
message and regenerate a reply, each a new branch of the session's tree. The model is the
scripted upstream's plain one (every reply is ``Hello there.``)."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.playground import Playground
from tests.support.envoy import EnvoyProcess


def texts(pg: Playground) -> list[str]:
    return [text.strip() for text in pg.messages.locator(".text").all_inner_texts()]


def test_fork_switch_edit_and_regenerate(
    page: Page, stack: EnvoyProcess, shot: Callable[[str], object]
) -> None:
    pg = Playground(page, stack.base_url).open()
    pg.register()
    pg.create_agent("Brancher", model="standin/plain")
    pg.create_session("A tree")
    for question in ("First question", "Second question"):
        pg.send(question)
        pg.wait_idle()
    expect(pg.messages).to_have_count(4)
    expect(pg.branch_chip("main")).to_have_attribute("aria-pressed", "true")
    shot("main")

    # Fork at the first reply: the new branch is active and ends there.
    pg.replies.first.get_by_role("button", name="Fork here").click()
    expect(pg.branch_chip("fork 1")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#chat-branch")).to_have_text("branch: fork 1")
    expect(pg.messages).to_have_count(2)
    pg.send("A question on the fork")
    pg.wait_idle()
    assert texts(pg) == ["First question", "Hello there.", "A question on the fork", "Hello there."]
    # The tree shows both continuations of the first reply.
    first_reply = pg.replies.first.get_attribute("data-name")
    expect(page.locator(f'#tree li[data-name="{first_reply}"] > ul > li')).to_have_count(2)
    shot("forked")

    # Switch back to main from the tree.
    pg.branch_chip("main").click()
    expect(page.locator("#chat-branch")).to_have_text("branch: main")
    assert texts(pg) == ["First question", "Hello there.", "Second question", "Hello there."]
    shot("switched-to-main")

    # Edit the second question: a branch forked at its parent, with the new text sent to it.
    pg.message("Second question").get_by_role("button", name="Edit").click()
    editor = page.get_by_label("Edited message")
    editor.fill("Second question, edited")
    shot("editing")
    page.get_by_role("button", name="Save and send").click()
    expect(page.locator("#chat-branch")).to_have_text("branch: edit 2")
    pg.wait_idle()
    assert texts(pg) == ["First question", "Hello there.", "Second question, edited", "Hello there."]
    shot("edited")

    # Regenerate the last reply: a sibling on a new branch, which becomes active.
    before = pg.replies.last.get_attribute("data-name")
    pg.replies.last.get_by_role("button", name="Regenerate").click()
    pg.wait_idle()
    expect(pg.replies.last).not_to_have_attribute("data-name", before or "")
    assert texts(pg) == ["First question", "Hello there.", "Second question, edited", "Hello there."]
    expect(page.locator("#tree button.branch")).to_have_count(4)
    shot("regenerated")

    with pg.rest() as rest:
        session = pg.storage("view")["session"]
        branches = rest.get(f"/v1/{session}/branches").json()["branches"]
        active = [b for b in branches if b["active"]]
    # Oldest first: main, the fork, the edit, and the regenerated reply's branch (named by the server).
    assert [b["displayName"] for b in branches][:3] == ["main", "fork 1", "edit 2"]
    assert len(branches) == 4
    assert active[0]["head"] == pg.replies.last.get_attribute("data-name")
