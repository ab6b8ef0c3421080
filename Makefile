# tocha: one build. CPU always; CUDA when nvcc is found (CUDA=0 forces it off).
#   make          build/tocha (the runner) and build/tocha.so (for stock lua5.4), on every core
#                 (-jN or -j1 on the command line decides instead)
#   make EMU=1    the cuda device on a CPU emulation of the CUDA runtime (build-emu/), which
#                 runs kernels/*.cu without a GPU so the GPU suite can test their logic
#   make test     C and Lua tests, ending with "N passed, N failed" (first: the CPU's
#                 AVX2 / AVX-512 loops vectorised, tests/check_simd.sh)
#   make demo     the default experiment: text-to-image on captioned shapes (about 10 minutes)
#   make finetune-demo   fine-tunes the demo's model on a new color, full and LoRA, and measures
#                 what it learnt and forgot (trains the demo's model first when it is missing)
#   make SAN=1    AddressSanitizer + UndefinedBehaviorSanitizer build (in build-san/; with
#                 EMU=1 in build-san-emu/, where it checks the kernels' memory accesses too)
#   make EMU=1 cudaemu-selftest   the emulator's own test (tests/cudaemu/)

CC      ?= cc
CUDA    ?= 1
SAN     ?= 0
EMU     ?= 0
BUILD   ?= $(if $(filter 1,$(SAN)),build-san,build)$(if $(filter 1,$(EMU)),-emu)
LUA_INC ?= $(firstword $(wildcard /usr/include/lua5.4) /usr/include)
LUA_A   ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/liblua5.4.a /usr/lib/*/liblua5.4.a /usr/local/lib/liblua.a))
# OpenBLAS built on OpenMP shares one thread pool with tocha's own kernels; the pthread
# build's threads and OpenMP's spinning ones would fight over the cores
BLAS_DIR ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/x86_64-linux-gnu/openblas-pthread))
BLAS_INC ?= $(firstword $(wildcard /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas) /usr/include)

WARN    = -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Werror
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
OPT     = $(if $(filter 1,$(SAN)),-O1 -g $(SANFLAGS),-O2 -g)
# nothing reads floating-point exception flags or errno after a math call: without these the
# compiler may not turn a branchy float expression into vector blends (an exp polynomial's clamps
# stayed scalar in the AVX2 loops) nor inline sqrtf as vsqrtps
FPFLAGS = -fno-trapping-math -fno-math-errno
CFLAGS  += -std=c11 -D_GNU_SOURCE -fPIC -fopenmp $(OPT) $(FPFLAGS) $(WARN) -Icore -I$(LUA_INC) -I$(BLAS_INC) $(shell pkg-config --cflags cairo 2>/dev/null) $(shell pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
BLAS_LD = -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR)
LDLIBS  = $(if $(BLAS_DIR),$(BLAS_LD)) -lopenblas -lpng -ljpeg -lzstd -lcairo -lsqlite3 -lpq -lm -lpthread -ldl -fopenmp
LDFLAGS += $(if $(filter 1,$(SAN)),$(SANFLAGS))

CORE_SRC = $(wildcard core/*.c core/ops/*.c core/cpu/*.c core/io/*.c)

# ---- CUDA: kernels/*.cu by nvcc (sm_80 and sm_90 machine code, plus sm_90 PTX), or under
# EMU=1 by the C++ compiler against tests/cudaemu/ (which emulates cuDNN's convolutions; without
# the cuBLASLt file, whose table slot takes the CPU's GEMM there)
NVCC      ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
CUDA_ON   = $(if $(filter 1,$(EMU)),emu,$(if $(filter 0,$(CUDA)),,$(if $(NVCC),nvcc,)))
CU_SRC    = $(if $(filter emu,$(CUDA_ON)),$(filter-out kernels/gemm.cu,$(wildcard kernels/*.cu)),$(wildcard kernels/*.cu))
EMU_SRC   = $(filter-out tests/cudaemu/selftest.cpp,$(wildcard tests/cudaemu/*.cpp))
NVFLAGS   = -O2 -g -std=c++17 $(CUDA_ARCH) -Xcompiler -fPIC,-Wall,-Wextra,-Wshadow -Werror all-warnings -Icore
# (g++ ignores nvcc's #pragma unroll)
EMUFLAGS  = -std=c++17 -x c++ -DTCU_EMU -D_GNU_SOURCE -fPIC $(OPT) -Wall -Wextra -Wshadow -Werror -Wno-unknown-pragmas -Icore -Itests/cudaemu/include
# kernels/cuda_none.c stands in for the CUDA runtime when CUDA is off
CU_C_SRC  = $(if $(CUDA_ON),$(filter-out kernels/cuda_none.c,$(wildcard kernels/*.c)),kernels/cuda_none.c)
CORE_SRC += $(CU_C_SRC)
ifeq ($(CUDA_ON),nvcc)
  CFLAGS  += -DTC_HAVE_CUDA -I$(CUDA_HOME)/include
  CU_OBJ  = $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
  LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudnn -lcublasLt -lcudart_static -lrt -lstdc++
endif
ifeq ($(CUDA_ON),emu)
  CFLAGS  += -DTC_HAVE_CUDA -DTCU_EMU
  CU_OBJ  = $(CU_SRC:%.cu=$(BUILD)/obj/%.o) $(EMU_SRC:%.cpp=$(BUILD)/obj/%.o)
  LDLIBS  += -lstdc++
endif
BIND_SRC = $(filter-out lua/main.c,$(wildcard lua/*.c))
CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/obj/%.o) $(CU_OBJ)
BIND_OBJ = $(BIND_SRC:%.c=$(BUILD)/obj/%.o)
CTEST_SRC = $(wildcard tests/c/*.c)

# `make`, `make test` and `make demo` build on every core unless the command line gives -j
# (-j1 included). MAKEFLAGS shows -j only inside recipes, so they hand the build to a
# recursive make that gets JOBS there; `make all` itself builds as told.
NPROC ?= $(shell nproc 2>/dev/null || echo 2)
JOBS   = $(if $(filter -j%,$(MAKEFLAGS)),,-j$(NPROC))

.PHONY: default all deps probe test demo finetune-demo clean bench cudaemu-selftest
default:
	@$(MAKE) --no-print-directory $(JOBS) all

all: probe $(BUILD)/tocha $(BUILD)/tocha.so

# one line per dependency; a missing required one stops here with the package to install
probe:
	@lua=$$(test -f "$(LUA_A)" && test -f "$(LUA_INC)/lua.h" && echo found || echo missing); \
	 blas=$$(test -f "$(BLAS_INC)/cblas.h" && echo found || echo missing); \
	 nvcc=$$(test -n "$(NVCC)" && echo "found: the cuda device is built" || echo "missing: CPU only"); \
	 [ "$(CUDA)" = 0 ] && nvcc="disabled (CUDA=0)"; \
	 cublas=$$(ls $(CUDA_HOME)/lib64/libcublasLt.so* >/dev/null 2>&1 && echo found || echo missing); \
	 cudnn=$$(ls /usr/include/cudnn.h /usr/include/*/cudnn.h /usr/local/cuda/include/cudnn.h 2>/dev/null | grep -q . && echo found || echo missing); \
	 echo "  Lua 5.4:  $$lua"; echo "  OpenBLAS: $$blas"; \
	 [ "$(EMU)" = 1 ] && nvcc="not used (EMU=1: the cuda device runs on a CPU emulation)"; \
	 echo "  nvcc:     $$nvcc"; echo "  cuBLAS:   $$cublas"; echo "  cuDNN:    $$cudnn"; \
	 if [ $$lua = missing ]; then echo "error: Lua 5.4 not found: apt-get install liblua5.4-dev (or run scripts/deps.sh)"; exit 1; fi; \
	 if [ $$blas = missing ]; then echo "error: OpenBLAS not found: apt-get install libopenblas-openmp-dev (or run scripts/deps.sh)"; exit 1; fi

