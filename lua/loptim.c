/* loptim.c: binding for the fused optimizer updates, the EMA blend and the total norm
 * (T._optim.*, called by lua/tocha/optim.lua), and the few file-system calls checkpoints
 * need that Lua lacks: mkdir, listdir and fsync (for atomic, durable saves). */
#include "ltocha.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- updates ------------------------------------------------------------------------------ */
/* sgd_step(p, g, buf|nil, lr, momentum, dampening, weight_decay, nesterov, first) */
static int o_sgd_step(lua_State *L) {
    tc_tensor *p = tcl_check(L, 1), *g = tcl_check(L, 2), *buf = tcl_opt(L, 3);
    tc_sgd_opts o = {
        .lr = luaL_checknumber(L, 4),
        .momentum = luaL_checknumber(L, 5),
        .dampening = luaL_checknumber(L, 6),
        .weight_decay = luaL_checknumber(L, 7),
        .nesterov = lua_toboolean(L, 8),
        .first = lua_toboolean(L, 9),
    };
    tcl_check_rc(L, tc_sgd_step_(p, g, buf, &o));
    return 0;
}

/* adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq|nil, step, lr, beta1, beta2, eps,
 *           weight_decay, amsgrad, decoupled) */
static int o_adam_step(lua_State *L) {
    tc_tensor *p = tcl_check(L, 1), *g = tcl_check(L, 2), *m = tcl_check(L, 3), *v = tcl_check(L, 4);
    tc_tensor *vmax = tcl_opt(L, 5);
    tc_adam_opts o = {
        .step = luaL_checkinteger(L, 6),
        .lr = luaL_checknumber(L, 7),
        .beta1 = luaL_checknumber(L, 8),
        .beta2 = luaL_checknumber(L, 9),
        .eps = luaL_checknumber(L, 10),
        .weight_decay = luaL_checknumber(L, 11),
        .amsgrad = lua_toboolean(L, 12),
        .decoupled = lua_toboolean(L, 13),
    };
    tcl_check_rc(L, tc_adam_step_(p, g, m, v, vmax, &o));
    return 0;
}

/* ema_update(shadow, param, decay) */
static int o_ema_update(lua_State *L) {
    tc_tensor *s = tcl_check(L, 1), *p = tcl_check(L, 2);
    tcl_check_rc(L, tc_ema_update_(s, p, luaL_checknumber(L, 3)));
    return 0;
}

/* total_norm({tensors}, p) -> number */
static int o_total_norm(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double p = luaL_optnumber(L, 2, 2);
    int n = (int)luaL_len(L, 1);
    /* the pointer array is a userdata, so an error below frees it */
    tc_tensor **xs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *xs, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        xs[i] = tcl_test(L, -1);
        if (!xs[i]) return luaL_error(L, "total_norm: element %d is not a tensor", i + 1);
        lua_pop(L, 1); /* the table keeps it alive */
    }
    double out;
    tcl_check_rc(L, tc_total_norm(n, xs, p, &out));
    lua_pushnumber(L, out);
    return 1;
}

/* ---- file system ------------------------------------------------------------------------------ */
/* I/O fails for ordinary reasons: these return nil, message instead of raising */
static int fail(lua_State *L, const char *what, const char *path) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(errno));
    return 2;
}

/* mkdir(path): true when the directory exists afterwards */
static int o_mkdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (mkdir(path, 0777) != 0 && !(errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)))
        return fail(L, "cannot create directory", path);
    lua_pushboolean(L, 1);
    return 1;
}

/* the open directory lives in a userdata, so a memory error while listing still closes it */
static int dir_gc(lua_State *L) {
    DIR **d = lua_touserdata(L, 1);
    if (*d) closedir(*d);
    *d = NULL;
    return 0;
}

/* listdir(path) -> {names} (without . and ..), unsorted */
static int o_listdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR **d = lua_newuserdatauv(L, sizeof *d, 0);
    *d = NULL;
    if (luaL_newmetatable(L, "tocha.Dir")) {
        lua_pushcfunction(L, dir_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (!(*d = opendir(path))) return fail(L, "cannot list", path);
    lua_newtable(L);
    int i = 0;
    for (struct dirent *e; (e = readdir(*d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++i);
    }
    closedir(*d);
    *d = NULL;
    return 1;
}

/* isdir(path) -> boolean */
static int o_isdir(lua_State *L) {
    struct stat st;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
    return 1;
}

/* fsync(path): flushes a file's (or a directory's entries') data to disk */
static int o_fsync(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(L, "cannot open", path);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    errno = err;
    if (rc != 0) return fail(L, "cannot fsync", path);
    lua_pushboolean(L, 1);
    return 1;
}

const luaL_Reg tcl_optim_funcs[] = {
    {"sgd_step", o_sgd_step},       {"adam_step", o_adam_step}, {"ema_update", o_ema_update},
    {"total_norm", o_total_norm},   {"mkdir", o_mkdir},         {"listdir", o_listdir},
    {"isdir", o_isdir},             {"fsync", o_fsync},         {NULL, NULL},
};
