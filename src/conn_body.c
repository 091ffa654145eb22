/* conn_body: body rules inside intercepted connections — the body hooks of the HTTP/1.1
 * inspector and of the HTTP/2 bridge. For each message body they ask the policy which body
 * rules are armed, scan the decoded body with a bodyscan, answer block when a rule's patterns
 * are found, and write the rule's capture of the body to the capture file (docs/LOGS.md,
 * "Capture file"). See docs/POLICY.md, "Body rules". */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bodyscan.h"
#include "conn_int.h"
#include "gateway.h"
#include "h2.h"
#include "http1.h"
#include "json.h"
#include "log.h"
#include "policy.h"
#include "worker.h"

#define CONN_BODY_HEADERS_MAX 128 /* H2_MAX_HEADERS; HTTP1_MAX_HEADERS is less */
#define CONN_BODY_CTYPE_MAX 128
#define CONN_BODY_CODING_MAX 128

/* One message head as both protocols show it to the body hooks. Borrowed for the call. */
struct conn_body_msg {
    bool response;
    uint32_t stream;  /* the request log's "stream": HTTP/1.1 request number, h2 stream id */
    unsigned seq;     /* the request's number on the connection: the reference's second half */
    const char *http; /* "1.1", "2" */
    const char *method, *authority, *path;
    const struct policy_http_header *req_headers; /* the request's (for a response: as kept
                                                   * by conn_http, when the policy needs them) */
    size_t n_req_headers;
    const struct policy_http_header *headers; /* the message's own */
    size_t n_headers;
    const char *content_type; /* NULL: none */
    int status;               /* response bodies */
    uint64_t max_hold;        /* the most the inspector can hold */
};

/* One body being inspected. The armed rules' names and pattern sets are the policy's: the
 * connection's snapshot reference keeps them alive. */
struct conn_body {
    struct conn *c;
    struct bodyscan *scan;
    bool response;
    uint32_t stream;
    unsigned seq;
    const char *http;
    char method[16];
    char content_type[CONN_BODY_CTYPE_MAX];
    char content_encoding[CONN_BODY_CODING_MAX];
    char *where; /* "authority\0path\0" */
    size_t n;
    const char *rule[POLICY_BODY_RULES_MAX];
    size_t capture[POLICY_BODY_RULES_MAX];
};

/* ---- what is scanned ---- */

/* "application/json; charset=utf-8" -> its media type, lower-cased, into buf. */
static const char *conn_body_media_type(const char *v, char *buf, size_t size)
{
    size_t n = 0;
    while (*v == ' ' || *v == '\t')
        v++;
    for (; *v && *v != ';' && n + 1 < size; v++)
        buf[n++] = (char)((*v >= 'A' && *v <= 'Z') ? *v + 32 : *v);
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    return buf;
}

static bool conn_body_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Text-like bodies (docs/POLICY.md): text/ANY, JSON, XML, JavaScript, forms, and bodies that
 * name no type at all. */
static bool conn_body_is_text(const char *content_type)
{
    static const char *const types[] = {
        "application/json",       "application/xml",          "application/javascript",
        "application/ecmascript", "application/x-javascript", "application/x-www-form-urlencoded",
        "multipart/form-data",    "application/graphql",      "application/x-ndjson",
        "application/yaml",       "application/x-yaml",
    };
    char mt[CONN_BODY_CTYPE_MAX];
    if (!content_type || !*conn_body_media_type(content_type, mt, sizeof(mt)))
        return true;
    if (strncmp(mt, "text/", 5) == 0 || conn_body_ends_with(mt, "+json") ||
        conn_body_ends_with(mt, "+xml"))
        return true;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(mt, types[i]) == 0)
            return true;
    return false;
}

/* The values of every header named name, joined with ", " into buf ("" when none). Returns
 * -1 when they do not fit (buf then holds a cut list). */
static int conn_body_header(const struct policy_http_header *h, size_t n, const char *name,
                            char *buf, size_t size)
{
    size_t len = 0, nl = strlen(name);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (h[i].name_len != nl || strncasecmp(h[i].name, name, nl) != 0)
            continue;
        int w = snprintf(buf + len, size - len, "%s%.*s", len ? ", " : "", (int)h[i].value_len,
                         h[i].value);
        if (w < 0 || (size_t)w >= size - len)
            return -1;
        len += (size_t)w;
    }
    return 0;
}

/* How much of the message waits for its body: a request until it was scanned as far as it
 * will be; a response for body_response_hold (an event stream never: it may never end). */
