/* lsys.c: the operating-system calls, as Lua's loslib.c: T._sys holds what the library
 * needs and Lua lacks (directories, fsync, isatty, a wall clock with a fraction, the host
 * name, and the process control sweeps run trials with), so no Lua file shells out for them;
 * T.clock and the thread count are public.
 * Calls that fail for ordinary reasons return nil, message; the Lua side raises. */
#include "ltocha.h"
#include "tocha_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <omp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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

/* page_faults() -> minor, major: this process's page faults so far (getrusage) */
static int s_page_faults(lua_State *L) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return fail(L, "cannot read", "the resource usage");
    lua_pushinteger(L, ru.ru_minflt);
    lua_pushinteger(L, ru.ru_majflt);
    return 2;
}

const luaL_Reg tcl_sys_funcs[] = {
    {"mkdir", s_mkdir},     {"mkdirs", s_mkdirs}, {"listdir", s_listdir}, {"isdir", s_isdir},
    {"fsync", s_fsync},     {"mkdtemp", s_mkdtemp}, {"isatty", s_isatty}, {"now", s_now},
    {"hostname", s_hostname}, {"page_faults", s_page_faults}, {NULL, NULL},
};

/* ---- process control: what a sweep needs to run trials as processes ----------------------- */
/* T._sys too: spawn and fork put a trial in its own process group (so a signal reaches whatever
 * it started) and ask the kernel to kill it when its parent dies (so a worker killed with
 * kill -9 leaves no orphan still writing to its run directory). Ordinary failures return
 * nil, message. */

static int sys_fail(lua_State *L, const char *what) {
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(e));
    return 2;
}

static const char *const SIGNAL_NAMES[] = {"TERM", "KILL", "INT", "HUP", "USR1", "USR2", "CONT", "STOP", "0", NULL};
static const int SIGNAL_NUMBERS[] = {SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCONT, SIGSTOP, 0};

static const char *signal_name(int sig) {
    for (int i = 0; SIGNAL_NAMES[i]; i++)
        if (SIGNAL_NUMBERS[i] == sig) return SIGNAL_NAMES[i];
    return NULL;
}

/* the child's side of spawn and fork: its own process group, killed with its parent; a
 * log file (when given) as stdout and stderr. Returns 0, or -1 with errno set. */
static int child_setup(int pgroup, const char *log_path, pid_t parent) {
    if (pgroup && setpgid(0, 0) != 0) return -1;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return -1;
    if (getppid() != parent) _exit(137); /* the parent died before prctl took effect */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (log_path) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) return -1;
        close(fd);
    }
    return 0;
}

static const char *opt_string(lua_State *L, int idx, const char *k) {
    if (!lua_istable(L, idx)) return NULL;
    lua_getfield(L, idx, k);
    const char *s = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
    if (!s && !lua_isnil(L, -1)) luaL_error(L, "option '%s' must be a string", k);
    lua_pop(L, 1); /* the string stays alive in the options table */
    return s;
}

/* spawn(argv, {log = path, env = {NAME = value}, pgroup = true}) -> pid, or nil, message.
 * argv[1] is looked up on PATH; an exec failure is written to the log and the child exits
 * with 127. */
static int s_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    luaL_argcheck(L, n >= 1 && n < 4096, 1, "argv must hold the program and up to 4095 arguments");
    const char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        argv[i] = lua_tostring(L, -1);
        if (!argv[i]) return luaL_error(L, "spawn: argv[%d] is not a string", i + 1);
        lua_pop(L, 1); /* the string stays alive in the table */
    }
    argv[n] = NULL;
    const char *log_path = opt_string(L, 2, "log");
    int pgroup = tcl_optbool(L, 2, "pgroup", 1);
    /* the child's whole environment, built before fork so that the child only calls
     * async-signal-safe functions until exec: ours, with env's names replaced or added */
    lua_newtable(L); /* NAME -> "NAME=value" */
    int envt = lua_gettop(L);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, *e);
        lua_rawset(L, envt);
    }
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "env");
        if (!lua_isnil(L, -1)) {
            luaL_argcheck(L, lua_istable(L, -1), 2, "env must be a table of NAME = value");
            for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
                if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                    return luaL_error(L, "spawn: env must map names to strings");
                lua_pushvalue(L, -2);
                lua_pushfstring(L, "%s=%s", lua_tostring(L, -3), lua_tostring(L, -2));
                lua_rawset(L, envt);
            }
        }
        lua_pop(L, 1);
    }
    size_t nenv = 0;
    for (lua_pushnil(L); lua_next(L, envt); lua_pop(L, 1)) nenv++;
    const char **envp = lua_newuserdatauv(L, sizeof(char *) * (nenv + 1), 0);
    size_t k = 0;
    for (lua_pushnil(L); lua_next(L, envt); lua_pop(L, 1)) envp[k++] = lua_tostring(L, -1); /* alive in envt */
    envp[k] = NULL;
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) return sys_fail(L, "spawn: fork");
    if (pid == 0) {
        if (child_setup(pgroup, log_path, parent) == 0) {
            execvpe(argv[0], (char *const *)argv, (char *const *)envp);
        }
        int e = errno;
        dprintf(2, "tocha: cannot run %s: %s\n", argv[0], strerror(e));
        _exit(127);
    }
    lua_pushinteger(L, pid);
    return 1;
}

