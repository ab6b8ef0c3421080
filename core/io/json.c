/* json.c: the strict JSON reader and the small writer declared in json.h. A recursive
 * descent parser over a length-bounded buffer: every read is bounds-checked, nesting is
 * limited, and any malformed input ends in an error message with its byte position. */
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

/* ---- UTF-8 --------------------------------------------------------------------------- */
/* length of the well-formed UTF-8 sequence at s (at most n bytes), 0 if malformed:
 * rejects overlong forms, surrogates and code points past U+10FFFF */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (k > n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return k;
}

bool tc_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq(p + i, len - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

/* ---- reader ---------------------------------------------------------------------------- */
typedef struct {
    const char *s;
    size_t n, pos;
    char *err;
    size_t errlen;
} parser;

static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *p, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (p->pos >= p->n) snprintf(p->err, p->errlen, "at byte %zu: unexpected end of input (%s)", p->pos, what);
    else snprintf(p->err, p->errlen, "at byte %zu: %s", p->pos, what);
    return -1;
}

static void skip_ws(parser *p) {
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int peek(parser *p) { return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1; }

static int parse_value(parser *p, tc_json *v, int depth);

static int hex4(parser *p, unsigned *out) {
    if (p->n - p->pos < 4) return fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t)i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return fail(p, "bad hex digit in \\u escape");
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned c) {
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xC0 | c >> 6); o[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12); o[1] = (char)(0x80 | ((c >> 6) & 0x3F)); o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18); o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* at the opening quote; the decoded string is never longer than its source */
static int parse_string(parser *p, char **out, size_t *outlen) {
    p->pos++;
    size_t start = p->pos;
    while (p->pos < p->n && p->s[p->pos] != '"') p->pos += p->s[p->pos] == '\\' ? 2 : 1;
    if (p->pos >= p->n) { p->pos = start - 1; return fail(p, "unterminated string"); }
    size_t end = p->pos;
    char *o = malloc(end - start + 1);
    if (!o) return fail(p, "out of memory");
    size_t k = 0;
    p->pos = start;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) { free(o); return fail(p, "control character in string"); }
        if (c != '\\') {
            size_t m = utf8_seq((const unsigned char *)p->s + p->pos, end - p->pos);
            if (!m) { free(o); return fail(p, "invalid UTF-8 in string"); }
            memcpy(o + k, p->s + p->pos, m);
            k += m;
            p->pos += m;
            continue;
        }
        char e = p->s[++p->pos];
        p->pos++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) { o[k++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]; continue; }
        if (e != 'u') { p->pos--; free(o); return fail(p, "bad escape '\\%c'", e); }
        unsigned cp;
        if (hex4(p, &cp)) { free(o); return -1; }
        if (cp >= 0xDC00 && cp <= 0xDFFF) { free(o); return fail(p, "lone low surrogate in \\u escape"); }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') { free(o); return fail(p, "lone high surrogate in \\u escape"); }
            p->pos += 2;
            if (hex4(p, &lo)) { free(o); return -1; }
            if (lo < 0xDC00 || lo > 0xDFFF) { free(o); return fail(p, "bad surrogate pair in \\u escape"); }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        k += put_utf8(o + k, cp);
    }
    p->pos = end + 1;
    o[k] = 0;
    *out = o;
    *outlen = k;
    return 0;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

static int parse_number(parser *p, tc_json *v) {
    size_t start = p->pos;
    bool neg = peek(p) == '-', integral = true, fits = true;
    uint64_t mag = 0;
    if (neg) p->pos++;
    if (!is_digit(peek(p))) return fail(p, "expected a digit");
    if (peek(p) == '0') p->pos++;
    else
        while (is_digit(peek(p))) {
            unsigned d = (unsigned)(peek(p) - '0');
            if (mag > (UINT64_MAX - d) / 10) fits = false;
            else mag = mag * 10 + d;
            p->pos++;
        }
    if (peek(p) == '.') {
        integral = false;
        p->pos++;
        if (!is_digit(peek(p))) return fail(p, "expected a digit after '.'");
        while (is_digit(peek(p))) p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        integral = false;
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!is_digit(peek(p))) return fail(p, "expected a digit in the exponent");
        while (is_digit(peek(p))) p->pos++;
    }
    v->type = TC_JSON_NUMBER;
    if (integral && fits && mag <= (uint64_t)INT64_MAX + neg) {
        v->is_int = true;
        v->integer = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    }
    char buf[64], *s = buf;
    size_t len = p->pos - start;
    if (len >= sizeof buf && !(s = malloc(len + 1))) return fail(p, "out of memory");
    memcpy(s, p->s + start, len);
    s[len] = 0;
    v->number = strtod(s, NULL);
    if (s != buf) free(s);
    return 0;
}

static int expect_word(parser *p, const char *w) {
    size_t n = strlen(w);
    if (p->n - p->pos < n || memcmp(p->s + p->pos, w, n) != 0) return fail(p, "unexpected character");
    p->pos += n;
    return 0;
}

