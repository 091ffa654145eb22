/* proxyreq: explicit-proxy request heads via http-parser. */
#include "proxyreq.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PROXYREQ_MAX_HEADERS 100

struct span {
    const char *p;
    size_t n;
};

struct proxyreq_parse_state {
    struct span url;
    struct span names[PROXYREQ_MAX_HEADERS];
    struct span values[PROXYREQ_MAX_HEADERS];
    size_t n_headers;
    bool too_many;
    bool headers_done;
};

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct proxyreq_parse_state *st = p->data;
    st->url.p = st->url.p ? st->url.p : at;
    st->url.n += n;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct proxyreq_parse_state *st = p->data;
    if (st->n_headers >= PROXYREQ_MAX_HEADERS) {
        st->too_many = true;
        return 1;
    }
    st->names[st->n_headers++] = (struct span){at, n};
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct proxyreq_parse_state *st = p->data;
    if (st->n_headers > 0)
        st->values[st->n_headers - 1] = (struct span){at, n};
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct proxyreq_parse_state *st = p->data;
    st->headers_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static enum proxyreq_result proxyreq_fail(struct proxyreq *req, int status, const char *why)
{
    req->status = status;
    snprintf(req->error, sizeof(req->error), "%s", why);
    return PROXYREQ_ERROR;
}

static bool span_is(struct span s, const char *name)
{
    return s.n == strlen(name) && strncasecmp(s.p, name, s.n) == 0;
}

/* Headers a proxy consumes or that the rewritten request replaces. */
static bool header_is_hop_by_hop(struct span name)
{
    return span_is(name, "proxy-connection") || span_is(name, "proxy-authorization") ||
           span_is(name, "connection") || span_is(name, "keep-alive");
}

static int copy_host(struct proxyreq *req, const struct span url, const struct http_parser_url *u)
{
    if (!(u->field_set & (1 << UF_HOST)) || u->field_data[UF_HOST].len == 0 ||
        u->field_data[UF_HOST].len >= sizeof(req->host))
        return -1;
    memcpy(req->host, url.p + u->field_data[UF_HOST].off, u->field_data[UF_HOST].len);
    req->host[u->field_data[UF_HOST].len] = '\0';
    return 0;
}

static enum proxyreq_result proxyreq_connect(struct proxyreq *req, struct span url)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url.p, url.n, 1, &u) != 0 || copy_host(req, url, &u) != 0 ||
        !(u.field_set & (1 << UF_PORT)) || u.port == 0)
        return proxyreq_fail(req, 400, "CONNECT target is not host:port");
    req->kind = PROXYREQ_CONNECT;
    req->port = u.port;
    return PROXYREQ_OK;
}

/* Appends to the rewritten head; returns false when it would exceed the limit. */
static bool head_append(char *out, size_t *len, const char *s, size_t n)
{
    if (*len + n > PROXYREQ_MAX_HEAD + 256)
        return false;
    memcpy(out + *len, s, n);
    *len += n;
    return true;
}

