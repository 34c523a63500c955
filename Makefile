# Chromasonic Lab. Quick start: `make search`, then `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this kind of machine `pip install torch==2.13.0` takes a local CPU wheel; elsewhere set
# TORCH_SPEC (and TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only build).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed-stamp
NB ?=
HIDE_CODE ?= 0
ARGS ?=
# `make search` bounds the default search to this many seconds (trials still running then stop
# at their next epoch), so it finishes within five minutes on a 2-core CPU.
SEARCH_TIMEOUT ?= 210

.PHONY: setup search test report docs gallery clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, so the dependency range below is already satisfied (no multi-GB CUDA pull).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	# Parse the default corpus once now (about a minute), so the first search starts at once.
	$(PY) -c "from chromasonic_lib.data import load_notes; load_notes('chorales')"
	# FluidSynth is a system package (see README); say what will render the WAVs here.
	$(PY) -c "from chromasonic_lib.generate import audio_source; print('WAV audio:', audio_source())"
	touch $(STAMP)

# Run the search notebook on its defaults (chorales, LSTM, 20 trials) into runs/.
search: $(STAMP)
	mkdir -p runs
	$(VENV)/bin/papermill notebooks/search.ipynb runs/search.ipynb --cwd . -k python3 -p timeout $(SEARCH_TIMEOUT) $(ARGS)
	@echo "Executed notebook: runs/search.ipynb; result files: runs/melody-search/"

# Test files run side by side, TEST_JOBS at a time (pytest-xdist; each file's tests in one
# process): most tests wait on workers, servers and kernels they start, so two share 2 cores well.
# TEST_JOBS=0 runs them in this process, one after another.
TEST_JOBS ?= 2
test: $(STAMP)
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile) $(ARGS)

# make report NB=runs/search.ipynb [HIDE_CODE=1] → runs/search.html (images embedded)
report: $(STAMP)
	@test -n "$(NB)" || (echo "usage: make report NB=runs/<notebook>.ipynb [HIDE_CODE=1]"; exit 2)
	$(VENV)/bin/jupyter nbconvert --to html --embed-images $(if $(filter 1,$(HIDE_CODE)),--no-input) "$(NB)"

# The documentation site (docs/, mkdocs.yml) → site/: first the gallery, the three notebooks run
# by papermill on a short study (params/gallery.yaml: 213 Essen children's songs, 4 trials of 4
# epochs of a GRU of one's own) into docs/gallery/, then `mkdocs build --strict`, so a broken link
# or a missing page fails.
DOCS_STUDY := build/docs-study
GALLERY := docs/gallery
GALLERY_TEMPERATURE := 0.9
PAPERMILL = $(VENV)/bin/papermill --cwd . -k python3 --no-progress-bar

docs: gallery
	@echo "Building the site (mkdocs build --strict) into site/"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site
	$(PY) docs/check_site.py site

gallery: $(STAMP)
	$(PY) -c "import mkdocs, material, mkdocstrings_handlers.python, mkdocs_jupyter" 2>/dev/null || $(PY) -m pip install --quiet -e ".[docs]"
	rm -rf $(DOCS_STUDY) $(GALLERY)
	mkdir -p $(DOCS_STUDY) $(GALLERY)
	$(PAPERMILL) notebooks/search.ipynb $(GALLERY)/search.ipynb -f params/gallery.yaml
	$(PAPERMILL) notebooks/analysis.ipynb $(GALLERY)/analysis.ipynb -p study_name gallery \
	    -p storage sqlite:///$(DOCS_STUDY)/studies.db
	$(PAPERMILL) notebooks/train_best.ipynb $(GALLERY)/train_best.ipynb -p study_name gallery \
	    -p storage sqlite:///$(DOCS_STUDY)/studies.db -p output_dir $(DOCS_STUDY)/best \
	    -p n_samples 2 -p sample_length 48 -p temperature $(GALLERY_TEMPERATURE)
	$(PY) docs/gallery_note.py $(GALLERY) params/gallery.yaml $(GALLERY_TEMPERATURE)

clean-runs:
	rm -rf runs
