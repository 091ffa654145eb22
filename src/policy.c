/* policy: the immutable policy snapshot — sharing it, and answering the connection path and
 * the HTTP layer. Building it from YAML is policy_parse.c; the commands are policy_cli.c.
 *
 * Deciding touches only the snapshot and the caller's stack: a flow's names are normalised and
 * hashed once (struct domain_query, lazily, on the first rule that needs them) and then
 * probed against each rule's sets, so a decision costs a few hash probes per rule. */
#include "policy_int.h"

#include <stdlib.h>

#include "bodyscan.h"
#include "html.h"
#include <string.h>
#include <strings.h>

#define POLICY_MATCH_LIMIT 100000u /* regex backtracking steps per match */
#define POLICY_DEPTH_LIMIT 1000u

static const char policy_builtin_page[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Blocked</title>\n"
    "<style>body{font-family:sans-serif;max-width:40em;margin:4em auto;padding:0 1em}"
    "code{background:#eee;padding:0 .3em}</style></head>\n"
    "<body><h1>This page is blocked</h1>\n"
    "<p>The gateway's policy blocked the request to <b>{{host}}</b> (rule <code>{{rule}}"
    "</code>).</p>\n"
    "<p>Address: <code>{{url}}</code></p>\n"
    "<p>If you think this is a mistake, contact your administrator and quote the reference "
    "<code>{{ref}}</code>.</p>\n"
    "</body></html>\n";

struct policy *policy_alloc(void)
{
    struct policy *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    p->default_action = POLICY_INTERCEPT;
    p->default_how = POLICY_HOW_NONE;
    p->pinning = (struct policy_pinning){
        .enabled = true, .threshold = 3, .window_ms = 5 * 60 * 1000, .ttl_ms = 60 * 60 * 1000};
    p->match_ctx = pcre2_match_context_create(NULL);
    if (!p->match_ctx) {
        free(p);
        return NULL;
    }
    pcre2_set_match_limit(p->match_ctx, POLICY_MATCH_LIMIT);
    pcre2_set_depth_limit(p->match_ctx, POLICY_DEPTH_LIMIT);
    return p;
}

struct policy *policy_new_default(enum policy_action action)
{
    struct policy *p = policy_alloc();

    if (!p)
        return NULL;
    p->default_action = action;
    p->default_how = action == POLICY_BLOCK ? POLICY_HOW_ALERT : POLICY_HOW_NONE;
    return p;
}

static void policy_free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void policy_free_names(struct policy_names *names)
{
    domainset_free(names->patterns);
    free(names->lists);
}

static void policy_free_regex(struct policy_regex *r)
{
    free(r->text);
    pcre2_code_free(r->code);
}

static void policy_free_rule(struct policy_rule *r)
{
    free(r->name);
    policy_free_names(&r->sni);
    policy_free_names(&r->host);
    netset_free(r->client);
    netset_free(r->dst);
    free(r->ports);
    policy_free_strings(r->alpn, r->n_alpn);
}

static void policy_free_http_rule(struct policy_http_rule *r)
{
    free(r->name);
    policy_free_strings(r->methods, r->n_methods);
    policy_free_names(&r->host);
    policy_free_strings(r->paths, r->n_paths);
    for (size_t i = 0; i < r->n_path_regex; i++)
        policy_free_regex(&r->path_regex[i]);
    free(r->path_regex);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
        policy_free_regex(&r->headers[i].regex);
    }
    free(r->headers);
    free(r->status);
    policy_free_strings(r->content_types, r->n_content_types);
    bodyscan_patterns_free(r->body);
}

