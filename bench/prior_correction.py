"""How much of the class weights to undo when training ends (the recipe's `prior_correction`, alpha): one training per row and seed with
the correction off, then the test cells' logits shifted by -alpha * log(class weights) for several alphas, scored as bench/accuracy.py
scores (test macro-F1 over the test cells' true classes). The shift changes no weight, so every alpha is scored on the same models.

Usage: python bench/prior_correction.py [--rows pbmc3k pbmc68k ...] [--seeds 0 1 2] [--alphas 0 0.25 0.5 0.75 1]
                                        [--choose pbmc3k pbmc68k zeisel_sub] [--out FILE.csv]
`--choose` names the rows the choice is made on; the others are printed apart, as rows kept aside.
"""
import argparse, time, warnings
import numpy as np, pandas as pd, torch
from accuracy import ROWS, learner_inputs, scores
from sims_nb.learner import sims_learner, get_recipe

warnings.filterwarnings('ignore')

def uncorrected_test_log_probabilities(name:str, seed:int):
    "Log-probabilities of the test cells with the correction off, the class weights, the true classes and class names, and training seconds"
    row = ROWS[name]
    files, kwargs = learner_inputs(row, seed)
    start = time.time()
    learn = sims_learner(files, class_label=row.label, recipe=get_recipe(prior_correction=0.), seed=seed, **kwargs)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    seconds = time.time() - start
    probabilities, targets = learn.get_preds(dl=learn.dls[2])
    return probabilities.clamp_min(1e-30).log().numpy(), learn.dls.class_weights.numpy(), targets.numpy(), np.asarray(learn.classes), seconds

def sweep(rows, seeds, alphas) -> pd.DataFrame:
    out = []
    for name in rows:
        for seed in seeds:
            log_p, weights, targets, classes, seconds = uncorrected_test_log_probabilities(name, seed)
            truth = classes[targets]
            for alpha in alphas:
                predicted = classes[(log_p - alpha * np.log(weights)).argmax(1)]
                out.append({'row': name, 'seed': seed, 'alpha': alpha, **scores(truth, predicted), 'train_s': seconds})
            print(f"{name} seed {seed}: {seconds:.0f} s", flush=True)
    return pd.DataFrame(out)

if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--rows', nargs='+', default=[r for r in ROWS if r not in ('celseq2_3cl', 'dropseq_3cl')])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--alphas', nargs='+', type=float, default=[0, 0.25, 0.5, 0.75, 1])
    parser.add_argument('--choose', nargs='+', default=['pbmc3k', 'pbmc68k', 'zeisel_sub'])
    parser.add_argument('--out', default=None)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; seeds {args.seeds}; alphas {args.alphas}", flush=True)
    table = sweep(args.rows, args.seeds, args.alphas)
    if args.out: table.to_csv(args.out, index=False)
    pd.set_option('display.width', 200)
    grouped = table.groupby(['row', 'alpha']).macro_f1
    print('\ntest macro-F1, mean over seeds (rows) and alpha (columns):')
    print(grouped.mean().unstack().round(4).to_string())
    print('\nstandard deviation over seeds:')
    print(grouped.std(ddof=0).unstack().round(4).to_string())
    means = grouped.mean().unstack()
    chosen = [r for r in args.choose if r in means.index]
    print('\nmean over the choosing rows', chosen, ':'); print(means.loc[chosen].mean().round(4).to_string())
    if len(means.index.difference(chosen)): print('\nmean over the rows kept aside:'); print(means.drop(chosen).mean().round(4).to_string())
