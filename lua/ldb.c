/* ldb.c: SQL databases for sweep storage (T._db): SQLite through libsqlite3 and PostgreSQL
 * through libpq behind one small interface, so that tocha.sweep.storage writes its SQL once:
 * open, exec, query with parameters (`?` in both), rows back as Lua tables. Database errors
 * raise with the database's message; opening returns nil, message. */
#include "ltocha.h"

#include <libpq-fe.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TCL_DB "tocha.Database"
#define TCL_CURSOR "tocha.DatabaseCursor"

typedef struct {
    sqlite3 *lite; /* one of the two is set while open */
    PGconn *pg;
    double timeout;      /* seconds a statement waits for a lock */
    struct timespec busy_since;
} database;

/* a statement or a result in flight, in a userdata made before it is acquired, so that an
 * error raised while rows are converted still frees it (through __gc) */
typedef struct {
    sqlite3_stmt *stmt;
    PGresult *res;
} cursor;

static int cursor_gc(lua_State *L) {
    cursor *c = luaL_checkudata(L, 1, TCL_CURSOR);
    if (c->stmt) sqlite3_finalize(c->stmt);
    if (c->res) PQclear(c->res);
    c->stmt = NULL;
    c->res = NULL;
    return 0;
}

static cursor *new_cursor(lua_State *L) {
    cursor *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->stmt = NULL;
    c->res = NULL;
    luaL_setmetatable(L, TCL_CURSOR);
    return c;
}

static database *check_db(lua_State *L) {
    database *d = luaL_checkudata(L, 1, TCL_DB);
    if (!d->lite && !d->pg) luaL_error(L, "database is closed");
    return d;
}

static void db_release(database *d) {
    if (d->lite) sqlite3_close_v2(d->lite);
    if (d->pg) PQfinish(d->pg);
    d->lite = NULL;
    d->pg = NULL;
}

static int db_close(lua_State *L) {
    db_release(luaL_checkudata(L, 1, TCL_DB));
    return 0;
}

/* PostgreSQL's message for the last failure, without its trailing newline */
static const char *pg_message(lua_State *L, PGconn *pg) {
    const char *m = pg ? PQerrorMessage(pg) : "out of memory";
    size_t n = strlen(m);
    while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
    return lua_pushlstring(L, m, n);
}

/* SQLite's own busy handler sleeps ever longer (up to 100 ms) while a lock is held; workers
 * that hold the write lock for a millisecond each are better served by short naps */
static int busy_wait(void *arg, int count) {
    database *d = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (count == 0) d->busy_since = now;
    double waited = (double)(now.tv_sec - d->busy_since.tv_sec) + (double)(now.tv_nsec - d->busy_since.tv_nsec) * 1e-9;
    if (waited >= d->timeout) return 0;
    long us = count < 20 ? 100 + 50L * count : 2000;
    struct timespec nap = {0, us * 1000};
    nanosleep(&nap, NULL);
    return 1;
}

/* ---- opening ------------------------------------------------------------------------------ */
static void quiet_notices(void *arg, const char *msg) { (void)arg; (void)msg; } /* "already exists, skipping" */

static int is_pg_url(const char *s) { return !strncmp(s, "postgresql://", 13) || !strncmp(s, "postgres://", 11); }

/* open(target, {timeout = 30}) -> db, or nil, message. target: a postgresql:// (or
 * postgres://) URL, or the path of a SQLite file (made when missing). timeout: seconds a
 * statement waits for another connection's lock before it fails. */
static int l_open(lua_State *L) {
    const char *target = luaL_checkstring(L, 1);
    double timeout = tcl_optnumber(L, 2, "timeout", 30);
    luaL_argcheck(L, timeout >= 0 && timeout < 1e6, 2, "timeout must be between 0 and 1e6 seconds");
    database *d = lua_newuserdatauv(L, sizeof *d, 0);
    d->lite = NULL;
    d->pg = NULL;
    luaL_setmetatable(L, TCL_DB);
    if (is_pg_url(target)) {
        d->pg = PQconnectdb(target);
        if (!d->pg || PQstatus(d->pg) != CONNECTION_OK) {
            const char *why = pg_message(L, d->pg);
            db_release(d);
            lua_pushnil(L);
            lua_pushfstring(L, "cannot connect to %s: %s", target, why);
            return 2;
        }
        PQsetNoticeProcessor(d->pg, quiet_notices, NULL);
        char sql[96];
        snprintf(sql, sizeof sql, "SET lock_timeout = %ld", (long)(timeout * 1000));
        cursor *c = new_cursor(L);
        c->res = PQexec(d->pg, sql);
        if (PQresultStatus(c->res) != PGRES_COMMAND_OK) return luaL_error(L, "postgresql: %s", pg_message(L, d->pg));
        lua_pop(L, 1);
        return 1;
    }
    int rc = sqlite3_open_v2(target, &d->lite, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open %s: %s", target, d->lite ? sqlite3_errmsg(d->lite) : sqlite3_errstr(rc));
        db_release(d);
        return 2;
    }
    d->timeout = timeout;
    sqlite3_busy_handler(d->lite, busy_wait, d);
    return 1;
}