/* Frees everything p owns; only the last policy_unref gets here. */
static void policy_free(struct policy *p)
{
    for (size_t i = 0; i < p->n_rules; i++)
        policy_free_rule(&p->rules[i]);
    free(p->rules);
    for (size_t i = 0; i < p->n_http; i++)
        policy_free_http_rule(&p->http[i]);
    free(p->http);
    for (size_t i = 0; i < p->n_lists; i++) {
        free(p->lists[i]->path);
        domainset_free(p->lists[i]->set);
        free(p->lists[i]);
    }
    free(p->lists);
    free(p->block_page);
    free(p->block_page_path);
    free(p->source);
    pcre2_match_context_free(p->match_ctx);
    free(p);
}

struct policy *policy_ref(struct policy *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void policy_unref(struct policy *p)
{
    if (!p)
        return;
    /* acq_rel: the thread that frees sees every other thread's last use of the snapshot. */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        policy_free(p);
}

const char *policy_action_name(enum policy_action a)
{
    switch (a) {
    case POLICY_INTERCEPT:
        return "intercept";
    case POLICY_PASSTHROUGH:
        return "passthrough";
    case POLICY_BLOCK:
        return "block";
    }
    return "unknown";
}

const char *policy_how_name(enum policy_how h)
{
    switch (h) {
    case POLICY_HOW_NONE:
        return "";
    case POLICY_HOW_ALERT:
        return "alert";
    case POLICY_HOW_RESET:
        return "reset";
    case POLICY_HOW_PAGE:
        return "page";
    }
    return "unknown";
}

const char *policy_http_action_name(enum policy_http_action a)
{
    return a == POLICY_HTTP_BLOCK ? "block" : "allow";
}

const struct policy_pinning *policy_pinning(const struct policy *p)
{
    return &p->pinning;
}

bool policy_has_http_rules(const struct policy *p)
{
    return p->n_http > 0;
}

bool policy_http_uses_headers(const struct policy *p)
{
    for (size_t i = 0; i < p->n_http; i++)
        if (p->http[i].keys & POLICY_KEY_HEADER)
            return true;
    return false;
}

/* ---- connection rules ---- */

bool policy_names_match(const struct policy_names *names, const struct domain_query *q,
                        const char **what, size_t *entry)
{
    if (!q)
        return false;
    if (names->patterns && domainset_match(names->patterns, q, entry)) {
        if (what)
            *what = NULL;
        return true;
    }
    for (size_t i = 0; i < names->n_lists; i++) {
        if (domainset_match(names->lists[i]->set, q, entry)) {
            if (what)
                *what = names->lists[i]->path;
            return true;
        }
    }
    return false;
}

/* A name prepared on first use: state 0 not yet, 1 ready, -1 absent or not a valid name. */
struct policy_lazy_name {
    const char *text;
    int state;
    struct domain_query q;
};

static const struct domain_query *policy_lazy_query(struct policy_lazy_name *n)
{
    if (n->state == 0)
        n->state = n->text && domain_query_init(&n->q, n->text) == 0 ? 1 : -1;
    return n->state == 1 ? &n->q : NULL;
}

static bool policy_ranges_match(const struct policy_range *r, size_t n, unsigned v)
{
    for (size_t i = 0; i < n; i++)
        if (v >= r[i].lo && v <= r[i].hi)
            return true;
    return false;
}

/* True when the wire-format ALPN list offers one of the rule's protocols. */
static bool policy_alpn_match(const struct policy_rule *r, const uint8_t *alpn, size_t len)
{
    if (!alpn)
        return false;
    for (size_t i = 0; i < len;) {
        size_t n = alpn[i];
        if (n == 0 || i + 1 + n > len)
            return false;
        for (size_t k = 0; k < r->n_alpn; k++)
            if (strlen(r->alpn[k]) == n && memcmp(r->alpn[k], alpn + i + 1, n) == 0)
                return true;
        i += 1 + n;
    }
    return false;
}

static bool policy_rule_match(const struct policy_rule *r, const struct policy_flow *f,
                              struct policy_lazy_name *sni, struct policy_lazy_name *host)
{
    if ((r->keys & POLICY_KEY_NO_SNI) && r->no_sni != (f->sni == NULL))
        return false;
    if ((r->keys & POLICY_KEY_PORT) &&
        (f->dst_port == 0 || !policy_ranges_match(r->ports, r->n_ports, f->dst_port)))
        return false;
    if ((r->keys & POLICY_KEY_CLIENT) && !netset_match(r->client, f->client))
        return false;
    if ((r->keys & POLICY_KEY_DST) && !netset_match(r->dst, f->dst))
        return false;
    if ((r->keys & POLICY_KEY_ALPN) && !policy_alpn_match(r, f->alpn, f->alpn_len))
        return false;
    if ((r->keys & POLICY_KEY_SNI) &&
        !policy_names_match(&r->sni, policy_lazy_query(sni), NULL, NULL))
        return false;
    if ((r->keys & POLICY_KEY_HOST) &&
        !policy_names_match(&r->host, policy_lazy_query(host), NULL, NULL))
        return false;
    return true;
}

void policy_decide(const struct policy *p, const struct policy_flow *flow,
                   struct policy_decision *out)
{
    struct policy_lazy_name sni = {.text = flow->sni}, host = {.text = flow->host};

    for (size_t i = 0; i < p->n_rules; i++) {
        const struct policy_rule *r = &p->rules[i];
        if (!policy_rule_match(r, flow, &sni, &host))
            continue;
        *out = (struct policy_decision){r->action, r->how, r->name, (int)i};
        return;
    }
    *out = (struct policy_decision){p->default_action, p->default_how, NULL, -1};
}

char *policy_rule_origin(const struct policy *p, int rule_index, char *buf, size_t size)
{
    if (rule_index < 0 || (size_t)rule_index >= p->n_rules)
        snprintf(buf, size, "%s", "");
    else
        snprintf(buf, size, "%s:%d", p->source ? p->source : "-", p->rules[rule_index].line);
    return buf;
}

/* ---- HTTP rules ---- */

static bool policy_regex_find(const struct policy *p, const struct policy_regex *r, const char *s,
                              size_t len)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc;

    if (!md)
        return false;
    rc = pcre2_match(r->code, (PCRE2_SPTR)s, len, 0, 0, md, p->match_ctx);
    pcre2_match_data_free(md);
    return rc >= 0; /* a match past the backtracking limit counts as no match */
}

