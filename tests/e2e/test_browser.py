"""The plugin in a real browser (Debian's chromium through Playwright) against the real platform
(`retrainer up`: api-server with the plugin, scheduler, MLflow, serving): log in to the Airflow
UI, open the Models page, see the models and their decisions, follow a task's MLflow link to the
run in the MLflow UI, and roll back from the page. Screenshots go to docs/ (shown in the README).
"""

import shutil
from pathlib import Path

import pytest
from e2e_platform import champion, running_platform, shipped_spec

from retrainer.config.secrets import airflow_credentials

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MODEL = "breast_cancer"


def find_or_install_chromium() -> str | None:
    """Debian's chromium: on PATH, else installed with apt-get (as `make images` installs
    Docker); None only when that fails, with apt's reason on stderr."""
    import subprocess
    import sys

    if shutil.which("chromium") is None and shutil.which("apt-get") is not None:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        argv = ["apt-get", "install", "-y", "-qq", "chromium"]
        got = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if got.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
            got = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if got.returncode != 0:
            print(f"BROWSER NOT TESTED: {got.stderr.strip()[-500:]}", file=sys.stderr)
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    if find_or_install_chromium() is None:
        pytest.skip(
            "BROWSER NOT TESTED: chromium is not installed and apt-get could not install it"
        )
    raw = shipped_spec(MODEL, deployment={"approval": "auto"})
    raw.setdefault("monitoring", {})["schedule"] = None  # checks only when the test asks
    with running_platform(tmp_path_factory.mktemp("browser"), {MODEL: raw}) as settings:
        yield settings


def retrain(api, reason):
    run = api.trigger(f"{MODEL}_retrain", {"reason": reason})
    done = api.wait_for_run(f"{MODEL}_retrain", run["dag_run_id"], timeout=600)
    assert done["state"] == "success"
    return run["dag_run_id"]


def wait_deploys(api, count, timeout=600):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.request("GET", f"/dags/{MODEL}_deploy/dagRuns")["dag_runs"]
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(3)
    raise AssertionError(f"{count} deploy runs did not finish in {timeout} s")


def test_models_page_links_and_rollback_in_a_browser(platform):
    from playwright.sync_api import sync_playwright

    from retrainer.platform.airflow_api import AirflowClient

    settings = platform
    user, password = airflow_credentials(settings)
    api = AirflowClient(settings.airflow_url, user, password)
    api.wait_for_dag(f"{MODEL}_retrain", timeout=180)
    api.wait_for_dag(f"{MODEL}_deploy", timeout=180)
    api.wait_for_dag(f"{MODEL}_monitor", timeout=180)
    first = retrain(api, "first version")
    wait_deploys(api, 1)
    retrain(api, "second version")
    wait_deploys(api, 2)
    assert champion(settings, MODEL) == "2"
    monitor = api.trigger(f"{MODEL}_monitor", {})
    api.wait_for_run(f"{MODEL}_monitor", monitor["dag_run_id"], timeout=300)
    links = api.request(
        "GET", f"/dags/{MODEL}_retrain/dagRuns/{first}/taskInstances/train_candidate/links"
    )["extra_links"]
    assert links["MLflow run"].startswith(settings.mlflow_url)

    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # Anonymous: the plugin's data route answers 401.
        assert page.request.get(f"{settings.airflow_url}/retrainer/api/models").status == 401
        page.goto(f"{settings.airflow_url}/")
        page.wait_for_selector("input[name=username]", timeout=60_000)
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", password)
        page.keyboard.press("Enter")
        page.wait_for_url(lambda url: "login" not in url, timeout=60_000)

        # The Models page inside the Airflow UI (nav entry), then on its own.
        page.goto(f"{settings.airflow_url}/plugin/retrainer-models")
        frame = page.frame_locator("iframe")
        frame.locator(f"#model-{MODEL}").wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(DOCS / "models-page-in-airflow.png"))
        page.goto(f"{settings.airflow_url}/retrainer/models")
        card = page.locator(f"#model-{MODEL}")
        card.wait_for(timeout=30_000)
        text = card.inner_text()
        assert "champion: v2" in text and "previous: v1" in text
        assert "passed" in text  # the last gate decision
        assert "insufficient_data" in text or "no_champion" in text or "ok" in text  # monitor
        page.screenshot(path=str(DOCS / "models-page.png"), full_page=True)

        # A task's MLflow link lands on that run in the MLflow UI.
        page.goto(links["MLflow run"])
        page.wait_for_selector(f"text={MODEL}_retrain", timeout=60_000)  # never network-idle
        page.wait_for_timeout(1500)
        page.screenshot(path=str(DOCS / "task-link-mlflow-run.png"))

        # Roll back from the page: the deploy DAG puts v1 back.
        page.goto(f"{settings.airflow_url}/retrainer/models")
        asked = []
        page.once("dialog", lambda d: (asked.append(d.message), d.accept()))  # "Roll back?"
        page.locator(f"#model-{MODEL} button[data-act=rollback]").click()
        page.wait_for_selector("#msg:has-text('started')", timeout=30_000)
        assert asked == [f"Roll {MODEL} back to v1?"], asked
        browser.close()
    wait_deploys(api, 3)
    assert champion(settings, MODEL) == "1"
