"""How honest is prediction? Calibration, "Unassigned" for types the reference lacks, conformal sets, majority voting and what they
cost, on shared data, several seeds (each seed changes the split and the initialisation), beside CellTypist on the same cells.

Parts (--parts, all by default):
- calibration: expected calibration error (15 bins) of the softmax and of the temperature-scaled probabilities, the ECE that perfectly
  calibrated probabilities would show on the same cells (each cell's top label drawn right with its calibrated confidence: the
  estimator's noise floor on a few hundred cells), and of CellTypist's
  probabilities (its top "prob match" probability, what it reports as conf_score), on the pbmc3k test split (9 Seurat types) and on
  pbmc3k -> Kang 2018 (coarse labels, every Kang cell a test cell); share unassigned, accuracy of the assigned cells, coverage and
  mean size of the 80/90/95% conformal sets.
- novelty: leave one type out, for every type of pbmc3k and of Tabula Muris immune: train without it, predict the test split of the
  other types plus every cell of the held-out type. Per type: share of held-out and of other cells unassigned, AUROC of the outlier
  score (and of each of its three scores) for finding the held-out cells, and of two scores it does not use, measured as
  alternatives: energy (minus the log-sum-exp of the logits) and the distance to the 10th nearest training cell in the encoder's
  space; CellTypist's rejection (no class above probability 0.5, its default threshold) and the AUROC of its top probability on
  the same cells.
- voting: majority voting over Leiden over-clusters of the query on every cross-study pair: macro-F1 of the most likely types and of
  the labels (with "Unassigned", counted wrong) before and after, and how many cells voting relabels.
- cost: `predict` time on 21,104 cells (pbmc3k eight times) with the calibration (probabilities, distance, marker evidence, outlier
  score, sets) against the same model without it (softmax only), best of three, in the same run.

Usage: python bench/inference.py [--seeds 0 1 2] [--parts calibration novelty voting cost] [--out FILE.csv] [--threads 2]
CellTypist is optional (pip install celltypist); its columns are left out when it is not installed.
"""
import argparse, sys, time, warnings
from dataclasses import replace
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, torch
from sklearn.metrics import roc_auc_score, f1_score
from sims_nb.data import CellData, Normalise
from sims_nb.learner import sims_learner
from sims_nb.inference import softmax, calibration_error, over_cluster, majority_vote, split_outputs
from accuracy import ROWS, learner_inputs, baseline_data, celltypist_train, celltypist_annotate

warnings.filterwarnings('ignore')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
NOVELTY_SETS = {'pbmc3k': ('pbmc3k_seurat.h5ad', 'cell_type'), 'tabula': ('tabula_muris_immune_actinn_1k.h5ad', 'cell_type')}
PAIRS = ['pbmc3k_to_kang', 'celseq2_to_dropseq', 'dropseq_to_celseq2', 'kang_ctrl_to_stim']

def has_celltypist() -> bool:
    try: import celltypist; return True
    except ImportError: return False

def trained(files, label, seed, **kwargs):
    learn = sims_learner(files, class_label=label, seed=seed, **kwargs)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    return learn

def celltypist_probabilities(X, y, T, genes, classes) -> np.ndarray:
    "CellTypist's probability matrix of the test cells `T`, columns in the order of `classes` (0 for a class it never saw)"
    matrix = celltypist_annotate(celltypist_train(X, y, genes), T, genes).probability_matrix
    return matrix.reindex(columns=[str(c) for c in classes], fill_value=0.).to_numpy()

def ece_floor(probabilities, draws:int=200, seed:int=0) -> float:
    "The ECE a perfectly calibrated model would show on these cells: each cell's top label drawn right with its own confidence"
    probabilities, rng = np.asarray(probabilities), np.random.default_rng(seed)
    top = probabilities.argmax(1)
    def drawn():  # the top class where the draw says right, another class where it says wrong
        return np.where(rng.random(len(top)) < probabilities.max(1), top, (top + 1) % probabilities.shape[1])
    return float(np.mean([calibration_error(probabilities, drawn()) for _ in range(draws)]))