static int db_kind(lua_State *L) {
    lua_pushstring(L, check_db(L)->pg ? "postgresql" : "sqlite");
    return 1;
}

/* ---- statements ----------------------------------------------------------------------------- */
/* db:exec(sql): one or more statements without parameters */
static int db_exec(lua_State *L) {
    database *d = check_db(L);
    const char *sql = luaL_checkstring(L, 2);
    if (d->lite) {
        char *err = NULL;
        if (sqlite3_exec(d->lite, sql, NULL, NULL, &err) != SQLITE_OK) {
            lua_pushfstring(L, "sqlite: %s", err ? err : sqlite3_errmsg(d->lite));
            sqlite3_free(err);
            return lua_error(L);
        }
        return 0;
    }
    cursor *c = new_cursor(L);
    c->res = PQexec(d->pg, sql);
    ExecStatusType st = PQresultStatus(c->res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return luaL_error(L, "postgresql: %s", pg_message(L, d->pg));
    return 0;
}

/* the `?` placeholders of sql as PostgreSQL's $1, $2, ... (not inside quotes) */
static const char *pg_placeholders(lua_State *L, const char *sql) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int n = 0;
    char quote = 0;
    for (const char *p = sql; *p; p++) {
        if (quote) {
            if (*p == quote) quote = 0;
        } else if (*p == '\'' || *p == '"') quote = *p;
        else if (*p == '?') {
            char num[16];
            snprintf(num, sizeof num, "$%d", ++n);
            luaL_addstring(&b, num);
            continue;
        }
        luaL_addchar(&b, *p);
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

/* a parameter as PostgreSQL's text form (numbers exactly; booleans as 1 and 0, as SQLite
 * stores them); NULL for nil */
static const char *pg_param(lua_State *L, int idx, int i) {
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return NULL;
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? "1" : "0";
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return lua_pushfstring(L, "%I", lua_tointeger(L, idx));
        else {
            double v = lua_tonumber(L, idx);
            char num[40];
            if (isnan(v)) return "NaN";
            if (isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
            snprintf(num, sizeof num, "%.17g", v);
            return lua_pushstring(L, num);
        }
    case LUA_TSTRING: return lua_tostring(L, idx);
    default: luaL_error(L, "query: parameter %d is a %s (numbers, strings, booleans or nil)", i, luaL_typename(L, idx));
    }
    return NULL;
}

static void sqlite_bind(lua_State *L, database *d, sqlite3_stmt *st, int idx, int i) {
    int rc;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: rc = sqlite3_bind_null(st, i); break;
    case LUA_TBOOLEAN: rc = sqlite3_bind_int64(st, i, lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
        rc = lua_isinteger(L, idx) ? sqlite3_bind_int64(st, i, lua_tointeger(L, idx)) : sqlite3_bind_double(st, i, lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        rc = sqlite3_bind_text(st, i, s, (int)n, SQLITE_TRANSIENT);
        break;
    }
    default: luaL_error(L, "query: parameter %d is a %s (numbers, strings, booleans or nil)", i, luaL_typename(L, idx)); return;
    }
    if (rc != SQLITE_OK) luaL_error(L, "sqlite: binding parameter %d: %s", i, sqlite3_errmsg(d->lite));
}

static int sqlite_query(lua_State *L, database *d, const char *sql, int nparams) {
    cursor *c = new_cursor(L);
    if (sqlite3_prepare_v2(d->lite, sql, -1, &c->stmt, NULL) != SQLITE_OK)
        return luaL_error(L, "sqlite: %s (in: %s)", sqlite3_errmsg(d->lite), sql);
    int expected = sqlite3_bind_parameter_count(c->stmt);
    if (expected != nparams) return luaL_error(L, "query: %d parameters given, the statement has %d (in: %s)", nparams, expected, sql);
    for (int i = 1; i <= nparams; i++) {
        lua_geti(L, 3, i);
        sqlite_bind(L, d, c->stmt, lua_gettop(L), i);
        lua_pop(L, 1);
    }
    lua_newtable(L);
    int ncol = sqlite3_column_count(c->stmt), rc;
    lua_Integer nrow = 0;
    while ((rc = sqlite3_step(c->stmt)) == SQLITE_ROW) {
        lua_createtable(L, 0, ncol);
        for (int j = 0; j < ncol; j++) {
            switch (sqlite3_column_type(c->stmt, j)) {
            case SQLITE_NULL: continue;
            case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(c->stmt, j)); break;
            case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(c->stmt, j)); break;
            default:
                lua_pushlstring(L, (const char *)sqlite3_column_text(c->stmt, j), (size_t)sqlite3_column_bytes(c->stmt, j));
            }
            lua_setfield(L, -2, sqlite3_column_name(c->stmt, j));
        }
        lua_rawseti(L, -2, ++nrow);
    }
    if (rc != SQLITE_DONE) return luaL_error(L, "sqlite: %s (in: %s)", sqlite3_errmsg(d->lite), sql);
    lua_pushinteger(L, sqlite3_changes(d->lite));
    return 2;
}

