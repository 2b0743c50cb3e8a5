"""The web dashboard in headless Chromium against a real gateway and NATS, driven by role and label.

One browser and one gateway for the module; the gateway is restarted once, by
the last test. Screenshots of each page at desktop and phone width go to
``test-artifacts/dashboard/`` (ignored by git).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from unittest.mock import ANY

import httpx
import orjson
import pytest
import websockets
from playwright.async_api import Browser, Dialog, Locator, Page, ViewportSize, async_playwright, expect

from protocols.dashboard.routes import STATIC, load_assets
from tests.browser import ARGS, chromium_path
from tests.harness import ROOT, Gateway, NatsServer, temp_dir
from tests.waiting import poll

SHOTS = ROOT / "test-artifacts" / "dashboard"
PHONE: ViewportSize = {"width": 375, "height": 812}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
XSS = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script>"]
LINE_BUFFERED = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
WS_FAILURE = re.compile(r"WebSocket connection to .* failed")


@pytest.fixture(scope="module")
def gw(nats_server: NatsServer) -> Iterator[Gateway]:
    data = temp_dir("fg-dash-")
    gateway = Gateway(nats_server.url, data, env={"FLOWGATE_SHUTDOWN_GRACE": "1"}).start()  # restarted once
    yield gateway
    gateway.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=ARGS)
        yield chromium
        await chromium.close()


class Tab:
    """A page that records console errors and warnings, page errors and dialogs (none may appear)."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.confirm = False  # answer to the next confirm() the page asks
        page.on(
            "console", lambda m: self.problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        )
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on("dialog", self._dialog)

    async def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm" and self.confirm:
            await dialog.accept()
        else:
            await dialog.dismiss()

    async def shoot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.set_viewport_size(PHONE)
        await self.page.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
        width = await self.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} is {width} px wide at phone width"  # no sideways scrolling
        await self.page.set_viewport_size(DESKTOP)
        await self.page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)

    async def sign_in_user(self, key: str, app: str = "app") -> None:
        page = self.page
        await page.goto(self.base_url + "/")
        await page.get_by_label("API key", exact=True).fill(key)
        await page.get_by_label("App", exact=True).fill(app)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await expect(page.get_by_role("heading", name="Usage")).to_be_visible()

    def assert_clean(self, allowed: re.Pattern[str] | None = None) -> None:
        problems = [p for p in self.problems if allowed is None or not allowed.search(p)]
        assert problems == [], problems
        assert [d for d in self.dialogs if not d.startswith("confirm")] == []


@pytest.fixture
async def tab(browser: Browser, gw: Gateway) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport=DESKTOP)
    try:
        page = await context.new_page()
        page.set_default_timeout(10_000)
        yield Tab(page, gw.base_url)
    finally:
        await context.close()


def figure(page: Page, label: str) -> Locator:
    return page.locator(".figure", has_text=label).locator(".figure-value")


async def publish(gw: Gateway, token: str, topic: str, message: object) -> int:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        answer = await client.post(
            "/api/v1/publish", headers={"Authorization": f"Bearer {token}"}, json={"topic": topic, "message": message}
        )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["seq"])


async def get_json(gw: Gateway, token: str, path: str) -> object:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- served safely and light ---------------------------------------------------------------------


def test_served_with_security_headers_get_only_and_light(gw: Gateway) -> None:
    for path in ("/", "/dashboard/", "/dashboard/app.js", "/dashboard/style.css", "/dashboard/nope.js"):
        answer = httpx.get(gw.base_url + path, timeout=10)
        csp = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.status_code == (404 if "nope" in path else 200), path
    assert (
        httpx.get(gw.base_url + "/dashboard/app.js", timeout=10).headers["content-type"].startswith("text/javascript")
    )
    assert httpx.head(gw.base_url + "/", timeout=10).status_code == 200
    unsigned = httpx.post(gw.base_url + "/", timeout=10)  # POST / is the SQS endpoint's (protocols/sqs), not ours
    assert unsigned.status_code == 403 and "MissingAuthenticationToken" in unsigned.text
    redirect = httpx.get(gw.base_url + "/dashboard", timeout=10)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/dashboard/"
    # everything the page can load (its files and the JS client it imports), together, is under 200 KB;
    # no inline script, no HTML from strings
    bodies = {name: asset.body for name, asset in load_assets().items()}
    bodies["/sdk/flowgate.js"] = httpx.get(gw.base_url + "/sdk/flowgate.js", timeout=10).content
    assert sum(len(body) for body in bodies.values()) < 200_000
    assert any(b"from '/sdk/flowgate.js'" in body for body in bodies.values())  # the pages use the client
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and not re.search(r"\son[a-z]+=", html)
    for name, body in bodies.items():
        if name.endswith(".js"):
            assert not re.search(rb"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", body), name


