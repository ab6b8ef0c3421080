# tocha: one build. CPU always; CUDA when nvcc is found (CUDA=0 forces it off).
#   make          build/tocha (the runner) and build/tocha.so (for stock lua5.4)
#   make test     C and Lua tests, ending with "N passed, N failed"
#   make demo     the default experiment: text-to-image on captioned shapes (about 10 minutes)
#   make SAN=1    AddressSanitizer + UndefinedBehaviorSanitizer build (in build-san/)

CC      ?= cc
CUDA    ?= 1
SAN     ?= 0
BUILD   ?= $(if $(filter 1,$(SAN)),build-san,build)
LUA_INC ?= $(firstword $(wildcard /usr/include/lua5.4) /usr/include)
LUA_A   ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/liblua5.4.a /usr/lib/*/liblua5.4.a /usr/local/lib/liblua.a))
# OpenBLAS built on OpenMP shares one thread pool with tocha's own kernels; the pthread
# build's threads and OpenMP's spinning ones would fight over the cores
BLAS_DIR ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/x86_64-linux-gnu/openblas-pthread))
BLAS_INC ?= $(firstword $(wildcard /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas) /usr/include)

WARN    = -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Werror
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
OPT     = $(if $(filter 1,$(SAN)),-O1 -g $(SANFLAGS),-O2 -g)
CFLAGS  += -std=c11 -D_GNU_SOURCE -fPIC -fopenmp $(OPT) $(WARN) -Icore -I$(LUA_INC) -I$(BLAS_INC) $(shell pkg-config --cflags cairo 2>/dev/null)
BLAS_LD = -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR)
LDLIBS  = $(if $(BLAS_DIR),$(BLAS_LD)) -lopenblas -lpng -ljpeg -lzstd -lcairo -lm -lpthread -ldl -fopenmp
LDFLAGS += $(if $(filter 1,$(SAN)),$(SANFLAGS))

CORE_SRC = $(wildcard core/*.c core/ops/*.c core/cpu/*.c core/io/*.c)
BIND_SRC = $(filter-out lua/main.c,$(wildcard lua/*.c))
CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
BIND_OBJ = $(BIND_SRC:%.c=$(BUILD)/obj/%.o)
CTEST_SRC = $(wildcard tests/c/*.c)

.PHONY: all deps probe test demo clean bench
all: probe $(BUILD)/tocha $(BUILD)/tocha.so

# one line per dependency; a missing required one stops here with the package to install
probe:
	@lua=$$(test -f "$(LUA_A)" && test -f "$(LUA_INC)/lua.h" && echo found || echo missing); \
	 blas=$$(test -f "$(BLAS_INC)/cblas.h" && echo found || echo missing); \
	 nvcc=$$(command -v nvcc >/dev/null 2>&1 && echo found || echo missing); \
	 [ "$(CUDA)" = 0 ] && nvcc="disabled (CUDA=0)"; \
	 cublas=$$(ls /usr/local/cuda/lib64/libcublas.so* >/dev/null 2>&1 && echo found || echo missing); \
	 cudnn=$$(ls /usr/include/cudnn.h /usr/include/*/cudnn.h /usr/local/cuda/include/cudnn.h 2>/dev/null | grep -q . && echo found || echo missing); \
	 echo "  Lua 5.4:  $$lua"; echo "  OpenBLAS: $$blas"; \
	 echo "  nvcc:     $$nvcc (the cuda device is not written yet: CPU only)"; echo "  cuBLAS:   $$cublas"; echo "  cuDNN:    $$cudnn"; \
	 if [ $$lua = missing ]; then echo "error: Lua 5.4 not found: apt-get install liblua5.4-dev (or run scripts/deps.sh)"; exit 1; fi; \
	 if [ $$blas = missing ]; then echo "error: OpenBLAS not found: apt-get install libopenblas-openmp-dev (or run scripts/deps.sh)"; exit 1; fi

$(BUILD)/obj/%.o: %.c $(wildcard core/*.h core/cpu/*.h lua/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libtocha.a: $(CORE_OBJ)
	@echo "  AR    $@"
	@rm -f $@ && ar rcs $@ $^

# the runner links Lua statically, so it starts on machines without liblua
$(BUILD)/tocha: $(BUILD)/obj/lua/main.o $(BIND_OBJ) $(BUILD)/libtocha.a
	@echo "  LINK  $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LUA_A) $(LDLIBS) -Wl,-E

# the module takes Lua's symbols from the interpreter that loads it
$(BUILD)/tocha.so: $(BIND_OBJ) $(BUILD)/libtocha.a
	@echo "  LINK  $@"
	@$(CC) $(LDFLAGS) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/test_c: $(CTEST_SRC) $(BUILD)/libtocha.a
	@echo "  LINK  $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CTEST_SRC) $(BUILD)/libtocha.a $(LDLIBS)

deps:
	@sh scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory all $(BUILD)/test_c
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/tocha tests/run.lua $(BUILD)/test_c

demo: deps
	@$(MAKE) --no-print-directory all
	./$(BUILD)/tocha experiments/t2i_shapes.lua --out runs/demo

bench: all
	sh bench/run.sh

clean:
	rm -rf build build-san