/* PostgreSQL's type OIDs for the values that come back as Lua numbers and booleans */
enum { PG_BOOL = 16, PG_INT8 = 20, PG_INT2 = 21, PG_INT4 = 23, PG_FLOAT4 = 700, PG_FLOAT8 = 701, PG_NUMERIC = 1700 };

static int pg_query(lua_State *L, database *d, const char *sql, int nparams) {
    if (nparams > 1000) return luaL_error(L, "query: at most 1000 parameters");
    const char *values[1000];
    luaL_checkstack(L, 2 * nparams + 8, "too many parameters");
    sql = pg_placeholders(L, sql);
    for (int i = 1; i <= nparams; i++) {
        lua_geti(L, 3, i);
        values[i - 1] = pg_param(L, lua_gettop(L), i); /* the value stays on the stack */
    }
    cursor *c = new_cursor(L);
    c->res = PQexecParams(d->pg, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(c->res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return luaL_error(L, "postgresql: %s (in: %s)", pg_message(L, d->pg), sql);
    int nrow = PQntuples(c->res), ncol = PQnfields(c->res);
    lua_createtable(L, nrow, 0);
    for (int i = 0; i < nrow; i++) {
        lua_createtable(L, 0, ncol);
        for (int j = 0; j < ncol; j++) {
            if (PQgetisnull(c->res, i, j)) continue;
            const char *v = PQgetvalue(c->res, i, j);
            switch (PQftype(c->res, j)) {
            case PG_BOOL: lua_pushboolean(L, v[0] == 't'); break;
            case PG_INT2: case PG_INT4: case PG_INT8: lua_pushinteger(L, strtoll(v, NULL, 10)); break;
            case PG_FLOAT4: case PG_FLOAT8: case PG_NUMERIC: lua_pushnumber(L, strtod(v, NULL)); break;
            default: lua_pushlstring(L, v, (size_t)PQgetlength(c->res, i, j));
            }
            lua_setfield(L, -2, PQfname(c->res, j));
        }
        lua_rawseti(L, -2, i + 1);
    }
    const char *changed = PQcmdTuples(c->res);
    lua_pushinteger(L, changed && *changed ? strtoll(changed, NULL, 10) : 0);
    return 2;
}

/* db:query(sql, {params}) -> rows, changes: rows a list of {column = value} (NULLs absent;
 * integers, numbers, strings, and booleans from PostgreSQL's boolean columns); changes the
 * number of rows an INSERT, UPDATE or DELETE touched */
static int db_query(lua_State *L) {
    database *d = check_db(L);
    const char *sql = luaL_checkstring(L, 2);
    int nparams = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "n"); /* {n = 3, ...} when the list has nils in it */
        nparams = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : (int)luaL_len(L, 3);
        lua_pop(L, 1);
    }
    lua_settop(L, 3);
    return d->lite ? sqlite_query(L, d, sql, nparams) : pg_query(L, d, sql, nparams);
}

/* ---- the module ------------------------------------------------------------------------------ */
static const luaL_Reg db_methods[] = {
    {"exec", db_exec}, {"query", db_query}, {"kind", db_kind}, {"close", db_close}, {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
    if (!luaL_newmetatable(L, name)) { lua_pop(L, 1); return; }
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}

static int l_open_checked(lua_State *L) {
    new_class(L, TCL_DB, db_methods, db_close);
    new_class(L, TCL_CURSOR, NULL, cursor_gc);
    return l_open(L);
}

const luaL_Reg tcl_db_funcs[] = {{"open", l_open_checked}, {NULL, NULL}};