static enum proxyreq_result proxyreq_rewrite(struct proxyreq *req,
                                             const struct proxyreq_parse_state *st,
                                             const struct http_parser_url *u, int http_minor)
{
    char *out = malloc(PROXYREQ_MAX_HEAD + 256);
    size_t len = 0;
    bool ok = out != NULL;
    const char *path = "/";
    size_t path_len = 1;
    if (u->field_set & (1 << UF_PATH)) {
        path = st->url.p + u->field_data[UF_PATH].off;
        /* path through the end of the query: everything after the authority */
        path_len = st->url.n - u->field_data[UF_PATH].off;
        if (u->field_set & (1 << UF_FRAGMENT))
            path_len = u->field_data[UF_FRAGMENT].off - 1 - u->field_data[UF_PATH].off;
    }
    char line[64];
    int n = snprintf(line, sizeof(line), " HTTP/1.%d\r\n", http_minor);
    bool has_host = false;
    ok = ok && head_append(out, &len, req->method, strlen(req->method)) &&
         head_append(out, &len, " ", 1) && head_append(out, &len, path, path_len) &&
         head_append(out, &len, line, (size_t)n);
    for (size_t i = 0; ok && i < st->n_headers; i++) {
        if (header_is_hop_by_hop(st->names[i]))
            continue;
        has_host = has_host || span_is(st->names[i], "host");
        ok = head_append(out, &len, st->names[i].p, st->names[i].n) &&
             head_append(out, &len, ": ", 2) &&
             head_append(out, &len, st->values[i].p, st->values[i].n) &&
             head_append(out, &len, "\r\n", 2);
    }
    if (ok && !has_host) {
        char host[300];
        int hn = snprintf(host, sizeof(host), strchr(req->host, ':') ? "Host: [%s]:%u\r\n"
                                                                      : "Host: %s:%u\r\n",
                          req->host, req->port);
        ok = head_append(out, &len, host, (size_t)hn);
    }
    ok = ok && head_append(out, &len, "Connection: close\r\n\r\n", 21);
    if (!ok) {
        free(out);
        return proxyreq_fail(req, 431, "request head too large");
    }
    req->forward_head = out;
    req->forward_len = len;
    return PROXYREQ_OK;
}

static enum proxyreq_result proxyreq_forward(struct proxyreq *req,
                                             const struct proxyreq_parse_state *st,
                                             int http_minor)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(st->url.p, st->url.n, 0, &u) != 0)
        return proxyreq_fail(req, 400, "request target is not a valid URL");
    if (!(u.field_set & (1 << UF_SCHEMA)))
        return proxyreq_fail(req, 400,
                             "this is a proxy: send CONNECT host:port or an absolute http:// URL");
    struct span scheme = {st->url.p + u.field_data[UF_SCHEMA].off, u.field_data[UF_SCHEMA].len};
    if (!span_is(scheme, "http"))
        return proxyreq_fail(req, 501, "only http:// URLs can be forwarded; use CONNECT");
    if (copy_host(req, st->url, &u) != 0)
        return proxyreq_fail(req, 400, "URL has no valid host");
    req->kind = PROXYREQ_FORWARD;
    req->port = (u.field_set & (1 << UF_PORT)) ? u.port : 80;
    return proxyreq_rewrite(req, st, &u, http_minor);
}

enum proxyreq_result proxyreq_parse(const char *buf, size_t len, struct proxyreq *req)
{
    struct proxyreq_parse_state st = {0};
    http_parser_settings settings = {.on_url = on_url,
                                     .on_header_field = on_header_field,
                                     .on_header_value = on_header_value,
                                     .on_headers_complete = on_headers_complete};
    http_parser p;
    memset(req, 0, sizeof(*req));
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &st;
    size_t scan = len > PROXYREQ_MAX_HEAD ? PROXYREQ_MAX_HEAD : len;
    size_t used = http_parser_execute(&p, &settings, buf, scan);
    enum http_errno err = HTTP_PARSER_ERRNO(&p);
    if (st.too_many)
        return proxyreq_fail(req, 431, "too many request headers");
    if (err != HPE_OK && err != HPE_PAUSED)
        return proxyreq_fail(req, 400, http_errno_description(err));
    if (!st.headers_done)
        return len >= PROXYREQ_MAX_HEAD ? proxyreq_fail(req, 431, "request head too large")
                                        : PROXYREQ_NEED_MORE;
    /* Paused in on_headers_complete, the parser stops on the head's final LF: count it. */
    req->head_len = err == HPE_PAUSED ? used + 1 : used;
    snprintf(req->method, sizeof(req->method), "%s", http_method_str(p.method));
    snprintf(req->target, sizeof(req->target), "%.*s", (int)st.url.n, st.url.p);
    if (p.method == HTTP_CONNECT)
        return proxyreq_connect(req, st.url);
    return proxyreq_forward(req, &st, p.http_minor);
}

void proxyreq_free(struct proxyreq *req)
{
    free(req->forward_head);
    req->forward_head = NULL;
    req->forward_len = 0;
}
