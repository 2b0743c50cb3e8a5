"""The JavaScript client (clients/js/flowgate.js): its ``node --test`` suite, the copy the gateway serves at
``/sdk/flowgate.js``, and a headless Chromium page that imports it from there."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
import pytest

from tests.browser import browser_page
from tests.harness import ROOT, Gateway

JS = ROOT / "clients" / "js"
SERVED = ROOT / "protocols" / "http" / "sdk_files"


def test_node_suite_against_the_gateway(gateway: Gateway) -> None:
    node = shutil.which("node")
    assert node is not None, "nodejs is not installed (make test installs it)"
    assert (JS / "node_modules" / "ws").is_dir(), "run `npm ci` in clients/js (make test does)"
    env = {**os.environ, "FLOWGATE_TEST_URL": gateway.base_url, "FLOWGATE_TEST_ADMIN_KEY": gateway.admin_key}
    done = subprocess.run([node, "--test", "test/"], cwd=JS, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# pass 7" in done.stdout and "# fail 0" in done.stdout


@pytest.mark.parametrize("name", ["flowgate.js", "flowgate.d.ts"])
def test_the_gateway_serves_the_client_unchanged(gateway: Gateway, name: str) -> None:
    source = (JS / name).read_bytes()
    assert (SERVED / name).resolve() == (JS / name).resolve()  # one file: the package data is a symlink to it
    answer = httpx.get(f"{gateway.base_url}/sdk/{name}")
    assert answer.status_code == 200 and answer.content == source
    assert answer.headers["access-control-allow-origin"] == "*"
    again = httpx.get(f"{gateway.base_url}/sdk/{name}", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304
    if name.endswith(".js"):
        assert answer.headers["content-type"].startswith("text/javascript")


PAGE_SCRIPT = """
async ([apiKey]) => {
  const fg = await import("/sdk/flowgate.js");
  const client = new fg.Client(location.origin, { apiKey, app: "web" });
  const sub = client.subscribe(["page/+", "page/#"]);
  await sub.ready;
  const seqs = [await client.publish("page/a", {hello: "browser"}), await client.publish("page/b", "text")];
  const got = [];
  for await (const m of sub) { got.push([m.topic, m.data, m.seq]); if (got.length === 2) break; }
  const q = client.queue("web-jobs");
  await q.send("job", { attributes: { from: "page" } });
  const [job] = await q.receive({ wait: 2 });
  await job.delete();
  const forbidden = await new fg.Client(location.origin, { apiKey, app: "web",
      permissions: { publish: { allow: ["only/#"] } } }).publish("page/a", 1).catch((e) => e);
  return { seqs, got, job: [job.body, job.attributes, job.receiveCount],
           forbidden: [forbidden instanceof fg.Forbidden, forbidden.status] };
}
"""


async def test_a_page_imports_the_served_client(gateway: Gateway) -> None:
    _, api_key = gateway.new_user()
    async with browser_page(gateway.base_url + "/healthz") as page:
        result = await page.evaluate(PAGE_SCRIPT, [api_key])
    assert [g[:2] for g in result["got"]] == [["page/a", {"hello": "browser"}], ["page/b", "text"]]
    assert [g[2] for g in result["got"]] == result["seqs"]
    assert result["job"] == ["job", {"from": "page"}, 1]
    assert result["forbidden"] == [True, 403]
