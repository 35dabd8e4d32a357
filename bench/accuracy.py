"""sims_nb against logistic regression and CellTypist on identical stratified splits (accuracy, macro-F1, median F1, training time).

Usage: python bench/accuracy.py [--datasets pbmc3k worm tabula kang] [--recipe default]
CellTypist is optional (pip install celltypist); its rows are skipped when it is not installed.
"""
import argparse, sys, time, warnings
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp, torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, accuracy_score
from sims_nb.data import stratified_split, encode_labels, Normalise, align_genes, clean_gene_names
from sims_nb.learner import sims_learner, get_recipe

warnings.filterwarnings('ignore')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
# name: (training file, label column, test file or None for a stratified 80/20 split)
DATASETS = {'pbmc3k': ('pbmc3k_seurat.h5ad', 'cell_type', None),
            'worm': ('scdcc_worm_neuron_anon.h5ad', 'label', None),
            'tabula': ('tabula_muris_immune_actinn_1k.h5ad', 'cell_type', None),
            'kang': ('pbmc3k_seurat.h5ad', 'cell_type_coarse', 'kang2018_pbmc_stim_muscat_example.h5ad')}

def scores(truth, predicted):
    f1 = f1_score(truth, predicted, average=None, labels=np.unique(np.concatenate([truth, predicted])), zero_division=0)
    return {'accuracy': accuracy_score(truth, predicted), 'macro_f1': f1.mean(), 'median_f1': float(np.median(f1))}

def celltypist_fit_predict(X_train, y_train, X_test, genes):
    "CellTypist 1.7.1 on log1p data (its expected input), with scikit-learn >= 1.8 (see ovr_logistic_regression)"
    import celltypist, logging
    logging.getLogger('celltypist').setLevel(logging.ERROR)
    ovr_logistic_regression()
    train = ad.AnnData(X_train, obs=pd.DataFrame({'y': y_train})); train.var_names = genes
    model = celltypist.train(train, 'y', check_expression=False, n_jobs=2, feature_selection=True)
    test = ad.AnnData(X_test); test.var_names = genes
    return celltypist.annotate(test, model=model).predicted_labels['predicted_labels'].astype(str).to_numpy()

def ovr_logistic_regression():
    """CellTypist 1.7.1 asks LogisticRegression for multi_class='ovr', which scikit-learn 1.8 removed: give it a class that fits
    one binary model per class, as scikit-learn < 1.8 did for 'ovr' (CellTypist reads only coef_, intercept_, classes_ and decision_function)"""
    import celltypist, sklearn.linear_model as lm
    module = sys.modules['celltypist.train']
    if 'multi_class' in lm.LogisticRegression().get_params() or getattr(module, '_sims_patched', False): return
    class OvrLogisticRegression(lm.LogisticRegression):
        def __init__(self, multi_class='ovr', **kwargs): super().__init__(**kwargs); self.multi_class = multi_class
        def get_params(self, deep=True): return {**super().get_params(deep), 'multi_class': self.multi_class}
        def fit(self, X, y, sample_weight=None):
            self.classes_ = np.unique(y)
            params = {k: v for k, v in super().get_params().items() if k not in ('n_jobs', 'multi_class')}
            fits = [lm.LogisticRegression(**params).fit(X, y == c, sample_weight) for c in self.classes_]
            self.coef_ = np.vstack([f.coef_ for f in fits]); self.intercept_ = np.concatenate([f.intercept_ for f in fits])
            self.n_features_in_ = X.shape[1]
            return self
    module.LogisticRegression, module._sims_patched = OvrLogisticRegression, True

def run(name, recipe):
    train_file, label, test_file = DATASETS[name]
    rows = []
    if test_file is None:
        adata = ad.read_h5ad(DATA/train_file)
        codes, classes = encode_labels(adata.obs[label].astype(object), label)
        split = stratified_split(codes, 0.1, 0.2, seed=0)  # the test split sims_learner uses; valid is part of the 80% for the baselines
        fit_cells, test_cells = np.sort(np.concatenate([split['train'], split['valid']])), split['test']
        X = Normalise('counts', 'log1p')(sp.csr_matrix(adata.X))
        X_fit, X_test, y_fit, y_test, genes = X[fit_cells], X[test_cells], classes[codes[fit_cells]], classes[codes[test_cells]], adata.var_names
        start = time.time()
        learn = sims_learner([DATA/train_file], class_label=label, recipe=recipe, seed=0)
        with learn.no_bar(), learn.no_logging(): learn.fit()
        seconds = time.time() - start
        probabilities, targets = learn.get_preds(dl=learn.dls[2])
        assert (classes[targets.numpy()] == y_test).all()
        predicted = learn.classes[probabilities.argmax(-1).numpy()]
    else:  # cross-study: train on the first file, test on the second, on the genes both hold
        first, second = ad.read_h5ad(DATA/train_file), ad.read_h5ad(DATA/test_file)
        shared = sorted(set(clean_gene_names(first.var_names)) & set(clean_gene_names(second.var_names)))
        pick = lambda a: a[:, pd.Index(clean_gene_names(a.var_names)).get_indexer(shared)]
        first, second = pick(first), pick(second)
        norm = Normalise('counts', 'log1p')
        X_fit, X_test = norm(sp.csr_matrix(first.X)), norm(sp.csr_matrix(second.X))
        y_fit, y_test, genes = first.obs[label].astype(str).to_numpy(), second.obs[label].astype(str).to_numpy(), pd.Index(shared)
        start = time.time()
        learn = sims_learner([DATA/train_file, DATA/test_file], class_label=label, recipe=recipe, seed=0, test_files=[1])
        with learn.no_bar(), learn.no_logging(): learn.fit()
        seconds = time.time() - start
        probabilities, targets = learn.get_preds(dl=learn.dls[2])
        predicted = learn.classes[probabilities.argmax(-1).numpy()]
        assert (learn.classes[targets.numpy()] == y_test).all()
    rows.append({'dataset': name, 'method': f'sims_nb ({recipe})', **scores(y_test, predicted), 'train_s': seconds})
    start = time.time()
    lr = LogisticRegression(max_iter=1000).fit(X_fit, y_fit)
    rows.append({'dataset': name, 'method': 'logistic regression', **scores(y_test, lr.predict(X_test)), 'train_s': time.time() - start})
    try:
        start = time.time()
        predicted = celltypist_fit_predict(X_fit, y_fit, X_test, genes)
        rows.append({'dataset': name, 'method': 'CellTypist', **scores(y_test, predicted), 'train_s': time.time() - start})
    except ImportError: print('CellTypist is not installed: pip install celltypist', file=sys.stderr)
    return rows

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--datasets', nargs='+', default=list(DATASETS))
    parser.add_argument('--recipe', default='default')
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; stratified 80/20 test split (seed 0), or the whole second file for kang (pbmc3k -> Kang 2018)')
    rows = []
    for name in args.datasets:
        rows += run(name, args.recipe)
        table = pd.DataFrame(rows)
        print(table[table.dataset == name].round(4).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    best_baseline = table[~table.method.str.startswith('sims_nb')].groupby('dataset').macro_f1.max()
    ours = table[table.method.str.startswith('sims_nb')].set_index('dataset')
    print('\n' + table.round(4).to_string(index=False))
    print('\nsims_nb macro-F1 minus the best baseline (target >= 0), and training time (target < 120 s):')
    for name in ours.index:
        print(f'  {name:8s} {ours.macro_f1[name] - best_baseline[name]:+.4f}   {ours.train_s[name]:.0f} s')