static uint64_t conn_body_hold(const struct config *cfg, const struct conn_body_msg *m)
{
    char mt[CONN_BODY_CTYPE_MAX];
    uint64_t hold = m->response ? cfg->body_response_hold : cfg->body_inspect_max;
    if (m->response && m->content_type &&
        strcmp(conn_body_media_type(m->content_type, mt, sizeof(mt)), "text/event-stream") == 0)
        hold = 0;
    return hold < m->max_hold ? hold : m->max_hold;
}

/* ---- a body's state ---- */

static void conn_body_free(struct conn_body *b)
{
    if (!b)
        return;
    bodyscan_free(b->scan);
    free(b->where);
    free(b);
}

static struct conn_body *conn_body_new(struct conn *c, const struct conn_body_msg *m,
                                       const struct policy_body_arm *arm)
{
    struct conn_body *b = calloc(1, sizeof(*b));
    size_t alen = strlen(m->authority), plen = strlen(m->path);
    if (!b || !(b->where = malloc(alen + plen + 2))) {
        free(b);
        return NULL;
    }
    memcpy(b->where, m->authority, alen + 1);
    memcpy(b->where + alen + 1, m->path, plen + 1);
    b->c = c;
    b->response = m->response;
    b->stream = m->stream;
    b->seq = m->seq;
    b->http = m->http;
    snprintf(b->method, sizeof(b->method), "%s", m->method);
    snprintf(b->content_type, sizeof(b->content_type), "%s",
             m->content_type ? m->content_type : "");
    /* a cut list of codings could read as fewer codings than were applied: not inspected */
    if (conn_body_header(m->headers, m->n_headers, "content-encoding", b->content_encoding,
                         sizeof(b->content_encoding)) != 0)
        snprintf(b->content_encoding, sizeof(b->content_encoding), "too-long-to-read");
    b->n = arm->n;
    for (size_t i = 0; i < arm->n; i++) {
        b->rule[i] = arm->rule[i];
        b->capture[i] = arm->capture[i];
    }
    return b;
}

/* The limits of the scan: as far as the body is inspected, and the largest capture asked. */
static struct bodyscan_limits conn_body_limits(const struct conn_body *b)
{
    const struct config *cfg = conn_cfg(b->c);
    struct bodyscan_limits lim = {.max_decoded = cfg->body_inspect_max,
                                  .max_encoded = cfg->body_inspect_max};
    if (b->c->w->gw->capture_fd >= 0)
        for (size_t i = 0; i < b->n; i++)
            if (b->capture[i] > lim.capture)
                lim.capture = b->capture[i];
    return lim;
}

/* Arms the body rules for a message, and starts a scan when some are. NULL: not inspected. */
static struct conn_body *conn_body_begin(struct conn *c, const struct conn_body_msg *m,
                                         uint64_t *hold)
{
    const struct config *cfg = conn_cfg(c);
    struct policy_body_arm arm;
    if (!policy_has_body_rules(cfg->policy))
        return NULL;
    struct policy_http_request req = {m->method, m->authority, m->path, m->req_headers,
                                      m->n_req_headers};
    struct policy_http_response resp = {m->status, m->content_type};
    policy_arm_http_body(cfg->policy, &req, m->response ? &resp : NULL, &arm);
    if (arm.n == 0 || (!cfg->body_types_all && !conn_body_is_text(m->content_type)))
        return NULL;
    struct conn_body *b = conn_body_new(c, m, &arm);
    struct bodyscan_limits lim = b ? conn_body_limits(b) : (struct bodyscan_limits){0};
    if (b && !(b->scan = bodyscan_new(b->content_encoding, arm.patterns, arm.n, &lim))) {
        conn_body_free(b);
        b = NULL;
    }
    if (!b) {
        log_msg(LOG_WARN, "conn %llu: out of memory: a %s body of %s is not inspected",
                (unsigned long long)c->id, m->response ? "response" : "request", m->authority);
        return NULL;
    }
    *hold = conn_body_hold(cfg, m);
    return b;
}

/* ---- captures ---- */

