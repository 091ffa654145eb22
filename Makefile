# sluice: thin wrapper around CMake. `make run` and `make test` are the quick start.
#   make            build build/sluice
#   make run        install missing deps, build, run the gateway with examples/sluice.yaml
#   make test       install missing deps, build, run unit, fuzz-replay and integration tests
#   make test SANITIZE=1   the same in an ASan+UBSan build (build-asan/)
#   make fuzz       build libFuzzer harnesses with clang (build-fuzz/)
#   make bench      benchmarks (bench/run), then the soak (bench/soak); not part of CI
#   make soak       the soak alone: minutes of mixed traffic, memory and descriptors watched;
#                   make soak SANITIZE=1 runs it on the ASan build (leaks reported at exit)

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build-asan
CMAKE_FLAGS += -DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
else
BUILD ?= build
CMAKE_FLAGS += -DCMAKE_BUILD_TYPE=RelWithDebInfo
endif
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST ?= /usr/bin/python3 -m pytest
RUN_ARGS ?= --config examples/sluice.yaml
SOAK_ARGS ?=

.PHONY: all build deps run test unit integration fuzz bench soak clean format

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/install-deps.sh

run: deps build
	$(BUILD)/sluice run $(RUN_ARGS)

test: deps build
	$(MAKE) --no-print-directory unit integration BUILD=$(BUILD) SANITIZE=$(SANITIZE)

unit:
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

integration:
	SLUICE_BIN=$(abspath $(BUILD)/sluice) SLUICE_SANITIZE=$(SANITIZE) \
	  $(PYTEST) -q -p no:cacheprovider tests/integration

fuzz:
	CC=clang cmake -S . -B build-fuzz -DSLUICE_FUZZ=ON -DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-fuzz -j $(JOBS)

bench: deps build
	bench/run $(BENCH_ARGS)
	bench/soak --sluice $(abspath $(BUILD)/sluice) $(SOAK_ARGS)

soak: deps build
	bench/soak --sluice $(abspath $(BUILD)/sluice) $(SOAK_ARGS)

format:
	clang-format -i src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf build build-asan build-fuzz
