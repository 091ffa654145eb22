/* conn_http: HTTP/1.1 inside intercepted connections — the policy's HTTP rules, the block
 * page, and the request log. */
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "conn_int.h"
#include "gateway.h"
#include "http1.h"
#include "json.h"
#include "log.h"
#include "policy.h"
#include "worker.h"

static void conn_http_request_of(const struct http1_request_info *req,
                                 struct policy_http_header *hdrs, struct policy_http_request *pr)
{
    for (size_t i = 0; i < req->n_headers; i++)
        hdrs[i] = (struct policy_http_header){req->headers[i].name, req->headers[i].name_len,
                                              req->headers[i].value, req->headers[i].value_len};
    *pr = (struct policy_http_request){req->method, req->authority, req->path, hdrs,
                                       req->n_headers};
}

static int conn_http_block(struct conn *c, unsigned seq, const char *rule,
                           struct http1_block *blk)
{
    static _Thread_local char ref[48];
    snprintf(ref, sizeof(ref), "%llu-%u", (unsigned long long)c->id, seq);
    blk->rule = rule;
    blk->ref = ref;
    return HTTP1_BLOCK;
}

static int conn_http_on_request(void *arg, const struct http1_request_info *req,
                                struct http1_block *blk)
{
    struct conn *c = arg;
    struct policy_http_header hdrs[HTTP1_MAX_HEADERS];
    struct policy_http_request pr;
    struct policy_http_decision d;
    conn_http_request_of(req, hdrs, &pr);
    policy_decide_http_request(conn_cfg(c)->policy, &pr, &d);
    if (d.action == POLICY_HTTP_BLOCK && !d.need_response)
        return conn_http_block(c, req->seq, d.rule, blk);
    return HTTP1_ALLOW;
}

static int conn_http_on_response(void *arg, const struct http1_response_info *resp,
                                 struct http1_block *blk)
{
    struct conn *c = arg;
    const struct http1_exchange *x = resp->req;
    struct policy_http_request pr = {x->method, x->authority, x->path, NULL, 0};
    struct policy_http_response rs = {resp->status, resp->content_type};
    struct policy_http_decision d;
    policy_decide_http_response(conn_cfg(c)->policy, &pr, &rs, &d);
    if (d.action == POLICY_HTTP_BLOCK)
        return conn_http_block(c, x->seq, d.rule, blk);
    return HTTP1_ALLOW;
}

static size_t conn_http_block_page(void *arg, const struct http1_exchange *x, char *buf,
                                   size_t cap)
{
    struct conn *c = arg;
    char url[1024], client[ADDR_TEXT_MAX];
    snprintf(url, sizeof(url), "https://%s%s", x->authority, x->path);
    addr_format((struct sockaddr *)&c->client, client, sizeof(client));
    struct policy_page_vars vars = {x->rule, x->ref, x->authority, url, client};
    long n = policy_render_block_page(conn_cfg(c)->policy, &vars, buf, cap);
    return n > 0 ? (size_t)n : 0;
}

static const char *conn_http_end_action(enum http1_end end)
{
    return end == HTTP1_END_BLOCKED ? "block" : "allow";
}

/* One request record (docs/LOGS.md, "Request record"), written when the exchange ends. */
static void conn_http_on_exchange(void *arg, const struct http1_exchange *x)
{
    struct conn *c = arg;
    int fd = c->w->gw->request_log_fd;
    if (fd < 0)
        return;
    char line[4096], ts[40];
    struct json j;
    size_t plen = strlen(x->path);
    const char *q = conn_cfg(c)->request_log_drop_query ? strchr(x->path, '?') : NULL;
    json_init(&j, line, sizeof(line) - 1);
    json_begin(&j);
    json_kv_str(&j, "ts", log_time_rfc3339(ts, sizeof(ts)));
    json_kv_uint(&j, "conn", c->id);
    json_kv_uint(&j, "stream", x->seq);
    json_kv_str(&j, "http", x->http_minor ? "1.1" : "1.0");
    json_kv_str(&j, "method", x->method);
    json_kv_str(&j, "scheme", x->scheme);
    json_kv_str(&j, "authority", x->authority);
    json_key(&j, "path");
    json_strn(&j, x->path, q ? (size_t)(q - x->path) : (plen > 2048 ? 2048 : plen));
    json_kv_uint(&j, "status", (uint64_t)(x->status > 0 ? x->status : 0));
    json_kv_uint(&j, "req_bytes", x->req_bytes);
    json_kv_uint(&j, "resp_bytes", x->resp_bytes);
    json_kv_str(&j, "content_type", x->content_type[0] ? x->content_type : NULL);
    json_kv_uint(&j, "duration_ms",
                 x->end_us > x->start_us ? (uint64_t)(x->end_us - x->start_us) / 1000 : 0);
    json_kv_str(&j, "rule", x->end == HTTP1_END_BLOCKED ? x->rule : NULL);
    json_kv_str(&j, "action", conn_http_end_action(x->end));
    if (x->error && x->error[0] && x->end != HTTP1_END_BLOCKED)
        json_kv_str(&j, "error", x->error);
    json_end(&j);
    if (j.overflow)
        return;
    line[j.len] = '\n';
    connlog_write(fd, line, j.len + 1);
}

const struct http1_hooks conn_http_hooks = {
    .on_request = conn_http_on_request,
    .on_response = conn_http_on_response,
    .on_exchange = conn_http_on_exchange,
    .block_page = conn_http_block_page,
};
