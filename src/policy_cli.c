/* policy_cli: `sluice check-config` and `sluice explain`, and the policy summary they print.
 * Both load a config exactly as `sluice run` does (config_load_file + config_finish). */
#include "policy_cli.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "bodyscan.h"
#include "config.h"
#include "json.h"
#include "policy_int.h"

#define CLI_HEADERS_MAX 32

/* "250ms", "30s", "5m", "1h". */
static const char *cli_duration(unsigned ms, char *buf, size_t size)
{
    if (ms % 1000)
        snprintf(buf, size, "%ums", ms);
    else if (ms % 60000)
        snprintf(buf, size, "%us", ms / 1000);
    else if (ms % 3600000)
        snprintf(buf, size, "%um", ms / 60000);
    else
        snprintf(buf, size, "%uh", ms / 3600000);
    return buf;
}

static void cli_key(FILE *out, const char *text, bool *first)
{
    fprintf(out, "%s%s", *first ? "" : ", ", text);
    *first = false;
}

/* "sni (2 names + list FILE)" */
static void cli_names(FILE *out, const char *key, const struct policy_names *n, bool *first)
{
    cli_key(out, key, first);
    fprintf(out, " (");
    if (n->n_patterns)
        fprintf(out, "%zu name%s", n->n_patterns, n->n_patterns == 1 ? "" : "s");
    for (size_t i = 0; i < n->n_lists; i++)
        fprintf(out, "%slist %s", n->n_patterns || i ? " + " : "", n->lists[i]->path);
    fprintf(out, ")");
}

static void cli_nets(FILE *out, const char *key, const struct netset *set, bool *first)
{
    cli_key(out, key, first);
    fprintf(out, " (%zu network%s)", netset_size(set), netset_size(set) == 1 ? "" : "s");
}

static void cli_describe_rule(const struct policy *p, const struct policy_rule *r, size_t i,
                              FILE *out)
{
    bool first = true;

    fprintf(out, "  %zu. %s: %s%s%s if ", i + 1, r->name, policy_action_name(r->action),
            r->how ? " " : "", policy_how_name(r->how));
    if (r->keys & POLICY_KEY_SNI)
        cli_names(out, "sni", &r->sni, &first);
    if (r->keys & POLICY_KEY_HOST)
        cli_names(out, "host", &r->host, &first);
    if (r->keys & POLICY_KEY_CLIENT)
        cli_nets(out, "client", r->client, &first);
    if (r->keys & POLICY_KEY_DST)
        cli_nets(out, "dst", r->dst, &first);
    if (r->keys & POLICY_KEY_PORT)
        cli_key(out, "port", &first);
    if (r->keys & POLICY_KEY_ALPN)
        cli_key(out, "alpn", &first);
    if (r->keys & POLICY_KEY_NO_SNI)
        cli_key(out, r->no_sni ? "no sni" : "any sni", &first);
    if (first)
        fprintf(out, "always");
    fprintf(out, " (%s:%d)\n", p->source, r->line);
}

/* "body has one of 2 keywords or 1 regex [request and response bodies; capture 16 KiB]" */
static void cli_describe_body(const struct policy_http_rule *r, bool first, FILE *out)
{
    static const char *const sides[] = {"", "request bodies", "response bodies",
                                        "request and response bodies"};
    size_t kw, re;

    bodyscan_patterns_count(r->body, &kw, &re);
    fprintf(out, "%sbody has ", first ? "" : ", and ");
    if (kw)
        fprintf(out, "%s%zu keyword%s", kw + re > 1 ? "one of " : "", kw, kw == 1 ? "" : "s");
    if (re)
        fprintf(out, "%s%s%zu regex%s", kw ? " or " : "", kw || re == 1 ? "" : "one of ", re,
                re == 1 ? "" : "es");
    fprintf(out, " [%s", sides[r->body_in & 3]);
    if (r->capture_kib)
        fprintf(out, "; capture %u KiB", r->capture_kib);
    fprintf(out, "]");
}

