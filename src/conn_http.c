/* conn_http: HTTP inside intercepted connections, for both the HTTP/1.1 inspector and the
 * HTTP/2 bridge — the policy's HTTP rules, the block page, and the request log with its
 * redacted headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "conn_int.h"
#include "gateway.h"
#include "h2.h"
#include "http1.h"
#include "json.h"
#include "log.h"
#include "policy.h"
#include "worker.h"

/* ---- the policy ---- */

/* The block's reference, CONNID-SEQ: the connection's id and the request's number on it. */
static void conn_http_block_ref(struct conn *c, unsigned seq, const char **ref)
{
    static _Thread_local char buf[48];
    snprintf(buf, sizeof(buf), "%llu-%u", (unsigned long long)c->id, seq);
    *ref = buf;
}

/* The policy's answer for a request head: 1 block (rule in *rule), 0 allow or not yet known. */
static int conn_http_decide_request(struct conn *c, const struct policy_http_request *pr,
                                    const char **rule)
{
    struct policy_http_decision d;
    policy_decide_http_request(conn_cfg(c)->policy, pr, &d);
    *rule = d.rule;
    return d.action == POLICY_HTTP_BLOCK && !d.need_response;
}

static size_t conn_http_request_fields_of(struct conn *c, uint32_t key,
                                          const struct policy_http_header **out);

/* The policy's answer with the response head. The request's headers come back from where
 * on_request kept them (when the policy has header keys), so every rule is judged on the
 * whole request, as it was at the request. */
static int conn_http_decide_response(struct conn *c, uint32_t key, const char *method,
                                     const char *authority, const char *path, int status,
                                     const char *content_type, const char **rule)
{
    const struct policy_http_header *fields = NULL;
    size_t n = conn_http_request_fields_of(c, key, &fields);
    struct policy_http_request pr = {method, authority, path, fields, n};
    struct policy_http_response rs = {status, content_type};
    struct policy_http_decision d;
    policy_decide_http_response(conn_cfg(c)->policy, &pr, &rs, &d);
    *rule = d.rule;
    return d.action == POLICY_HTTP_BLOCK;
}

static size_t conn_http_render_page(struct conn *c, const char *scheme, const char *authority,
                                    const char *path, const char *rule, const char *ref,
                                    char *buf, size_t cap)
{
    char url[1024], client[ADDR_TEXT_MAX];
    snprintf(url, sizeof(url), "%s://%s%s", scheme[0] ? scheme : "https", authority, path);
    addr_format((struct sockaddr *)&c->client, client, sizeof(client));
    struct policy_page_vars vars = {rule, ref, authority, url, client};
    long n = policy_render_block_page(conn_cfg(c)->policy, &vars, buf, cap);
    return n > 0 ? (size_t)n : 0;
}

/* ---- headers for the request log ---- */

/* The redacted header lists of the exchanges in flight, kept from their heads until their
 * records are written. Only while a request log is open. */
struct conn_heads {
    struct conn_heads *next;
    uint32_t key; /* HTTP/1.1: the request's number; HTTP/2: the client's stream id */
    char *req, *resp; /* rendered JSON arrays, or NULL */
    /* The request's header fields, kept for the response-time decisions when the policy has
     * header keys: one allocation, the array followed by the names and values. */
    struct policy_http_header *fields;
    size_t n_fields;
};

#define CONN_HEADS_MAX (8 * 1024)   /* one rendered header list */
#define CONN_HEADER_VALUE_MAX 1024 /* one value; longer ones are cut */

static const char *const conn_always_redacted[] = {"authorization", "proxy-authorization",
                                                   "cookie", "set-cookie"};