/* appends an empty item to an array or object, growing by doubling */
static tc_json *push_item(parser *p, tc_json *v, size_t *cap) {
    if (v->count == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        tc_json *items = realloc(v->items, nc * sizeof *items);
        if (!items) { fail(p, "out of memory"); return NULL; }
        v->items = items;
        if (v->type == TC_JSON_OBJECT) {
            char **keys = realloc(v->keys, nc * sizeof *keys);
            if (keys) v->keys = keys;
            size_t *lens = keys ? realloc(v->key_lens, nc * sizeof *lens) : NULL;
            if (lens) v->key_lens = lens;
            if (!keys || !lens) { fail(p, "out of memory"); return NULL; }
        }
        *cap = nc;
    }
    tc_json *it = &v->items[v->count];
    memset(it, 0, sizeof *it);
    return it;
}

/* arrays and objects: items separated by ',' until the closing bracket */
static int parse_container(parser *p, tc_json *v, int depth, char close) {
    if (depth >= MAX_DEPTH) return fail(p, "nested deeper than %d levels", MAX_DEPTH);
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (peek(p) == close) { p->pos++; return 0; }
    for (;;) {
        skip_ws(p);
        tc_json *it = push_item(p, v, &cap);
        if (!it) return -1;
        if (close == '}') {
            if (peek(p) != '"') return fail(p, "expected a string key");
            if (parse_string(p, &v->keys[v->count], &v->key_lens[v->count])) return -1;
            skip_ws(p);
            if (peek(p) != ':') { free(v->keys[v->count]); return fail(p, "expected ':'"); }
            p->pos++;
        }
        v->count++; /* counted before parsing so a failure frees what was read */
        if (parse_value(p, it, depth + 1)) return -1;
        skip_ws(p);
        if (peek(p) == close) { p->pos++; return 0; }
        if (peek(p) != ',') return fail(p, "expected ',' or '%c'", close);
        p->pos++;
    }
}

static int parse_value(parser *p, tc_json *v, int depth) {
    skip_ws(p);
    switch (peek(p)) {
    case '{': v->type = TC_JSON_OBJECT; return parse_container(p, v, depth, '}');
    case '[': v->type = TC_JSON_ARRAY; return parse_container(p, v, depth, ']');
    case '"': v->type = TC_JSON_STRING; return parse_string(p, &v->string, &v->len);
    case 't': v->type = TC_JSON_BOOL; v->boolean = true; return expect_word(p, "true");
    case 'f': v->type = TC_JSON_BOOL; return expect_word(p, "false");
    case 'n': v->type = TC_JSON_NULL; return expect_word(p, "null");
    case -1: return fail(p, "expected a value");
    default:
        if (peek(p) == '-' || is_digit(peek(p))) return parse_number(p, v);
        return fail(p, "unexpected character");
    }
}

int tc_json_parse(const char *text, size_t len, tc_json *out, char *err, size_t errlen) {
    parser p = {text, len, 0, err, errlen};
    memset(out, 0, sizeof *out);
    if (parse_value(&p, out, 0) == 0) {
        skip_ws(&p);
        if (p.pos == p.n) return 0;
        fail(&p, "trailing characters after the value");
    }
    tc_json_free(out);
    return -1;
}

void tc_json_free(tc_json *v) {
    for (size_t i = 0; i < v->count; i++) {
        tc_json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lens);
    free(v->string);
    memset(v, 0, sizeof *v);
}

const tc_json *tc_json_get(const tc_json *obj, const char *key) {
    if (obj->type != TC_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const char *tc_json_type_name(tc_json_type t) {
    static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* ---- writer ------------------------------------------------------------------------------ */
static bool reserve(tc_strbuf *b, size_t extra) {
    if (b->failed) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra + 1) nc *= 2;
    char *d = realloc(b->data, nc);
    if (!d) { b->failed = true; return false; }
    b->data = d;
    b->cap = nc;
    return true;
}

void tc_strbuf_add(tc_strbuf *b, const char *s, size_t n) {
    if (!reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void tc_strbuf_addf(tc_strbuf *b, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof buf) { b->failed = true; return; }
    tc_strbuf_add(b, buf, (size_t)k);
}

void tc_strbuf_json_string(tc_strbuf *b, const char *s, size_t n) {
    tc_strbuf_add(b, "\"", 1);
    size_t run = 0; /* bytes copied as they are, flushed before each escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { run++; continue; }
        tc_strbuf_add(b, s + i - run, run);
        run = 0;
        if (c == '"') tc_strbuf_add(b, "\\\"", 2);
        else if (c == '\\') tc_strbuf_add(b, "\\\\", 2);
        else if (c == '\n') tc_strbuf_add(b, "\\n", 2);
        else if (c == '\t') tc_strbuf_add(b, "\\t", 2);
        else if (c == '\r') tc_strbuf_add(b, "\\r", 2);
        else tc_strbuf_addf(b, "\\u%04x", c);
    }
    tc_strbuf_add(b, s + n - run, run);
    tc_strbuf_add(b, "\"", 1);
}

void tc_strbuf_free(tc_strbuf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}