static void cli_describe_http(const struct policy *p, const struct policy_http_rule *r, size_t i,
                              FILE *out)
{
    static const struct {
        unsigned bit;
        const char *name;
    } keys[] = {{POLICY_KEY_METHOD, "method"},
                {POLICY_KEY_HOST, "host"},
                {POLICY_KEY_PATH, "path"},
                {POLICY_KEY_PATH_REGEX, "path_regex"},
                {POLICY_KEY_HEADER, "header"},
                {POLICY_KEY_STATUS, "status"},
                {POLICY_KEY_CONTENT_TYPE, "content_type"}};
    bool first = true;

    fprintf(out, "  %zu. %s: %s if ", i + 1, r->name, policy_http_action_name(r->action));
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        if (r->keys & keys[k].bit)
            cli_key(out, keys[k].name, &first);
    if (r->keys & POLICY_KEY_BODY) {
        cli_describe_body(r, first, out);
    } else {
        if (first)
            fprintf(out, "always");
        fprintf(out, "%s", r->keys & POLICY_KEYS_RESPONSE ? " [response]" : "");
    }
    fprintf(out, " (%s:%d)\n", p->source, r->line);
}

void policy_describe(const struct policy *p, FILE *out)
{
    char d1[16], d2[16];

    fprintf(out, "policy: default %s%s%s; %zu connection rule%s, %zu HTTP rule%s\n",
            policy_action_name(p->default_action), p->default_how ? " " : "",
            policy_how_name(p->default_how), p->n_rules, p->n_rules == 1 ? "" : "s", p->n_http,
            p->n_http == 1 ? "" : "s");
    if (p->n_rules)
        fprintf(out, "rules (first match wins):\n");
    for (size_t i = 0; i < p->n_rules; i++)
        cli_describe_rule(p, &p->rules[i], i, out);
    if (p->n_http)
        fprintf(out, "http rules (first match wins):\n");
    for (size_t i = 0; i < p->n_http; i++)
        cli_describe_http(p, &p->http[i], i, out);
    if (p->n_lists)
        fprintf(out, "lists:\n");
    for (size_t i = 0; i < p->n_lists; i++) {
        const struct policy_list *l = p->lists[i];
        fprintf(out, "  %s: %zu names (%zu distinct), %zu lines", l->path, l->stats.names,
                domainset_size(l->set), l->stats.lines);
        if (l->stats.skipped)
            fprintf(out, ", %zu skipped (first: %s:%zu: %s)", l->stats.skipped, l->path,
                    l->stats.first_bad_line, l->stats.first_bad_why);
        fprintf(out, "\n");
    }
    if (p->from_config)
        fprintf(out, "block page: %s\n", p->block_page_path ? p->block_page_path : "built-in");
    if (p->from_config && p->pinning.enabled)
        fprintf(out, "pinning: on: %u failures within %s, then pass through for %s\n",
                p->pinning.threshold, cli_duration(p->pinning.window_ms, d1, sizeof(d1)),
                cli_duration(p->pinning.ttl_ms, d2, sizeof(d2)));
    else if (p->from_config)
        fprintf(out, "pinning: off\n");
}

/* Loads path as `sluice run --config path` would. 0, or 1 after printing the error. */
static int cli_load(const char *path, struct config *cfg, FILE *err)
{
    char msg[1024];

    if (config_init_defaults(cfg) != 0) {
        fprintf(err, "sluice: out of memory\n");
        return 1;
    }
    if (config_load_file(cfg, path, msg, sizeof(msg)) != 0 ||
        config_finish(cfg, msg, sizeof(msg)) != 0) {
        fprintf(err, "sluice: %s\n", msg);
        config_free(cfg);
        return 1;
    }
    return 0;
}

static void check_usage(FILE *f)
{
    fprintf(f, "usage: sluice check-config [--config] FILE\n\n"
               "Validates a configuration as `sluice run` would load it: every key, the policy\n"
               "rules, their regexes and networks, and every list file they name. Prints a\n"
               "summary and exits 0; on the first error prints FILE:LINE: message and exits 1.\n");
}

