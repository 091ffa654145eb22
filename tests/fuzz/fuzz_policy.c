/* libFuzzer driver for the policy (rule) parser: the input is a config file, read by
 * config_load_buffer — the same guarded libfyaml path as `sluice run` — whose `policy:`
 * section goes to policy_parse.c. A loaded policy is then asked about a few flows and HTTP
 * exchanges and renders its block page. Must never crash or leak; every failure must name a
 * file and line; every decision must be consistent with the documented contract. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "policy.h"

#define FUZZ_NAME "fuzz.yaml"

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static void fuzz_check_decision(const struct policy_decision *d)
{
    fuzz_check(d->action == POLICY_INTERCEPT || d->action == POLICY_PASSTHROUGH ||
               d->action == POLICY_BLOCK);
    fuzz_check((d->how == POLICY_HOW_NONE) == (d->action != POLICY_BLOCK));
    fuzz_check((d->rule == NULL) == (d->rule_index < 0));
}

static void fuzz_decide(struct policy *p)
{
    static const uint8_t alpn[] = "\x02h2\x08http/1.1";
    static const char *const names[] = {
        NULL,      "example.com", "www.Example.COM.", "bücher.example", "a.b.c.d.example.net",
        "bad name"};
    struct sockaddr_in c4 = {.sin_family = AF_INET}, d4 = {.sin_family = AF_INET};
    struct sockaddr_in6 c6 = {.sin6_family = AF_INET6};
    struct policy_decision d;

    inet_pton(AF_INET, "10.1.2.3", &c4.sin_addr);
    inet_pton(AF_INET, "192.0.2.1", &d4.sin_addr);
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &c6.sin6_addr);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct policy_flow f = {.sni = names[i],
                                .host = names[(i + 1) % 6],
                                .client = i & 1 ? (struct sockaddr *)&c4 : (struct sockaddr *)&c6,
                                .dst = i & 2 ? (struct sockaddr *)&d4 : NULL,
                                .dst_port = (uint16_t)(i & 1 ? 443 : 8443),
                                .alpn = i & 4 ? NULL : alpn,
                                .alpn_len = sizeof(alpn) - 1};
        policy_decide(p, &f, &d);
        fuzz_check_decision(&d);
    }
}

static void fuzz_http(struct policy *p)
{
    struct policy_http_header h[] = {{"User-Agent", 10, "curl/8.0", 8}, {"X-A", 3, "", 0}};
    struct policy_http_request req = {"POST", "upload.example.net:443", "/upload/a.exe?x=1", h, 2};
    struct policy_http_response resp = {503, "text/html; charset=utf-8"};
    struct policy_http_decision d;

    policy_decide_http_request(p, &req, &d);
    fuzz_check(!d.need_response || d.action == POLICY_HTTP_ALLOW);
    policy_decide_http_response(p, &req, &resp, &d);
    fuzz_check(!d.need_response);
    fuzz_check(policy_has_http_rules(p) || d.rule == NULL);
}

static void fuzz_page(struct policy *p)
{
    struct policy_page_vars v = {"r<1>", "ref", "h&", "\"u\"", NULL};
    char buf[512];
    long n = policy_render_block_page(p, &v, buf, sizeof(buf));
    fuzz_check(n == -1 || (n >= 0 && (size_t)n == strlen(buf)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg;
    char err[1024] = "";

    fuzz_check(config_init_defaults(&cfg) == 0);
    if (config_load_buffer(&cfg, FUZZ_NAME, (const char *)data, size, err, sizeof(err)) != 0) {
        fuzz_check(strncmp(err, FUZZ_NAME ":", strlen(FUZZ_NAME ":")) == 0);
        config_free(&cfg);
        return 0;
    }
    if (config_finish(&cfg, err, sizeof(err)) != 0) { /* cross-key checks name no file */
        config_free(&cfg);
        return 0;
    }
    const struct policy_pinning *pin = policy_pinning(cfg.policy);
    fuzz_check(pin->threshold >= 1 && pin->window_ms > 0 && pin->ttl_ms > 0);
    struct policy *p = policy_ref(cfg.policy);
    config_free(&cfg); /* the reference outlives the config that loaded it */
    fuzz_decide(p);
    fuzz_http(p);
    fuzz_page(p);
    policy_unref(p);
    return 0;
}
