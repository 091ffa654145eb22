/* json: a small writer of JSON objects into a fixed buffer, for log records. */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes into caller-owned memory; on overflow sets `overflow` and stops writing, so a
 * record is either complete or detectably truncated. */
struct json {
    char *buf;
    size_t cap, len;
    bool overflow;
    bool need_comma;
};

void json_init(struct json *j, char *buf, size_t cap);
void json_begin(struct json *j);            /* "{" */
void json_end(struct json *j);              /* "}" */
void json_key(struct json *j, const char *key); /* "key": — then exactly one value or object */
void json_str(struct json *j, const char *s);   /* string with escaping; NULL writes null */
void json_strn(struct json *j, const char *s, size_t n);
void json_uint(struct json *j, uint64_t v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

/* Shorthands: key followed by value. */
void json_array_begin(struct json *j);      /* "[" — then values, each after json_elem */
void json_array_end(struct json *j);        /* "]" */
void json_elem(struct json *j);             /* the separator before an array's next value */
void json_raw(struct json *j, const char *s, size_t n); /* a value already rendered as JSON */
void json_kv_str(struct json *j, const char *key, const char *s);
void json_kv_uint(struct json *j, const char *key, uint64_t v);

#endif
