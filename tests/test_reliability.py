"Bad input and faults: what the user sees (one line naming the file and the fix), and that input files are never modified"
import hashlib, subprocess, sys
from pathlib import Path
import anndata as ad, numpy as np, pytest
from sims_nb.learner import sims_learner

DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
COMMAND = Path(sys.executable).parent/'sims-nb'

def run(*args, **kwargs):
    return subprocess.run([str(COMMAND), *map(str, args)], capture_output=True, text=True, **kwargs)

def digest(path): return hashlib.sha256(Path(path).read_bytes()).hexdigest()

def corrupted_counts(path, row:int):
    "pbmc68k's counts (X) with one entry of cell `row` made negative"
    adata = ad.read_h5ad(DATA/'pbmc68k_reduced_scanpy.h5ad')
    start = adata.X.indptr[row]
    adata.X.data[start] = -adata.X.data[start]
    adata.write_h5ad(path)
    return path

def test_negative_entry_in_counts_is_refused(tmp_path):
    path = corrupted_counts(tmp_path/'corrupted.h5ad', row=3)
    before = digest(path)
    result = run('train', path, '--label', 'bulk_labels', '--out', tmp_path/'out', '--epochs', '1')
    assert result.returncode == 2, result.stderr
    assert 'corrupted.h5ad: 1 negative entry' in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert digest(path) == before and not (tmp_path/'out'/'model.pt').exists()

def test_negative_entry_beyond_the_sample_is_refused(tmp_path):
    path = corrupted_counts(tmp_path/'late.h5ad', row=650)  # beyond the first 500 cells that detect the input's kind
    with pytest.raises(ValueError, match='late.h5ad: 1 negative entry'):
        learn = sims_learner([path], class_label='bulk_labels')
        with learn.no_bar(), learn.no_logging(): learn.fit(1)

def test_scaled_input_is_accepted_with_a_warning(tmp_path):
    import scanpy as sc
    adata = ad.read_h5ad(DATA/'pbmc68k_reduced_scanpy.h5ad')
    sc.pp.normalize_total(adata, target_sum=1e4); sc.pp.log1p(adata); sc.pp.scale(adata, max_value=10)
    with pytest.warns(UserWarning, match='scaled'): learn = sims_learner([adata], class_label='bulk_labels')
    with learn.no_bar(), learn.no_logging(): learn.fit(1)  # every gene detected everywhere: markers by t-score
    assert 0 < len(learn.genes) < adata.n_vars and (learn.predict(adata[:20]).probability > 0).all()

# ---- the command line in scripts: quiet, version, exit codes, interruptions ----
import os, signal, time
import pandas as pd
from sims_nb import cli
from sims_nb.learner import SimsModel

