/* main.c: build/tocha, a runner like `lua` with the engine built in.
 *   tocha script.lua args...   runs the script with `arg` filled as lua does, its directory
 *                              first on package.path
 *   tocha -e 'code'            runs a chunk
 *   tocha <command> args...    runs lua/tocha/cli/<command>.lua (e.g. tocha pack, tocha plot)
 *   tocha                      a REPL: expressions print their values
 * `require "tocha"` resolves to the built-in module; the Lua library is found next to
 * the binary (../lua), so the runner works from any directory. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int luaopen_tocha(lua_State *L);

/* the message handler: a traceback, and the message kept in the registry ("tocha.error") for
 * the finalizers that run when the state closes (tocha.run marks a run that failed) */
static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_pushstring(L, msg);
    lua_setfield(L, LUA_REGISTRYINDEX, "tocha.error");
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int report(lua_State *L, int status) {
    if (status != LUA_OK) {
        fprintf(stderr, "tocha: %s\n", lua_tostring(L, -1));
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

/* arg[0] = script, arg[1..] = its arguments, arg[-1] = the runner */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* the script's own directory goes first on package.path, so that require "my_sampler" finds
 * my_sampler.lua beside the script from any working directory (as Python's sys.path[0]) */
static void add_script_dir(lua_State *L, const char *script) {
    const char *slash = strrchr(script, '/');
    if (!slash) return; /* in the working directory: "./?.lua" is on the path already */
    lua_getglobal(L, "package");
    lua_pushlstring(L, script, (size_t)(slash - script));
    const char *dir = lua_tostring(L, -1);
    lua_getfield(L, -2, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -4, "path");
    lua_pop(L, 3);
}

static int run_script(lua_State *L, char **argv, int argc, int script) {
    create_arg_table(L, argv, argc, script);
    add_script_dir(L, argv[script]);
    int status = luaL_loadfile(L, argv[script]);
    if (status == LUA_OK) {
        int n = argc - script - 1;
        luaL_checkstack(L, n, "too many arguments");
        for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
        status = docall(L, n, LUA_MULTRET);
    }
    return report(L, status);
}

/* a word that is not a file names a command: lua/tocha/cli/<word>.lua returns
 * function(args) taking the remaining arguments as a list of strings */
static int is_command(const char *s) {
    if (!*s || access(s, F_OK) == 0) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '_')) return 0;
    return 1;
}

/* returns the command's exit status, or -1 when it raised */
static int run_command(lua_State *L, char **argv, int argc) {
    create_arg_table(L, argv, argc, 1);
    lua_getglobal(L, "require");
    lua_pushfstring(L, "tocha.cli.%s", argv[1]);
    int status = docall(L, 1, 1);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg && strstr(msg, "not found")) {
            lua_pop(L, 1);
            fprintf(stderr, "tocha: '%s' is neither a script nor a command (tocha pack, tocha plot, ...)\n", argv[1]);
            return -1;
        }
        report(L, status);
        return -1;
    }
    lua_createtable(L, argc - 2, 0);
    for (int i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    status = report(L, docall(L, 1, 1));
    if (status != LUA_OK) return -1;
    int code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0; /* the command's exit status */
    lua_pop(L, 1);
    return code;
}

/* the REPL: try "return <line>" first so expressions print */
static void repl(lua_State *L) {
    char line[4096];
    printf("tocha (Lua 5.4): T = require \"tocha\" is loaded; Ctrl-D exits\n");
    if (luaL_dostring(L, "T = require 'tocha'") != LUA_OK) report(L, LUA_ERRRUN);
    for (;;) {
        if (isatty(0)) { printf("> "); fflush(stdout); }
        if (!fgets(line, sizeof line, stdin)) break;
        lua_settop(L, 0);
        lua_pushfstring(L, "return %s", line);
        if (luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin") != LUA_OK) {
            lua_pop(L, 2);
            if (luaL_loadbuffer(L, line, strlen(line), "=stdin") != LUA_OK) { report(L, LUA_ERRSYNTAX); continue; }
        } else lua_remove(L, 1);
        if (report(L, docall(L, 0, LUA_MULTRET)) != LUA_OK) continue;
        int n = lua_gettop(L);
        if (n > 0) {
            lua_getglobal(L, "print");
            lua_insert(L, 1);
            report(L, docall(L, n, 0));
        }
    }
    printf("\n");
}

/* OpenMP's idle threads spin for a bounded time, then sleep, unless the user chose
 * (OMP_WAIT_POLICY, GOMP_SPINCOUNT). libgomp's default spin is long: on a machine shared with
 * other work a spinning thread spends its share of a core, then is last in line when a parallel
 * region needs it (an op of 0.05 ms took 60 to 150 ms per call, 2 threads, 2 cores, load 14).
 * Sleeping at once (OMP_WAIT_POLICY=passive) costs a wake-up per region on a quiet machine
 * (the demo's step 214-235 ms against 185-190 ms with 20,000 spins). libgomp reads the setting
 * when it loads, before main, so the runner sets it and starts itself once more. */
static void openmp_spin_bounded(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", "20000", 1) != 0) return;
    execv("/proc/self/exe", argv); /* returns only on failure: then run with libgomp's default */
}

int main(int argc, char **argv) {
    openmp_spin_bounded(argv);
    lua_State *L = luaL_newstate();
    if (!L) { fprintf(stderr, "tocha: cannot create a Lua state (out of memory)\n"); return 1; }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_tocha);
    lua_setfield(L, -2, "tocha");
    lua_pop(L, 1);
    /* load the engine now: it also puts the Lua library on package.path, so
     * require "tocha.nn" works first thing in a script */
    if (luaL_dostring(L, "require 'tocha'") != LUA_OK) {
        report(L, LUA_ERRRUN);
        lua_close(L);
        return 1;
    }
    int status = LUA_OK;
    if (argc >= 3 && strcmp(argv[1], "-e") == 0) {
        create_arg_table(L, argv, argc, 1);
        status = report(L, luaL_loadstring(L, argv[2]) || docall(L, 0, 0));
    } else if (argc >= 2 && is_command(argv[1])) {
        int code = run_command(L, argv, argc);
        lua_close(L);
        return code < 0 ? 1 : code;
    }
    else if (argc >= 2 && strcmp(argv[1], "-") != 0) status = run_script(L, argv, argc, 1);
    else repl(L);
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