def honesty(learn, query, truth, seed, files, kwargs, label) -> dict:
    "Calibration, abstention and conformal coverage of a learner's model on labelled query cells, and CellTypist's calibration"
    model, cal = learn.export_model(), learn.calibration
    logits, *_ = model.outputs(model.batches(query)[2])
    predictions = model.predict(query)
    codes = pd.Index(model.classes).get_indexer(truth)
    known = codes >= 0
    row = {'ECE softmax': calibration_error(softmax(logits[known]), codes[known]), 'ECE calibrated': calibration_error(cal.probabilities(logits[known]), codes[known]),
           'ECE floor (perfect calibration, these cells)': ece_floor(cal.probabilities(logits[known])),
           'temperature': cal.temperature, 'accuracy': float((predictions.most_likely == truth).mean()),
           'unassigned': float(predictions.unassigned.mean()), 'accuracy assigned': float((predictions.label == truth)[~predictions.unassigned].mean())}
    for coverage in (0.8, 0.9, 0.95):
        sets = model.predict(query, coverage=coverage)
        row[f'coverage {coverage:.0%}'] = float(np.mean([t in s.split('|') for t, s in zip(truth, sets.prediction_set)]))
        row[f'set size {coverage:.0%}'] = float(sets.set_size.mean())
    if has_celltypist():
        X, y, T, test_truth, genes = baseline_data(files, kwargs, label, seed)
        probabilities = celltypist_probabilities(X, y, T, genes, model.classes)
        test_codes = pd.Index(model.classes).get_indexer(test_truth.astype(str))
        row['ECE CellTypist'] = calibration_error(probabilities[test_codes >= 0], test_codes[test_codes >= 0])
        row['accuracy CellTypist'] = float((np.asarray(model.classes)[probabilities.argmax(1)] == test_truth.astype(str)).mean())
    return row

def calibration_part(seed) -> dict:
    rows = {}
    learn = trained([DATA/'pbmc3k_seurat.h5ad'], 'cell_type', seed)
    test = ad.read_h5ad(DATA/'pbmc3k_seurat.h5ad')[learn.dls.splits['test']].copy()
    rows['pbmc3k test'] = honesty(learn, test, test.obs.cell_type.to_numpy(), seed, [DATA/'pbmc3k_seurat.h5ad'], {}, 'cell_type')
    files, kwargs = learner_inputs(ROWS['pbmc3k_to_kang'], seed)
    learn = trained(files, 'cell_type_coarse', seed, **kwargs)
    kang = ad.read_h5ad(files[1])
    rows['pbmc3k -> Kang'] = honesty(learn, kang, kang.obs.cell_type_coarse.to_numpy(), seed, files, kwargs, 'cell_type_coarse')
    return rows

def nearest_distance(embeddings, reference, k:int) -> np.ndarray:
    "Each cell's Euclidean distance to its `k`-th nearest reference cell (encoder outputs)"
    return torch.cdist(torch.as_tensor(embeddings), torch.as_tensor(reference)).topk(k, largest=False).values[:, -1].numpy()

def leave_one_out(adata, label, held_out, seed, every_gene) -> dict:
    "Train without the cells of type `held_out`; how its cells and the other test cells are treated, by sims_nb and CellTypist"
    inside = np.flatnonzero(adata.obs[label].to_numpy() != held_out)
    learn = trained([adata[inside].copy()], label, seed)
    splits = learn.dls.splits
    query_cells = np.concatenate([inside[splits['test']], np.flatnonzero(adata.obs[label].to_numpy() == held_out)])
    novel = adata.obs[label].to_numpy()[query_cells] == held_out
    query = adata[query_cells].copy()
    out = learn.predict(query)
    model = learn.export_model()
    logits, embeddings, _ = model.outputs(model.batches(query)[2])
    _, train_embeddings, _, _ = split_outputs(learn.model, learn.dls.train)
    row = {'cells': int(novel.sum()), 'novel unassigned': float(out.unassigned[novel].mean()), 'known unassigned': float(out.unassigned[~novel].mean()),
           'AUROC outlier score': roc_auc_score(novel, out.outlier_score), 'AUROC probability': roc_auc_score(novel, -out.probability),
           'AUROC distance': roc_auc_score(novel, out.distance), 'AUROC evidence': roc_auc_score(novel, -out.evidence),
           'AUROC energy (alternative)': roc_auc_score(novel, -torch.logsumexp(torch.as_tensor(logits), 1).numpy()),
           'AUROC 10th nearest training cell (alternative)': roc_auc_score(novel, nearest_distance(embeddings, train_embeddings, 10))}
    if has_celltypist():
        fit = inside[np.concatenate([splits['train'], splits['valid']])]
        classes = np.asarray(learn.classes)
        probabilities = celltypist_probabilities(every_gene.cells(fit), every_gene.classes[every_gene.codes[fit]].astype(str),
                                                 every_gene.cells(query_cells), every_gene.genes, classes)
        top = probabilities.max(1)
        row.update({'CellTypist novel unassigned': float((top[novel] < 0.5).mean()), 'CellTypist known unassigned': float((top[~novel] < 0.5).mean()),
                    'CellTypist AUROC probability': roc_auc_score(novel, -top)})
    return row

