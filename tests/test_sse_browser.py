"""SSE in headless Chromium: a page's EventSource receives what the real ``curl`` published."""

from __future__ import annotations

import asyncio
import json

from tests.browser import browser_page
from tests.harness import Gateway

EVENT_SOURCE_SCRIPT = """
async ({url, expected}) => {
  const source = new EventSource(url);
  const received = [];
  return await new Promise((resolve, reject) => {
    source.onopen = () => { window.streamOpen = true; };
    source.addEventListener("message", (event) => {
      received.push({id: event.lastEventId, data: JSON.parse(event.data)});
      if (received.length === expected) { source.close(); resolve(received); }
    });
    setTimeout(() => reject(new Error("timed out with " + JSON.stringify(received))), 15000);
  });
}
"""


async def curl_publish(gateway: Gateway, token: str, body: dict[str, object]) -> dict[str, object]:
    """The README's curl line, run as the real curl binary."""
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--fail-with-body",
        "-X",
        "POST",
        f"{gateway.base_url}/api/v1/publish",
        "-H",
        f"Authorization: Bearer {token}",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps(body),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode() + out.decode()
    answer: dict[str, object] = json.loads(out)
    return answer


async def test_event_source_receives_what_curl_published(gateway: Gateway) -> None:
    _, token = gateway.user_token()
    async with browser_page(gateway.base_url + "/healthz") as page:
        url = f"/api/v1/subscribe?topic=notifications&token={token}"  # same origin, EventSource cannot send headers
        task = asyncio.create_task(page.evaluate(EVENT_SOURCE_SCRIPT, {"url": url, "expected": 2}))
        await page.wait_for_function("window.streamOpen === true", timeout=15000)
        first = await curl_publish(gateway, token, {"topic": "notifications", "message": "Hello World!"})
        second = await curl_publish(gateway, token, {"topic": "notifications", "message": {"level": 2}})
        received = await task
    assert [r["data"]["data"] for r in received] == ["Hello World!", {"level": 2}]
    assert [int(r["id"]) for r in received] == [first["seq"], second["seq"]]
    assert {r["data"]["topic"] for r in received} == {"notifications"}