/* The host of a Host header without its port; IP literals in brackets match no name. */
static const struct domain_query *policy_http_host(const char *host, struct domain_query *q)
{
    char buf[4 * DOMAIN_MAX + 2];
    size_t n;

    if (!host || host[0] == '[')
        return NULL;
    n = strlen(host);
    const char *colon = memchr(host, ':', n);
    if (colon)
        n = (size_t)(colon - host);
    if (n >= sizeof(buf))
        return NULL;
    memcpy(buf, host, n);
    buf[n] = '\0';
    return domain_query_init(q, buf) == 0 ? q : NULL;
}

static bool policy_header_match(const struct policy *p, const struct policy_header_cond *c,
                                const struct policy_http_request *req)
{
    size_t nlen = strlen(c->name);

    for (size_t i = 0; i < req->n_headers; i++) {
        const struct policy_http_header *h = &req->headers[i];
        if (h->name_len != nlen || strncasecmp(h->name, c->name, nlen) != 0)
            continue;
        if (c->value &&
            (h->value_len != strlen(c->value) || memcmp(h->value, c->value, h->value_len) != 0))
            continue;
        if (c->regex.code && !policy_regex_find(p, &c->regex, h->value, h->value_len))
            continue;
        return true;
    }
    return false;
}

static bool policy_strings_match_ci(char **v, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcasecmp(v[i], s) == 0)
            return true;
    return false;
}