/* The capture record's fields before the body (docs/LOGS.md, "Capture file"). */
static void conn_body_capture_head(const struct conn_body *b, struct json *j, const char *rule,
                                   size_t len, bool ended)
{
    char ts[40], ref[48];
    const char *path = b->where + strlen(b->where) + 1;
    size_t plen = strlen(path);
    snprintf(ref, sizeof(ref), "%llu-%u", (unsigned long long)b->c->id, b->seq);
    json_begin(j);
    json_kv_str(j, "ts", log_time_rfc3339(ts, sizeof(ts)));
    json_kv_uint(j, "conn", b->c->id);
    json_kv_uint(j, "stream", b->stream);
    json_kv_str(j, "ref", ref);
    json_kv_str(j, "http", b->http);
    json_kv_str(j, "rule", rule);
    json_kv_str(j, "direction", b->response ? "response" : "request");
    json_kv_str(j, "method", b->method);
    json_kv_str(j, "authority", b->where);
    json_key(j, "path");
    json_strn(j, path, plen > 2048 ? 2048 : plen);
    json_kv_str(j, "content_type", b->content_type[0] ? b->content_type : NULL);
    json_kv_str(j, "content_encoding", b->content_encoding[0] ? b->content_encoding : NULL);
    json_kv_uint(j, "bytes", len);
    json_key(j, "truncated");
    json_bool(j, !ended || len < bodyscan_decoded(b->scan));
    json_key(j, "body_b64");
}

/* Writes the first `want` bytes of the decoded body, as the rule that matched asked, in one
 * record of one write. */
static void conn_body_capture(struct conn_body *b, const char *rule, size_t want, bool ended)
{
    int fd = b->c->w->gw->capture_fd;
    size_t len;
    const uint8_t *data = bodyscan_captured(b->scan, &len);
    char head[16384];
    struct json j;
    if (fd < 0 || want == 0)
        return;
    len = len < want ? len : want;
    json_init(&j, head, sizeof(head));
    conn_body_capture_head(b, &j, rule, len, ended);
    size_t b64 = 4 * ((len + 2) / 3);
    char *line = j.overflow ? NULL : malloc(j.len + b64 + 8);
    if (!line) {
        log_msg(LOG_WARN, "conn %llu: a capture for rule %s could not be written (%s)",
                (unsigned long long)b->c->id, rule, j.overflow ? "head too long" : "out of memory");
        return;
    }
    memcpy(line, head, j.len);
    size_t n = j.len;
    line[n++] = '"';
    n += (size_t)EVP_EncodeBlock((unsigned char *)line + n, data, (int)len);
    memcpy(line + n, "\"}\n", 3);
    connlog_write(fd, line, n + 3);
    free(line);
}

/* ---- the scan ---- */

/* Feeds a piece (and the end) to the scan. Returns 1 with *rule when a rule matched, 0 while
 * more is wanted, -1 when the scan is over without a match. */
static int conn_body_scan(struct conn_body *b, const uint8_t *data, size_t len, bool end,
                          const char **rule)
{
    enum bodyscan_status st = bodyscan_feed(b->scan, data, len);
    if (st == BODYSCAN_MORE && end)
        st = bodyscan_end(b->scan);
    if (st == BODYSCAN_MATCH) {
        int i = bodyscan_match(b->scan);
        *rule = b->rule[i];
        conn_body_capture(b, b->rule[i], b->capture[i], end);
        LOG_DEBUGF("conn %llu: %s body of %s%s blocked by body rule %s",
                   (unsigned long long)b->c->id, b->response ? "response" : "request", b->where,
                   b->where + strlen(b->where) + 1, *rule);
        return 1;
    }
    if (st == BODYSCAN_MORE)
        return 0;
    if (!bodyscan_error(b->scan))
        return -1;
    bool block = conn_cfg(b->c)->body_uninspectable_block;
    log_msg(LOG_INFO, "conn %llu: %s body of %s%s not (wholly) inspected: %s (%s)%s",
            (unsigned long long)b->c->id, b->response ? "response" : "request", b->where,
            b->where + strlen(b->where) + 1, bodyscan_error(b->scan),
            b->content_encoding[0] ? b->content_encoding : "identity",
            block ? "; blocked (body_uninspectable: block)" : "");
    if (!block)
        return -1;
    *rule = b->rule[0]; /* the first rule that wanted to read it */
    return 1;
}

static const char *conn_body_ref(const struct conn_body *b)
{
    static _Thread_local char ref[48];
    snprintf(ref, sizeof(ref), "%llu-%u", (unsigned long long)b->c->id, b->seq);
    return ref;
}

void conn_body_end(void *arg, void *body)
{
    conn_body_free(body);
}

/* ---- HTTP/1.1 ---- */

static size_t conn_body_h1_headers(const struct http1_header *h, size_t n,
                                   struct policy_http_header *out)
{
    n = n < CONN_BODY_HEADERS_MAX ? n : CONN_BODY_HEADERS_MAX;
    for (size_t i = 0; i < n; i++)
        out[i] = (struct policy_http_header){h[i].name, h[i].name_len, h[i].value, h[i].value_len};
    return n;
}

