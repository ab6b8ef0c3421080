"""t2i_profile.py STACKS OUT STEPS THREADS: groups the `perf script` stacks of bench/t2i.lua's
timed steps (bench/t2i_profile.sh records them) and prints a table of CPU ms per step.

Each sample goes to the first thing below the Lua interpreter on its stack: in a backward, the
node's derivative function that run_backward called (conv2d_backward, linear_backward, ...) or
the engine's own work (accumulating gradients, freeing the graph); in a forward, the binding
function Lua called (nn_conv2d, m_linear, ...); the collector when Lua's GC is on the stack."""
import collections
import subprocess
import sys

# binding / derivative function -> op kind
KINDS = {
    "convolution": ["nn_conv2d", "conv2d_backward"],
    "linear (GEMM)": ["m_linear", "linear_backward", "bmm_backward", "m_matmul"],
    "attention (sdpa)": ["n_sdpa", "sdpa_backward"],
    "norms (group, layer)": ["n_group_norm", "n_layer_norm", "norm_backward"],
    "activations (silu, gelu, geglu, bias + act)": ["m_silu", "n_bias_act", "bias_act_backward", "unary_backward",
                                                   "n_geglu", "geglu_backward", "m_sin", "m_cos", "m_exp"],
    "elementwise and reductions": ["tc_binary", "tc_binary_", "binary_backward", "reduction", "reduce_backward",
                                   "tc_unary_s", "tc_sum_to"],
    "the loss (mse, weighted mean)": ["n_pointwise_loss", "pointwise_loss_backward"],
    "copies: reshape, contiguous, cat, upsample, embedding": [
        "shaped", "reshape_backward", "t_cat", "m_contiguous", "nn_interpolate", "narrow_backward", "cat_backward",
        "embedding_backward", "index_select_backward", "t_embedding", "tensor_index", "m_transpose", "m_permute",
        "interp_backward", "permute_backward", "m_narrow", "t_index_select"],
    "optimizer (AdamW)": ["adam_step", "adam_multi"],
    "autograd engine (graph walk, gradient sums, frees)": ["accumulate", "accumulate_grad", "collect",
                                                           "check_versions", "node_free_state", "tc_node_release",
                                                           "tc_tensor_release", "run_backward"],
    "noise and timesteps (randn_like, randint)": ["like", "t_randint", "t_rand", "t_randn"],
}
KIND_OF = {fn: kind for kind, fns in KINDS.items() for fn in fns}
PHASELESS = ("optimizer", "autograd", "noise", "Lua")


def lua_symbols():
    """the Lua core's functions (the interpreter, not tocha's binding)"""
    out = subprocess.run("nm /usr/lib/x86_64-linux-gnu/liblua5.4.a 2>/dev/null", shell=True, capture_output=True,
                         text=True).stdout
    return {f[2] for f in (l.split() for l in out.splitlines()) if len(f) == 3 and f[1] in "Tt"}


def samples(path):
    """(tid, [symbols leaf first]) per sample"""
    tid, stack = None, None
    for line in open(path):
        if not line.strip():
            if stack:
                yield tid, stack
            stack = None
        elif not line.startswith("\t"):  # "tid period": a sample's header
            tid, stack = line.split()[0], []
        elif stack is not None:
            f = line.split(None, 2)
            if len(f) >= 2:
                stack.append((f[1], f[2] if len(f) > 2 else ""))
    if stack:
        yield tid, stack


def classify(stack, lua):
    syms = [s for s, _ in reversed(stack)]  # root first
    if any(s.startswith("luaC_") for s in syms):
        return "Lua collector (and the tensors it frees)", "-"
    if "run_backward" in syms:
        i = syms.index("run_backward")
        fn = syms[i + 1] if i + 1 < len(syms) else "run_backward"
        if fn == "run_backward" and any("interp" in s for s in syms):  # upsample's backward, called as a tail
            return KIND_OF["interp_backward"], "bwd"
        return KIND_OF.get(fn, "other: " + fn), "bwd"
    for s in syms:
        if not (s in lua or s.startswith("lua") or s in ("main", "docall", "run_script", "_start", "[unknown]")
                or s.startswith("__libc_start")):
            return KIND_OF.get(s, "other: " + s), "fwd"
    return "Lua interpreter", "-"


def main():
    path, out, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    lua = lua_symbols()
    rows, serial, per_tid, spin = collections.Counter(), collections.Counter(), collections.Counter(), 0
    all_samples = list(samples(path))
    main_tid = next((t for t, st in all_samples if any(s == "main" for s, _ in st)), None)
    for tid, st in all_samples:
        per_tid[tid] += 1
        if "libgomp" in st[0][1]:  # a thread waiting for work (spinning) or starting a region
            spin += 1
            continue
        kind, phase = classify(st, lua)
        if kind.startswith(PHASELESS):
            phase = "-"
        rows[(kind, phase)] += 1
        syms = [s for s, _ in st]
        if tid == main_tid and not any("_omp_fn" in s or s == "GOMP_parallel" or "blas_thread" in s for s in syms):
            serial[(kind, phase)] += 1
    ms = lambda n: n / steps  # 1000 samples per second: one sample is 1 ms of CPU over all steps
    total = sum(rows.values())
    print(open(out).read().strip())
    print("%d threads, %d steps: %.1f ms of CPU per step working, %.1f ms waiting in OpenMP"
          % (threads, steps, ms(total), ms(spin)))
    print("%-58s %5s %8s %6s" % ("kind", "phase", "ms/step", "share"))
    for (kind, phase), n in sorted(rows.items(), key=lambda kv: -kv[1]):
        if ms(n) >= 0.05:
            print("%-58s %5s %8.1f %5.1f%%" % (kind[:58], phase, ms(n), 100.0 * n / total))
    if threads > 1:
        print("\nthe main thread outside parallel regions (runs while the others wait): %.1f ms per step"
              % ms(sum(serial.values())))
        for (kind, phase), n in serial.most_common(12):
            print("%-58s %5s %8.1f" % (kind[:58], phase, ms(n)))


if __name__ == "__main__":
    main()
