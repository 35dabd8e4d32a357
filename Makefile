# sims_nb: every command creates .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c .ci/constraints.txt
STAMP := $(VENV)/.installed

.PHONY: test install check nbdev-test pytest portable docs bench demo nbs readme zoo clean

test: install check nbdev-test pytest portable docs  ## everything CI runs

$(STAMP): settings.ini setup.py .ci/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) -U pip setuptools wheel
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

check: install  ## notebooks clean and sims_nb/ equal to a fresh nbdev_export
	@test -z "$$(git status --porcelain -uno -- nbs sims_nb)" || { echo "commit or stash changes in nbs/ and sims_nb/ before checking"; git status --porcelain -uno -- nbs sims_nb; exit 1; }
	$(BIN)/nbdev_clean
	@test -z "$$(git status --porcelain -uno -- nbs)" || { echo "notebooks are not clean: run nbdev_clean and commit"; git diff --stat -- nbs; exit 1; }
	$(BIN)/nbdev_export
	@test -z "$$(git status --porcelain -- sims_nb)" || { echo "sims_nb/ differs from nbdev_export: run nbdev_export and commit"; git status --porcelain -- sims_nb; exit 1; }
	@echo "notebooks clean, sims_nb/ matches nbdev_export"

# Two notebooks run at once, so each keeps to one thread: two torch pools of two threads on two cores
# oversubscribe and slowed CI's notebooks five-fold. NUMBA_NUM_THREADS too: scanpy's numba kernels (normalize_total, ...)
# set the OpenMP thread count that torch shares back to the number of cores.
nbdev-test: install
	OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

# Two processes, one test file each at a time (module fixtures train once), one thread each: most tests wait on
# single-threaded work (starting the CLI in a fresh process, reading files), which two processes halve.
pytest: install
	OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10 tests

# Seeded training gives other numbers on another processor (its vector kernels sum in another order), so the
# notebooks and tests that assert a training outcome run again on torch's portable kernels, as a machine without
# AVX would compute them: an assertion set just under one machine's result fails here rather than elsewhere.
# The library's training chapters only (02_tabnet, 04_callbacks): the tutorials' assertions keep wide margins, and
# rerunning tutorials/02_generalisation here cost CI about four minutes.
PORTABLE_TESTS := tests/test_learner.py::test_learns_and_scores_test_split tests/test_explain.py::test_top_genes_are_faithful
portable: install  ## the training-outcome notebooks and tests again under ATEN_CPU_CAPABILITY=default
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing --file_re '^0[24]_' --skip_folder_re '^([_.]|tutorials$$)'
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q $(PORTABLE_TESTS)

docs: install  ## offline site in _docs/ from nbdev's processed notebooks (Sphinx + myst-nb + furo)
	$(BIN)/python .ci/build_docs.py

demo: install  ## train on scanpy's bundled PBMCs; model, predictions, confusion matrix and scores in sims_nb_out/
	$(BIN)/sims-nb demo --out sims_nb_out

bench: install  ## accuracy against logistic regression, a linear SVM, CellTypist and scANVI (the [bench] extra, installed here), speed against pytorch-tabnet
	$(PIP) -e ".[bench]"
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/accuracy.py --methods sims lr celltypist scanvi --seeds 0 --out nbs/tutorials/benchmark_seed0.csv
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/explain_quality.py
	$(BIN)/python bench/tabnet_speed.py
	$(BIN)/python bench/explain_speed.py

DATA := ../shared/data
ZOO := zoo
ZOO_TRAIN := $(BIN)/sims-nb train --quiet
zoo: install  ## a model zoo in zoo/ from the shared data (PBMCs, worm neurons, mouse immune cells), with its catalogue zoo/README.md
	$(ZOO_TRAIN) $(DATA)/pbmc3k_seurat.h5ad --label cell_type --out build/zoo/pbmc3k
	$(BIN)/sims-nb zoo add build/zoo/pbmc3k/model.pt --zoo $(ZOO) --replace --name pbmc3k-human --tissue blood --species human \
		--description "Peripheral blood mononuclear cells of a healthy donor (10x PBMC 3k, v1 chemistry), nine types as annotated in Seurat's tutorial"
	$(ZOO_TRAIN) $(DATA)/scdcc_worm_neuron_anon.h5ad --label label --out build/zoo/worm
	$(BIN)/sims-nb zoo add build/zoo/worm/model.pt --zoo $(ZOO) --replace --name worm-neurons --tissue neurons --species "C. elegans" \
		--description "C. elegans neurons (sci-RNA-seq, Cao et al. 2017 via scDCC), ten types; gene and type names are anonymous in the source"
	$(ZOO_TRAIN) $(DATA)/tabula_muris_immune_actinn_1k.h5ad --label cell_type --out build/zoo/immune
	$(BIN)/sims-nb zoo add build/zoo/immune/model.pt --zoo $(ZOO) --replace --name tm-immune-mouse --tissue immune --species mouse \
		--description "Mouse immune cells of Tabula Muris (2018) as packaged by ACTINN: B, T and NK cells, monocytes, granulocytes"
	$(BIN)/python -c "from sims_nb.zoo import Zoo; from pathlib import Path; Path('$(ZOO)/README.md').write_text(Zoo('$(ZOO)').catalogue())"
	$(BIN)/sims-nb zoo list --zoo $(ZOO)

nbs: install  ## execute every notebook in place (outputs for the docs), then clean
	for nb in nbs/*.ipynb nbs/tutorials/*.ipynb; do [ -f "$$nb" ] && $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$$nb" || exit 1; done
	$(BIN)/nbdev_clean

readme: install  ## README.md from nbs/index.ipynb
	$(BIN)/python .ci/readme.py

clean:
	rm -rf _proc _docs .pytest_cache
