"""Scale: one epoch of the default recipe from synthetic files of 200,000 and 1,000,000 cells x 20,000 genes (3% non-zero),
read lazily through `sims_learner`; peak memory (RSS) of a fresh process per size, reading and training cells/s, the epoch's time,
reading with 0, 1 and 2 loader processes; then `predict_dask` over the largest file on a LocalCluster of 2 workers (cells/s, each
worker's peak memory); `--gpu` times training and prediction on CUDA (20,000 genes) where a GPU is present.

Usage: python bench/scale.py [--cells 200000 1000000] [--genes 20000] [--density 0.03] [--folder /tmp/sims_nb_scale] [--keep] [--gpu]
"""
import argparse, json, os, subprocess, sys, time, warnings
import psutil
from pathlib import Path

warnings.filterwarnings('ignore')

def phases():
    "A fastai callback that times the training and validation phases of every epoch"
    from fastai.callback.core import Callback
    class Phases(Callback):
        order = 100
        def before_fit(self): self.seconds = {'train': 0., 'valid': 0.}
        def before_train(self): self.start = time.time()
        def after_train(self): self.seconds['train'] += time.time() - self.start
        def before_validate(self): self.start = time.time()
        def after_validate(self): self.seconds['valid'] += time.time() - self.start
    return Phases()

def train_once(path:str, threads:int) -> dict:
    "In this (fresh) process: one epoch of the default recipe from `path`, read lazily; times, cells/s and peak memory"
    import torch
    torch.set_num_threads(threads)
    from sims_nb.learner import sims_learner, get_recipe
    from sims_nb.scale import peak_memory_mb
    start = time.time()
    timer = phases()
    learn = sims_learner(path, class_label='cell_type', in_memory=False, recipe=get_recipe('default', steps=None, epochs=1), cbs=[timer])
    setup = time.time() - start
    with learn.no_bar(), learn.no_logging(): learn.fit()
    fit = time.time() - start - setup
    n_train, n_valid = len(learn.dls.splits['train']), len(learn.dls.splits['valid'])
    model = Path(path).with_suffix('.model.pt')
    learn.save_model(model, card=False)
    return {'cells': len(learn.dls.data), 'markers': len(learn.dls.data.genes), 'setup_s': setup, 'fit_s': fit, 'train_s': timer.seconds['train'],
            'train_cells_per_s': n_train / timer.seconds['train'], 'valid_cells_per_s': n_valid / timer.seconds['valid'],
            'valid_macro_f1': float(learn.history['valid_macro_f1'].iloc[-1]), 'peak_memory_mb': peak_memory_mb(), 'model': str(model)}

def read_once(path:str, num_workers:int, batches:int) -> dict:
    "In this (fresh) process: read `batches` training batches of all 20,000 genes, normalised, through the data loader"
    import torch
    torch.set_num_threads(1)
    from sims_nb.data import sims_dataloaders
    from sims_nb.scale import peak_memory_mb
    dls = sims_dataloaders([path], class_label='cell_type', bs=128, in_memory=False, num_workers=num_workers)
    start, cells, batches_left = time.time(), 0, iter(dls.train)
    for i in range(batches):
        x, y = next(batches_left)
        cells += len(y)
    seconds = time.time() - start
    children = max((peak_memory_mb(p.pid) for p in psutil.Process().children()), default=0.)  # loader processes (alive: the iterator is held)
    return {'num_workers': num_workers, 'cells': cells, 'cells_per_s': cells / seconds, 'peak_memory_mb': peak_memory_mb(),
            'worker_peak_memory_mb': children}

def in_fresh_process(function:str, *args) -> dict:
    "Run `function(*args)` of this script in a new Python process (so its peak memory is its own) and return its result"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import json, scale; print(json.dumps(scale.{function}(*{args!r})))"
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if result.returncode: raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])

def predict_on_dask(model:str, path:str, out:str, workers:int) -> dict:
    "`predict_dask` over `path` on a LocalCluster of `workers` single-threaded processes"
    from distributed import LocalCluster, Client
    from sims_nb.scale import predict_dask
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        start = time.time()
        summary = predict_dask(model, path, out, client)
        seconds = time.time() - start
    return {'cells': int(summary.cells.sum()), 'seconds': seconds, 'cells_per_s': summary.cells.sum() / seconds,
            'worker_peak_memory_mb': summary.groupby('worker').peak_memory_mb.max().round().tolist()}

