"The sims-nb command: demo end to end, predict with a model file, and readable errors with exit codes"
import subprocess, sys
from pathlib import Path
import pandas as pd, pytest
from sims_nb.learner import SimsModel

DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
COMMAND = Path(sys.executable).parent/'sims-nb'

def run(*args):
    return subprocess.run([str(COMMAND), *map(str, args)], capture_output=True, text=True)

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    return run('demo', '--out', out, '--epochs', '2'), out

def test_demo_writes_everything(demo):
    result, out = demo
    assert result.returncode == 0, result.stderr
    assert 'test split:' in result.stdout and 'macro_f1' in result.stdout
    epochs = [line for line in result.stdout.splitlines() if line.startswith('epoch ')]  # not a terminal: one short line per epoch, no bars
    assert len(epochs) == 2 and epochs[0].startswith('epoch 1/2  train_loss') and 'valid_macro_f1' in epochs[0] and len(epochs[0]) < 150
    assert '\r' not in result.stdout and len(result.stdout) < 3000
    assert {'model.pt', 'model.md', 'scores.csv', 'per_class.csv', 'confusion.png', 'test_predictions.csv', 'top_genes.csv', 'history.csv'} <= {p.name for p in out.iterdir()}
    top = pd.read_csv(out/'top_genes.csv')
    assert list(top.columns) == ['class', 'rank', 'gene', 'importance'] and len(top) > 0 and (top.importance > 0).all()
    predictions = pd.read_csv(out/'test_predictions.csv', index_col=0)
    assert {'true_label', 'label', 'probability'} <= set(predictions.columns) and len(predictions) == 140  # 20% of 700 cells
    assert len(pd.read_csv(out/'history.csv')) == 2

def test_predict_with_the_demo_model(demo, tmp_path):
    _, out = demo
    result = run('predict', out/'model.pt', DATA/'pbmc68k_reduced_scanpy.h5ad', '--out', tmp_path/'p.csv')
    assert result.returncode == 0, result.stderr  # raw counts of the same cells, normalised as the model's log-normalised input
    predictions = pd.read_csv(tmp_path/'p.csv', index_col=0)
    assert len(predictions) == 700 and {'most_likely', 'unassigned', 'distance', 'evidence', 'prediction_set', 'set_size'} <= set(predictions.columns)
    assert '% unassigned' in result.stdout
    result = run('predict', out/'model.pt', DATA/'pbmc68k_reduced_scanpy.h5ad', '--out', tmp_path/'q.csv', '--no-unassigned', '--coverage', '0.95')
    assert result.returncode == 0, result.stderr
    always = pd.read_csv(tmp_path/'q.csv', index_col=0)
    assert not always.unassigned.any() and (always.label == predictions.most_likely).all() and always.set_size.mean() >= predictions.set_size.mean()
    result = run('predict', out/'model.pt', DATA/'pbmc68k_reduced_scanpy.h5ad', '--out', tmp_path/'r.csv', '--min-probability', '0.99')
    assert result.returncode == 0, result.stderr
    strict = pd.read_csv(tmp_path/'r.csv', index_col=0)
    assert strict.unassigned[strict.probability < 0.99].all() and strict.unassigned.sum() >= predictions.unassigned.sum()
    assert '--min-probability' in run('predict', '--help').stdout
    result = run('predict', out/'model.pt', DATA/'pbmc68k_reduced_scanpy.h5ad', '--out', tmp_path/'s.csv', '--chunk', '64')  # streamed in 11 chunks
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path/'s.csv', index_col=0), predictions)

def test_errors_are_one_line_with_exit_code_2(demo, tmp_path):
    _, out = demo
    n_model_genes = len(SimsModel.load(out/'model.pt').genes)  # the demo's markers, not every gene of the file
    cases = [(('train', DATA/'pbmc3k_seurat.h5ad', '--label', 'celltype', '--out', tmp_path/'x'), "no column 'celltype'"),
             (('predict', tmp_path/'missing.pt', DATA/'pbmc3k_seurat.h5ad'), 'no such model file'),
             (('predict', out/'model.pt', DATA/'scdcc_worm_neuron_anon.h5ad', '--out', tmp_path/'m.csv'), f"of the model's {n_model_genes} genes"),
             (('demo', '--data', DATA/'pbmc3k_seurat.h5ad'), 'give both --data FILE and --label COLUMN'),
             (('predict', out/'model.pt', DATA/'pbmc68k_reduced_scanpy.h5ad', '--min-probability', '1.5', '--out', tmp_path/'t.csv'), 'between 0 and 1')]
    for args, message in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and 'Traceback' not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr

def test_help_usage_errors_and_missing_files_need_no_torch(tmp_path):
    "The command's module imports neither torch nor fastai (about 6 s here), so `--help`, `--version`, usage errors, a missing input file and `zoo list` or `show` answer at once"
    code = "import sys, sims_nb.cli; print(sorted(m for m in ('torch', 'fastai', 'scanpy', 'anndata') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert loaded.returncode == 0 and loaded.stdout.strip() == '[]', (loaded.stdout, loaded.stderr)
    assert run('--help').returncode == 0 and run('--version').stdout.startswith('sims-nb ')
    result = run('train')
    assert result.returncode == 2 and 'the following arguments are required' in result.stderr
    code = "import sys; from sims_nb.cli import main; code = main(['predict', 'no_model.pt', 'no_data.h5ad']); print(code, 'torch' in sys.modules)"
    missing = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert missing.stdout.split() == ['2', 'False'] and 'no_model.pt: no such model file' in missing.stderr, (missing.stdout, missing.stderr)
    code = (f"import sys; from sims_nb.cli import main; zoo = {str(tmp_path/'zoo')!r}; "
            "codes = main(['zoo', 'list', '--zoo', zoo]), main(['zoo', 'show', 'absent', '--zoo', zoo]); print(*codes, 'torch' in sys.modules)")
    zoo = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)  # listing and reading a zoo's index need no model
    assert zoo.stdout.split()[-3:] == ['0', '2', 'False'] and "no model named 'absent'" in zoo.stderr, (zoo.stdout, zoo.stderr)