def test_quiet_version_and_unexpected_errors(tmp_path, monkeypatch, capsys):
    result = run('train', DATA/'pbmc68k_reduced_scanpy.h5ad', '--label', 'bulk_labels', '--epochs', '1', '--quiet', '--out', tmp_path/'q')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [result.stdout.strip()] and result.stdout.startswith('test split: accuracy')
    assert len(pd.read_csv(tmp_path/'q'/'history.csv')) == 1  # the history is kept all the same
    result = run('predict', tmp_path/'q'/'model.pt', DATA/'pbmc68k_reduced_scanpy.h5ad', '--quiet', '--out', tmp_path/'q'/'p.csv')
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 1 and 'unassigned' in result.stdout
    version = run('--version')
    assert version.returncode == 0 and version.stdout.startswith('sims-nb ')
    assert run('predict').returncode == 2  # usage
    def broken(*args, **kwargs): raise RuntimeError('something no input explains\nsecond line')
    monkeypatch.setattr(cli, 'predict', broken)
    assert cli.main(['predict', str(tmp_path/'q'/'model.pt'), str(DATA/'pbmc68k_reduced_scanpy.h5ad')]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'unexpected error (RuntimeError: something no input explains second line)' in err
    log = Path(err.split('the traceback is in ')[1].split(';')[0])
    assert 'Traceback' in log.read_text() and 'RuntimeError' in log.read_text()

def default_sigint():
    "In the child: Ctrl-C as in a terminal. A test run in the background (`make test &`) inherits SIGINT ignored, and so would the command"
    signal.signal(signal.SIGINT, signal.SIG_DFL)

def training(out, *extra):
    "A `sims-nb train` process on pbmc3k, reading its one line per epoch"
    return subprocess.Popen([str(COMMAND), 'train', str(DATA/'pbmc3k_seurat.h5ad'), '--label', 'cell_type', '--out', str(out), '--epochs', '40', *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)

def wait_for_epochs(process, n:int, timeout:float=300):
    "Read the process's output until `n` epoch lines have been printed"
    start, seen = time.time(), 0
    for line in process.stdout:
        seen += line.startswith('epoch ')
        if seen >= n or time.time() - start > timeout: return seen
    return seen

def test_ctrl_c_writes_reports_for_the_best_epoch(tmp_path):
    process = training(tmp_path/'run')
    assert wait_for_epochs(process, 2) == 2
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert 'interrupted: writing the reports for the best epoch so far' in out and err.strip().endswith('interrupted')
    assert {'model.pt', 'scores.csv', 'confusion.png', 'test_predictions.csv'} <= {p.name for p in (tmp_path/'run').iterdir()}
    model = SimsModel.load(tmp_path/'run'/'model.pt')
    assert model.calibration is not None and len(model.predict(DATA/'pbmc3k_seurat.h5ad')) == 2638

def test_kill_9_leaves_a_loadable_checkpoint_and_resume_finishes_the_run(tmp_path):
    process = training(tmp_path/'run', '--epochs', '12')
    assert wait_for_epochs(process, 3) == 3
    process.kill(); process.wait()  # SIGKILL: no handler runs
    model = SimsModel.load(tmp_path/'run'/'model.pt')  # the last complete checkpoint
    assert len(model.predict(DATA/'pbmc3k_seurat.h5ad')) == 2638
    resumed = run('train', DATA/'pbmc3k_seurat.h5ad', '--label', 'cell_type', '--out', tmp_path/'run', '--epochs', '12', '--resume')
    assert resumed.returncode == 0, resumed.stderr
    assert 'resuming from' in resumed.stdout and sum(line.startswith('epoch ') for line in resumed.stdout.splitlines()) <= 9  # epochs 1-3 not again
    whole = run('train', DATA/'pbmc3k_seurat.h5ad', '--label', 'cell_type', '--out', tmp_path/'whole', '--epochs', '12')
    assert whole.returncode == 0, whole.stderr
    scores = [pd.read_csv(tmp_path/folder/'scores.csv', index_col=0) for folder in ('run', 'whole')]
    # stated tolerance: the batches come in another order after a restart, so close (macro-F1 within 0.05), not equal
    assert abs(float(scores[0].loc['macro_f1'].iloc[0]) - float(scores[1].loc['macro_f1'].iloc[0])) < 0.05, scores
    assert run('train', DATA/'pbmc3k_seurat.h5ad', '--label', 'cell_type', '--out', tmp_path/'other', '--resume').returncode == 2  # nothing to resume

def test_concurrent_predictions_are_identical_and_whole(tmp_path):
    assert run('train', DATA/'kang2018_pbmc_stim_muscat_example.h5ad', '--label', 'cell_type', '--epochs', '1', '--quiet', '--out', tmp_path/'m').returncode == 0
    before = digest(DATA/'kang2018_pbmc_stim_muscat_example.h5ad')
    command = lambda out: [str(COMMAND), 'predict', str(tmp_path/'m'/'model.pt'), str(DATA/'kang2018_pbmc_stim_muscat_example.h5ad'), '--out', str(out), '--quiet']
    outputs = ['a.csv', 'b.csv', 'same.csv', 'same.csv']  # two processes on separate outputs, two on the same one
    processes = [subprocess.Popen(command(tmp_path/name), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in outputs]
    assert [p.wait() for p in processes] == [0] * 4
    assert digest(tmp_path/'a.csv') == digest(tmp_path/'b.csv') == digest(tmp_path/'same.csv')  # whole, never interleaved
    assert len(pd.read_csv(tmp_path/'same.csv')) == 1556 and not list(tmp_path.glob('*.tmp'))
    assert digest(DATA/'kang2018_pbmc_stim_muscat_example.h5ad') == before  # the input is never modified
