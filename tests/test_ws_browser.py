"""The WebSocket front-end in headless Chromium: a page connects, subscribes, publishes and receives."""

from __future__ import annotations

import asyncio

import httpx

from tests.browser import browser_page
from tests.harness import Gateway

# The seed's snippet, made into a promise: connect, subscribe, publish over the same socket, collect messages.
PAGE_SCRIPT = """
async ({url, expected}) => {
  const ws = new WebSocket(url);
  const received = [];
  const done = new Promise((resolve, reject) => {
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.action === "ack" && frame.id === "sub-1") {
        ws.send(JSON.stringify({action: "publish", topic: "notifications", message: {hello: "browser"}}));
        ws.send(JSON.stringify({action: "publish", topic: "notifications", message: "Hello World!"}));
        window.subscribed = true;
      }
      if (frame.action === "message") {
        received.push(frame);
        if (received.length === expected) resolve(received);
      }
    };
    ws.onclose = (event) => reject(new Error("closed " + event.code + " " + event.reason));
    setTimeout(() => reject(new Error("timed out with " + JSON.stringify(received))), 15000);
  });
  ws.onopen = () => ws.send(JSON.stringify({action: "subscribe", topic: "notifications", id: "sub-1"}));
  return await done;
}
"""

CLOSE_SCRIPT = """
(url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onclose = (event) => resolve({code: event.code, reason: event.reason});
})
"""


async def test_page_connects_subscribes_publishes_and_receives(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with browser_page(gateway.base_url + "/healthz") as page:
        url = f"{gateway.ws_url}/ws?token={token}"
        task = asyncio.create_task(page.evaluate(PAGE_SCRIPT, {"url": url, "expected": 3}))
        await page.wait_for_function("window.subscribed === true", timeout=15000)
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                gateway.base_url + "/api/v1/publish",
                headers={"Authorization": f"Bearer {token}"},
                json={"topic": "notifications", "message": ["from", "http"]},
            )
        assert answer.status_code == 200
        received = await task
    assert sorted(str(m["data"]) for m in received) == sorted(
        str(d) for d in ({"hello": "browser"}, "Hello World!", ["from", "http"])
    )
    assert {m["topic"] for m in received} == {"notifications"}
    browser_published = [m["seq"] for m in received if m["data"] in ({"hello": "browser"}, "Hello World!")]
    assert browser_published == sorted(browser_published)  # one connection's publishes keep their order


async def test_browser_sees_4401_for_a_bad_token(gateway: Gateway) -> None:
    async with browser_page(gateway.base_url + "/healthz") as page:
        closed = await page.evaluate(CLOSE_SCRIPT, f"{gateway.ws_url}/ws?token=expired.or.forged")
    assert closed["code"] == 4401
    assert "invalid token" in closed["reason"]