# -- admin ---------------------------------------------------------------------------------------


async def test_admin_creates_user_and_key_and_the_user_sees_usage_move(tab: Tab, gw: Gateway) -> None:
    page = tab.page
    await page.goto(gw.base_url + "/")
    await page.get_by_label("Admin key").fill(gw.admin_key)
    await page.get_by_role("button", name="Sign in as admin").click()
    await expect(page.get_by_role("heading", name="Users")).to_be_visible()
    user_id = "dash-" + secrets.token_hex(4)
    await page.get_by_label("User ID").fill(user_id)
    await page.get_by_role("button", name="Create user").click()
    await expect(page.get_by_role("heading", name=f"User {user_id}")).to_be_visible()
    await page.get_by_label("Key name").fill(XSS[0])
    await page.get_by_role("button", name="Create key").click()
    key = await page.get_by_label("New key value").input_value()
    assert key.startswith("fgk_")
    assert (await page.get_by_label("AWS access key id").input_value()).startswith("FGAK")  # for SQS clients
    assert await page.get_by_label("AWS secret access key").input_value()
    await expect(page.get_by_role("cell", name=XSS[0], exact=True)).to_be_visible()  # a key name renders as text
    await page.get_by_role("button", name="Disable user").click()
    await expect(page.get_by_text("This user is disabled")).to_be_visible()
    await page.get_by_role("button", name="Enable user").click()
    await expect(page.get_by_text("This user is active")).to_be_visible()
    await page.get_by_label("Rate (msg/s)").fill("100")
    await page.get_by_role("button", name="Save overrides").click()
    await expect(page.get_by_text(f"Limits of {user_id} saved.")).to_be_visible()
    assert gw.admin("GET", f"/api/v1/admin/users/{user_id}").json()["extra"]["limits"] == {"rate": 100}
    await page.get_by_label("Credits to add").fill("250")
    await page.get_by_role("button", name="Add credits").click()
    await expect(figure(page, "Balance")).to_have_text("250 credits")
    await tab.shoot("admin-user")
    await page.get_by_role("link", name="All users").click()
    await page.get_by_label("Search users").fill(user_id)
    await expect(page.get_by_role("link", name=user_id, exact=True)).to_be_visible()
    await tab.shoot("admin-users")
    doomed, _ = gw.new_user()
    tab.confirm = True
    await page.goto(f"{gw.base_url}/#/users/{doomed}")
    await page.get_by_role("button", name="Delete user").click()
    await expect(page.get_by_text(f"User {doomed} deleted.")).to_be_visible()
    await expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    assert gw.admin("GET", f"/api/v1/admin/users/{doomed}").status_code == 404
    await page.get_by_role("link", name="Plans").click()
    await expect(page.get_by_role("cell", name="pro", exact=True)).to_be_visible()
    await tab.shoot("admin-plans")
    await page.get_by_role("link", name="Server").click()
    await expect(figure(page, "NATS")).to_have_text("connected")
    await page.get_by_role("button", name="Sign out").click()

    await tab.sign_in_user(key)
    await expect(figure(page, "Used this period")).to_have_text("0")
    token = gw.token(key, "app")
    for n in range(3):
        await publish(gw, token, "sensors/usage", n)
    await page.get_by_role("button", name="Refresh").click()
    await expect(figure(page, "Used this period")).to_have_text("3")
    await poll(  # the history takes the counts at the next billing sync (0.5 s): polled, no event leaves the process
        lambda: get_json(gw, token, "/api/v1/usage/history"),
        lambda history: isinstance(history, dict) and sum(h["units"] for h in history["hourly"]) >= 3,
        what="3 units in the usage history",
        timeout=10,
    )
    await page.get_by_role("button", name="Refresh").click()
    await expect(page.get_by_role("img", name=re.compile(r"Units per hour, last 48 hours: 3 units"))).to_be_visible()
    await tab.shoot("usage")
    await page.get_by_role("link", name="Keys").click()
    await expect(page.get_by_role("cell", name=re.compile("this session"))).to_be_visible()
    await tab.shoot("keys")
    await page.get_by_role("link", name="Connect").click()
    await expect(page.get_by_role("heading", name="mosquitto_sub")).to_be_visible()
    await expect(page.get_by_text(f"-p {gw.mqtt_port} -u Bearer").first).to_be_visible()
    await tab.shoot("connect")
    tab.assert_clean()