static bool policy_path_match(const struct policy *p, const struct policy_http_rule *r,
                              const char *path)
{
    if (!path)
        return false;
    if (r->keys & POLICY_KEY_PATH) {
        bool any = false;
        for (size_t i = 0; i < r->n_paths && !any; i++)
            any = strncmp(path, r->paths[i], strlen(r->paths[i])) == 0;
        if (!any)
            return false;
    }
    if (r->keys & POLICY_KEY_PATH_REGEX) {
        bool any = false;
        for (size_t i = 0; i < r->n_path_regex && !any; i++)
            any = policy_regex_find(p, &r->path_regex[i], path, strlen(path));
        if (!any)
            return false;
    }
    return true;
}

static bool policy_http_request_match(const struct policy *p, const struct policy_http_rule *r,
                                      const struct policy_http_request *req,
                                      struct policy_lazy_name *host)
{
    if ((r->keys & POLICY_KEY_METHOD) &&
        !policy_strings_match_ci(r->methods, r->n_methods, req->method))
        return false;
    if ((r->keys & POLICY_KEY_HOST) && host->state == 0)
        host->state = policy_http_host(host->text, &host->q) ? 1 : -1;
    if ((r->keys & POLICY_KEY_HOST) &&
        !policy_names_match(&r->host, host->state == 1 ? &host->q : NULL, NULL, NULL))
        return false;
    if ((r->keys & (POLICY_KEY_PATH | POLICY_KEY_PATH_REGEX)) &&
        !policy_path_match(p, r, req->path))
        return false;
    if (r->keys & POLICY_KEY_HEADER) {
        bool any = false;
        for (size_t i = 0; i < r->n_headers && !any; i++)
            any = policy_header_match(p, &r->headers[i], req);
        if (!any)
            return false;
    }
    return true;
}

/* Content-Type "text/html; charset=utf-8" against "text/html" or a "text/" wildcard. */
static bool policy_content_type_match(char **types, size_t n, const char *value)
{
    size_t len;

    if (!value)
        return false;
    while (*value == ' ' || *value == '\t')
        value++;
    len = strcspn(value, ";");
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(types[i]);
        if (tl >= 2 && types[i][tl - 1] == '*') {
            if (len >= tl - 1 && strncasecmp(value, types[i], tl - 1) == 0)
                return true;
        } else if (tl == len && strncasecmp(value, types[i], len) == 0) {
            return true;
        }
    }
    return false;
}

static bool policy_http_response_match(const struct policy_http_rule *r,
                                       const struct policy_http_response *resp)
{
    if ((r->keys & POLICY_KEY_STATUS) &&
        (resp->status < 0 || !policy_ranges_match(r->status, r->n_status, (unsigned)resp->status)))
        return false;
    if ((r->keys & POLICY_KEY_CONTENT_TYPE) &&
        !policy_content_type_match(r->content_types, r->n_content_types, resp->content_type))
        return false;
    return true;
}

void policy_decide_http_request(const struct policy *p, const struct policy_http_request *req,
                                struct policy_http_decision *out)
{
    struct policy_lazy_name host = {.text = req->host};
    unsigned pending = 0; /* actions of earlier response rules whose request keys matched */

    for (size_t i = 0; i < p->n_http; i++) {
        const struct policy_http_rule *r = &p->http[i];
        if ((r->keys & POLICY_KEY_BODY) || !policy_http_request_match(p, r, req, &host))
            continue;
        if (r->keys & POLICY_KEYS_RESPONSE) {
            pending |= 1u << r->action;
            continue;
        }
        bool differs = (pending & ~(1u << r->action)) != 0;
        *out = (struct policy_http_decision){differs ? POLICY_HTTP_ALLOW : r->action,
                                             differs ? NULL : r->name, differs};
        return;
    }
    bool differs = (pending & ~(1u << POLICY_HTTP_ALLOW)) != 0;
    *out = (struct policy_http_decision){POLICY_HTTP_ALLOW, NULL, differs};
}

void policy_decide_http_response(const struct policy *p, const struct policy_http_request *req,
                                 const struct policy_http_response *resp,
                                 struct policy_http_decision *out)
{
    struct policy_lazy_name host = {.text = req->host};

