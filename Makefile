# make demo : set up .venv if missing or stale, then run the main job on the digits data.
# make test : set up .venv if missing or stale, then run the test suite.
# make demo-llm: DMS_p on a small Llama trained on Debian's python3-doc text (installed with
#             apt-get if missing and root) vs uniform width, both HF exports reloaded (measured
#             on the shared machine at 1 thread: 11 CPU-minutes for the supernet, once, cached
#             in work_dirs/llm_supernet; then 8 CPU-minutes, 15 minutes wall);
#             make bench-llm: DMS_p vs uniform, LLM-Pruner's Taylor and ShortGPT's layer dropping,
#             3 seeds (benchmarks/bench_llm.py; resumes where it stopped).
# make bench: the CPU speed, exactness and latency benchmarks of docs/benchmarks.md (about 27
#             minutes on 2 idle cores; latency: 160 px, YOLOv8 320 px, 5 repeats, about 10;
#             the search to a latency target, about 2);
#             make bench-quality: the 3-seed quality comparison (about 40 minutes).
# make data-fmnist: Fashion-MNIST from Debian's package (apt-get install -y dataset-fashion-mnist)
#             into data/fashion_mnist; make bench-peers: the Fashion-MNIST comparison with the
#             peers (benchmarks/bench_peers.py; about 5.5 hours on 2 cores; resumes where it
#             stopped, from the rows kept in benchmarks/results/peers_fmnist.jsonl).
PY := .venv/bin/python
# a benchmark that fails fails the target, though its output goes through tee; its warnings
# and traceback are kept in work_dirs/bench/NAME.log
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: setup demo demo-llm test bench bench-quality bench-llm data-fmnist bench-peers clean

setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py --work-dir work_dirs/demo

demo-llm: setup
	$(PY) tools/demo_llm.py --work-dir work_dirs/demo_llm

test: setup
	$(PY) -m pytest -q --durations=15 tests

BENCH_OUT := work_dirs/bench

bench: setup
	mkdir -p $(BENCH_OUT)
	$(PY) benchmarks/bench_topk.py | tee $(BENCH_OUT)/topk.md
	$(PY) benchmarks/bench_trace.py | tee $(BENCH_OUT)/trace.md
	$(PY) benchmarks/bench_exactness.py 2>$(BENCH_OUT)/exactness.log \
		| grep -v ' - mmengine - ' | tee $(BENCH_OUT)/exactness.md
	$(PY) benchmarks/bench_search_overhead.py --repeats 5 --warmup 1 \
		2>$(BENCH_OUT)/search_overhead.log \
		| grep -v ' - mmengine - ' | tee $(BENCH_OUT)/search_overhead.md
	$(PY) benchmarks/bench_latency.py 2>$(BENCH_OUT)/latency.log \
		| grep -v ' - mmengine - ' | tee $(BENCH_OUT)/latency.md
	$(PY) benchmarks/bench_latency_target.py 2>$(BENCH_OUT)/latency_target.log \
		| grep -v ' - mmengine - ' | tee $(BENCH_OUT)/latency_target.md

bench-quality: setup
	mkdir -p $(BENCH_OUT)
	$(PY) benchmarks/bench_quality.py --seeds 0 1 2 --work-dir $(BENCH_OUT)/quality \
		2>$(BENCH_OUT)/quality.log | grep -v ' - mmengine - ' | tee $(BENCH_OUT)/quality.md

bench-llm: setup
	mkdir -p $(BENCH_OUT)
	$(PY) benchmarks/bench_llm.py --seeds 0 1 2 --results $(BENCH_OUT)/llm.jsonl \
		--work-dir $(BENCH_OUT)/llm 2>$(BENCH_OUT)/llm.log | grep -v ' - mmengine - ' \
		| tee $(BENCH_OUT)/llm.md

data-fmnist:
	python3 tools/dataset_converters/fashion_mnist.py --dst data/fashion_mnist

# the two supernets side by side, one thread each (small 28x28 models use a second thread
# poorly); both append their rows to the same results file, then the tables are printed
bench-peers: setup data-fmnist
	mkdir -p $(BENCH_OUT)
	for net in resnet mbv2; do \
		OMP_NUM_THREADS=1 $(PY) benchmarks/bench_peers.py --supernets $$net \
			--work-dir $(BENCH_OUT)/peers >$(BENCH_OUT)/peers_$$net.log 2>&1 & \
	done; \
	failed=0; for job in $$(jobs -p); do wait $$job || failed=1; done; \
	test $$failed = 0 || { echo "bench_peers failed: see $(BENCH_OUT)/peers_*.log"; exit 1; }
	$(PY) benchmarks/bench_peers.py --table 2>/dev/null | tee $(BENCH_OUT)/peers.md

clean:
	rm -rf work_dirs .pytest_cache .hypothesis