/* fork({log = path, pgroup = true}) -> 0 in the child, its pid in the parent, or nil, message.
 * The child must leave with exit(): it shares the parent's open files and connections, which
 * closing the Lua state would close under the parent. */
static int s_fork(lua_State *L) {
    const char *log_path = opt_string(L, 1, "log");
    int pgroup = tcl_optbool(L, 1, "pgroup", 1);
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) return sys_fail(L, "fork");
    if (pid == 0 && child_setup(pgroup, log_path, parent) != 0) {
        dprintf(2, "tocha: fork: %s\n", strerror(errno));
        _exit(127);
    }
    lua_pushinteger(L, pid);
    return 1;
}

/* exit(code): ends the process now, flushing stdio but running no Lua finalizers */
static int s_exit(lua_State *L) {
    int code = (int)luaL_optinteger(L, 1, 0);
    fflush(NULL);
    _exit(code);
}

/* waits up to `seconds` for child pid to end: on a pidfd (Linux 5.3+) the wait ends the moment
 * it does; elsewhere in steps of a millisecond */
static void wait_for_exit(pid_t pid, double seconds) {
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, (int)(seconds * 1000));
        close(fd);
        return;
    }
#endif
    for (double waited = 0; waited < seconds; waited += 1e-3) {
        siginfo_t info;
        info.si_pid = 0;
        if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != 0) return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* wait(pid, block) -> nil while running, or "exited", code | "signaled", signal name (or
 * number); nil, message on error (no such child). block: true waits for the end, a number
 * waits at most that many seconds, false or nil only looks. */
static int s_wait(lua_State *L) {
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int block = lua_type(L, 2) == LUA_TBOOLEAN && lua_toboolean(L, 2), status;
    if (lua_type(L, 2) == LUA_TNUMBER && lua_tonumber(L, 2) > 0) wait_for_exit(pid, lua_tonumber(L, 2));
    pid_t r;
    do r = waitpid(pid, &status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0) return sys_fail(L, "wait");
    if (r == 0) return 0;
    if (WIFEXITED(status)) {
        lua_pushliteral(L, "exited");
        lua_pushinteger(L, WEXITSTATUS(status));
        return 2;
    }
    lua_pushliteral(L, "signaled");
    const char *name = signal_name(WTERMSIG(status));
    if (name) lua_pushstring(L, name);
    else lua_pushinteger(L, WTERMSIG(status));
    return 2;
}

/* kill(pid, "TERM") -> true, or nil, message (a negative pid names a process group; "0"
 * only checks that the process exists) */
static int s_kill(lua_State *L) {
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int sig = SIGNAL_NUMBERS[luaL_checkoption(L, 2, "TERM", SIGNAL_NAMES)];
    luaL_argcheck(L, pid != 0 && pid != -1, 1, "pid 0 and -1 would signal more than one process");
    if (kill(pid, sig) != 0) return sys_fail(L, "kill");
    lua_pushboolean(L, 1);
    return 1;
}

static int s_getpid(lua_State *L) {
    lua_pushinteger(L, getpid());
    return 1;
}

/* sleep(seconds): fractions too; a signal cuts it short */
static int s_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s < 1e7, 1, "seconds must be between 0 and 1e7");
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
    return 0;
}

/* signals a script asks about instead of dying of them: catch("TERM") installs the handler,
 * caught("TERM") says whether the signal came since */
static volatile sig_atomic_t caught_signals[sizeof SIGNAL_NUMBERS / sizeof SIGNAL_NUMBERS[0]];

static void on_signal(int sig) {
    for (int i = 0; SIGNAL_NAMES[i]; i++)
        if (SIGNAL_NUMBERS[i] == sig) caught_signals[i] = 1;
}

static int check_catchable(lua_State *L) {
    int i = luaL_checkoption(L, 1, NULL, SIGNAL_NAMES);
    int sig = SIGNAL_NUMBERS[i];
    luaL_argcheck(L, sig != SIGKILL && sig != SIGSTOP && sig != 0, 1, "this signal cannot be caught");
    return i;
}

/* catch(sig, on = true): from now on the signal sets a flag instead of ending the process;
 * catch(sig, false) restores the default action. Either way the flag is cleared. */
static int s_catch(lua_State *L) {
    int i = check_catchable(L);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lua_isnoneornil(L, 2) || lua_toboolean(L, 2) ? on_signal : SIG_DFL;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    caught_signals[i] = 0;
    if (sigaction(SIGNAL_NUMBERS[i], &sa, NULL) != 0) return sys_fail(L, "catch");
    lua_pushboolean(L, 1);
    return 1;
}

static int s_caught(lua_State *L) {
    lua_pushboolean(L, caught_signals[check_catchable(L)]);
    return 1;
}

const luaL_Reg tcl_process_funcs[] = {
    {"spawn", s_spawn}, {"fork", s_fork},     {"exit", s_exit},   {"wait", s_wait},  {"kill", s_kill},
    {"getpid", s_getpid}, {"sleep", s_sleep}, {"catch", s_catch}, {"caught", s_caught}, {NULL, NULL},
};
