"""The console in a real browser (Debian's chromium, driven by Playwright's bundled driver)
against a live worker on real Kafka and Redis: an editor writes, checks, backtests and publishes
a trigger, sees it fire, exports its report as CSV, changes it through the YAML view, reads the
diff, rolls back, pauses it; a viewer finds no publish button, gets 403 from the API, and
reads in a member's history why the trigger did not fire again. Screenshots go to .run/console/."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright, expect

from core.settings import ROOT
from infra.browser import ensure_chromium
from tests.integration.conftest import give_consent, http
from tests.integration.test_delivery import FAST, until
from tests.integration.test_ingestion import ev, uid
from tests.integration.test_lifecycle import keys, wait_key

SHOTS = ROOT / ".run" / "console"


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(f"{base}/console#/login")
    await page.get_by_test_id("login-key").fill(key)
    await page.get_by_test_id("login-go").click()
    await expect(page.get_by_test_id("trigger-list")).to_be_visible()


async def test_marketing_ops_write_backtest_publish_watch_and_pause_a_trigger_in_the_console(
    worker, worker_env, send, bootstrap
):
    who = keys(worker_env, uid("console"))
    await wait_key(worker.web_port, who["viewer"])
    base = f"http://127.0.0.1:{worker.web_port}"
    tid = f"console-{uuid.uuid4().hex[:6]}"
    member = uid("m")
    await give_consent(send, bootstrap, member, first_name="Mei")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=ensure_chromium(), headless=True, args=["--no-sandbox"]
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # an editor signs in (zh-CN by default) and writes a trigger in the form
        await sign_in(page, base, who["editor"])
        await expect(page.get_by_test_id("nav-triggers")).to_have_text("触发器")
        await shot(page, "1-triggers")
        await page.get_by_test_id("new-trigger").click()
        await page.get_by_test_id("f-id").fill(tid)
        await page.get_by_test_id("f-name").fill("欢迎回来 welcome back")
        await page.get_by_test_id("f-when").select_option("checkin")
        await page.get_by_test_id("f-stores").fill(FAST)
        await page.get_by_test_id("f-template").fill("你好 {member.first_name}")
        await page.get_by_test_id("f-quiet_hours").fill("")
        await page.get_by_test_id("f-if").fill("event.no_such_field == 1")
        await expect(page.get_by_test_id("err-if")).to_contain_text("no_such_field")
        await shot(page, "2-editor-error")
        await page.get_by_test_id("f-if").fill(f"event.test == '{tid}'")
        await expect(page.get_by_test_id("valid")).to_be_visible()
        await expect(page.get_by_test_id("err-if")).to_have_text("")
        assert f"id: {tid}" in await page.get_by_test_id("yaml").input_value()

        # backtest it on the recorded events, then publish with a note
        await page.get_by_test_id("bt-window").select_option("1h")
        await page.get_by_test_id("backtest").click()
        outcome = page.get_by_test_id("bt-fires").or_(page.locator("#bt-out .error"))
        await expect(outcome).to_be_visible(timeout=180_000)
        assert await page.get_by_test_id("bt-fires").count() == 1, await outcome.inner_text()
        await shot(page, "3-backtest")
        await page.get_by_test_id("note").fill("first version from the console")
        await page.get_by_test_id("publish").click()
        await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
        status, record = http(worker.web_port, "GET", f"/triggers/{tid}")
        assert status == 200 and record["author"].startswith("editor-"), record
        assert record["note"] == "first version from the console"

        # a check-in fires it; the list's count moves
        async def checkin() -> None:
            await send(
                "checkins",
                ev("checkin", store_id=FAST, member_id=member, test=tid),
                member.encode(),
            )

        await checkin()
        deadline = time.monotonic() + 90
        await page.goto(f"{base}/console#/triggers")
        while True:
            await page.reload()  # the same hash again would not re-render the list
            await expect(page.get_by_test_id(f"row-{tid}")).to_be_visible()
            loaded = page.locator("[data-testid=trigger-list] tbody[data-loaded]")
            await expect(loaded).to_have_count(1, timeout=120_000)  # the 24 h report is in
            if (await page.get_by_test_id(f"fires-{tid}").inner_text()).strip() not in ("", "0"):
                break
            if time.monotonic() >= deadline:
                _, rep = http(worker.web_port, "GET", "/report?from=24h", timeout=120)
                _, why = http(worker.web_port, "GET", f"/members/{member}/decisions")
                raise AssertionError(
                    f"no fire in the list: {rep.get('triggers', {}).get(tid)} {why}"
                )
            await page.wait_for_timeout(3000)
        await shot(page, "4-fired")

        # a second check-in the same day: the cooldown holds it back (history says so)
        await checkin()

        def reasons() -> list[str]:
            _, body = http(worker.web_port, "GET", f"/members/{member}/decisions?trigger={tid}")
            return [d["reason"] for d in body.get("decisions", [])]

        await until(lambda: "cooldown" in reasons(), 20, "no cooldown decision")

        # the report page, then pause it
        await page.get_by_test_id(f"row-{tid}").click()
        await expect(page.get_by_test_id("rp-fired")).to_have_text("1", timeout=120_000)
        await shot(page, "5-report")
        async with page.expect_download() as downloading:
            await page.get_by_test_id("csv").click()
        csv = Path(await (await downloading.value).path()).read_text()  # noqa: ASYNC240
        assert csv.splitlines()[0].startswith("scope,key,candidates,fired")
        assert csv.splitlines()[1].startswith("total,,1,1")

        # a second version through the YAML view, its diff, and a rollback to the first
        await page.get_by_test_id("edit").click()
        yaml_view = page.get_by_test_id("yaml")
        await expect(yaml_view).to_have_value(re.compile("你好"))  # a textarea's value
        text = await yaml_view.input_value()
        await yaml_view.fill(text.replace("你好", "欢迎回来"))
        await expect(page.get_by_test_id("f-template")).to_have_value(
            "欢迎回来 {member.first_name}"
        )
        await page.get_by_test_id("note").fill("warmer greeting")
        await page.get_by_test_id("publish").click()
        await expect(page.get_by_text("v2", exact=True)).to_be_visible(timeout=15_000)
        await page.locator("[data-diff='1']").click()
        await expect(page.get_by_test_id("diff")).to_contain_text('+      "template": "欢迎回来')
        await page.get_by_test_id("rollback-1").click()
        await expect(page.get_by_text("v3", exact=True)).to_be_visible(timeout=15_000)
        _, back = http(worker.web_port, "GET", f"/triggers/{tid}")
        assert back["definition"]["then"][0]["template"] == "你好 {member.first_name}"
        await page.get_by_test_id("pause").click()
        await expect(page.get_by_test_id("status")).to_have_text("paused", timeout=15_000)

        # a viewer: no publish button, and the API refuses a publish anyway
        await page.get_by_role("button", name="退出").click()
        await sign_in(page, base, who["viewer"])
        await expect(page.get_by_test_id("new-trigger")).to_have_count(0)
        await page.goto(f"{base}/console#/edit/{tid}")
        await expect(page.get_by_test_id("f-id")).to_have_value(tid)
        await expect(page.get_by_test_id("publish")).to_have_count(0)
        refused: Any = await page.evaluate(
            """async (doc) => {
                const s = JSON.parse(sessionStorage.getItem("sp.session"));
                const r = await fetch("/triggers", {method: "POST", body: JSON.stringify(doc),
                    headers: {Authorization: `Bearer ${s.key}`}});
                return r.status;
            }""",
            record["definition"],
        )
        assert refused == 403

        # and reads why the member did not get it the second time
        await page.get_by_test_id("nav-members").click()
        await page.get_by_test_id("mb-kind").select_option("member_id")
        await page.get_by_test_id("mb-value").fill(member)
        await page.get_by_test_id("mb-find").click()
        decisions = page.get_by_test_id("decisions")
        await expect(decisions).to_contain_text(tid)
        await expect(decisions).to_contain_text("cooldown")
        await expect(page.get_by_test_id("profile")).to_contain_text("Mei")
        await shot(page, "6-member")
        await page.get_by_test_id("lang").click()
        await expect(page.get_by_test_id("nav-members")).to_have_text("Members")
        await page.get_by_test_id("nav-ops").click()
        await expect(page.get_by_test_id("feeds")).to_contain_text(FAST)
        await shot(page, "7-operations")
        await browser.close()
    assert errors == [], errors
    sizes = [(SHOTS / f"{n}.png").stat().st_size for n in ("1-triggers", "5-report")]
    assert all(size > 10_000 for size in sizes), sizes
