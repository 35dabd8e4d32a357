"""scANVI (Xu et al. 2021, scvi-tools) as a benchmark baseline: the SIMS thesis's comparison.

scANVI is semi-supervised: it trains scVI on the reference and query cells together (the query's labels hidden), then scANVI on
top, and labels the query from the shared latent space; so its training sees the query cells, which the other methods do not.
Input: raw counts of the 2,000 most variable genes of the reference cells (seurat_v3 flavour, or Seurat's older one where its loess
fit fails), as scvi-tools' tutorials advise;
one batch per file. Install with `pip install -e ".[bench]"`.
"""
import logging, sys, warnings
import numpy as np, pandas as pd, anndata as ad

def hide_broken_torchvision() -> bool:
    """torchmetrics (scvi-tools' dependency, through lightning) imports torchvision whenever it is installed. Where that torchvision cannot
    load beside torch (this machine's CPU torch with the torchvision fastai pulls in, see TOOLCHAIN.md), make it look absent; True if so"""
    try:
        import torchvision  # noqa: F401
        return False
    except (RuntimeError, ImportError):
        for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]: del sys.modules[name]
    import lightning_utilities.core.imports as imports
    check = imports.RequirementCache._check_requirement
    def without_torchvision(self):
        if (self.requirement or '').startswith('torchvision'): self.available, self.message = False, 'torchvision does not load beside this torch'
        else: check(self)
    imports.RequirementCache._check_requirement = without_torchvision
    return True

def scanvi_fit(counts_fit, # reference cells, raw counts (cells x genes, sparse)
               y_fit, # their labels
               counts_query, # query cells, raw counts, same genes
               batch_fit, batch_query, # file of each cell
               genes, seed:int=0, n_top_genes:int=2000):
    "scVI then scANVI trained on reference and query cells (query labels hidden); returns the model and the query's AnnData"
    hide_broken_torchvision()
    import scanpy as sc, scvi, torch
    for name in ('scvi', 'lightning', 'lightning.pytorch', 'pytorch_lightning'): logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings('ignore')
    scvi.settings.seed = seed
    obs = pd.DataFrame({'label': np.concatenate([np.asarray(y_fit).astype(str), np.full(counts_query.shape[0], 'Unknown')]),
                        'batch': np.concatenate([batch_fit, batch_query]).astype(str)})
    obs.index = obs.index.astype(str)
    import scipy.sparse as sp
    cells = ad.AnnData(sp.vstack([counts_fit, counts_query]).tocsr().astype(np.float32), obs=obs, var=pd.DataFrame(index=[str(g) for g in genes]))
    if cells.n_vars > n_top_genes:
        reference = cells[:counts_fit.shape[0]].copy()
        try: sc.pp.highly_variable_genes(reference, flavor='seurat_v3', n_top_genes=n_top_genes)
        except ValueError:  # its loess fit can be singular on small, deep data (CellBench's 5 cell lines): Seurat's older ranking on log1p CP10k
            sc.pp.normalize_total(reference, target_sum=1e4); sc.pp.log1p(reference)
            sc.pp.highly_variable_genes(reference, flavor='seurat', n_top_genes=n_top_genes)
        cells = cells[:, reference.var.highly_variable.to_numpy()].copy()
    batch_key = 'batch' if cells.obs.batch.nunique() > 1 else None
    scvi.model.SCVI.setup_anndata(cells, labels_key='label', batch_key=batch_key)
    vae = scvi.model.SCVI(cells)
    fit = dict(datasplitter_kwargs={'drop_last': True})  # a last batch of one cell breaks batch norm in training (scvi-tools raises)
    vae.train(**fit, enable_progress_bar=False, accelerator='cpu' if not torch.cuda.is_available() else 'auto')
    model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category='Unknown')
    model.train(max_epochs=20, n_samples_per_label=100, **fit, enable_progress_bar=False, accelerator='cpu' if not torch.cuda.is_available() else 'auto')
    return model, cells[counts_fit.shape[0]:].copy()

def scanvi_predict(fitted) -> np.ndarray:
    "The query cells' labels"
    model, query = fitted
    return np.asarray(model.predict(query)).astype(str)
