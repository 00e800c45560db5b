"""The panels in a real browser: notebooks 01 and 02 run in JupyterLab and the Voila explorer app, driven by headless
Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ANILA_CHROMIUM", "/usr/bin/chromium")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"browser stack missing: no Chromium at {CHROMIUM} (make test-browser installs it)", allow_module_level=True
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser stack missing: playwright is not installed (make test-browser installs it)"
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ANILA_ARTIFACTS") or ROOT / "tests" / "browser" / "artifacts")
# ANILA_DOCS_DIR=docs refreshes the README screenshots from a run of this test
DOCS_DIR = os.environ.get("ANILA_DOCS_DIR")
DOC_SHOTS = {
    "voila-known-before": "explore-known-before.png",
    "voila-known-after": "explore-known-after.png",
    "voila-trained-before": "explore-trained-before.png",
    "voila-trained-after": "explore-trained-after.png",
}
# Without the background-networking flags Chromium keeps calling Google services, which
# fail noisily on a closed network. Playwright adds --headless and a fresh profile per launch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "anila-browser-test"
RUN_TIMEOUT_MS = 300_000  # a whole notebook at the smoke budget: ~30 s on 2 cores, slack for a busy CI machine
UPDATE_TIMEOUT_MS = 60_000  # one panel rerun after a slider release
WIDGET_ERRORS = ("Error displaying widget", "model not found")

# The panel's figure: an <img> in an Output widget with the inline backend (notebooks 01 and
# 02), an ipympl canvas with %matplotlib widget (the explorer app). Its "signature" changes
# when the figure is redrawn; a canvas that was never drawn counts as no figure yet.
FIGURE = ".widget-output img, .jupyter-matplotlib canvas"
FIGURE_SIGNATURE = """panel => {
    const img = panel.querySelector('.widget-output img');
    if (img) return img.src || null;
    const canvas = panel.querySelector('.jupyter-matplotlib canvas');
    if (!canvas || !canvas.width) return null;
    const blank = document.createElement('canvas');
    blank.width = canvas.width; blank.height = canvas.height;
    const data = canvas.toDataURL();
    return data === blank.toDataURL() ? null : data;
}"""
# every code cell ran or was given up on (an error stops Run All): no [*] left, kernel idle
NOTEBOOK_SETTLED = """nb => {
    const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim());
    const status = nb.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
    return prompts.some(p => /^\\[\\d+\\]:$/.test(p)) && !prompts.includes('[*]:') && status === 'idle';
}"""


# --------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jupyter_env(home: Path) -> dict:
    """The environment of a server under test: smoke budget, and Jupyter/IPython state in ``home``, not the user's."""
    env = {
        **os.environ,
        "ANILA_BUDGET": "smoke",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),  # a user kernelspec named python3 must not replace the venv's
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    # make test sets MPLBACKEND=Agg; the kernel must pick its notebook backend as it would for a user
    env.pop("MPLBACKEND", None)
    return env