# -- the live console ------------------------------------------------------------------------------


async def test_console_sees_every_protocol_within_a_second_and_publishes_to_mqtt(tab: Tab, gw: Gateway) -> None:
    _, key = gw.new_user()
    token = gw.token(key, "app")
    page = tab.page
    await tab.sign_in_user(key)
    await page.get_by_role("link", name="Live console").click()
    await expect(page.get_by_role("status").filter(has_text="Connected")).to_be_visible()
    await page.get_by_label("Topic filter").fill("sensors/#")
    await page.get_by_role("button", name="Subscribe", exact=True).click()
    await expect(page.get_by_role("button", name="Unsubscribe from sensors/#")).to_be_visible()
    log = page.get_by_role("list", name="Messages")
    await expect(page.get_by_text("Subscribed to sensors/#.")).to_be_visible()

    mqtt = ["-h", "127.0.0.1", "-p", str(gw.mqtt_port), "-u", "Bearer", "-P", token]
    pub = await asyncio.create_subprocess_exec(
        "mosquitto_pub", *mqtt, "-t", "sensors/mqtt", "-m", "from mosquitto", "-q", "1", stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(pub.communicate(), 10)
    assert pub.returncode == 0, err
    await expect(log.get_by_text("from mosquitto")).to_be_visible(timeout=1000)
    await publish(gw, token, "sensors/http", {"from": "curl", "temp": 21.5})
    await expect(log.get_by_text('"from": "curl"')).to_be_visible(timeout=1000)
    async with websockets.connect(f"{gw.ws_url}/ws?token={token}") as ws:
        await ws.send(orjson.dumps({"action": "publish", "id": 1, "topic": "sensors/ws", "message": "from websocket"}))
        assert orjson.loads(await ws.recv())["action"] == "ack"
    await expect(log.get_by_text("from websocket")).to_be_visible(timeout=1000)
    blob = temp_dir("fg-dash-blob-") / "blob.bin"
    blob.write_bytes(b"\x00\xff\x10binary")
    pub = await asyncio.create_subprocess_exec("mosquitto_pub", *mqtt, "-t", "sensors/blob", "-f", str(blob), "-q", "1")
    assert await asyncio.wait_for(pub.wait(), 10) == 0
    binary = log.get_by_role("listitem").filter(has_text="sensors/blob")
    await expect(binary).to_contain_text("hex: 00 ff 10 62 69 6e 61 72 79", timeout=1000)
    await expect(binary).to_contain_text("base64: AP8QYmluYXJ5")
    for payload in XSS:  # untrusted payloads and topic names show as text
        await publish(gw, token, "sensors/<b>x</b>", payload)
        await expect(log.get_by_text(payload, exact=True)).to_be_visible(timeout=1000)
    await expect(log.get_by_text("sensors/<b>x</b>").first).to_be_visible()
    assert await log.locator("img, script, b").count() == 0
    entry = log.get_by_role("listitem").filter(has_text="from mosquitto")
    await expect(entry).to_contain_text("sensors/mqtt")
    await expect(entry).to_contain_text("seq ")
    await expect(entry).to_contain_text("text")
    seq = re.search(r"seq (\d+)", await entry.inner_text())
    assert seq is not None
    await page.get_by_label("Topic filter").fill("sensors/mqtt")  # replay from a seq: the message comes again
    await page.get_by_label("Replay from seq (optional)").fill(seq.group(1))
    await page.get_by_role("button", name="Subscribe", exact=True).click()
    await expect(log.get_by_text("from mosquitto")).to_have_count(2)
    await page.get_by_role("button", name="Pause").click()
    await publish(gw, token, "sensors/held", "held back")
    await expect(page.get_by_text("1 held while paused")).to_be_visible()
    await expect(log.get_by_text("held back")).to_have_count(0)
    await page.get_by_role("button", name="Resume").click()
    await expect(log.get_by_text("held back")).to_be_visible()

    sub = await asyncio.create_subprocess_exec(
        *LINE_BUFFERED,
        "mosquitto_sub",
        *mqtt,
        "-t",
        "sensors/out",
        "-C",
        "1",
        "-v",
        "-W",
        "15",
        "-d",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert sub.stdout is not None
        while b"SUBACK" not in await asyncio.wait_for(sub.stdout.readline(), 10):  # subscribed: an event
            pass
        await page.get_by_label("Topic", exact=True).fill("sensors/out")
        await page.get_by_label("Message", exact=True).fill('{"on": true}')
        await page.get_by_label("Send as").select_option("json")
        await page.get_by_role("button", name="Publish").click()
        await expect(page.get_by_text(re.compile(r"Published to sensors/out: acknowledged, seq \d+"))).to_be_visible()
        out = (await asyncio.wait_for(sub.stdout.read(), 15)).decode()
    finally:
        if sub.returncode is None:
            sub.kill()
        await sub.wait()
    assert 'sensors/out {"on":true}' in out
    await page.get_by_label("Topic", exact=True).fill("other/#")
    await page.get_by_role("button", name="Publish").click()
    await expect(page.get_by_text(re.compile(r"Publish failed: .*\(400\)"))).to_be_visible()  # errors in words
    await tab.shoot("console")
    # the admin's live server view, in another tab, counts the console's WebSocket and the traffic
    admin = Tab(await page.context.new_page(), gw.base_url)
    await admin.page.goto(gw.base_url + "/#/server")
    await admin.page.get_by_label("Admin key").fill(gw.admin_key)
    await admin.page.keyboard.press("Enter")  # the keyboard submits the form
    await admin.page.get_by_role("link", name="Server").click()
    await expect(admin.page.get_by_role("row", name=re.compile(r"^ws [1-9]"))).to_be_visible()
    await expect(figure(admin.page, "Messages in")).to_contain_text("/s")
    await admin.shoot("admin-server")
    admin.assert_clean()
    tab.assert_clean()


# -- queues ------------------------------------------------------------------------------------------


async def test_queue_create_send_receive_delete(tab: Tab, gw: Gateway) -> None:
    _, key = gw.new_user()
    page = tab.page
    tab.confirm = True
    await tab.sign_in_user(key)
    await page.get_by_role("link", name="Queues").click()
    await page.get_by_label("Queue name").fill("jobs")
    await page.get_by_role("button", name="Create queue").click()
    await expect(page.get_by_role("heading", name="Queue jobs")).to_be_visible()
    await page.get_by_label("Message body").fill(XSS[1])
    await page.get_by_role("button", name="Send message").click()
    await expect(page.get_by_role("row", name=re.compile(r"^jobs 1 0 0"))).to_be_visible()
    await page.get_by_label("Visibility timeout (s, optional)").fill("120")
    await page.get_by_role("button", name="Receive", exact=True).click()
    received = page.get_by_role("list", name="Received messages")
    await expect(received.get_by_text(XSS[1], exact=True)).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile(r"^jobs 0 1 0"))).to_be_visible()
    await tab.shoot("queues")
    await received.get_by_role("button", name=re.compile("^Delete message")).click()
    await expect(received.get_by_text(re.compile("^Deleted "))).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile(r"^jobs 0 0 0"))).to_be_visible()
    token = gw.token(key, "app")
    info = await get_json(gw, token, "/api/v1/queues/jobs")
    assert isinstance(info, dict) and (info["approximate_visible"], info["approximate_in_flight"]) == (0, 0)
    await page.get_by_label("Queue name").fill("jobs-dlq")
    await page.get_by_role("button", name="Create queue").click()
    await expect(page.get_by_role("heading", name="Queue jobs-dlq")).to_be_visible()
    await page.get_by_role("button", name="Open queue jobs", exact=True).click()
    await expect(page.get_by_role("heading", name="Queue jobs", exact=True)).to_be_visible()
    await page.get_by_label("Dead-letter queue").fill("jobs-dlq")
    await page.get_by_label("Max receives before dead-lettering").fill("3")
    await page.get_by_role("button", name="Save attributes").click()
    await expect(page.get_by_text("Attributes of jobs saved.")).to_be_visible()
    info = await get_json(gw, token, "/api/v1/queues/jobs")
    assert isinstance(info, dict) and info["attributes"]["redrive_policy"]["max_receive_count"] == 3
    await page.get_by_role("button", name="Delete queue").click()
    await expect(page.get_by_text("Queue jobs deleted.")).to_be_visible()
    assert await get_json(gw, token, "/api/v1/queues") == {"queues": [{"queue": ANY, "name": "jobs-dlq"}]}
    tab.assert_clean()