# every object records the headers it read (-MMD -MP): a changed header rebuilds what includes it
DEPFLAGS = -MMD -MP -MF $(@:.o=.d)

# the configuration (compilers, flags, which objects): objects and the archive depend on it, so
# switching one build folder between configurations (CUDA=0 after a CUDA build) rebuilds them
CONFIG = $(CC) $(CFLAGS) | $(CXX) $(EMUFLAGS) | $(NVCC) $(NVFLAGS) | $(CORE_OBJ)
$(BUILD)/config: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CONFIG)' | cmp -s - $@ || echo '$(CONFIG)' > $@

$(BUILD)/obj/%.o: %.c $(BUILD)/config
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu $(BUILD)/config
	@mkdir -p $(dir $@)
	@echo "  $(if $(filter emu,$(CUDA_ON)),C++ (emu),NVCC) $<"
	@$(if $(filter emu,$(CUDA_ON)),$(CXX) $(EMUFLAGS),$(NVCC) $(NVFLAGS)) $(DEPFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cpp $(BUILD)/config
	@mkdir -p $(dir $@)
	@echo "  C++   $<"
	@$(CXX) $(EMUFLAGS) $(DEPFLAGS) -c $< -o $@

ALL_OBJ = $(CORE_OBJ) $(BIND_OBJ) $(BUILD)/obj/lua/main.o $(CTEST_SRC:%.c=$(BUILD)/obj/%.o) \
          $(if $(filter emu,$(CUDA_ON)),$(BUILD)/obj/tests/cudaemu/selftest.o)
-include $(wildcard $(ALL_OBJ:.o=.d))
# an object built before it had a .d (an older build folder) is rebuilt once to get one
$(foreach o,$(ALL_OBJ),$(if $(wildcard $(o:.o=.d)),,$(eval $(o): FORCE)))
.PHONY: FORCE
FORCE:

$(BUILD)/libtocha.a: $(CORE_OBJ) $(BUILD)/config
	@echo "  AR    $@"
	@rm -f $@ && ar rcs $@ $(CORE_OBJ)

# the runner links Lua statically, so it starts on machines without liblua
$(BUILD)/tocha: $(BUILD)/obj/lua/main.o $(BIND_OBJ) $(BUILD)/libtocha.a
	@echo "  LINK  $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LUA_A) $(LDLIBS) -Wl,-E

# the module takes Lua's symbols from the interpreter that loads it
$(BUILD)/tocha.so: $(BIND_OBJ) $(BUILD)/libtocha.a
	@echo "  LINK  $@"
	@$(CC) $(LDFLAGS) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/test_c: $(CTEST_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/libtocha.a
	@echo "  LINK  $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# the emulator's own test (tests/cudaemu/selftest.cpp), run in both thread orders
ifeq ($(CUDA_ON),emu)
$(BUILD)/cudaemu-selftest: $(BUILD)/obj/tests/cudaemu/selftest.o $(patsubst %.cpp,$(BUILD)/obj/%.o,$(filter-out tests/cudaemu/gemm.cpp,$(EMU_SRC)))
	@echo "  LINK  $@"
	@$(CXX) $(LDFLAGS) -o $@ $^ -lm -lpthread

cudaemu-selftest: $(BUILD)/cudaemu-selftest
	@./$(BUILD)/cudaemu-selftest && TOCHA_EMU_ORDER=reverse ./$(BUILD)/cudaemu-selftest
else
cudaemu-selftest:
	@echo "the emulator's test needs EMU=1: make EMU=1 cudaemu-selftest"; exit 1
endif

deps:
	@sh scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory $(JOBS) all $(BUILD)/test_c
	@sh tests/check_simd.sh $(BUILD)/obj/core/cpu/*.o
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/tocha tests/run.lua $(BUILD)/test_c

demo: deps
	@$(MAKE) --no-print-directory $(JOBS) all
	./$(BUILD)/tocha experiments/t2i_shapes.lua --out runs/demo

finetune-demo: deps
	@$(MAKE) --no-print-directory $(JOBS) all
	./$(BUILD)/tocha experiments/finetune_demo.lua --out runs/finetune-demo

bench: all
	sh bench/run.sh

clean:
	rm -rf build build-san build-emu build-san-emu
