"""Throughput and peak memory of sims_nb's lazy .h5ad loading against reading the whole file into memory.

Writes synthetic .h5ad files (cells x 20,000 genes, 5% non-zero raw counts, 10 cell types) in chunks, so that
writing them needs little memory, then for each file, each in a fresh process:
- lazy: `sims_dataloaders` (stratified splits, block sampler, normalisation, gene alignment, sparse torch
  batches of 256) for one epoch of shuffled training batches;
- in memory: `anndata.read_h5ad` of the whole file, then the same training batches indexed from `X`
  and turned into sparse torch batches (no normalisation: less work than the lazy path does).
Prints cells/s and peak RSS (the process's maximum resident set, including Python, torch and the libraries).

    python bench/data_speed.py [--cells 50000 200000] [--genes 20000] [--dir /tmp/sims_nb_bench]
"""
import argparse, json, resource, subprocess, sys, time, warnings
from pathlib import Path
import h5py, numpy as np, pandas as pd
warnings.filterwarnings('ignore')

def write_synthetic(path:Path, n_cells:int, n_genes:int, density:float=0.05, chunk:int=10_000, seed:int=0):
    "An anndata-readable .h5ad with CSR counts, written chunk by chunk"
    import anndata as ad
    from anndata.io import write_elem
    rng = np.random.default_rng(seed)
    labels = pd.Categorical(np.array([f'type_{i}' for i in range(10)])[rng.integers(0, 10, n_cells)])
    with h5py.File(path, 'w') as f:
        write_elem(f, 'obs', pd.DataFrame({'cell_type': labels}, index=[f'cell{i}' for i in range(n_cells)]))
        write_elem(f, 'var', pd.DataFrame(index=[f'GENE{i}' for i in range(n_genes)]))
        X = f.create_group('X')
        X.attrs.update({'encoding-type': 'csr_matrix', 'encoding-version': '0.1.0', 'shape': np.array([n_cells, n_genes])})
        per_cell = rng.binomial(n_genes, density, n_cells)
        nnz = int(per_cell.sum())
        # contiguous datasets, as anndata writes them: a range of rows is one read of exactly its bytes
        data = X.create_dataset('data', (nnz,), dtype='float32')
        indices = X.create_dataset('indices', (nnz,), dtype='int32')
        indptr = [np.zeros(1, np.int64), np.cumsum(per_cell)]
        for start in range(0, n_cells, chunk):
            counts = per_cell[start:start+chunk]
            cols = np.concatenate([np.sort(rng.choice(n_genes, k, replace=False)) for k in counts]).astype(np.int32)
            begin = indptr[1][start] - counts[0] if start else 0
            data[begin:begin+len(cols)] = rng.integers(1, 20, len(cols)).astype(np.float32)
            indices[begin:begin+len(cols)] = cols
        X.create_dataset('indptr', data=np.concatenate(indptr))
        for key in ('layers', 'obsm', 'varm', 'obsp', 'varp', 'uns'): write_elem(f, key, {})
        f.attrs.update({'encoding-type': 'anndata', 'encoding-version': '0.1.0'})

def peak_rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def measure(path:str, mode:str, bs:int=256):
    "One epoch of training batches; runs in its own process"
    import torch
    from sims_nb.data import sims_dataloaders
    start = time.perf_counter()
    dls = sims_dataloaders([path], class_label='cell_type', bs=bs, min_genes=10)
    setup = time.perf_counter() - start
    if mode == 'lazy':
        start, n = time.perf_counter(), 0
        for x, y in dls.train: n += len(y)
    else:
        import anndata as ad
        start = time.perf_counter()
        X = ad.read_h5ad(path).X
        n = 0
        for idx in dls.train.sampler:
            b = X[idx]
            x = torch.sparse_csr_tensor(torch.from_numpy(b.indptr.astype(np.int64)), torch.from_numpy(b.indices.astype(np.int64)),
                                        torch.from_numpy(b.data), size=b.shape, check_invariants=False)
            n += len(idx)
    elapsed = time.perf_counter() - start
    print(json.dumps({'cells': n, 'seconds': elapsed, 'cells_per_s': n / elapsed, 'setup_s': setup, 'peak_rss_mb': peak_rss_mb()}))

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cells', type=int, nargs='+', default=[50_000, 200_000])
    parser.add_argument('--genes', type=int, default=20_000)
    parser.add_argument('--dir', default='/tmp/sims_nb_bench')
    parser.add_argument('--measure', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure: return measure(*args.measure)
    out = Path(args.dir); out.mkdir(parents=True, exist_ok=True)
    print(f"{'cells':>8} {'file GB':>8} | {'lazy cells/s':>12} {'peak RSS MB':>11} | {'in-memory cells/s':>17} {'peak RSS MB':>11} | {'lazy setup s':>12}")
    for n_cells in args.cells:
        path = out/f'synthetic_{n_cells}x{args.genes}.h5ad'
        if not path.exists(): write_synthetic(path, n_cells, args.genes)
        run = lambda mode: json.loads(subprocess.run([sys.executable, __file__, '--measure', str(path), mode],
                                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        lazy, memory = run('lazy'), run('memory')
        print(f"{n_cells:>8} {path.stat().st_size/1e9:>8.2f} | {lazy['cells_per_s']:>12.0f} {lazy['peak_rss_mb']:>11.0f} | "
              f"{memory['cells_per_s']:>17.0f} {memory['peak_rss_mb']:>11.0f} | {lazy['setup_s']:>12.1f}", flush=True)
    print('targets: lazy peak RSS < 1,500 MB whatever the file size; lazy throughput >= 20,000 cells/s')

if __name__ == '__main__': main()