def gpu_figures(path:str) -> dict:
    "Training and prediction cells/s on CUDA, mixed precision, all 20,000 genes as input (no marker selection)"
    import torch
    from sims_nb.learner import sims_learner, get_recipe
    learn = sims_learner(path, class_label='cell_type', in_memory=False, recipe=get_recipe('default', genes_per_class=None, steps=None, epochs=1),
                         cbs=[timer := phases()])
    with learn.no_bar(), learn.no_logging(): learn.fit()
    model = learn.export_model()
    start = time.time(); n = sum(len(t) for t in model.predict_chunks(path, bs=8192)); predict = time.time() - start
    return {'device': torch.cuda.get_device_name(), 'train_cells_per_s': len(learn.dls.splits['train']) / timer.seconds['train'],
            'predict_cells_per_s': n / predict}

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--cells', type=int, nargs='+', default=[200_000, 1_000_000])
    parser.add_argument('--genes', type=int, default=20_000)
    parser.add_argument('--density', type=float, default=0.03)
    parser.add_argument('--folder', type=Path, default=Path('/tmp/sims_nb_scale'))
    parser.add_argument('--threads', type=int, default=2, help='torch threads of the training process')
    parser.add_argument('--read-batches', type=int, default=400, help='batches of 128 cells read per loader setting')
    parser.add_argument('--dask-workers', type=int, default=2)
    parser.add_argument('--keep', action='store_true', help='keep the synthetic files (and reuse them next time)')
    parser.add_argument('--gpu', action='store_true', help='also time training and prediction on CUDA')
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from sims_nb.scale import synthetic_cells
    args.folder.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; {args.genes:,} genes, {args.density:.0%} non-zero; torch threads {args.threads}")
    model = None
    for n in args.cells:
        path = args.folder/f'cells_{n}x{args.genes}.h5ad'
        start, reused = time.time(), path.exists()
        if not reused:  # through a temporary name: an interrupted run leaves no half-written file to reuse
            synthetic_cells(path.with_suffix('.partial'), n_cells=n, n_genes=args.genes, density=args.density, seed=0).rename(path)
        written = time.time() - start
        size = path.stat().st_size / 2**30
        print(f"\n{n:,} cells: {size:.2f} GB on disk ({'reused' if reused else f'written in {written:.0f} s'})")
        for workers in (0, 1, 2):
            r = in_fresh_process('read_once', str(path), workers, args.read_batches)
            print(f"  read (num_workers={workers}): {r['cells_per_s']:,.0f} cells/s over {r['cells']:,} cells, peak memory {r['peak_memory_mb']:,.0f} MB"
                  + (f" (largest loader process {r['worker_peak_memory_mb']:,.0f} MB)" if workers else ''))
        t = in_fresh_process('train_once', str(path), args.threads)
        print(f"  one epoch of the default recipe: set-up (splits, markers: one pass over the training cells) {t['setup_s']:.0f} s, "
              f"fit {t['fit_s']:.0f} s (training {t['train_s']:.0f} s = {t['train_cells_per_s']:,.0f} cells/s, validation {t['valid_cells_per_s']:,.0f} cells/s, "
              f"then calibration); {t['markers']} markers; validation macro-F1 {t['valid_macro_f1']:.3f}; peak memory {t['peak_memory_mb']:,.0f} MB (target < 1,500)")
        model = t['model']
    if model is not None:
        path = args.folder/f'cells_{args.cells[-1]}x{args.genes}.h5ad'
        d = predict_on_dask(model, str(path), str(args.folder/'predictions.csv'), args.dask_workers)
        print(f"\npredict_dask, {args.dask_workers} workers x 1 thread, {d['cells']:,} cells: {d['seconds']:.0f} s = {d['cells_per_s']:,.0f} cells/s; "
              f"peak memory per worker {', '.join(f'{m:,.0f}' for m in d['worker_peak_memory_mb'])} MB")
    if args.gpu:
        import torch
        if torch.cuda.is_available(): print('\nGPU:', gpu_figures(str(args.folder/f'cells_{args.cells[0]}x{args.genes}.h5ad')))
        else: print('\nno CUDA device here: GPU figures not measured')
    if not args.keep:
        for p in args.folder.glob('cells_*'): p.unlink()