int policy_cli_check_config(int argc, char **argv, FILE *out, FILE *err)
{
    const char *path = NULL;
    struct config cfg;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            check_usage(out);
            return 0;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc && !path) {
            path = argv[++i];
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            fprintf(err,
                    "sluice: check-config: unexpected argument '%s' (usage: sluice "
                    "check-config FILE)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!path) {
        fprintf(err, "sluice: check-config: which file? (usage: sluice check-config FILE)\n");
        return 2;
    }
    if (cli_load(path, &cfg, err) != 0)
        return 1;
    fprintf(out, "%s: OK\n", path);
    policy_describe(cfg.policy, out);
    config_free(&cfg);
    return 0;
}

/* ---- explain ---- */

struct explain_args {
    const char *config, *sni, *host, *alpn, *method, *path, *content_type;
    const char *headers[CLI_HEADERS_MAX];
    size_t n_headers;
    int status; /* -1: no response */
    bool json;
    struct sockaddr_storage client, dst;
    bool has_client, has_dst;
    uint16_t dst_port;
};

static void explain_usage(FILE *f)
{
    fprintf(f, "usage: sluice explain --config FILE [--sni NAME] [--host NAME] [--client IP]\n"
               "                      [--dst IP:PORT|:PORT] [--alpn P1,P2] [--json]\n"
               "                      [--method M] [--path P] [--header 'Name: value']...\n"
               "                      [--status N] [--content-type T]\n\n"
               "Prints what the policy of FILE decides for one connection, and the rule that\n"
               "decided it (none: the default). Without --sni the client sent no SNI; --host\n"
               "is the CONNECT host of explicit mode. With --method, --path or --header the\n"
               "HTTP rules are asked too (host: --host, else --sni); --status and\n"
               "--content-type give the response. --json prints one JSON object.\n");
}

/* "IP:PORT", "[V6]:PORT", ":PORT" or a bare IP. 0 or -1. */
static int explain_parse_dst(const char *s, struct explain_args *a)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    size_t n;

    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || (end[1] != ':' && end[1] != '\0'))
            return -1;
        n = (size_t)(end - s - 1);
        s++;
        port = end[1] ? end + 2 : NULL;
    } else if (strchr(s, ':') == strrchr(s, ':')) {
        const char *colon = strchr(s, ':');
        n = colon ? (size_t)(colon - s) : strlen(s);
        port = colon ? colon + 1 : NULL;
    } else {
        n = strlen(s); /* a bare IPv6 address */
    }
    if (port) {
        char *end;
        unsigned long v = strtoul(port, &end, 10);
        if (*port == '\0' || *end != '\0' || v == 0 || v > 65535)
            return -1;
        a->dst_port = (uint16_t)v;
    }
    if (n == 0)
        return port ? 0 : -1;
    if (n >= sizeof(ip))
        return -1;
    memcpy(ip, s, n);
    ip[n] = '\0';
    socklen_t len;
    if (addr_from_ip(ip, a->dst_port, &a->dst, &len) != 0)
        return -1;
    a->has_dst = true;
    return 0;
}

static int explain_bad(FILE *err, const char *opt, const char *value, const char *want)
{
    fprintf(err, "sluice: explain: --%s %s: %s (see sluice explain --help)\n", opt, value, want);
    return 2;
}

