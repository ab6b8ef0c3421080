/* lsys.c: the operating-system calls, as Lua's loslib.c: T._sys holds what the library
 * needs and Lua lacks (directories, fsync, isatty, a wall clock with a fraction, the host
 * name), so no Lua file shells out for them; T.clock and the thread count are public.
 * Calls that fail for ordinary reasons return nil, message; the Lua side raises. */
#include "ltocha.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

/* ---- T: the clock and the threads -------------------------------------------------------- */
static int push_seconds(lua_State *L, clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* T.clock(): seconds from a monotonic clock (wall time, unlike os.clock's CPU time) */
static int t_clock(lua_State *L) { return push_seconds(L, CLOCK_MONOTONIC); }

/* T.set_num_threads(n): threads for elementwise kernels (OpenMP) and GEMM (OpenBLAS) */
static int t_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "number of threads must be between 1 and 1024");
    omp_set_num_threads((int)n);
    openblas_set_num_threads((int)n);
    return 0;
}

static int t_get_num_threads(lua_State *L) {
    lua_pushinteger(L, omp_get_max_threads());
    return 1;
}

const luaL_Reg tcl_proc_funcs[] = {
    {"clock", t_clock}, {"set_num_threads", t_set_num_threads}, {"get_num_threads", t_get_num_threads},
    {NULL, NULL},
};

/* ---- T._sys: directories and files -------------------------------------------------------- */
/* nil, "<what> <path>: <strerror>"; errno is read before anything can change it */
static int fail(lua_State *L, const char *what, const char *path) {
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
    return 2;
}

/* mkdir(path): makes one directory that must not exist yet (two runs never share one);
 * true, or nil, message, and "exists" when that was the reason */
static int s_mkdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0777) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    int exists = errno == EEXIST;
    fail(L, "cannot create directory", path);
    if (!exists) return 2;
    lua_pushliteral(L, "exists");
    return 3;
}

/* mkdirs(path): mkdir -p; true when the directory exists afterwards, or nil, message (without
 * the "log: " that core's message starts with: the caller names itself) */
static int s_mkdirs(lua_State *L) {
    if (tc_mkdirs(luaL_checkstring(L, 1)) == TC_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    const char *msg = tc_last_error();
    lua_pushnil(L);
    lua_pushstring(L, strncmp(msg, "log: ", 5) == 0 ? msg + 5 : msg);
    return 2;
}

/* the open directory lives in a userdata, so a memory error while listing still closes it */
static int dir_gc(lua_State *L) {
    DIR **d = lua_touserdata(L, 1);
    if (*d) closedir(*d);
    *d = NULL;
    return 0;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* listdir(path) -> {names} without . and .., unsorted, directories ending in "/" */
static int s_listdir(lua_State *L) {
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
        int dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) { /* a link counts as what it points to */
            lua_pushfstring(L, "%s/%s", path, e->d_name);
            dir = is_dir(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        if (dir) lua_pushfstring(L, "%s/", e->d_name);
        else lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++i);
    }
    closedir(*d);
    *d = NULL;
    return 1;
}

/* isdir(path) -> boolean */
static int s_isdir(lua_State *L) {
    lua_pushboolean(L, is_dir(luaL_checkstring(L, 1)));
    return 1;
}

/* fsync(path): flushes a file's (or a directory's entries') data to disk; true, or nil, message */
static int s_fsync(lua_State *L) {
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

/* mkdtemp(prefix): a new, empty directory prefix.XXXXXX (made private to the user); its
 * path, or nil, message */
static int s_mkdtemp(lua_State *L) {
    size_t n;
    const char *prefix = luaL_checklstring(L, 1, &n);
    char path[PATH_MAX];
    luaL_argcheck(L, n + 8 <= sizeof path, 1, "path too long");
    snprintf(path, sizeof path, "%s.XXXXXX", prefix);
    if (!mkdtemp(path)) return fail(L, "cannot create a directory from", prefix);
    lua_pushstring(L, path);
    return 1;
}

/* ---- T._sys: the process ------------------------------------------------------------------- */
/* isatty(file or fd): whether a Lua file (io.stdout) or descriptor is a terminal */
static int s_isatty(lua_State *L) {
    int fd;
    if (lua_type(L, 1) == LUA_TNUMBER) fd = (int)luaL_checkinteger(L, 1);
    else {
        luaL_Stream *s = luaL_checkudata(L, 1, LUA_FILEHANDLE);
        if (!s->closef || !s->f) return luaL_error(L, "isatty: the file is closed");
        fd = fileno(s->f);
    }
    lua_pushboolean(L, isatty(fd));
    return 1;
}

/* now(): seconds since the epoch, with a fraction (os.time has whole seconds) */
static int s_now(lua_State *L) { return push_seconds(L, CLOCK_REALTIME); }

/* hostname() -> this machine's name, or nil, message */
static int s_hostname(lua_State *L) {
    char name[HOST_NAME_MAX + 1];
    if (gethostname(name, sizeof name) != 0) return fail(L, "cannot read", "the host name");
    name[HOST_NAME_MAX] = 0;
    lua_pushstring(L, name);
    return 1;
}

const luaL_Reg tcl_sys_funcs[] = {
    {"mkdir", s_mkdir},     {"mkdirs", s_mkdirs}, {"listdir", s_listdir}, {"isdir", s_isdir},
    {"fsync", s_fsync},     {"mkdtemp", s_mkdtemp}, {"isatty", s_isatty}, {"now", s_now},
    {"hostname", s_hostname}, {NULL, NULL},
};
