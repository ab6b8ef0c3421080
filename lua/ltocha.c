/* ltocha.c: luaopen_tocha, the opener, as Lua's linit.c: every family of the binding is
 * opened the same way from one table (its functions into T or into a table T.<name>, its
 * tensor methods, and what it sets up once), then what the Lua half (lua/tocha/core.lua)
 * returns joins T. It also puts the Lua library (lua/tocha/) on package.path. */
#include "ltocha.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- the families ------------------------------------------------------------------------- */
typedef struct {
    const char *name;          /* the table T.<name> it fills; NULL: T itself */
    const luaL_Reg *funcs;     /* its functions */
    const luaL_Reg *methods;   /* the tensor methods it adds, or NULL */
    void (*open)(lua_State *L); /* what it sets up once (classes, hooks), or NULL */
} family;

static const family families[] = {
    {NULL, tcl_tensor_funcs, tcl_tensor_methods, NULL},       /* ltensor.c */
    {NULL, tcl_autograd_funcs, tcl_autograd_methods, NULL},   /* lautograd.c */
    {NULL, tcl_index_funcs, tcl_index_methods, NULL},         /* lindex.c */
    {NULL, tcl_io_funcs, tcl_io_methods, NULL},               /* lio.c */
    {NULL, tcl_proc_funcs, NULL, NULL},                       /* lsys.c */
    {"_sys", tcl_sys_funcs, NULL, NULL},                      /* lsys.c */
    {"_sys", tcl_process_funcs, NULL, NULL},                  /* lsys.c */
    {"_db", tcl_db_funcs, NULL, NULL},                        /* ldb.c */
    {"_nn", tcl_nn_funcs, NULL, NULL},                        /* lnn.c */
    {"_nn", tcl_norm_funcs, NULL, NULL},                      /* lnorm.c */
    {"_optim", tcl_optim_funcs, NULL, NULL},                  /* loptim.c */
    {"_image", tcl_image_funcs, NULL, NULL},                  /* limage.c */
    {"_log", tcl_log_funcs, NULL, tcl_open_log},              /* llog.c */
    {"_shapes", tcl_shapes_funcs, NULL, NULL},                /* lshapes.c */
    {"linalg", tcl_linalg_funcs, NULL, NULL},                 /* llinalg.c */
    {"cuda", tcl_cuda_funcs, NULL, tcl_open_cuda},            /* lcuda.c */
    {"backends", tcl_backends_funcs, NULL, NULL},             /* lcuda.c */
    {"cpu", tcl_cpu_funcs, NULL, NULL},                       /* lmemory.c */
};

/* opens one family into T (at index t) and the methods table (at index m) */
static void open_family(lua_State *L, const family *f, int t, int m) {
    if (f->name) luaL_getsubtable(L, t, f->name);
    else lua_pushvalue(L, t);
    tcl_register(L, f->funcs);
    if (f->open) f->open(L);
    lua_pop(L, 1);
    if (f->methods) {
        lua_pushvalue(L, m);
        tcl_register(L, f->methods);
        lua_pop(L, 1);
    }
}

/* ---- the Lua library's path ------------------------------------------------------------------ */
/* the repository root, two levels above this binary (build/tocha or build/tocha.so) */
static void push_root(lua_State *L) {
    Dl_info info;
    char path[PATH_MAX];
    const char *self = dladdr((void *)push_root, &info) && info.dli_fname ? info.dli_fname : "";
    size_t n = strlen(self);
    /* in a shared module dladdr names the .so; in the runner, /proc/self/exe is the binary */
    if (!(n > 3 && strcmp(self + n - 3, ".so") == 0)) self = "/proc/self/exe";
    if (!realpath(self, path)) { lua_pushnil(L); return; }
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(path, '/');
        if (slash) *slash = 0;
    }
    lua_pushstring(L, path);
}

static void add_library_path(lua_State *L) {
    push_root(L);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
    const char *root = lua_tostring(L, -1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s", root, root, old ? old : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 3);
}

/* ---- the module ---------------------------------------------------------------------------- */
int luaopen_tocha(lua_State *L);
int luaopen_tocha(lua_State *L) {
    lua_gc(L, LUA_GCGEN, 0, 0); /* young collections free the temporaries (laux.c's pacing) */
    tcl_newstate(L);
    add_library_path(L);
    lua_newtable(L); /* T */
    int t = lua_gettop(L);
    lua_newtable(L); /* the tensor methods */
    int m = lua_gettop(L);
    tcl_open_tensor_type(L);
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) open_family(L, &families[i], t, m);
    lua_setfield(L, t, "_methods");

    /* the Lua half (printing, no_grad, checkpoint, ...): its require "tocha" finds T, and
     * the table it returns joins T */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, t);
    lua_setfield(L, -2, "tocha");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "tocha.core");
    lua_call(L, 1, 1);
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pushvalue(L, -2); /* key */
        lua_insert(L, -2);
        lua_rawset(L, t);
    }
    lua_pop(L, 1);
    return 1;
}