async def test_limits_are_explained_in_words(tab: Tab, gw: Gateway) -> None:
    user_id, key = gw.new_user()
    answer = gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json={"limits": {"quota": 1}})
    assert answer.status_code == 200, answer.text
    page = tab.page
    await tab.sign_in_user(key)
    await page.get_by_role("link", name="Queues").click()
    await page.get_by_label("Queue name").fill("work")
    await page.get_by_role("button", name="Create queue").click()
    await expect(page.get_by_role("heading", name="Queue work")).to_be_visible()
    await page.get_by_label("Message body").fill("job")  # spends the quota of 1 unit...
    await page.get_by_role("button", name="Send message").click()
    await expect(page.get_by_role("status").filter(has_text="Sent message")).to_be_visible()
    await page.get_by_label("Message body").fill("job")  # ...so the next send is refused
    await page.get_by_role("button", name="Send message").click()
    await expect(page.get_by_role("alert")).to_have_text(
        re.compile(r"Limit reached \(monthly quota\): .*; used 1 of 1; balance 0; resets \S+")
    )
    await page.get_by_role("link", name="Live console").click()
    await expect(page.get_by_role("alert")).to_have_text(re.compile(r"Console: .*\(402\)"))
    await expect(page.get_by_text(re.compile(r"Disconnected: plan limit reached \(closed 4402"))).to_be_visible()
    limits = {"limits": {"quota": None, "rate": 0.01, "burst": 1}}
    assert gw.admin("PATCH", f"/api/v1/admin/users/{user_id}", json=limits).status_code == 200
    await page.get_by_role("link", name="Keys").click()
    await page.get_by_role("link", name="Live console").click()
    await expect(page.get_by_role("status").filter(has_text="Connected")).to_be_visible()
    await page.get_by_role("button", name="Publish").click()
    await expect(page.get_by_text(re.compile(r"acknowledged, seq"))).to_be_visible()
    await page.get_by_role("button", name="Publish").click()  # the burst of 1 is spent
    await expect(page.get_by_text(re.compile(r"Publish failed: .*\(429\); retry in \d+ s"))).to_be_visible()
    tab.assert_clean(re.compile(r"status of 402"))


