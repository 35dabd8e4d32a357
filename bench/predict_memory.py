"""Prediction at scale: `sims-nb predict` on a 200,000-cell .h5ad (the Kang PBMCs repeated), its peak memory (RSS) and cells/s,
and two `predict` processes at once on the same model and input: identical outputs, never a half-written file.

Usage: python bench/predict_memory.py [--cells 200000] [--folder /tmp/sims_nb_predict_bench]
"""
import argparse, hashlib, subprocess, sys, time, warnings
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, psutil, scipy.sparse as sp
from sims_nb.learner import sims_learner, get_recipe

warnings.filterwarnings('ignore')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
COMMAND = Path(sys.executable).parent/'sims-nb'

def big_file(path:Path, n_cells:int) -> Path:
    "The Kang cells repeated to `n_cells` cells, raw counts as CSR"
    kang = ad.read_h5ad(DATA/'kang2018_pbmc_stim_muscat_example.h5ad')
    repeats = -(-n_cells // kang.n_obs)
    X = sp.vstack([sp.csr_matrix(kang.X)] * repeats, format='csr')[:n_cells]
    obs = pd.DataFrame(index=[f'cell{i}' for i in range(n_cells)])
    ad.AnnData(X, obs=obs, var=pd.DataFrame(index=kang.var_names)).write_h5ad(path)
    return path

def run_measured(args) -> tuple[float, float, subprocess.CompletedProcess]:
    "Run a command; its wall time and the peak RSS (GB) of the process and its children, sampled every 50 ms"
    start, peak = time.time(), 0
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try: peak = max(peak, watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True)))
        except psutil.Error: pass
        time.sleep(0.05)
    out, err = process.communicate()
    return time.time() - start, peak / 2**30, subprocess.CompletedProcess(args, process.returncode, out, err)

def digest(path): return hashlib.sha256(Path(path).read_bytes()).hexdigest()

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--cells', type=int, default=200_000)
    parser.add_argument('--folder', type=Path, default=Path('/tmp/sims_nb_predict_bench'))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    data = args.folder/f'kang_x{args.cells}.h5ad'
    if not data.exists(): big_file(data, args.cells)
    learn = sims_learner([DATA/'kang2018_pbmc_stim_muscat_example.h5ad'], class_label='cell_type', recipe=get_recipe(epochs=5, steps=None))
    with learn.no_bar(), learn.no_logging(): learn.fit()
    model = learn.save_model(args.folder/'model.pt')
    print(f'{data.name}: {args.cells:,} cells x 1,267 genes, {data.stat().st_size / 2**20:.0f} MB on disk')
    seconds, peak, result = run_measured([str(COMMAND), 'predict', str(model), str(data), '--out', str(args.folder/'one.csv'), '--quiet'])
    assert result.returncode == 0, result.stderr
    print(f'one predict process: {seconds:.1f} s ({args.cells / seconds:,.0f} cells/s), peak RSS {peak:.2f} GB (target < 1 GB)')
    command = lambda out: [str(COMMAND), 'predict', str(model), str(data), '--out', str(out), '--quiet']
    start = time.time()
    both = [subprocess.Popen(command(args.folder/name), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ('a.csv', 'b.csv')]
    codes = [p.wait() for p in both]
    same = [subprocess.Popen(command(args.folder/'same.csv'), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    codes += [p.wait() for p in same]
    identical = digest(args.folder/'a.csv') == digest(args.folder/'b.csv') == digest(args.folder/'one.csv') == digest(args.folder/'same.csv')
    leftovers = [p.name for p in args.folder.iterdir() if p.name.endswith('.tmp')]
    print(f'two processes at once, twice (other outputs, then the same output): exit codes {codes}, outputs identical: {identical}, '
          f'temporary files left: {len(leftovers)}, {time.time() - start:.0f} s')
