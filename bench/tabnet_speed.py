"""Training and inference throughput of sims_nb's TabNet against pytorch-tabnet's, on CPU, in one run.

Synthetic log1p counts with 5% non-zero entries; batch 256; n_steps=3; n_d = n_a in {8, 32, 64};
2,000 and 20,000 genes. Training = forward + backward + Adam step (`fused=True`, for both); inference = eval-mode forward
under `torch.inference_mode`, after both models' batch-norm statistics were set from the data (an untrained
model's initial statistics make its eval-mode masks nearly uniform, which no trained model has). Prints cells/s for each and the ratio against pytorch-tabnet measured
in the same run, and checks that both give the same logits on the same dense input.

pytorch-tabnet 4.1 multiplies every mask by a genes x genes "group" matrix (the identity when no
groups are given): 1.6 GB and ~100 GFLOP per step at 20,000 genes. The reference timed here skips that
product (as pytorch-tabnet 4.0 did), so it is the fastest form of its algorithm; `--stock` also times
the unmodified network once.

    python bench/tabnet_speed.py [--genes 2000 20000] [--widths 8 32 64] [--threads 2] [--stock]
"""
import argparse, subprocess, sys, time
import warnings
import torch, torch.nn.functional as F
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
from pytorch_tabnet.tab_network import TabNet as ReferenceTabNet
from sims_nb.tabnet import TabNet, from_pytorch_tabnet

class IdentityGroups(torch.Tensor):
    "An (n_genes, 0) tensor that pytorch-tabnet takes as its group matrix; multiplying by it returns the masks unchanged"
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.matmul: return args[0]
        return super().__torch_function__(func, types, args, kwargs or {})

def synthetic_counts(n_cells, n_genes, density=0.05, seed=0):
    "log1p of sparse Poisson-like counts as a dense tensor"
    g = torch.Generator().manual_seed(seed)
    nonzero = torch.rand(n_cells, n_genes, generator=g) < density
    return torch.log1p(nonzero * torch.randint(1, 20, (n_cells, n_genes), generator=g)).float()

def cells_per_s(step, batches, bs, warmup=1):
    "Throughput of `step(batch)` over `batches` after `warmup` untimed calls"
    for b in batches[:warmup]: step(b)
    start = time.perf_counter()
    for b in batches[warmup:]: step(b)
    return bs * (len(batches) - warmup) / (time.perf_counter() - start)

def train_step(model, sign):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # the fastest Adam on CPU, for both models
    def step(batch):
        x, y = batch
        logits, reg = model(x)
        loss = F.cross_entropy(logits, y) + sign * 1e-3 * reg
        opt.zero_grad(); loss.backward(); opt.step()
    return step

def infer_step(model):
    def step(batch):
        with torch.inference_mode(): model(batch[0])
    return step