    for (size_t i = 0; i < p->n_http; i++) {
        const struct policy_http_rule *r = &p->http[i];
        if (r->keys & POLICY_KEY_BODY)
            continue;
        if ((r->keys & POLICY_KEYS_RESPONSE) && !policy_http_response_match(r, resp))
            continue;
        if (!policy_http_request_match(p, r, req, &host))
            continue;
        *out = (struct policy_http_decision){r->action, r->name, false};
        return;
    }
    *out = (struct policy_http_decision){POLICY_HTTP_ALLOW, NULL, false};
}

/* Whether rule r, a head rule or a body rule for this side, matches the exchange's heads. At
 * the request (resp NULL) a rule with response keys cannot be known and never matches. */
static bool policy_http_heads_match(const struct policy *p, const struct policy_http_rule *r,
                                    const struct policy_http_request *req,
                                    const struct policy_http_response *resp,
                                    struct policy_lazy_name *host)
{
    if (r->keys & POLICY_KEYS_RESPONSE) {
        if (!resp || !policy_http_response_match(r, resp))
            return false;
    }
    return policy_http_request_match(p, r, req, host);
}

void policy_arm_http_body(const struct policy *p, const struct policy_http_request *req,
                          const struct policy_http_response *resp, struct policy_body_arm *out)
{
    struct policy_lazy_name host = {.text = req->host};
    unsigned side = resp ? POLICY_BODY_RESPONSE : POLICY_BODY_REQUEST;

    out->n = 0;
    for (size_t i = 0; i < p->n_http && out->n < POLICY_BODY_RULES_MAX; i++) {
        const struct policy_http_rule *r = &p->http[i];
        bool body = (r->keys & POLICY_KEY_BODY) != 0;
        if (body && !(r->body_in & side))
            continue;
        if (!policy_http_heads_match(p, r, req, resp, &host))
            continue;
        if (!body)
            return; /* this rule decided the exchange at its heads */
        out->rule[out->n] = r->name;
        out->patterns[out->n] = r->body;
        out->capture[out->n++] = (size_t)r->capture_kib * 1024;
    }
}

bool policy_has_body_rules(const struct policy *p)
{
    return p->n_body > 0;
}

bool policy_first_capture_rule(const struct policy *p, const char **rule, int *line)
{
    for (size_t i = 0; i < p->n_http; i++) {
        if (p->http[i].capture_kib) {
            *rule = p->http[i].name;
            *line = p->http[i].capture_line;
            return true;
        }
    }
    return false;
}

/* ---- block page ---- */

/* The value of placeholder name[0..n), or NULL when it is not one. *found says whether it is
 * a known placeholder (its value may still be NULL: rendered empty). */
static const char *policy_page_var(const struct policy_page_vars *v, const char *name, size_t n,
                                   bool *found)
{
    static const char *const names[] = {"rule", "ref", "host", "url", "client"};
    const char *values[] = {v->rule, v->ref, v->host, v->url, v->client};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) == n && memcmp(names[i], name, n) == 0) {
            *found = true;
            return values[i];
        }
    }
    *found = false;
    return NULL;
}

long policy_render_block_page(const struct policy *p, const struct policy_page_vars *vars,
                              char *buf, size_t cap)
{
    const char *t = p->block_page ? p->block_page : policy_builtin_page;
    struct html_out o = {buf, cap, 0, false};

    while (*t) {
        const char *open = strstr(t, "{{");
        const char *close = open ? strstr(open + 2, "}}") : NULL;
        if (!close) {
            html_put(&o, t, strlen(t));
            break;
        }
        html_put(&o, t, (size_t)(open - t));
        bool found;
        const char *value = policy_page_var(vars, open + 2, (size_t)(close - open - 2), &found);
        if (found)
            html_escaped(&o, value);
        else
            html_put(&o, open, (size_t)(close + 2 - open));
        t = close + 2;
    }
    if (o.overflow)
        return -1;
    buf[o.len] = '\0';
    return (long)o.len;
}
