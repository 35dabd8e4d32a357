"""Explain throughput and peak memory of sims_nb against pytorch-tabnet's `explain`, on CPU, at 20,000 genes, in one run.

Both explain the same synthetic cells (log1p counts, 5% non-zero, given as a scipy CSR matrix, which both accept)
with the same network weights (n_steps=3, n_d = n_a as given), batch-norm statistics set from the data as after
training, batches of `--bs` cells. pytorch-tabnet 4.1's `TabNetClassifier.explain` returns a dense cells x genes
explain matrix and every step's dense mask (stacked batch by batch); sims_nb's `explain` returns the explain
matrix sparse, and the steps' masks (sparse) only when asked (`steps=True`, timed too). pytorch-tabnet multiplies
every mask by a genes x genes group matrix (the identity when no groups are given): timed as shipped ('stock') and
without that product ('fast', its algorithm's fastest form), and the ratio is against the fast form.

Each measurement runs in its own process; "peak MB" is the rise of that process's peak resident memory during the
explain call (Linux VmHWM, reset just before). Prints cells/s and peak MB for growing numbers of cells: memory that
grows with cells x genes doubles with the cells; memory that grows with the batch does not.

    python bench/explain_speed.py [--genes 20000] [--widths 8 32] [--cells 2048 8192] [--bs 1024] [--threads 2]
"""
import argparse, json, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, scipy.sparse as sp, torch
warnings.filterwarnings('ignore')
sys.path.insert(0, str(Path(__file__).parent))

def memory_kb(field:str) -> int:
    "A field of /proc/self/status, in kB (VmRSS: now, VmHWM: peak since the last reset)"
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'): return int(line.split()[1])
    raise KeyError(field)

def reset_peak(): Path('/proc/self/clear_refs').write_text('5')  # VmHWM := VmRSS

def synthetic_csr(n_cells:int, n_genes:int, density:float=0.05, seed:int=0) -> sp.csr_matrix:
    "log1p counts, 5% non-zero, built sparse (never dense)"
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, n_genes, density=density, format='csr', dtype=np.float32, random_state=rng,
                  data_rvs=lambda n: rng.integers(1, 20, n).astype(np.float32))
    X.data = np.log1p(X.data); X.sort_indices()
    return X

def models(n_genes:int, width:int, X:sp.csr_matrix, stock:bool):
    "pytorch-tabnet's network and ours with the same weights and batch-norm statistics from (part of) `X`"
    from tabnet_speed import pair, calibrate
    reference, ours = pair(n_genes, width, stock=stock)
    calibrate(reference, ours, [(torch.from_numpy(X[i:i+256].toarray()), None) for i in range(0, min(X.shape[0], 1024), 256)])
    return reference.eval(), ours.eval()

def measure(impl:str, n_genes:int, width:int, n_cells:int, bs:int) -> dict:
    "Throughput and peak memory rise of one explain call"
    X = synthetic_csr(n_cells, n_genes)
    reference, ours = models(n_genes, width, X, stock=impl == 'stock')
    if impl in ('fast', 'stock'):
        from pytorch_tabnet.tab_model import TabNetClassifier
        from pytorch_tabnet.utils import create_explain_matrix
        clf = TabNetClassifier(device_name='cpu', verbose=0)
        clf.network, clf.batch_size, clf.device = reference, bs, torch.device('cpu')
        clf.reducing_matrix = create_explain_matrix(n_genes, [], [], n_genes)
        run = lambda cells: clf.explain(cells)
    else:
        import anndata as ad, pandas as pd
        from sims_nb.learner import SimsModel
        from sims_nb.data import Normalise
        from sims_nb.explain import explain
        genes = np.array([f'G{i}' for i in range(n_genes)])
        model = SimsModel(ours, genes, np.array([f'class {i}' for i in range(10)]), Normalise('log-normalised', 'none'))
        cells = lambda X: ad.AnnData(X, var=pd.DataFrame(index=genes))
        run = lambda X: explain(model, cells(X), steps=impl == 'ours+steps', bs=bs)
    run(X[:bs])  # warm-up
    reset_peak(); before = memory_kb('VmRSS'); start = time.perf_counter()
    out = run(X)
    seconds = time.perf_counter() - start
    explained = out[0] if isinstance(out, tuple) else out.matrix
    return {'cells_per_s': n_cells / seconds, 'peak_mb': (memory_kb('VmHWM') - before) / 1024,
            'stored_mb': (explained.nbytes if isinstance(explained, np.ndarray) else explained.data.nbytes + explained.indices.nbytes) / 2**20}

IMPLS = [('stock', 'pytorch-tabnet (stock)'), ('fast', 'pytorch-tabnet (fast)'), ('ours', 'sims_nb'), ('ours+steps', 'sims_nb steps=True')]

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--genes', type=int, default=20000)
    parser.add_argument('--widths', type=int, nargs='+', default=[8, 32])
    parser.add_argument('--cells', type=int, nargs='+', default=[2048, 8192])
    parser.add_argument('--bs', type=int, default=1024)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--one', nargs=4, help=argparse.SUPPRESS)  # impl width cells: one measurement (child process)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        impl, width, n_cells, bs = args.one
        print(json.dumps(measure(impl, args.genes, int(width), int(n_cells), int(bs))))
        return
    print(f'torch {torch.__version__}, {args.threads} threads, {args.genes} genes, 5% non-zero, batch {args.bs}, n_steps 3, one process per measurement')
    header = f"{'n_d=n_a':>7} {'cells':>6} | " + ' | '.join(f'{name:>22}' for _, name in IMPLS) + ' | ratio vs fast'
    print(header); print(f"{'':>7} {'':>6} | " + ' | '.join(f"{'cells/s':>8} {'peak MB':>13}" for _ in IMPLS) + ' |'); print('-'*len(header))
    for width in args.widths:
        for n_cells in args.cells:
            row = {}
            for impl, _ in IMPLS:
                if impl == 'stock' and n_cells > min(args.cells): row[impl] = None; continue  # 1.6 GB group matrix: timed once
                cmd = [sys.executable, __file__, '--genes', str(args.genes), '--threads', str(args.threads), '--one', impl, str(width), str(n_cells), str(args.bs)]
                row[impl] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            cells = ' | '.join(f"{r['cells_per_s']:>8.0f} {r['peak_mb']:>13.0f}" if r else f"{'-':>8} {'-':>13}" for r in row.values())
            print(f'{width:>7} {n_cells:>6} | {cells} | {row["ours"]["cells_per_s"] / row["fast"]["cells_per_s"]:.1f}x '
                  f'(steps=True: {row["ours+steps"]["cells_per_s"] / row["fast"]["cells_per_s"]:.1f}x)', flush=True)
    print('peak MB: rise of peak resident memory during the explain call; pytorch-tabnet keeps a dense cells x genes matrix and dense masks,'
          ' sims_nb sparse ones. Target: >= 10x the throughput of pytorch-tabnet (fast).')

if __name__ == '__main__': main()
