/* json: escaping writer for single-line JSON records. */
#include "json.h"

#include <stdio.h>
#include <string.h>

void json_init(struct json *j, char *buf, size_t cap)
{
    j->buf = buf;
    j->cap = cap;
    j->len = 0;
    j->overflow = false;
    j->need_comma = false;
}

static void json_put(struct json *j, const char *s, size_t n)
{
    if (j->overflow || j->len + n >= j->cap) {
        j->overflow = true;
        return;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

static void json_sep(struct json *j)
{
    if (j->need_comma)
        json_put(j, ",", 1);
    j->need_comma = true;
}

void json_begin(struct json *j)
{
    json_put(j, "{", 1);
    j->need_comma = false;
}

void json_end(struct json *j)
{
    json_put(j, "}", 1);
    j->need_comma = true;
}

void json_array_begin(struct json *j)
{
    json_put(j, "[", 1);
    j->need_comma = false;
}

void json_array_end(struct json *j)
{
    json_put(j, "]", 1);
    j->need_comma = true;
}

void json_elem(struct json *j)
{
    if (j->need_comma)
        json_put(j, ",", 1);
    j->need_comma = false;
}

void json_raw(struct json *j, const char *s, size_t n)
{
    json_put(j, s, n);
    j->need_comma = true;
}

void json_key(struct json *j, const char *key)
{
    json_sep(j);
    json_put(j, "\"", 1);
    json_put(j, key, strlen(key));
    json_put(j, "\":", 2);
    j->need_comma = false;
}

void json_strn(struct json *j, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    json_put(j, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        if (ch == '"' || ch == '\\') {
            esc[1] = (char)ch;
            json_put(j, esc, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            json_put(j, esc, 6);
        } else {
            json_put(j, (const char *)&s[i], 1);
        }
    }
    json_put(j, "\"", 1);
    j->need_comma = true;
}

void json_str(struct json *j, const char *s)
{
    if (!s) {
        json_null(j);
        return;
    }
    json_strn(j, s, strlen(s));
}

void json_uint(struct json *j, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    json_put(j, num, (size_t)n);
    j->need_comma = true;
}

void json_bool(struct json *j, bool v)
{
    json_put(j, v ? "true" : "false", v ? 4 : 5);
    j->need_comma = true;
}

void json_null(struct json *j)
{
    json_put(j, "null", 4);
    j->need_comma = true;
}

void json_kv_str(struct json *j, const char *key, const char *s)
{
    json_key(j, key);
    json_str(j, s);
}

void json_kv_uint(struct json *j, const char *key, uint64_t v)
{
    json_key(j, key);
    json_uint(j, v);
}
