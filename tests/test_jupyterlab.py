"""The viewers' live widgets opened in JupyterLab in a real browser (headless Chromium driven by Playwright) and screenshotted.

Skipped where Chromium, Playwright or JupyterLab is missing (`pip install -e ".[dev]"` brings the last two; Chromium comes from
the system, e.g. Debian's `chromium`). Set SIMS_NB_SCREENSHOTS=DIR to keep the screenshot."""
import json, os, shutil, socket, subprocess, sys, time, urllib.request, secrets
from pathlib import Path
import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium on this machine')
sync_api = pytest.importorskip('playwright.sync_api')
pytest.importorskip('jupyterlab')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'

VIEWER_CELLS = [
    "import warnings; warnings.filterwarnings('ignore')\n"
    "import anndata as ad\n"
    "from sims_nb.learner import sims_learner, get_recipe\n"
    "from sims_nb.explain import explain\n"
    "from sims_nb.viewer import ClassViewer, GeneViewer",
    f"kang = r'{DATA/'kang2018_pbmc_stim_muscat_example.h5ad'}'\n"
    "learn = sims_learner([kang], class_label='cell_type', recipe=get_recipe(steps=100))\n"
    "with learn.no_bar(), learn.no_logging(): learn.fit()\n"
    "explanation = explain(learn, ad.read_h5ad(kang)[learn.dls.splits['test']].copy(), label='cell_type')",
    "ClassViewer(explanation, n=8)",
    "GeneViewer(explanation)",
]

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on a free port, serving a notebook that builds both viewers"
    cells = [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [], 'source': s} for i, s in enumerate(VIEWER_CELLS)]
    notebook = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
                'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path/'viewers.ipynb').write_text(json.dumps(notebook))
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path/'config'), 'JUPYTER_RUNTIME_DIR': str(tmp_path/'runtime'), 'OMP_NUM_THREADS': '1'}
    server = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ServerApp.ip=127.0.0.1',
                               f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={tmp_path}', '--allow-root'],  # CI containers run as root
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path/'lab.log', 'w'), env=env)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):
            if server.poll() is not None: break
            try:
                urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f'JupyterLab did not start: {(tmp_path/"lab.log").read_text()[-2000:]}')
        yield f'{url}/lab/tree/viewers.ipynb?token={token}', tmp_path
    finally:
        server.terminate()
        try: server.wait(20)
        except subprocess.TimeoutExpired: server.kill()

def test_viewers_draw_in_jupyterlab(lab):
    url, folder = lab
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu'])
        page = browser.new_page(viewport={'width': 1280, 'height': 1400})
        page.goto(url)
        page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=120_000)
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"], .jp-mod-idle, [title*="Kernel Idle"]', timeout=120_000, state='attached')
        try: run_and_check(page, folder)
        except Exception:
            if os.environ.get('SIMS_NB_SCREENSHOTS'): page.screenshot(path=str(Path(os.environ['SIMS_NB_SCREENSHOTS'])/'jupyterlab_failure.png'), full_page=True)
            raise
        finally: browser.close()
    shot = folder/'jupyterlab_viewers.png'
    assert shot.stat().st_size > 20_000
    if os.environ.get('SIMS_NB_SCREENSHOTS'): shutil.copy(shot, Path(os.environ['SIMS_NB_SCREENSHOTS'])/shot.name)

def run_and_check(page, folder):
    "Run every cell from JupyterLab's menu, wait for both viewers to be drawn, check their controls and take the screenshot"
    page.click('.jp-Notebook')
    page.keyboard.press('Escape')
    page.get_by_text('Run', exact=True).first.click()
    page.get_by_text('Run All Cells', exact=True).first.click()
    page.wait_for_selector('.widget-dropdown select', timeout=240_000)  # ClassViewer's class picker, drawn by the widget manager
    page.wait_for_selector('input[list]', timeout=120_000)  # GeneViewer's gene box (a combobox: a text input with a datalist)
    page.wait_for_function("document.querySelectorAll('.jp-OutputArea-output img').length >= 2", timeout=120_000)  # a chart in each
    assert 'B cells' in page.locator('.widget-dropdown select').first.inner_text().replace('\xa0', ' ')  # ipywidgets draws spaces as no-break spaces
    assert page.locator('.widget-slider').count() >= 1  # the top-genes slider
    assert page.locator('input[list]').first.input_value() != ''  # the most important gene, chosen at the start
    page.locator('.widget-dropdown select').first.select_option(index=2)  # the kernel redraws the chart for another class: the widgets are live
    page.wait_for_selector('text=CD4 T cells: top 8 genes', timeout=60_000)
    shot = folder/'jupyterlab_viewers.png'
    page.screenshot(path=str(shot), full_page=True)