# -- keys ----------------------------------------------------------------------------------------------


async def test_token_refreshed_before_expiry_and_a_revoked_key_cannot_sign_in(tab: Tab, gw: Gateway) -> None:
    _, key = gw.new_user()
    page = tab.page
    tab.confirm = True
    await page.clock.install()  # the page's timers on a clock the test can move
    await tab.sign_in_user(key)
    first = await page.evaluate("() => JSON.parse(sessionStorage.getItem('flowgate.session')).token")
    async with page.expect_response(lambda r: r.url.endswith("/token") and r.request.method == "POST") as refreshed:
        await page.clock.fast_forward("14:05")  # the token (15 min) is refreshed a minute before it expires
    assert (await refreshed.value).status == 200
    await page.wait_for_function("(t) => JSON.parse(sessionStorage.getItem('flowgate.session')).token !== t", arg=first)
    await page.reload()  # the session lives in this tab's sessionStorage: still signed in
    await page.get_by_role("link", name="Keys").click()
    await page.get_by_role("button", name="Revoke key test").click()
    # the session's own token was issued from that key, so it ends with it (issue 13): signed out at once
    await expect(page.get_by_text("Key test revoked. It was this session's key: you are signed out.")).to_be_visible()
    await expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    stored = await page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [0, 0, ""] and key not in page.url  # signing out forgot the credentials
    await page.get_by_label("API key", exact=True).fill(key)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text(
        re.compile(r"Sign-in failed: the API key was deleted\. .*revoked")
    )
    await expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    tab.assert_clean(re.compile(r"status of 401"))  # the browser's own note on the refused request


# -- resilience (last: restarts the module's gateway) ----------------------------------------------------


async def test_console_recovers_after_the_gateway_restarts(tab: Tab, gw: Gateway) -> None:
    _, key = gw.new_user()
    page = tab.page
    await tab.sign_in_user(key)
    await page.get_by_role("link", name="Live console").click()
    await page.get_by_label("Topic filter").fill("sensors/#")
    await page.get_by_role("button", name="Subscribe", exact=True).click()
    status = page.get_by_role("status").filter(has_text=re.compile("Connected|Reconnecting"))
    await expect(status).to_have_text("Connected")
    await asyncio.to_thread(gw.stop)
    await expect(status).to_contain_text("Reconnecting")
    await asyncio.to_thread(gw.start)
    await expect(status).to_have_text("Connected", timeout=10_000)
    await publish(gw, gw.token(key, "app"), "sensors/after", "back again")
    await expect(page.get_by_role("list", name="Messages").get_by_text("back again")).to_be_visible(timeout=2000)
    tab.assert_clean(WS_FAILURE)
