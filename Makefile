# Thin wrapper over CMake. `make` builds, `make test` runs the whole suite twice (normal
# build with gcc, then AddressSanitizer + UndefinedBehaviorSanitizer with clang).
BUILD      ?= build
ASAN_BUILD ?= build-asan
PREFIX     ?= /usr/local
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE      ?= cmake
CTEST      ?= ctest
SAN_CC     ?= $(shell command -v clang >/dev/null 2>&1 && echo clang || echo gcc)

.PHONY: all build test test-normal test-asan bench demo install docs clean demo-mpi fuzz soak

all: build

$(BUILD)/CMakeCache.txt:
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=$(PREFIX)

build: $(BUILD)/CMakeCache.txt
	$(CMAKE) --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	CC=$(SAN_CC) $(CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug \
	  -DMPROC_SANITIZE=address,undefined -DMPROC_BUILD_BENCH=OFF -DMPROC_FAULT_INJECTION=ON

test: test-normal test-asan

test-normal: build
	cd $(BUILD) && $(CTEST) --output-on-failure -j $(JOBS)

test-asan: $(ASAN_BUILD)/CMakeCache.txt
	$(CMAKE) --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(CTEST) --output-on-failure -j $(JOBS)

# Each libFuzzer target (clang, the sanitizer build) for FUZZ_SECONDS, from its corpus in
# fuzz/corpus/; the new inputs that add coverage are merged there (commit them).
FUZZ_SECONDS ?= 300
fuzz: $(ASAN_BUILD)/CMakeCache.txt
	$(CMAKE) --build $(ASAN_BUILD) -j $(JOBS)
	@ls $(ASAN_BUILD)/fuzz_* >/dev/null 2>&1 || { echo "no libFuzzer (needs clang)"; exit 1; }
	for f in $(ASAN_BUILD)/fuzz_*; do \
	  ASAN_OPTIONS=detect_leaks=1 sh fuzz/run.sh long $$f $(FUZZ_SECONDS) || exit 1; done

# The soaks (random kills and stops of workers, producers, consumers and lock holders, then
# every result, message and counter checked) for SOAK_SECONDS each; they print seed and counts.
SOAK_SECONDS ?= 600
soak: build
	MPROC_SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD)/soak_mix
	MPROC_SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD)/soak_pool

bench: build
	python3 bench/run.py $(BUILD)/bench

demo: build
	@if [ -f examples/demo.sh ]; then sh examples/demo.sh $(BUILD); \
	 else $(BUILD)/examples/demo; fi

install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

docs:
	@if command -v doxygen >/dev/null 2>&1; then doxygen docs/Doxyfile; \
	 else echo "doxygen is not installed: apt-get install doxygen"; fi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# The Monte Carlo example across 3 MPI ranks on this machine (Open MPI; as root too).
MPIRUN ?= OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe \
	  --bind-to none --mca btl self,vader
demo-mpi: build
	$(MPIRUN) -n 3 $(BUILD)/examples/mpi_montecarlo