void conn_body_http1_begin(void *arg, const struct http1_body_info *info,
                           struct http1_body_plan *plan)
{
    struct policy_http_header hdrs[CONN_BODY_HEADERS_MAX];
    char ctype[CONN_BODY_CTYPE_MAX];
    struct conn_body_msg m = {.response = info->side == HTTP1_SERVER, .max_hold = UINT64_MAX};
    if (info->req) {
        const struct http1_request_info *r = info->req;
        m.n_headers = m.n_req_headers = conn_body_h1_headers(r->headers, r->n_headers, hdrs);
        m.headers = m.req_headers = hdrs;
        conn_body_header(hdrs, m.n_headers, "content-type", ctype, sizeof(ctype));
        m.content_type = ctype[0] ? ctype : NULL;
        m.seq = r->seq;
        m.method = r->method, m.authority = r->authority, m.path = r->path;
        m.http = r->http_minor ? "1.1" : "1.0";
    } else {
        const struct http1_response_info *r = info->resp;
        m.n_headers = conn_body_h1_headers(r->headers, r->n_headers, hdrs);
        m.headers = hdrs;
        m.n_req_headers = conn_http_request_fields(arg, r->req->seq, &m.req_headers);
        m.content_type = r->content_type[0] ? r->content_type : NULL;
        m.status = r->status;
        m.seq = r->req->seq;
        m.method = r->req->method, m.authority = r->req->authority, m.path = r->req->path;
        m.http = r->http_minor ? "1.1" : "1.0";
    }
    m.stream = m.seq;
    plan->body = conn_body_begin(arg, &m, &plan->hold);
}

int conn_body_http1_data(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                         struct http1_block *blk)
{
    const char *rule = NULL;
    int rc = conn_body_scan(body, data, len, end, &rule);
    if (rc == 0)
        return HTTP1_BODY_MORE;
    if (rc < 0)
        return HTTP1_BODY_DONE;
    blk->rule = rule;
    blk->ref = conn_body_ref(body);
    return HTTP1_BODY_BLOCK;
}

/* ---- HTTP/2 ---- */

static size_t conn_body_h2_headers(const struct h2_header *h, size_t n,
                                   struct policy_http_header *out)
{
    n = n < CONN_BODY_HEADERS_MAX ? n : CONN_BODY_HEADERS_MAX;
    for (size_t i = 0; i < n; i++)
        out[i] = (struct policy_http_header){h[i].name, h[i].name_len, h[i].value, h[i].value_len};
    return n;
}

void conn_body_h2_begin(void *arg, const struct h2_body_info *info, struct h2_body_plan *plan)
{
    struct policy_http_header hdrs[CONN_BODY_HEADERS_MAX];
    char ctype[CONN_BODY_CTYPE_MAX];
    struct conn_body_msg m = {.response = info->response, .http = "2", .max_hold = info->max_hold};
    if (info->req) {
        const struct h2_request_info *r = info->req;
        m.n_headers = m.n_req_headers = conn_body_h2_headers(r->headers, r->n_headers, hdrs);
        m.headers = m.req_headers = hdrs;
        conn_body_header(hdrs, m.n_headers, "content-type", ctype, sizeof(ctype));
        m.content_type = ctype[0] ? ctype : NULL;
        m.seq = r->seq;
        m.stream = (uint32_t)r->stream_id;
        m.method = r->method, m.authority = r->authority, m.path = r->path;
    } else {
        const struct h2_response_info *r = info->resp;
        m.n_headers = conn_body_h2_headers(r->headers, r->n_headers, hdrs);
        m.headers = hdrs;
        m.n_req_headers = conn_http_request_fields(arg, (uint32_t)r->req->stream_id,
                                                   &m.req_headers);
        m.content_type = r->content_type[0] ? r->content_type : NULL;
        m.status = r->status;
        m.seq = r->req->seq;
        m.stream = (uint32_t)r->req->stream_id;
        m.method = r->req->method, m.authority = r->req->authority, m.path = r->req->path;
    }
    plan->body = conn_body_begin(arg, &m, &plan->hold);
}

int conn_body_h2_data(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                      struct h2_block *blk)
{
    const char *rule = NULL;
    int rc = conn_body_scan(body, data, len, end, &rule);
    if (rc == 0)
        return H2_BODY_MORE;
    if (rc < 0)
        return H2_BODY_DONE;
    blk->rule = rule;
    blk->ref = conn_body_ref(body);
    return H2_BODY_BLOCK;
}