@torch.no_grad()
def calibrate(reference, ours, batches):
    "Give both models the batch-norm statistics of the data (as after training), so eval-mode masks are as sparse as in training"
    norms = [m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for m in norms: m.reset_running_stats(); m.momentum = None  # cumulative average
    reference.train()
    for x, _ in batches: reference(x)
    for m in norms: m.momentum = 0.01 if m.num_features == m.running_mean.numel() and m in [reference.tabnet.encoder.initial_bn] else 0.02
    ours.load_state_dict(from_pytorch_tabnet(reference.state_dict()))

def pair(n_genes, width, stock=False):
    "pytorch-tabnet's network and ours with the same weights"
    groups = torch.eye(n_genes) if stock else torch.empty(n_genes, 0).as_subclass(IdentityGroups)
    torch.manual_seed(0)
    reference = ReferenceTabNet(n_genes, 10, n_d=width, n_a=width, n_steps=3, group_attention_matrix=groups)
    ours = TabNet(n_genes, 10, n_d=width, n_a=width, n_steps=3)
    ours.load_state_dict(from_pytorch_tabnet(reference.state_dict()))
    return reference, ours

HEADER = (f"{'genes':>6} {'n_d=n_a':>7} | {'train cells/s: ref':>18} {'ours dense':>10} {'ours sparse':>11} {'ratio':>6} | "
          f"{'infer cells/s: ref':>18} {'ours dense':>10} {'ours sparse':>11} {'ratio':>6} | {'logits: max rel diff, same class':>32}")
FOOTER = 'ratio = ours on sparse CSR batches / pytorch-tabnet on dense batches (its only input); target at 20,000 genes: >= 10x'

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--genes', type=int, nargs='+', default=[2000, 20000])
    parser.add_argument('--widths', type=int, nargs='+', default=[8, 32, 64])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--bs', type=int, default=256)
    parser.add_argument('--batches', type=int, default=10, help='timed batches per measurement (+1 warm-up)')
    parser.add_argument('--stock', action='store_true', help='also time unmodified pytorch-tabnet 4.1 (slow at 20,000 genes)')
    parser.add_argument('--row', action='store_true', help='print only the table rows (used for one configuration per process)')
    args = parser.parse_args()
    if not args.row and (len(args.genes) > 1 or len(args.widths) > 1):
        # one process per configuration: the allocator state left by one must not slow the next
        print(f'torch {torch.__version__}, {args.threads} threads, batch {args.bs}, n_steps 3, 5% non-zero, {args.batches} timed batches, one process per row')
        print(HEADER); print('-'*len(HEADER))
        for n_genes in args.genes:
            for width in args.widths:
                cmd = [sys.executable, __file__, '--row', '--genes', str(n_genes), '--widths', str(width), '--threads', str(args.threads),
                       '--bs', str(args.bs), '--batches', str(args.batches)] + (['--stock'] if args.stock and width == args.widths[0] else [])
                print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout, end='', flush=True)
        print(FOOTER)
        return
    torch.set_num_threads(args.threads)
    if not args.row:
        print(f'torch {torch.__version__}, {args.threads} threads, batch {args.bs}, n_steps 3, 5% non-zero, {args.batches} timed batches')
        print(HEADER); print('-'*len(HEADER))
    for n_genes in args.genes:
        x = synthetic_counts(args.bs * (args.batches + 1), n_genes)
        y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(1))
        dense = [(xb, yb) for xb, yb in zip(x.split(args.bs), y.split(args.bs))]
        sparse = [(xb.to_sparse_csr(), yb) for xb, yb in dense]
        for width in args.widths:
            reference, ours = pair(n_genes, width)
            calibrate(reference, ours, dense)
            reference.eval(); ours.eval()
            with torch.inference_mode():
                ref_logits, logits = reference(dense[0][0])[0], ours(dense[0][0])[0]
            diff = float((ref_logits - logits).abs().max() / ref_logits.abs().max())
            same_call = float((ref_logits.argmax(1) == logits.argmax(1)).float().mean())
            infer = [cells_per_s(infer_step(m), b, args.bs) for m, b in [(reference, dense), (ours, dense), (ours, sparse)]]
            reference.train(); ours.train()
            train = [cells_per_s(train_step(reference, -1), dense, args.bs), cells_per_s(train_step(ours, 1), dense, args.bs)]
            train.append(cells_per_s(train_step(ours, 1), sparse, args.bs))
            print(f"{n_genes:>6} {width:>7} | {train[0]:>18.0f} {train[1]:>10.0f} {train[2]:>11.0f} {train[2]/train[0]:>5.1f}x | "
                  f"{infer[0]:>18.0f} {infer[1]:>10.0f} {infer[2]:>11.0f} {infer[2]/infer[0]:>5.1f}x | {diff:>19.1e} {same_call:>11.1%}", flush=True)
        if args.stock:
            stock, _ = pair(n_genes, args.widths[0], stock=True)
            t = cells_per_s(train_step(stock, -1), dense[:3], args.bs)
            print(f"{n_genes:>6} {args.widths[0]:>7} | stock pytorch-tabnet 4.1 (identity group matrix) trains at {t:.0f} cells/s", flush=True)
    if not args.row: print(FOOTER)

if __name__ == '__main__': main()
