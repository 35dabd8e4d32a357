"Scale: training under torchrun (2 processes, gloo) against one process, the command line under torchrun, Dask prediction against `predict`"
import json, os, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest
from sims_nb.data import BlockSampler
from sims_nb.learner import sims_learner, get_recipe, SimsModel
from sims_nb.scale import ShardedBatches, predict_dask, synthetic_cells

warnings.filterwarnings('ignore', message='Sparse CSR tensor support')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
PBMC = DATA/'pbmc3k_seurat.h5ad'
COMMAND = Path(sys.executable).parent/'sims-nb'
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']

def test_sharded_batches_cover_every_cell_once_and_never_leave_one():
    sampler = BlockSampler(np.arange(1001), bs=128, block=32, seed=3)
    sampler.min_bs = 4  # what `DistributedCallback` sets for 2 processes: a slice never holds a single cell
    def at(epoch, sharded):  # each process has its own sampler at the same epoch; here one sampler is wound back
        sampler.epoch = epoch
        return list(sharded)
    for epoch in range(2):
        shards = [at(epoch, ShardedBatches(sampler, rank, 2)) for rank in (0, 1)]
        assert len(shards[0]) == len(shards[1])  # DDP needs the same number of steps in every process
        assert min(len(b) for shard in shards for b in shard) >= 2
        whole = at(epoch, sampler)
        assert all(np.array_equal(np.concatenate([a, b]), w) for a, b, w in zip(*shards, whole))  # the halves of each batch, in order
    dealt = [at(0, ShardedBatches(sampler, rank, 3, split=False)) for rank in range(3)]
    assert len({len(d) for d in dealt}) == 1
    assert len(np.unique(np.concatenate([b for d in dealt for b in d]))) == sum(len(b) for d in dealt for b in d)  # no cell twice

def test_two_processes_train_as_one(tmp_path):
    "`sims-nb train` under torchrun (2 processes, gloo) scores as one process does on pbmc3k, and only the first process writes"
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    run = subprocess.run(TORCHRUN + [str(COMMAND), 'train', str(PBMC), '--label', 'cell_type', '--out', str(tmp_path/'two'), '--quiet'],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count('test split:') == 1  # one process reports
    two = pd.read_csv(tmp_path/'two'/'scores.csv', index_col=0)['score']
    history = pd.read_csv(tmp_path/'two'/'history.csv')
    assert len(history) >= 10 and history.epoch.is_unique and history.epoch.is_monotonic_increasing  # one writer: one row per epoch
    SimsModel.load(tmp_path/'two'/'model.pt')
    learn = sims_learner(PBMC, class_label='cell_type', seed=0)
    with learn.no_bar(), learn.no_logging():
        learn.fit()
        one = learn.evaluate().scores
    # Same steps and global batch; batch norm sees each process's half batch and DDP averages the halves' losses, so the scores differ a little
    valid_two, valid_one = history['valid_macro_f1'].max(), learn.history['valid_macro_f1'].max()  # the best epoch's validation score
    print(f"\none process: test accuracy {one['accuracy']:.3f}, macro-F1 {one['macro_f1']:.3f}, best validation macro-F1 {valid_one:.3f}; "
          f"two: {two['accuracy']:.3f}, {two['macro_f1']:.3f}, {valid_two:.3f}")
    assert abs(two['accuracy'] - one['accuracy']) < 0.03, (two, one)
    assert abs(two['macro_f1'] - one['macro_f1']) < 0.06, (two, one)
    assert abs(valid_two - valid_one) < 0.06, (valid_two, valid_one)

def test_dask_predictions_equal_one_process(tmp_path):
    from distributed import LocalCluster, Client
    learn = sims_learner(PBMC, class_label='cell_type', recipe=get_recipe('default', steps=100), seed=1)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    model = learn.export_model()
    model.predict(PBMC).to_csv(tmp_path/'one.csv')
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        summary = predict_dask(model, PBMC, tmp_path/'dask.csv', client, chunk=1024)
        assert summary.worker.nunique() == 2 and summary.cells.sum() == 2638
        with pytest.raises(ValueError, match='multiple of bs'): predict_dask(model, PBMC, tmp_path/'x.csv', client, chunk=1000)
    assert (tmp_path/'dask.csv').read_bytes() == (tmp_path/'one.csv').read_bytes()
    assert not any(p.name.startswith('.') for p in tmp_path.iterdir())  # the parts are gone

def test_synthetic_file_trains_from_disk(tmp_path):
    "A file written chunk by chunk trains lazily in a fresh process; its peak memory is only bounded here (bench/scale.py compares sizes)"
    path = synthetic_cells(tmp_path/'cells.h5ad', n_cells=30_000, n_genes=5_000, n_types=5, density=0.03, chunk=4_000)
    code = f"""
import json, warnings; warnings.filterwarnings('ignore')
import torch; torch.set_num_threads(1)
from sims_nb.learner import sims_learner, get_recipe
from sims_nb.scale import peak_memory_mb
learn = sims_learner({str(path)!r}, class_label='cell_type', in_memory=False, recipe=get_recipe('default', steps=200))
assert learn.dls.data.X is None
with learn.no_bar(), learn.no_logging():
    learn.fit()
    print(json.dumps({{'macro_f1': learn.evaluate().scores['macro_f1'], 'peak_mb': peak_memory_mb()}}))
"""
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result['macro_f1'] > 0.9
    assert result['peak_mb'] < 1500, result