class Server:
    """A Jupyter-style server started by a test, with its log in the artifacts folder."""

    def __init__(self, name: str, args: list[str], cwd: Path, env: dict, port: int):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = ARTIFACTS / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} before listening:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"{self.name} did not listen on port {self.port} within {timeout} s:\n{self.log_tail()}")

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        # SIGTERM lets Jupyter and Voila shut their kernels down; kill only if they hang
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def lab(tmp_path_factory, artifacts):
    """JupyterLab on loopback over copies of the notebooks, so autosave never touches the committed ones."""
    home = tmp_path_factory.mktemp("lab")
    notebooks = home / "notebooks"  # notebook 02 finds the repository root as the parent of notebooks/
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = home / "lab-settings" / "@jupyterlab"
    overrides = {
        # every cell stays in the DOM, so all prompts and outputs can be read
        "notebook-extension/tracker": {"windowingMode": "none"},
        # no news/update toast over the notebook (and no request to the internet for it)
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for name, values in overrides.items():
        path = settings / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={notebooks}",
    ]
    if os.getuid() == 0:  # Jupyter refuses root without being told (containers, CI)
        args.append("--allow-root")
    server = Server("jupyterlab", args, notebooks, _jupyter_env(home), port)
    try:
        server.wait_listening()
        deadline = time.monotonic() + 60
        while True:  # listening is not serving yet: wait until the REST API answers with our token
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab's API did not answer:\n{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def voila(tmp_path_factory, artifacts):
    """``make explore``'s Voila app on loopback; ANILA_EXPLORE_RUN passes through (docs screenshots of a real run)."""
    if find_spec("voila") is None:
        pytest.skip("browser stack missing: voila is not installed (make test-browser installs it)")
    home = tmp_path_factory.mktemp("voila")
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "voila",
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        f"--port={port}",
        "--Voila.port_retries=0",
        f"--token={TOKEN}",
        "--show_tracebacks=True",
        "apps/explore.ipynb",
    ]
    server = Server("voila", args, ROOT, _jupyter_env(home), port)
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def chromium():
    with sync_api.sync_playwright() as p:
        # Playwright's own browser download needs the internet: use the distribution's Chromium
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, request, artifacts):
    """A fresh browser context; its console errors go to an artifact, a failing test leaves a full-page screenshot."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(60_000)
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
    yield page
    name = request.node.name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        page.screenshot(path=str(artifacts / f"{name}-failure.png"), full_page=True)
    # offline, Voila's Font Awesome from a CDN fails to load: recorded, not asserted
    (artifacts / f"{name}-console.log").write_text("\n".join(console) + "\n")
    context.close()


def _save(image: bytes, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(image)
    if DOCS_DIR and name in DOC_SHOTS:
        from PIL import Image, ImageChops

        # the panel's box is wider than its content: crop the white margin, keep every pixel of the rest
        shot = Image.open(io.BytesIO(image)).convert("RGB")
        box = ImageChops.difference(shot, Image.new("RGB", shot.size, "white")).getbbox() or (0, 0, *shot.size)
        pad = 8
        box = (
            max(box[0] - pad, 0),
            max(box[1] - pad, 0),
            min(box[2] + pad, shot.width),
            min(box[3] + pad, shot.height),
        )
        Path(DOCS_DIR).mkdir(parents=True, exist_ok=True)
        shot.crop(box).save(Path(DOCS_DIR) / DOC_SHOTS[name], optimize=True)
    return path


def _assert_no_widget_errors(page) -> None:
    text = page.locator("body").inner_text().lower()
    for message in WIDGET_ERRORS:
        assert message.lower() not in text, f"a widget shows {message!r}"


def _b_label(page):
    """The ``threshold b`` description label (built from ``page`` so it can serve inside ``filter(has=...)``)."""
    return page.locator(".widget-label", has_text=re.compile(r"^\s*threshold b\s*$"))


def _panels(scope, page):
    """The panels under ``scope``: the outermost boxes holding a ``threshold b`` slider and a figure."""
    # the controls' own VBox holds the slider too, but not the figure
    b_slider = page.locator(".widget-slider").filter(has=_b_label(page))
    return scope.locator(".widget-vbox").filter(has=b_slider).filter(has=page.locator(FIGURE))


def _move_b_and_check(page, panel, shot: str) -> dict:
    """PageDown on the panel's ``b`` slider handle; the readout and the figure must change. Screenshots before and
    after."""
    slider = panel.locator(".widget-slider").filter(has=_b_label(page))
    readout = panel.locator(".widget-html-content").first  # the panel's only HTML widget: the readout table
    panel.scroll_into_view_if_needed()
    page.wait_for_function(f"({FIGURE_SIGNATURE})", arg=panel.element_handle(), timeout=UPDATE_TIMEOUT_MS)
    page.wait_for_function("el => el.innerText.trim().length > 0", arg=readout.element_handle())
    figure = panel.locator(FIGURE).first
    before = {
        "b": slider.locator(".widget-readout").inner_text(),
        "readout": readout.inner_text(),
        "signature": panel.evaluate(FIGURE_SIGNATURE),
        "figure_png": figure.screenshot(),
    }
    _save(panel.screenshot(), f"{shot}-before")

    handle = slider.locator(".noUi-handle")
    handle.focus()
    # noUiSlider moves a focused handle by five steps on PageDown and fires one "change": with
    # continuous_update=False that is one release, so the kernel reruns the panel once
    handle.press("PageDown")
    b_after = slider.locator(".widget-readout").inner_text()
    assert b_after != before["b"], f"the b slider did not move (still {b_after})"
    page.wait_for_function(
        "([el, old]) => el.innerText !== old",
        arg=[readout.element_handle(), before["readout"]],
        timeout=UPDATE_TIMEOUT_MS,
    )
    page.wait_for_function(
        f"([panel, old]) => {{ const s = ({FIGURE_SIGNATURE})(panel); return s !== null && s !== old; }}",
        arg=[panel.element_handle(), before["signature"]],
        timeout=UPDATE_TIMEOUT_MS,
    )
    page.wait_for_timeout(300)  # the new image is in the DOM; let it paint before the screenshot
    figure_after = panel.locator(FIGURE).first.screenshot()
    assert figure_after != before["figure_png"], "the figure looks the same after moving b"
    _save(panel.screenshot(), f"{shot}-after")
    _assert_no_widget_errors(page)
    return {"b": (before["b"], b_after), "readout": (before["readout"], readout.inner_text())}


# --------------------------------------------------------------------------- JupyterLab


def _wait_for_kernel(lab, notebook: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for session in lab.api("/api/sessions"):
            kernel = session.get("kernel") or {}
            if (
                session["path"] == notebook
                and kernel.get("execution_state") == "idle"
                and kernel.get("connections", 0) > 0
            ):
                return
        time.sleep(0.5)
    pytest.fail(f"{notebook}: its kernel was not idle and connected within {timeout} s:\n{lab.log_tail()}")


def _run_all_in_lab(page, lab, notebook: str, workspace: str):
    """Open ``notebook`` in its own workspace, run all cells from the Run menu, wait until they are done."""
    # a fresh workspace per test: JupyterLab would otherwise reopen the previous test's tabs
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{notebook}?token={TOKEN}")
    nb = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    nb.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)
    # the toolbar says idle before the kernel is up, and Run All then silently does nothing:
    # wait until the server has this notebook's kernel idle with the page connected to it
    _wait_for_kernel(lab, notebook)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(  # started: some cell queued or done; fail here rather than after RUN_TIMEOUT_MS
        "nb => [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].some(p => "
        "/\\[(\\*|\\d+)\\]/.test(p.textContent))",
        arg=nb.element_handle(),
        timeout=60_000,
    )
    page.wait_for_function(NOTEBOOK_SETTLED, arg=nb.element_handle(), timeout=RUN_TIMEOUT_MS)
    prompts = nb.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    errors = (
        nb.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        .filter(has_text="Traceback")
        .all_inner_texts()
    )
    assert not errors, f"{notebook} raised:\n" + "\n".join(e[-2000:] for e in errors)
    not_run = [i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p.strip())]
    assert not not_run, f"{notebook}: code cells {not_run} did not run (prompts {prompts})"
    _assert_no_widget_errors(page)
    return nb


@pytest.fixture
def lab_kernels_stopped(lab):
    """After the test (and after ``page`` has taken its failure screenshot): stop every kernel of the lab."""
    yield
    # each notebook's kernel holds torch and a trained model: free it before the next test
    for session in lab.api("/api/sessions"):
        lab.api(f"/api/sessions/{session['id']}", method="DELETE")


@pytest.mark.parametrize(
    "notebook, shot", [("01_sampling_known_energies.ipynb", "lab-01"), ("02_rings_toy_ebm.ipynb", "lab-02")]
)
def test_lab_notebook_panel_follows_b(lab, lab_kernels_stopped, page, notebook, shot):
    """Run All in JupyterLab, then the notebook's one panel answers a move of its b slider (02: on the model it just
    trained)."""
    nb = _run_all_in_lab(page, lab, notebook, workspace=shot)
    panels = _panels(nb, page)
    panels.first.wait_for(timeout=UPDATE_TIMEOUT_MS)  # widget views render after the kernel went idle
    assert panels.count() == 1, f"{notebook}: expected one panel with a 'threshold b' slider, found {panels.count()}"
    change = _move_b_and_check(page, panels.first, shot)
    assert change["readout"][0] != change["readout"][1]
    _save(page.screenshot(), f"{shot}-page")


# --------------------------------------------------------------------------- Voila


def test_voila_explore_app(page, voila):
    """``make explore``: both panels render without code cells and each answers a move of its b slider."""
    page.goto(f"{voila.url}/?token={TOKEN}", timeout=RUN_TIMEOUT_MS)
    panels = _panels(page, page)
    # the second panel appears only after the app has trained (or loaded) its model; an error ends the wait early
    failed = page.get_by_text(re.compile("Traceback|There was an error when executing cell"))
    panels.nth(1).locator(FIGURE).first.or_(failed).first.wait_for(timeout=RUN_TIMEOUT_MS)
    text = page.locator("body").inner_text()
    assert "Traceback" not in text, f"the app raised:\n{text[-3000:]}"
    # markdown cells render inside input areas too; code would be a code cell's input or highlighted source
    assert page.locator(".jp-CodeCell .jp-InputArea, .cm-editor, .highlight").count() == 0, "Voila shows code"
    assert "sampling_panel(" not in text, "Voila shows the app's source"
    assert panels.count() == 2, f"expected the two panels, found {panels.count()}"
    _assert_no_widget_errors(page)
    _save(page.screenshot(), "voila-page")
    for i, shot in enumerate(("voila-known", "voila-trained")):
        change = _move_b_and_check(page, panels.nth(i), shot)
        assert change["readout"][0] != change["readout"][1]


# --------------------------------------------------------------------------- the course as a website (make site)

# make test-browser builds the site first and names it here: a missing site is then a failure, not a skip
SITE = Path(os.environ.get("ANILA_SITE") or ROOT / "build" / "site" / "_build" / "html")
# every numbered notebook is a page, found as the site's table of contents finds it
COURSE = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# a figure in a cell's output; a widget's (the live plots, the panels) needs the widget manager and a kernel
FIGURES = """() => [...document.querySelectorAll('article.bd-article img')].map(img => ({
    src: img.getAttribute('src'), loaded: img.complete, width: img.naturalWidth,
    output: img.closest('.cell_output') !== null,
}))"""
# the renderer's order of preference (MyST-NB, HTML): an output that also offers one of these is not drawn as a PNG
RICHER_THAN_PNG = ("application/vnd.jupyter.widget-view+json", "application/javascript", "text/html", "image/svg+xml")


@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").is_file():
        message = f"no built site at {SITE} (make site builds it)"
        if os.environ.get("ANILA_SITE"):
            pytest.fail(message)
        pytest.skip(message)
    return SITE


def _executed_png_figures(site: Path, name: str) -> int:
    """How many PNG figures the execution the site shows of notebook ``name`` holds in its cell outputs.

    That execution is the one Jupyter Book's cache keeps for the notebook's current code: the
    cache answers for the notebook file, by its code, whatever build first ran it.
    """
    jupyter_cache = pytest.importorskip(
        "jupyter_cache", reason="the site extra is not installed (make site installs it)"
    )
    cache = jupyter_cache.get_cache(site.parent / ".jupyter_cache")
    record = cache.match_cache_file(ROOT / "notebooks" / f"{name}.ipynb")  # raises KeyError if none ran this code
    cells = cache.get_cache_bundle(record.pk).nb.cells
    outputs = [o.get("data", {}) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    return sum("image/png" in data and not any(kind in data for kind in RICHER_THAN_PNG) for data in outputs)


def _title(name: str) -> str:
    """The notebook's first ``# `` heading: the page's title."""
    cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    for cell in cells:
        for line in "".join(cell["source"]).splitlines() if cell["cell_type"] == "markdown" else ():
            if line.startswith("# "):
                return line[2:].strip()
    raise AssertionError(f"{name}: no '# ' heading")


def test_site_landing_page_is_the_readme_with_every_notebook_in_its_navigation(site, page):
    page.goto((site / "index.html").as_uri())  # what a reader opens: it sends them on to the README's page
    page.wait_for_url("**/README.html")
    page.wait_for_load_state("load")
    readme_title = (ROOT / "README.md").read_text().splitlines()[0].lstrip("# ").strip()
    assert page.locator("article h1").first.inner_text().strip().rstrip("#").strip() == readme_title
    nav = page.locator("nav.bd-links a.reference.internal")
    linked = [Path(h).stem for h in nav.evaluate_all("links => links.map(a => a.getAttribute('href'))")]
    assert [n for n in linked if n in COURSE] == COURSE, (
        f"the navigation lists {linked}, expected every notebook in order"
    )
    docs = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    assert set(docs) <= set(linked), f"docs pages missing from the navigation: {sorted(set(docs) - set(linked))}"
    figures = page.evaluate(FIGURES)
    assert figures and all(f["loaded"] and f["width"] > 0 for f in figures), figures  # the README's screenshot
    _save(page.screenshot(), "site-landing")


@pytest.mark.parametrize("name", COURSE)
def test_site_notebook_page_renders_with_its_figures(site, page, name):
    """Each notebook's page: its title, no error output, and every figure of its execution drawn (loaded, not empty)."""
    path = site / "notebooks" / f"{name}.html"
    assert path.is_file(), f"{name} has no page: is it in the site's table of contents?"
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert page.locator("article h1").first.inner_text().strip().rstrip("#").strip() == _title(name)
    assert page.locator("article .cell_output").count() > 0, f"{name}: the page shows no cell output: was it executed?"
    errors = page.locator("article .cell_output .traceback, article .cell_output .output.error").all_inner_texts()
    assert not errors, f"{name} shows an error:\n" + "\n".join(e[-2000:] for e in errors)
    figures = page.evaluate(FIGURES)
    broken = [f for f in figures if not (f["loaded"] and f["width"] > 0)]
    assert not broken, f"{name}: figures that did not load: {broken}"
    drawn = sum(f["output"] for f in figures)
    expected = _executed_png_figures(site, name)
    assert expected > 0, f"{name}: its execution holds no figure (MPLBACKEND=Agg in the build?)"
    assert drawn == expected, f"{name}: {drawn} figures on the page, {expected} in the executed notebook"
    page.locator("article .cell_output img").first.scroll_into_view_if_needed()
    _save(page.screenshot(), f"site-{name[:2]}")