static bool conn_http_redacted(const struct conn *c, const char *name, size_t len)
{
    const struct config *cfg = conn_cfg(c);
    for (size_t i = 0; i < sizeof(conn_always_redacted) / sizeof(conn_always_redacted[0]); i++)
        if (strlen(conn_always_redacted[i]) == len &&
            strncasecmp(conn_always_redacted[i], name, len) == 0)
            return true;
    for (size_t i = 0; i < cfg->n_request_log_redact; i++)
        if (strlen(cfg->request_log_redact[i]) == len &&
            strncasecmp(cfg->request_log_redact[i], name, len) == 0)
            return true;
    return false;
}

static bool conn_http_logs_headers(const struct conn *c)
{
    return c->w->gw->request_log_fd >= 0 && conn_cfg(c)->request_log_headers;
}

/* Appends ["name","value"] (lower-case name, value redacted or cut) when it fits. */
static void conn_heads_add(const struct conn *c, struct json *j, const char *name, size_t nlen,
                           const char *value, size_t vlen)
{
    char pair[CONN_HEADER_VALUE_MAX + 512], lname[256];
    struct json p;
    if (nlen >= sizeof(lname))
        nlen = sizeof(lname) - 1;
    for (size_t i = 0; i < nlen; i++)
        lname[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    json_init(&p, pair, sizeof(pair));
    json_array_begin(&p);
    json_elem(&p);
    json_strn(&p, lname, nlen);
    json_elem(&p);
    if (conn_http_redacted(c, name, nlen))
        json_str(&p, "[redacted]");
    else
        json_strn(&p, value, vlen < CONN_HEADER_VALUE_MAX ? vlen : CONN_HEADER_VALUE_MAX);
    json_array_end(&p);
    if (p.overflow || j->len + p.len + 2 >= j->cap)
        return;
    json_elem(j);
    json_raw(j, pair, p.len);
}

static struct conn_heads *conn_heads_find(struct conn *c, uint32_t key, bool create)
{
    for (struct conn_heads *h = c->heads; h; h = h->next)
        if (h->key == key)
            return h;
    if (!create)
        return NULL;
    struct conn_heads *h = calloc(1, sizeof(*h));
    if (h) {
        h->key = key;
        h->next = c->heads;
        c->heads = h;
    }
    return h;
}

/* Keeps the rendered list j for the exchange `key` (request or response side). */
static void conn_heads_keep(struct conn *c, uint32_t key, bool response, struct json *j)
{
    struct conn_heads *h = conn_heads_find(c, key, true);
    char **slot = h ? (response ? &h->resp : &h->req) : NULL;
    if (!slot || j->overflow)
        return;
    free(*slot);
    *slot = strndup(j->buf, j->len);
}

/* Removes the exchange's lists from the connection; the caller frees the result. */
static struct conn_heads *conn_heads_take(struct conn *c, uint32_t key)
{
    for (struct conn_heads **p = &c->heads; *p; p = &(*p)->next) {
        if ((*p)->key == key) {
            struct conn_heads *h = *p;
            *p = h->next;
            return h;
        }
    }
    return NULL;
}

/* Keeps a copy of the request's header fields for exchange `key`. */
static void conn_heads_keep_fields(struct conn *c, uint32_t key,
                                   const struct policy_http_header *f, size_t n)
{
    size_t size = n * sizeof(*f);
    for (size_t i = 0; i < n; i++)
        size += f[i].name_len + f[i].value_len;
    struct conn_heads *h = conn_heads_find(c, key, true);
    if (!h)
        return;
    free(h->fields);
    h->n_fields = 0;
    if (!(h->fields = malloc(size ? size : 1)))
        return;
    char *p = (char *)(h->fields + n);
    for (size_t i = 0; i < n; i++) {
        memcpy(p, f[i].name, f[i].name_len);
        memcpy(p + f[i].name_len, f[i].value, f[i].value_len);
        h->fields[i] = (struct policy_http_header){p, f[i].name_len, p + f[i].name_len,
                                                   f[i].value_len};
        p += f[i].name_len + f[i].value_len;
    }
    h->n_fields = n;
}

static size_t conn_http_request_fields_of(struct conn *c, uint32_t key,
                                          const struct policy_http_header **out)
{
    struct conn_heads *h = conn_heads_find(c, key, false);
    *out = h ? h->fields : NULL;
    return h ? h->n_fields : 0;
}

size_t conn_http_request_fields(struct conn *c, uint32_t key,
                                const struct policy_http_header **out)
{
    return conn_http_request_fields_of(c, key, out);
}

static void conn_heads_free(struct conn_heads *h)
{
    if (!h)
        return;
    free(h->fields);
    free(h->req);
    free(h->resp);
    free(h);
}

void conn_http_release(struct conn *c)
{
    while (c->heads) {
        struct conn_heads *h = c->heads;
        c->heads = h->next;
        conn_heads_free(h);
    }
}

/* Renders and keeps one head's fields. */
#define CONN_HEADS_KEEP(c, key, response, fields, n)                                              \
    do {                                                                                         \
        char buf_[CONN_HEADS_MAX];                                                               \
        struct json j_;                                                                          \
        json_init(&j_, buf_, sizeof(buf_));                                                      \
        json_array_begin(&j_);                                                                   \
        for (size_t i_ = 0; i_ < (n); i_++)                                                      \
            conn_heads_add((c), &j_, (fields)[i_].name, (fields)[i_].name_len,                   \
                           (fields)[i_].value, (fields)[i_].value_len);                          \
        json_array_end(&j_);                                                                     \
        conn_heads_keep((c), (key), (response), &j_);                                            \
    } while (0)

/* ---- the request record ---- */

/* One exchange as the request log sees it, from either protocol. */
struct conn_reqrec {
    uint32_t stream;
    const char *http;
    const char *method, *scheme, *authority, *path;
    int status;
    uint64_t req_bytes, resp_bytes;
    const char *content_type;
    int64_t start_us, end_us;
    bool blocked;
    bool refused; /* the gateway refused a malformed message (400, 431, 505, 502) */
    const char *rule;
    const char *upgrade; /* the protocol switched to, or NULL */
    const char *error;   /* NULL or "" when the exchange completed */
};

static void conn_reqrec_path(const struct conn *c, struct json *j, const char *path)
{
    size_t plen = strlen(path);
    const char *q = conn_cfg(c)->request_log_drop_query ? strchr(path, '?') : NULL;
    json_key(j, "path");
    json_strn(j, path, q ? (size_t)(q - path) : (plen > 2048 ? 2048 : plen));
}

static void conn_reqrec_heads(struct json *j, const char *key, const char *rendered)
{
    json_key(j, key);
    if (rendered)
        json_raw(j, rendered, strlen(rendered));
    else
        json_null(j);
}

/* One request record (docs/LOGS.md, "Request record"), written when the exchange ends. */
static void conn_reqrec_write(struct conn *c, const struct conn_reqrec *x)
{
    int fd = c->w->gw->request_log_fd;
    struct conn_heads *heads = conn_heads_take(c, x->stream);
    char line[2 * CONN_HEADS_MAX + 4096], ts[40];
    struct json j;
    if (fd < 0) {
        conn_heads_free(heads);
        return;
    }
    json_init(&j, line, sizeof(line) - 1);
    json_begin(&j);
    json_kv_str(&j, "ts", log_time_rfc3339(ts, sizeof(ts)));
    json_kv_uint(&j, "conn", c->id);
    json_kv_uint(&j, "stream", x->stream);
    json_kv_str(&j, "http", x->http);
    json_kv_str(&j, "method", x->method);
    json_kv_str(&j, "scheme", x->scheme);
    json_kv_str(&j, "authority", x->authority);
    conn_reqrec_path(c, &j, x->path);
    json_kv_uint(&j, "status", (uint64_t)(x->status > 0 ? x->status : 0));
    json_kv_uint(&j, "req_bytes", x->req_bytes);
    json_kv_uint(&j, "resp_bytes", x->resp_bytes);
    json_kv_str(&j, "content_type", x->content_type[0] ? x->content_type : NULL);
    json_kv_uint(&j, "duration_ms",
                 x->end_us > x->start_us ? (uint64_t)(x->end_us - x->start_us) / 1000 : 0);
    json_kv_str(&j, "rule", x->blocked ? x->rule : NULL);
    json_kv_str(&j, "action", x->blocked ? "block" : x->refused ? "refuse" : "allow");
    if (x->upgrade)
        json_kv_str(&j, "upgrade", x->upgrade);
    if (x->error && x->error[0] && !x->blocked)
        json_kv_str(&j, "error", x->error);
    if (conn_cfg(c)->request_log_headers) {
        conn_reqrec_heads(&j, "req_headers", heads ? heads->req : NULL);
        conn_reqrec_heads(&j, "resp_headers", heads ? heads->resp : NULL);
    }
    json_end(&j);
    conn_heads_free(heads);
    if (j.overflow)
        return;
    line[j.len] = '\n';
    connlog_write(fd, line, j.len + 1);
}

/* ---- HTTP/1.1 hooks ---- */

static int conn_http1_on_request(void *arg, const struct http1_request_info *req,
                                 struct http1_block *blk)
{
    struct conn *c = arg;
    struct policy_http_header hdrs[HTTP1_MAX_HEADERS];
    for (size_t i = 0; i < req->n_headers; i++)
        hdrs[i] = (struct policy_http_header){req->headers[i].name, req->headers[i].name_len,
                                              req->headers[i].value, req->headers[i].value_len};
    struct policy_http_request pr = {req->method, req->authority, req->path, hdrs,
                                     req->n_headers};
    if (conn_http_logs_headers(c))
        CONN_HEADS_KEEP(c, req->seq, false, req->headers, req->n_headers);
    if (policy_http_uses_headers(conn_cfg(c)->policy))
        conn_heads_keep_fields(c, req->seq, hdrs, req->n_headers);
    if (conn_http_decide_request(c, &pr, &blk->rule)) {
        conn_http_block_ref(c, req->seq, &blk->ref);
        return HTTP1_BLOCK;
    }
    return HTTP1_ALLOW;
}

static int conn_http1_on_response(void *arg, const struct http1_response_info *resp,
                                  struct http1_block *blk)
{
    struct conn *c = arg;
    const struct http1_exchange *x = resp->req;
    if (conn_http_logs_headers(c))
        CONN_HEADS_KEEP(c, x->seq, true, resp->headers, resp->n_headers);
    if (conn_http_decide_response(c, x->seq, x->method, x->authority, x->path, resp->status,
                                  resp->content_type, &blk->rule)) {
        conn_http_block_ref(c, x->seq, &blk->ref);
        return HTTP1_BLOCK;
    }
    return HTTP1_ALLOW;
}

static size_t conn_http1_block_page(void *arg, const struct http1_exchange *x, char *buf,
                                    size_t cap)
{
    return conn_http_render_page(arg, x->scheme, x->authority, x->path, x->rule, x->ref, buf,
                                 cap);
}

static void conn_http1_on_exchange(void *arg, const struct http1_exchange *x)
{
    struct conn *c = arg;
    struct conn_reqrec r = {
        .stream = x->seq,
        .http = x->http_minor ? "1.1" : "1.0",
        .method = x->method,
        .scheme = x->scheme,
        .authority = x->authority,
        .path = x->path,
        .status = x->status,
        .req_bytes = x->req_bytes,
        .resp_bytes = x->resp_bytes,
        .content_type = x->content_type,
        .start_us = x->start_us,
        .end_us = x->end_us,
        .blocked = x->end == HTTP1_END_BLOCKED,
        .refused = x->end == HTTP1_END_BAD_REQUEST || x->end == HTTP1_END_BAD_RESPONSE,
        .rule = x->rule,
        .upgrade = x->end == HTTP1_END_UPGRADED ? x->upgrade : NULL,
        .error = x->error,
    };
    conn_reqrec_write(c, &r);
}

const struct http1_hooks conn_http_hooks = {
    .on_request = conn_http1_on_request,
    .on_response = conn_http1_on_response,
    .on_exchange = conn_http1_on_exchange,
    .block_page = conn_http1_block_page,
    .body_begin = conn_body_http1_begin,
    .on_body = conn_body_http1_data,
    .body_end = conn_body_end,
};

/* ---- HTTP/2 hooks ---- */

static int conn_h2_on_request(void *arg, const struct h2_request_info *req, struct h2_block *blk)
{
    struct conn *c = arg;
    struct policy_http_header hdrs[H2_MAX_HEADERS];
    size_t n = req->n_headers < H2_MAX_HEADERS ? req->n_headers : H2_MAX_HEADERS;
    for (size_t i = 0; i < n; i++)
        hdrs[i] = (struct policy_http_header){req->headers[i].name, req->headers[i].name_len,
                                              req->headers[i].value, req->headers[i].value_len};
    struct policy_http_request pr = {req->method, req->authority, req->path, hdrs, n};
    if (conn_http_logs_headers(c))
        CONN_HEADS_KEEP(c, (uint32_t)req->stream_id, false, req->headers, n);
    if (policy_http_uses_headers(conn_cfg(c)->policy))
        conn_heads_keep_fields(c, (uint32_t)req->stream_id, hdrs, n);
    if (conn_http_decide_request(c, &pr, &blk->rule)) {
        conn_http_block_ref(c, req->seq, &blk->ref);
        return H2_BLOCK;
    }
    return H2_ALLOW;
}

static int conn_h2_on_response(void *arg, const struct h2_response_info *resp,
                               struct h2_block *blk)
{
    struct conn *c = arg;
    const struct h2_exchange *x = resp->req;
    if (conn_http_logs_headers(c))
        CONN_HEADS_KEEP(c, (uint32_t)x->stream_id, true, resp->headers, resp->n_headers);
    if (conn_http_decide_response(c, (uint32_t)x->stream_id, x->method, x->authority, x->path,
                                  resp->status, resp->content_type, &blk->rule)) {
        conn_http_block_ref(c, x->seq, &blk->ref);
        return H2_BLOCK;
    }
    return H2_ALLOW;
}

static size_t conn_h2_block_page(void *arg, const struct h2_exchange *x, char *buf, size_t cap)
{
    return conn_http_render_page(arg, x->scheme, x->authority, x->path, x->rule, x->ref, buf,
                                 cap);
}

static void conn_h2_on_exchange(void *arg, const struct h2_exchange *x)
{
    struct conn *c = arg;
    struct conn_reqrec r = {
        .stream = (uint32_t)x->stream_id,
        .http = "2",
        .method = x->method,
        .scheme = x->scheme,
        .authority = x->authority,
        .path = x->path,
        .status = x->status,
        .req_bytes = x->req_bytes,
        .resp_bytes = x->resp_bytes,
        .content_type = x->content_type,
        .start_us = x->start_us,
        .end_us = x->end_us,
        .blocked = x->end == H2_END_BLOCKED,
        .refused = x->end == H2_END_BAD_REQUEST || x->end == H2_END_BAD_RESPONSE,
        .rule = x->rule,
        .error = x->end == H2_END_COMPLETE ? NULL : x->error,
    };
    conn_reqrec_write(c, &r);
}

const struct h2_hooks conn_h2_hooks = {
    .on_request = conn_h2_on_request,
    .on_response = conn_h2_on_response,
    .on_exchange = conn_h2_on_exchange,
    .block_page = conn_h2_block_page,
    .body_begin = conn_body_h2_begin,
    .on_body = conn_body_h2_data,
    .body_end = conn_body_end,
};
