"""How honest is prediction? Calibration, "Unassigned", conformal sets and majority voting, measured on shared data, several seeds.

For each seed (the seed changes the split and the initialisation):
- pbmc3k (9 Seurat types), test split: expected calibration error (15 bins) of the softmax and of the temperature-scaled probabilities,
  share of test cells unassigned, accuracy of the assigned cells, coverage and mean size of the 80/90/95% conformal sets;
- pbmc3k -> Kang 2018 (coarse labels, genes intersected, every Kang cell a test cell): the same, across studies, and majority voting
  over Leiden over-clusters of the Kang cells (macro-F1 of the most likely types before and after);
- a type absent from the reference: pbmc3k without its B cells, queried with its test split plus every B cell (within study) and with
  the Kang cells (across studies): share of B cells and of other cells unassigned, and the AUROC of each score for finding the B cells.

Usage: python bench/inference.py [--seeds 0 1 2] [--threads 2]
"""
import argparse, time, warnings
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, torch
from sklearn.metrics import roc_auc_score, f1_score
from sims_nb.learner import sims_learner
from sims_nb.inference import split_outputs, softmax, calibration_error, over_cluster, majority_vote

warnings.filterwarnings('ignore')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
PBMC3K, KANG = DATA/'pbmc3k_seurat.h5ad', DATA/'kang2018_pbmc_stim_muscat_example.h5ad'

def trained(files, label, seed, **kwargs):
    learn = sims_learner(files, class_label=label, seed=seed, **kwargs)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    return learn

def honesty(learn, data, truth) -> dict:
    "Calibration, abstention and conformal coverage of a learner's model on labelled cells `data`"
    model, cal = learn.export_model(), learn.calibration
    logits, *_ = model.outputs(model.batches(data)[2])
    predictions = model.predict(data)
    codes = pd.Index(model.classes).get_indexer(truth)
    known = codes >= 0
    row = {'ECE softmax': calibration_error(softmax(logits[known]), codes[known]), 'ECE calibrated': calibration_error(cal.probabilities(logits[known]), codes[known]),
           'temperature': cal.temperature, 'accuracy': float((predictions.most_likely == truth).mean()),
           'unassigned': float(predictions.unassigned.mean()), 'accuracy assigned': float((predictions.label == truth)[~predictions.unassigned].mean())}
    for coverage in (0.8, 0.9, 0.95):
        sets = model.predict(data, coverage=coverage)
        row[f'coverage {coverage:.0%}'] = float(np.mean([t in s.split('|') for t, s in zip(truth, sets.prediction_set)]))
        row[f'set size {coverage:.0%}'] = float(sets.set_size.mean())
    return row

def novelty(learn, query, novel) -> dict:
    "How the model without a type treats cells of that type (`novel`) and the others"
    out = learn.predict(query)
    return {'novel unassigned': float(out.unassigned[novel].mean()), 'known unassigned': float(out.unassigned[~novel].mean()),
            'AUROC probability': roc_auc_score(novel, -out.probability), 'AUROC distance': roc_auc_score(novel, out.distance),
            'AUROC evidence': roc_auc_score(novel, -out.evidence)}

def one_seed(seed:int) -> dict:
    pbmc3k, kang = ad.read_h5ad(PBMC3K), ad.read_h5ad(KANG)
    rows, start = {}, time.time()
    learn = trained([PBMC3K], 'cell_type', seed)
    test = pbmc3k[learn.dls.splits['test']].copy()
    rows['pbmc3k test'] = honesty(learn, test, test.obs.cell_type.to_numpy())
    learn = trained([PBMC3K, KANG], 'cell_type_coarse', seed, test_files=[1])
    truth = kang.obs.cell_type_coarse.to_numpy()
    rows['pbmc3k -> Kang'] = honesty(learn, kang, truth)
    predictions = learn.predict(kang)
    voted = majority_vote(predictions.most_likely, over_cluster(kang, seed=seed)).voted_label
    macro = lambda labels: f1_score(truth, labels, average='macro', labels=np.unique(truth), zero_division=0)
    rows['pbmc3k -> Kang'].update({'macro-F1': macro(predictions.most_likely), 'macro-F1 voted': macro(voted)})
    no_b = pbmc3k[pbmc3k.obs.cell_type_coarse != 'B'].copy()
    learn = trained([no_b], 'cell_type_coarse', seed)
    query = ad.concat([no_b[learn.dls.splits['test']], pbmc3k[pbmc3k.obs.cell_type_coarse == 'B']])
    rows['no B: pbmc3k test + B'] = novelty(learn, query, (query.obs.cell_type_coarse == 'B').to_numpy())
    learn = trained([no_b, kang], 'cell_type_coarse', seed, test_files=[1])
    rows['no B: Kang'] = novelty(learn, kang, truth == 'B')
    print(f'seed {seed}: {time.time() - start:.0f} s', flush=True)
    return rows

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {seed: one_seed(seed) for seed in args.seeds}
    for case in runs[args.seeds[0]]:
        table = pd.DataFrame({f'seed {s}': runs[s][case] for s in args.seeds})
        table['mean'] = table.mean(1)
        print(f'\n{case}\n' + table.round(3).to_string())
