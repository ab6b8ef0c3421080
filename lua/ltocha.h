/* ltocha.h: what the binding files share. The binding is thin: check Lua arguments,
 * call a tc_* function, push the result. Errors travel one road: a tc_* failure becomes
 * luaL_error with tc_last_error(). Dims and positions are 1-based in Lua, 0-based in C. */
#ifndef LTOCHA_H
#define LTOCHA_H

#include <lauxlib.h>
#include <lua.h>

#include "tocha.h"

#define TCL_TENSOR "tocha.Tensor"

/* ---- module state and registration (laux.c) ------------------------------------------- */
/* module state, shared by every binding function as upvalue 1 */
typedef struct {
    size_t gc_mark;      /* tc_mem_allocated_total() at the last collection */
    size_t gc_in_use;    /* tc_mem_in_use() after the last full collection (or less, since) */
    unsigned gc_backoff; /* the next full collection waits for 2^gc_backoff times the usual growth */
    lua_State *L;        /* the thread running backward, for Lua-written derivatives */
} tcl_state;
tcl_state *tcl_getstate(lua_State *L);
void tcl_newstate(lua_State *L);  /* makes the state (once, in luaopen_tocha) */
void tcl_pushstate(lua_State *L); /* pushes it, to make a closure over it */
/* registers fns into the table on top of the stack, each with the module state as upvalue */
void tcl_register(lua_State *L, const luaL_Reg *fns);
/* pushes a table of integers {k = v, ...} (the allocators' memory_stats) */
typedef struct { const char *k; lua_Integer v; } tcl_count;
void tcl_push_counts(lua_State *L, const tcl_count *counts, int n);

/* ---- tensors on the Lua stack (laux.c) ---------------------------------------------------- */
tc_tensor *tcl_check(lua_State *L, int idx);  /* raises unless a tensor */
tc_tensor *tcl_opt(lua_State *L, int idx);    /* NULL for nil or none */
tc_tensor *tcl_test(lua_State *L, int idx);   /* NULL unless a tensor */
tc_tensor **tcl_toslot(lua_State *L, int idx); /* a tensor userdata's slot (*slot NULL: released), or NULL */
/* Result protocol: push an empty slot first, then fill it, then finish:
 *   tc_tensor **slot = tcl_slot(L); *slot = tc_add(...); return tcl_done(L, *slot);
 * so no tensor is ever held by C when an error is raised. */
tc_tensor **tcl_slot(lua_State *L);
int tcl_done(lua_State *L, tc_tensor *t);      /* raises tc_last_error() if t is NULL; returns 1 */
void tcl_push(lua_State *L, tc_tensor *t);     /* pushes an owned tensor (raises on NULL) */
/* tensor or number at idx; numbers become 0-d tensors pushed on the stack (like's dtype
 * for floats, f32 for a number meeting an integer tensor when non-integral) */
tc_tensor *tcl_operand(lua_State *L, int idx, const tc_tensor *like);
int tcl_error(lua_State *L);                   /* raises tc_last_error() */
void tcl_check_rc(lua_State *L, int rc);       /* raises unless TC_OK */
int tcl_release(lua_State *L);                 /* releases the tensor at 1 (__gc, __close) */
void tcl_newtensormeta(lua_State *L);          /* pushes the tensor metatable, made once */

/* ---- arguments (laux.c) --------------------------------------------------------------- */
int tcl_checkdim(lua_State *L, int idx);       /* 1-based (or negative) Lua dim -> C dim */
int tcl_optdim(lua_State *L, int idx, int def);
/* a shape given as a table {2, 3} or as numbers from idx on; returns ndim */
int tcl_checkshape(lua_State *L, int idx, int64_t *shape);
/* dims given as a number or a table of numbers; returns how many (0 for nil) */
int tcl_optdims(lua_State *L, int idx, int *dims);
tc_dtype tcl_checkdtype(lua_State *L, int idx);
tc_device tcl_checkdevice(lua_State *L, int idx);
/* fields of a table at idx that must be there (a parameter group's lr): raise naming the
 * field otherwise; a tensor read so stays alive in the table */
double tcl_getnumber(lua_State *L, int idx, const char *k);
lua_Integer tcl_getinteger(lua_State *L, int idx, const char *k);
tc_tensor *tcl_gettensor(lua_State *L, int idx, const char *k);
void tcl_getpair(lua_State *L, int idx, const char *k, double *a, double *b);
/* fields of an options table at idx (absent table or field: the default) */
double tcl_optnumber(lua_State *L, int idx, const char *k, double def);
int tcl_optbool(lua_State *L, int idx, const char *k, int def);
tc_tensor *tcl_opttensor(lua_State *L, int idx, const char *k); /* pushed on the stack when present */
/* reads dtype/device from an options table (defaults f32, cpu) */
void tcl_optdtype_device(lua_State *L, int idx, tc_dtype *dt, tc_device *dev);

/* results of calls that fail for ordinary reasons (I/O): true, or nil and tc_last_error() */
int tcl_fail(lua_State *L);
int tcl_result(lua_State *L, int rc);

/* ---- the families luaopen_tocha opens (ltocha.c lists them): functions, tensor methods,
 * and what a family sets up once, called with its table on top ------------------------------ */
void tcl_open_tensor_type(lua_State *L); /* lmeta.c: the metatable; the methods table on top */
extern const luaL_Reg tcl_tensor_funcs[], tcl_tensor_methods[];     /* ltensor.c */
extern const luaL_Reg tcl_autograd_funcs[], tcl_autograd_methods[]; /* lautograd.c */
extern const luaL_Reg tcl_index_funcs[], tcl_index_methods[];       /* lindex.c */
extern const luaL_Reg tcl_io_funcs[], tcl_io_methods[]; /* lio.c: save, load, frombytes, tobytes */
extern const luaL_Reg tcl_proc_funcs[];   /* lsys.c: clock, threads */
extern const luaL_Reg tcl_sys_funcs[];    /* lsys.c: T._sys, the operating system's calls */
extern const luaL_Reg tcl_process_funcs[]; /* lsys.c: T._sys too: spawn, fork, wait, kill, signals */
extern const luaL_Reg tcl_db_funcs[];     /* ldb.c: T._db: SQLite and PostgreSQL connections */
extern const luaL_Reg tcl_nn_funcs[];     /* lnn.c: T._nn: conv, pools, interpolate, pad */
extern const luaL_Reg tcl_norm_funcs[];   /* lnorm.c: T._nn: softmax, losses, norms, dropout, attention */
extern const luaL_Reg tcl_optim_funcs[];  /* loptim.c: T._optim: fused optimizer steps */
extern const luaL_Reg tcl_image_funcs[];  /* limage.c: T._image: codecs, transforms, loader */
extern const luaL_Reg tcl_log_funcs[];    /* llog.c: T._log: log files, TensorBoard writer, canvas */
void tcl_open_log(lua_State *L);          /*   its classes */
extern const luaL_Reg tcl_shapes_funcs[]; /* lshapes.c: T._shapes: synthetic shapes */
extern const luaL_Reg tcl_linalg_funcs[]; /* llinalg.c: T.linalg: eigh, eigvalsh */
extern const luaL_Reg tcl_cuda_funcs[];   /* lcuda.c: T.cuda */
void tcl_open_cuda(lua_State *L);         /*   the out-of-memory hook */
extern const luaL_Reg tcl_backends_funcs[]; /* lcuda.c: T.backends */
extern const luaL_Reg tcl_cpu_funcs[];    /* lmemory.c: T.cpu, the CPU allocator */

#endif