def novelty_part(seed) -> dict:
    rows = {}
    for name, (file, label) in NOVELTY_SETS.items():
        adata = ad.read_h5ad(DATA/file)
        every_gene = CellData([adata], None, label)
        if every_gene.normalise.kind == 'counts': every_gene.normalise = Normalise('counts', 'log1p')
        for held_out in adata.obs[label].value_counts().index:
            rows[f'{name} without {held_out}'] = leave_one_out(adata, label, held_out, seed, every_gene)
            print(f'  seed {seed} {name} without {held_out}: ' + ', '.join(f'{k} {v:.3f}' for k, v in rows[f'{name} without {held_out}'].items()), flush=True)
    return rows

def voting_part(seed) -> dict:
    rows = {}
    for name in PAIRS:
        row = ROWS[name]
        files, kwargs = learner_inputs(row, seed)
        learn = trained(files, row.label, seed, **kwargs)
        query = ad.read_h5ad(files[1]) if row.test else files[0][files[0].obs.bench_split.to_numpy() == 'test'].copy()
        truth = query.obs[row.label].astype(str).to_numpy()
        out = learn.predict(query)
        clusters = over_cluster(query, seed=seed)
        macro = lambda labels: f1_score(truth, np.asarray(labels, dtype=str), average='macro', labels=np.unique(truth), zero_division=0)
        most_likely, labels = majority_vote(out.most_likely, clusters).voted_label, majority_vote(out.label, clusters).voted_label
        rows[name] = {'clusters': clusters.nunique(), 'macro-F1 most likely': macro(out.most_likely), 'voted': macro(most_likely),
                      'relabelled': float((most_likely != out.most_likely).mean()), 'macro-F1 labels': macro(out.label),
                      'labels voted': macro(labels), 'unassigned': float(out.unassigned.mean()), 'unassigned voted': float((labels == 'Unassigned').mean())}
    return rows

def cost_part(seed) -> dict:
    pbmc3k = ad.read_h5ad(DATA/'pbmc3k_seurat.h5ad')
    learn = trained([pbmc3k], 'cell_type', seed)
    big = ad.concat([pbmc3k] * 8); big.obs_names_make_unique()
    model = learn.export_model()
    bare = replace(model, calibration=None)
    def best(run):
        times = []
        for _ in range(3): start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
        return min(times)
    plain, calibrated = best(lambda: bare.predict(big, coverage=None)), best(lambda: model.predict(big))
    return {f'predict {big.n_obs} cells': {'softmax only (s)': plain, 'calibrated (s)': calibrated, 'added': calibrated / plain - 1}}

PARTS = {'calibration': calibration_part, 'novelty': novelty_part, 'voting': voting_part, 'cost': cost_part}

def means(table:pd.DataFrame) -> pd.DataFrame:
    table = table.copy(); table['mean'] = table.mean(1)
    return table

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--parts', nargs='+', default=list(PARTS), choices=list(PARTS))
    parser.add_argument('--out', help='write every figure (part, case, measure, seed, value) to this csv')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seeds {args.seeds}; CellTypist {'yes' if has_celltypist() else 'not installed'}", flush=True)
    records = []
    for part in args.parts:
        for seed in (args.seeds if part != 'cost' else args.seeds[:1]):
            start = time.time()
            for case, row in PARTS[part](seed).items():
                records += [{'part': part, 'case': case, 'measure': k, 'seed': seed, 'value': float(v)} for k, v in row.items()]
            print(f'{part}, seed {seed}: {time.time() - start:.0f} s', flush=True)
            if args.out: pd.DataFrame(records).to_csv(args.out, index=False)
        figures = pd.DataFrame([r for r in records if r['part'] == part])
        for case in figures.case.unique():
            table = figures[figures.case == case].pivot(index='measure', columns='seed', values='value').rename(columns=lambda s: f'seed {s}')
            print(f'\n{part}: {case}\n' + means(table).loc[figures[figures.case == case].measure.unique()].round(3).to_string(), flush=True)
        if part == 'novelty':
            print('\nnovelty, mean over seeds per held-out type (targets: AUROC >= 0.90 on average, known <= 5% and novel >= 70% unassigned on average)')
            summary = figures.pivot_table(index='case', columns='measure', values='value', aggfunc='mean', sort=False)
            for name in NOVELTY_SETS:
                block = summary[summary.index.str.startswith(f'{name} without')]
                print(block.round(3).to_string() + '\n' + f'{name}, average over types:\n' + block.mean().round(3).to_string(), flush=True)
