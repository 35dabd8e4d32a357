"""Do the default model's explanations name the genes a biologist would? pbmc3k (Seurat tutorial labels), several seeds.

Prints, per seed and on average, the targets of issue 11:
- the Seurat tutorial's 14 markers within the top 20 genes of their own class (target: at least 12 of 14);
- the share of global importance on ribosomal (^RP[SL]) plus mitochondrial (^MT-) genes (target: under 15%);
- per class, how many of its top 20 genes by importance are among its top 20 Wilcoxon markers (target: median at least 8);
- stability over seeds: Spearman rho of global importances over the union of each model's top 100 genes (target >= 0.6)
  and the genes shared by the top-50 sets (target >= 30), all models explained on the same cells (the whole file);
- faithfulness: recall lost when a class's own top 10 genes are removed (target >= 0.8 on average) and when 10 random genes are (<= 0.05).

Usage: python bench/explain_quality.py [--seeds 0 1 2] [--recipe default] [--set key=value ...]
"""
import argparse, itertools, time, warnings
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, scanpy as sc, torch
from scipy.stats import spearmanr
from sims_nb.learner import sims_learner, get_recipe
from sims_nb.explain import explain, deletion_test, marker_overlap

warnings.filterwarnings('ignore')
DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
FILE, LABEL = DATA/'pbmc3k_seurat.h5ad', 'cell_type'
# the markers the Seurat PBMC 3k tutorial names for each of its clusters
SEURAT_MARKERS = {'B': ['MS4A1', 'CD79A'], 'CD14+ Mono': ['CD14', 'LYZ'], 'FCGR3A+ Mono': ['FCGR3A', 'MS4A7'], 'NK': ['GNLY', 'NKG7'],
                  'DC': ['FCER1A', 'CST3'], 'Platelet': ['PPBP'], 'Naive CD4 T': ['IL7R', 'CCR7'], 'CD8 T': ['CD8A']}

def marker_ranks(explanation) -> pd.DataFrame:
    "Rank of each Seurat marker among its class's genes by mean importance (true classes); NaN where the model does not use it"
    means = explanation.class_importance('true')
    ranks = means.where(means > 0).rank(axis=1, ascending=False, method='min')
    return pd.DataFrame([{'class': c, 'gene': g, 'rank': ranks.loc[c, g] if g in ranks.columns else np.nan}
                         for c, genes in SEURAT_MARKERS.items() for g in genes])

def one_seed(seed:int, recipe, everything:ad.AnnData) -> dict:
    start = time.time()
    learn = sims_learner([FILE], class_label=LABEL, recipe=recipe, seed=seed)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    seconds = time.time() - start
    model = learn.export_model()
    test = everything[learn.dls.splits['test']].copy()
    explanation = explain(model, test, label=LABEL)
    ranks = marker_ranks(explanation)
    share = lambda pattern: float(explanation.gene_usage(pattern).share.sum())
    logged = test.copy(); sc.pp.normalize_total(logged, target_sum=1e4); sc.pp.log1p(logged)
    overlap = marker_overlap(explanation, logged, LABEL, n=20)['shared of top 20']
    deletion = deletion_test(model, test, LABEL, k=10)
    with learn.no_bar(): scores = learn.evaluate().scores
    return {'seed': seed, 'genes': len(model.genes), 'train_s': seconds, 'test macro-F1': scores['macro_f1'],
            'markers in own top 20 (of 14)': int((ranks['rank'] <= 20).sum()),
            'RP+MT share': share('^RP[SL]') + share('^MT-'),
            'median marker overlap (of 20)': float(overlap.median()),
            'recall lost, own top 10': float((deletion.recall - deletion['without own top 10']).mean()),
            'recall lost, 10 random': float((deletion.recall - deletion['without 10 random']).mean()),
            '_ranks': ranks.set_index(['class', 'gene'])['rank'], '_overlap': overlap,
            '_global': explain(model, everything).global_importance()}

def stability(by_seed:dict) -> pd.DataFrame:
    "Spearman rho over the union of two models' top 100 genes (0 where a model does not use a gene) and top-50 overlap"
    rows = []
    for a, b in itertools.combinations(by_seed, 2):
        first, second = by_seed[a], by_seed[b]
        genes = first.index[:100].union(second.index[:100])
        rows.append({'seeds': f'{a} vs {b}', 'Spearman rho (top 100 union)': spearmanr(first.reindex(genes).fillna(0), second.reindex(genes).fillna(0)).statistic,
                     'top 50 shared': len(set(first.index[:50]) & set(second.index[:50]))})
    return pd.DataFrame(rows).set_index('seeds')

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--recipe', default='default')
    parser.add_argument('--set', nargs='*', default=[], help='recipe changes, e.g. lr=0.02')
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = get_recipe(args.recipe)
    changes = {k: (v == 'True') if isinstance(getattr(base, k), bool) else type(getattr(base, k))(v) if getattr(base, k) is not None else float(v)
               for k, v in (s.split('=', 1) for s in args.set)}
    recipe = get_recipe(base, **changes)
    everything = ad.read_h5ad(FILE)
    runs = [one_seed(seed, recipe, everything) for seed in args.seeds]
    print(f"pbmc3k_seurat, recipe {args.recipe} {changes or ''}; explanations of each seed's test split (true classes)\n")
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith('_')} for r in runs]).set_index('seed')
    print(table.round(3).to_string())
    print('\nRank of each Seurat marker within its class (by mean importance; blank: not used):')
    print(pd.DataFrame({f'seed {r["seed"]}': r['_ranks'] for r in runs}).to_string(na_rep=''))
    print('\nPer class, genes shared by its top 20 by importance and its top 20 Wilcoxon markers:')
    print(pd.DataFrame({f'seed {r["seed"]}': r['_overlap'] for r in runs}).to_string())
    if len(runs) > 1:
        print('\nStability (global importances of each model on all 2,638 cells):')
        print(stability({r['seed']: r['_global'] for r in runs}).round(3).to_string())
    print('\ntargets: markers >= 12 of 14; RP+MT share < 0.15; median overlap >= 8; rho >= 0.6 and top 50 shared >= 30; own >= 0.8, random <= 0.05')
