"""What a person does in the playground, as Playwright steps (the tests read as the story), and
what the page keeps in sessionStorage."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

__all__ = ["PASSWORD", "Playground"]

PASSWORD = "correct horse battery"


@dataclass
class Playground:
    page: Page
    base_url: str

    def open(self) -> Playground:
        self.page.goto(f"{self.base_url}/playground")
        return self

    def register(self, prefix: str = "pg") -> str:
        """Creates an account through the form (which then logs in); returns the username."""
        username = f"{prefix}-{uuid.uuid4().hex[:10]}"
        form = self.page.locator("#auth-form")
        form.get_by_label("Username").fill(username)
        form.get_by_label("Password").fill(PASSWORD)
        form.get_by_role("button", name="Create account").click()
        expect(self.page.locator("#whoami")).to_have_text(username)
        return username

    def create_agent(
        self, name: str, *, model: str, instructions: str = "", voice: str = "", language: str = ""
    ) -> None:
        details = self.page.locator("#new-agent")
        if not details.evaluate("d => d.open"):
            details.locator("summary").click()
        form = self.page.locator("#agent-form")
        form.get_by_label("Name").fill(name)
        form.get_by_label("Instructions").fill(instructions)
        form.get_by_label("Model").fill(model)
        form.get_by_label("Voice").fill(voice)
        form.get_by_label("Language").select_option(language)
        form.get_by_role("button", name="Create agent").click()
        expect(self.page.locator("#agents [aria-current=true]")).to_contain_text(name)

    def create_session(self, title: str) -> None:
        self.page.get_by_label("Session title").fill(title)
        self.page.get_by_role("button", name="New session").click()
        expect(self.page.locator("#chat-title")).to_have_text(title)

    def send(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        expect(box).to_be_enabled()
        box.fill(text)
        box.press("Enter")

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages > li")

    @property
    def replies(self) -> Locator:
        return self.page.locator("#messages > li.assistant")

    def message(self, text: str) -> Locator:
        return self.messages.filter(has=self.page.locator(".text", has_text=text))

    def branch_chip(self, label: str) -> Locator:
        return self.page.locator("#tree button.branch", has_text=label)

    def wait_idle(self) -> None:
        """Until no reply is streaming (the composer's Send button is enabled again)."""
        expect(self.page.locator("#send")).to_be_enabled()

    def storage(self, key: str) -> Any:
        raw = self.page.evaluate("key => sessionStorage.getItem(key)", f"parley.{key}")
        return None if raw is None else json.loads(raw)

    def rest(self) -> httpx.Client:
        """A REST client with the page's current access token, to check what the server stored."""
        token = self.storage("tokens")["accessToken"]
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