/* Fills a from argv. 0, 2 after a usage message, or -1 for --help. */
static int explain_parse_args(int argc, char **argv, struct explain_args *a, FILE *out, FILE *err)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},       {"sni", required_argument, NULL, 's'},
        {"host", required_argument, NULL, 'H'},         {"client", required_argument, NULL, 'C'},
        {"dst", required_argument, NULL, 'd'},          {"alpn", required_argument, NULL, 'a'},
        {"method", required_argument, NULL, 'm'},       {"path", required_argument, NULL, 'p'},
        {"header", required_argument, NULL, 'h'},       {"status", required_argument, NULL, 'S'},
        {"content-type", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, '?' + 1},           {NULL, 0, NULL, 0},
    };
    int opt;
    socklen_t len;

    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            a->config = optarg;
            break;
        case 's':
            a->sni = optarg;
            break;
        case 'H':
            a->host = optarg;
            break;
        case 'a':
            a->alpn = optarg;
            break;
        case 'm':
            a->method = optarg;
            break;
        case 'p':
            a->path = optarg;
            break;
        case 't':
            a->content_type = optarg;
            break;
        case 'j':
            a->json = true;
            break;
        case '?' + 1:
            explain_usage(out);
            return -1;
        case 'C':
            if (addr_from_ip(optarg, 0, &a->client, &len) != 0)
                return explain_bad(err, "client", optarg, "expected an IPv4 or IPv6 address");
            a->has_client = true;
            break;
        case 'd':
            if (explain_parse_dst(optarg, a) != 0)
                return explain_bad(err, "dst", optarg,
                                   "expected IP:PORT, [IPv6]:PORT, :PORT or IP");
            break;
        case 'h':
            if (a->n_headers == CLI_HEADERS_MAX || !strchr(optarg, ':'))
                return explain_bad(err, "header", optarg, "expected 'Name: value'");
            a->headers[a->n_headers++] = optarg;
            break;
        case 'S': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 100 || v > 999)
                return explain_bad(err, "status", optarg, "expected a status code 100..999");
            a->status = (int)v;
            break;
        }
        case ':':
            fprintf(err, "sluice: explain: option '%s' needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(err, "sluice: explain: unknown option '%s' (see sluice explain --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(err, "sluice: explain: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!a->config) {
        fprintf(err, "sluice: explain: --config FILE is required\n");
        return 2;
    }
    return 0;
}

/* "h2,http/1.1" into ALPN wire format. Returns the length, or -1. */
static long explain_alpn(const char *list, uint8_t *wire, size_t cap)
{
    size_t len = 0;

    while (*list) {
        size_t n = strcspn(list, ",");
        if (n == 0 || n > 255 || len + 1 + n > cap)
            return -1;
        wire[len] = (uint8_t)n;
        memcpy(wire + len + 1, list, n);
        len += 1 + n;
        list += n + (list[n] == ',');
    }
    return (long)len;
}

/* What explain says about HTTP: the decision, and the body rules armed for each body. */
struct explain_http {
    struct policy_http_decision d;
    int line;
    bool body;     /* the policy has body rules */
    bool response; /* a response was given */
    struct policy_body_arm req_arm, resp_arm;
};

/* The HTTP part: request decision, then the response one when asked or needed. */
static void explain_http(const struct policy *p, const struct explain_args *a,
                         struct explain_http *x)
{
    struct policy_http_header h[CLI_HEADERS_MAX];
    struct policy_http_request req = {
        .method = a->method ? a->method : "GET",
        .host = a->host ? a->host : a->sni,
        .path = a->path ? a->path : "/",
        .headers = h,
        .n_headers = a->n_headers,
    };
    struct policy_http_decision *d = &x->d;

    for (size_t i = 0; i < a->n_headers; i++) {
        const char *colon = strchr(a->headers[i], ':'), *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        h[i] = (struct policy_http_header){a->headers[i], (size_t)(colon - a->headers[i]), v,
                                           strlen(v)};
    }
    x->response = a->status >= 0 || a->content_type;
    x->body = policy_has_body_rules(p);
    struct policy_http_response resp = {a->status >= 0 ? a->status : 200, a->content_type};
    if (x->response)
        policy_decide_http_response(p, &req, &resp, d);
    else
        policy_decide_http_request(p, &req, d);
    policy_arm_http_body(p, &req, NULL, &x->req_arm);
    if (x->response)
        policy_arm_http_body(p, &req, &resp, &x->resp_arm);
    x->line = 0;
    for (size_t i = 0; d->rule && i < p->n_http; i++)
        if (p->http[i].name == d->rule)
            x->line = p->http[i].line;
}

static void explain_json_arm(struct json *j, const char *key, const struct policy_body_arm *arm)
{
    json_key(j, key);
    json_array_begin(j);
    for (size_t i = 0; i < arm->n; i++) {
        json_elem(j);
        json_str(j, arm->rule[i]);
    }
    json_array_end(j);
}

static void explain_print_json(const struct explain_args *a, const struct policy_decision *d,
                               const struct explain_http *x, FILE *out)
{
    char buf[8192];
    struct json j;

    json_init(&j, buf, sizeof(buf));
    json_begin(&j);
    json_kv_str(&j, "action", policy_action_name(d->action));
    if (d->action == POLICY_BLOCK)
        json_kv_str(&j, "how", policy_how_name(d->how));
    json_kv_str(&j, "rule", d->rule);
    if (x) {
        json_key(&j, "http");
        json_begin(&j);
        json_kv_str(&j, "action",
                    x->d.need_response ? "need_response" : policy_http_action_name(x->d.action));
        json_kv_str(&j, "rule", x->d.rule);
        if (x->body) {
            json_key(&j, "body_rules");
            json_begin(&j);
            explain_json_arm(&j, "request", &x->req_arm);
            if (x->response)
                explain_json_arm(&j, "response", &x->resp_arm);
            json_end(&j);
        }
        json_end(&j);
    }
    json_end(&j);
    fprintf(out, "%.*s\n", (int)j.len, buf);
}

static void explain_text_arm(const char *side, const struct policy_body_arm *arm, FILE *out)
{
    fprintf(out, "body rules for the %s body:", side);
    for (size_t i = 0; i < arm->n; i++)
        fprintf(out, "%s %s", i ? "," : "", arm->rule[i]);
    fprintf(out, "%s\n", arm->n ? "" : " none");
}

static void explain_print_text(const struct policy *p, const struct policy_decision *d,
                               const struct explain_http *x, FILE *out)
{
    char origin[PATH_MAX + 16];

    fprintf(out, "action: %s\n", policy_action_name(d->action));
    if (d->action == POLICY_BLOCK)
        fprintf(out, "how: %s\n", policy_how_name(d->how));
    if (d->rule)
        fprintf(out, "rule: %s (%s)\n", d->rule,
                policy_rule_origin(p, d->rule_index, origin, sizeof(origin)));
    else
        fprintf(out, "rule: none (the default decided)\n");
    if (!x)
        return;
    const struct policy_http_decision *hd = &x->d;
    if (hd->need_response)
        fprintf(out, "http: depends on the response (give --status / --content-type)\n");
    else
        fprintf(out, "http: %s\n", policy_http_action_name(hd->action));
    if (hd->rule)
        fprintf(out, "http rule: %s (%s:%d)\n", hd->rule, p->source, x->line);
    else if (!hd->need_response)
        fprintf(out, "http rule: none (the default: allow)\n");
    if (x->body && !(hd->action == POLICY_HTTP_BLOCK && !hd->need_response)) {
        explain_text_arm("request", &x->req_arm, out);
        if (x->response)
            explain_text_arm("response", &x->resp_arm, out);
    }
}

int policy_cli_explain(int argc, char **argv, FILE *out, FILE *err)
{
    struct explain_args a = {.status = -1};
    struct config cfg;
    uint8_t alpn[512];
    long alpn_len = 0;
    int rc = explain_parse_args(argc, argv, &a, out, err);

    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (a.alpn && (alpn_len = explain_alpn(a.alpn, alpn, sizeof(alpn))) < 0)
        return explain_bad(err, "alpn", a.alpn,
                           "expected protocols separated by commas (h2,http/1.1)");
    if (cli_load(a.config, &cfg, err) != 0)
        return 1;
    struct policy_flow flow = {
        .sni = a.sni,
        .host = a.host,
        .client = a.has_client ? (struct sockaddr *)&a.client : NULL,
        .dst = a.has_dst ? (struct sockaddr *)&a.dst : NULL,
        .dst_port = a.dst_port,
        .alpn = a.alpn ? alpn : NULL,
        .alpn_len = (size_t)alpn_len,
    };
    struct policy_decision d;
    struct explain_http x;
    bool http = a.method || a.path || a.n_headers || a.status >= 0 || a.content_type;

    policy_decide(cfg.policy, &flow, &d);
    if (http)
        explain_http(cfg.policy, &a, &x);
    if (a.json)
        explain_print_json(&a, &d, http ? &x : NULL, out);
    else
        explain_print_text(cfg.policy, &d, http ? &x : NULL, out);
    config_free(&cfg);
    return 0;
}
