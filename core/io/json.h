/* json.h: a small, strict JSON reader (RFC 8259: UTF-8 checked, no trailing commas, no
 * comments, depth-limited) into a tree, and the string-escaping half of a writer. Made for
 * file headers (safetensors) that come from outside and must never crash the reader. */
#ifndef TOCHA_JSON_H
#define TOCHA_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { TC_JSON_NULL, TC_JSON_BOOL, TC_JSON_NUMBER, TC_JSON_STRING, TC_JSON_ARRAY, TC_JSON_OBJECT } tc_json_type;

typedef struct tc_json {
    tc_json_type type;
    bool boolean;
    bool is_int;            /* NUMBER written without fraction or exponent that fits int64 */
    int64_t integer;        /* valid when is_int */
    double number;
    char *string;           /* STRING: NUL-terminated copy (may hold a \u0000 before len) */
    size_t len;             /* STRING: bytes, excluding the terminator */
    size_t count;           /* ARRAY, OBJECT: number of items */
    struct tc_json *items;  /* ARRAY, OBJECT */
    char **keys;            /* OBJECT: count keys, in file order */
    size_t *key_lens;       /* OBJECT: their lengths */
} tc_json;

/* parses text[0..len) (one value, surrounding whitespace allowed) into *out. On failure
 * returns -1 with a message like "at byte 12: expected ':'" in err. */
int tc_json_parse(const char *text, size_t len, tc_json *out, char *err, size_t errlen);
void tc_json_free(tc_json *v);
/* first item of an object with that key, or NULL */
const tc_json *tc_json_get(const tc_json *obj, const char *key);
const char *tc_json_type_name(tc_json_type t);
bool tc_utf8_valid(const char *s, size_t len);

/* a growable byte buffer for writing; after a failed allocation every call is a no-op
 * and failed stays set */
typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} tc_strbuf;

void tc_strbuf_add(tc_strbuf *b, const char *s, size_t n);
void tc_strbuf_addf(tc_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s[0..n) as a JSON string literal, quotes included (s must be valid UTF-8) */
void tc_strbuf_json_string(tc_strbuf *b, const char *s, size_t n);
void tc_strbuf_free(tc_strbuf *b);

#endif
