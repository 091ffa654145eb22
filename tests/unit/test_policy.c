/* Unit tests for the policy engine (src/policy*.c, src/netset.c): connection decisions and
 * their edge cases, HTTP rule matching, the exact text of parse errors, lists named by rules,
 * the block page, pinning, reference counting, and the check-config / explain commands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>

#include "config.h"
#include "netset.h"
#include "policy.h"
#include "policy_cli.h"

#define DATA TEST_DATA_DIR "/policy/"
#define EXAMPLES TEST_DATA_DIR "/../../../examples/"

/* ---- helpers ---- */

static struct policy *load(const char *yaml)
{
    char err[1024] = "";
    struct policy *p = policy_load_buffer("sluice.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (!p)
        fail_msg("policy refused: %s", err);
    return p;
}

static void assert_error(const char *yaml, const char *want)
{
    char err[1024] = "";
    struct policy *p = policy_load_buffer("sluice.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (p) {
        policy_unref(p);
        fail_msg("accepted: %s", yaml);
    }
    assert_string_equal(err, want);
}

static struct sockaddr_storage ss_client, ss_dst;

static const struct sockaddr *ip(struct sockaddr_storage *ss, const char *text, uint16_t port)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
    }
    return (const struct sockaddr *)ss;
}

/* The rule that decides for sni alone ("-" for the default). */
static const char *rule_for_sni(const struct policy *p, const char *sni)
{
    struct policy_flow f = {.sni = sni};
    struct policy_decision d;
    policy_decide(p, &f, &d);
    return d.rule ? d.rule : "-";
}

static const char *rule_for(const struct policy *p, const struct policy_flow *f)
{
    struct policy_decision d;
    policy_decide(p, f, &d);
    return d.rule ? d.rule : "-";
}

/* ---- defaults ---- */

static void test_no_policy_key_intercepts(void **state)
{
    struct config cfg;
    char err[256];
    struct policy_decision d;
    struct policy_flow f = {.sni = "example.com"};

    assert_int_equal(config_init_defaults(&cfg), 0);
    assert_int_equal(config_load_buffer(&cfg, "s.yaml", "workers: 2\n", 11, err, sizeof(err)), 0);
    assert_null(cfg.policy);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), 0);
    assert_non_null(cfg.policy);
    policy_decide(cfg.policy, &f, &d);
    assert_int_equal(d.action, POLICY_INTERCEPT);
    assert_int_equal(d.how, POLICY_HOW_NONE);
    assert_null(d.rule);
    assert_int_equal(d.rule_index, -1);
    assert_false(policy_has_http_rules(cfg.policy));
    config_free(&cfg);

    struct policy *p = load("policy:\n");
    policy_decide(p, &f, &d);
    assert_int_equal(d.action, POLICY_INTERCEPT);
    policy_unref(p);
    p = load("policy:\n  rules:\n");
    policy_decide(p, &f, &d);
    assert_int_equal(d.action, POLICY_INTERCEPT);
    policy_unref(p);
}

static void test_default_actions(void **state)
{
    struct policy_flow f = {.sni = "example.com"};
    struct policy_decision d;
    struct policy *p = load("policy:\n  default: passthrough\n");

    policy_decide(p, &f, &d);
    assert_int_equal(d.action, POLICY_PASSTHROUGH);
    assert_int_equal(d.how, POLICY_HOW_NONE);
    policy_unref(p);
    p = load("policy:\n  default: block\n");
    policy_decide(p, &f, &d);
    assert_int_equal(d.action, POLICY_BLOCK);
    assert_int_equal(d.how, POLICY_HOW_ALERT);
    policy_unref(p);
    p = load("policy:\n  default: {action: block, how: reset}\n");
    policy_decide(p, &f, &d);
    assert_int_equal(d.how, POLICY_HOW_RESET);
    assert_null(d.rule);
    policy_unref(p);
}

/* ---- connection matching ---- */

static const char *const sni_policy =
    "policy:\n"
    "  default: passthrough\n"
    "  rules:\n"
    "    - name: exact\n"
    "      sni: Exact.Example.\n"
    "      action: intercept\n"
    "    - name: sub\n"
    "      sni: [\"*.example.com\", \"example.org\"]\n"
    "      action: intercept\n"
    "    - name: deeper-never-wins\n"
    "      sni: \"*.a.example.com\"\n"
    "      action: block\n"
    "    - name: idn\n"
    "      sni: [\"*.bücher.example\", \"xn--mller-kva.example\"]\n"
    "      action: block\n"
    "      how: page\n";

static void test_sni_case_dot_suffix(void **state)
{
    struct policy *p = load(sni_policy);

    assert_string_equal(rule_for_sni(p, "exact.example"), "exact");
    assert_string_equal(rule_for_sni(p, "EXACT.EXAMPLE"), "exact");
    assert_string_equal(rule_for_sni(p, "exact.example."), "exact");
    assert_string_equal(rule_for_sni(p, "www.exact.example"), "-");
    assert_string_equal(rule_for_sni(p, "example.com"), "-"); /* *.x is not x itself */
    assert_string_equal(rule_for_sni(p, "www.Example.COM."), "sub");
    assert_string_equal(rule_for_sni(p, "example.org"), "sub");
    assert_string_equal(rule_for_sni(p, "www.example.org"), "-");
    assert_string_equal(rule_for_sni(p, "notexample.com"), "-");
    assert_string_equal(rule_for_sni(p, "example.com.evil"), "-");
    assert_string_equal(rule_for_sni(p, "bad name"), "-");
    assert_string_equal(rule_for_sni(p, ""), "-");
    policy_unref(p);
}

static void test_first_match_order(void **state)
{
    struct policy *p = load(sni_policy);

    /* "*.a.example.com" also matches, but "sub" comes first. */
    assert_string_equal(rule_for_sni(p, "x.a.example.com"), "sub");
    policy_unref(p);
    p = load("policy:\n  rules:\n"
             "    - {name: one, sni: \"*.a.example.com\", action: block}\n"
             "    - {name: two, sni: \"*.example.com\", action: passthrough}\n");
    assert_string_equal(rule_for_sni(p, "x.a.example.com"), "one");
    assert_string_equal(rule_for_sni(p, "x.b.example.com"), "two");
    struct policy_flow f = {.sni = "x.b.example.com"};
    struct policy_decision d;
    policy_decide(p, &f, &d);
    assert_int_equal(d.rule_index, 1);
    assert_int_equal(d.action, POLICY_PASSTHROUGH);
    policy_unref(p);
}

static void test_punycode(void **state)
{
    struct policy *p = load(sni_policy);
    struct policy_flow f = {.sni = "shop.xn--bcher-kva.example"};
    struct policy_decision d;

    policy_decide(p, &f, &d);
    assert_string_equal(d.rule, "idn");
    assert_int_equal(d.action, POLICY_BLOCK);
    assert_int_equal(d.how, POLICY_HOW_PAGE);
    assert_string_equal(rule_for_sni(p, "shop.BÜCHER.example"), "idn");
    assert_string_equal(rule_for_sni(p, "müller.example"), "idn");
    assert_string_equal(rule_for_sni(p, "XN--MLLER-KVA.EXAMPLE."), "idn");
    assert_string_equal(rule_for_sni(p, "mueller.example"), "-");
    policy_unref(p);
}

static void test_host_key(void **state)
{
    struct policy *p = load("policy:\n  default: passthrough\n  rules:\n"
                            "    - {name: h, host: \"*.proxy.example\", action: intercept}\n"
                            "    - {name: s, sni: \"*.proxy.example\", action: block}\n");
    struct policy_flow f = {.host = "www.proxy.example"};

    assert_string_equal(rule_for(p, &f), "h");
    f = (struct policy_flow){.sni = "www.proxy.example"};
    assert_string_equal(rule_for(p, &f), "s");
    f = (struct policy_flow){.sni = "www.proxy.example", .host = "other.example"};
    assert_string_equal(rule_for(p, &f), "s");
    policy_unref(p);
}

static void test_client_cidrs(void **state)
{
    struct policy *p = load("policy:\n  default: passthrough\n  rules:\n"
                            "    - name: lab\n"
                            "      client: [\"10.1.0.0/16\", \"fd00::/8\", \"192.0.2.7\", "
                            "\"2001:db8::1\"]\n"
                            "      action: intercept\n"
                            "    - name: all-v6\n"
                            "      client: \"::/0\"\n"
                            "      action: block\n");
    struct policy_flow f = {0};

    f.client = ip(&ss_client, "10.1.255.255", 5000);
    assert_string_equal(rule_for(p, &f), "lab");
    f.client = ip(&ss_client, "10.2.0.1", 5000);
    assert_string_equal(rule_for(p, &f), "-");
    f.client = ip(&ss_client, "192.0.2.7", 1);
    assert_string_equal(rule_for(p, &f), "lab");
    f.client = ip(&ss_client, "192.0.2.8", 1);
    assert_string_equal(rule_for(p, &f), "-");
    f.client = ip(&ss_client, "fdff:ffff::1", 1);
    assert_string_equal(rule_for(p, &f), "lab");
    f.client = ip(&ss_client, "fe00::1", 1);
    assert_string_equal(rule_for(p, &f), "all-v6");
    f.client = ip(&ss_client, "2001:db8::1", 1);
    assert_string_equal(rule_for(p, &f), "lab");
    f.client = ip(&ss_client, "2001:db8::2", 1);
    assert_string_equal(rule_for(p, &f), "all-v6");
    /* An IPv4 client on a dual-stack socket arrives as ::ffff:10.1.2.3 and is IPv4. */
    f.client = ip(&ss_client, "::ffff:10.1.2.3", 1);
    assert_string_equal(rule_for(p, &f), "lab");
    f.client = ip(&ss_client, "::ffff:10.9.2.3", 1);
    assert_string_equal(rule_for(p, &f), "-");
    f.client = NULL;
    assert_string_equal(rule_for(p, &f), "-");
    policy_unref(p);
}

static void test_netset_edges(void **state)
{
    struct netset *n = netset_new();
    const char *why;

    assert_int_equal(netset_add(n, "0.0.0.0/0", &why), 0);
    assert_true(netset_match(n, ip(&ss_client, "203.0.113.9", 0)));
    assert_false(netset_match(n, ip(&ss_client, "::1", 0)));
    assert_int_equal(netset_add(n, "::ffff:198.51.100.0/120", &why), 0); /* stored as IPv4 */
    assert_int_equal(netset_add(n, "10.0.0.0/33", &why), -1);
    assert_string_equal(why, "IPv4 prefix length must be 0..32");
    assert_int_equal(netset_add(n, "fd00::/129", &why), -1);
    assert_string_equal(why, "IPv6 prefix length must be 0..128");
    assert_int_equal(netset_add(n, "10.0.0.1/8", &why), -1);
    assert_int_equal(netset_add(n, "10.0.0.0/", &why), -1);
    assert_string_equal(why, "prefix length must be a number (/8, /64)");
    assert_int_equal(netset_add(n, "example.com", &why), -1);
    assert_int_equal(netset_add(n, "10.0.0.0/8x", &why), -1);
    assert_int_equal(netset_size(n), 2);
    netset_free(n);
    n = netset_new();
    assert_int_equal(netset_add(n, "2001:db8:8000::/33", &why), 0);
    assert_true(netset_match(n, ip(&ss_client, "2001:db8:ffff::1", 0)));
    assert_false(netset_match(n, ip(&ss_client, "2001:db8:7fff::1", 0)));
    netset_free(n);
}

static void test_dst_and_ports(void **state)
{
    struct policy *p = load("policy:\n  default: passthrough\n  rules:\n"
                            "    - name: internal-alt\n"
                            "      dst: [\"10.0.0.0/8\"]\n"
                            "      port: [8443, \"9000-9010\"]\n"
                            "      action: intercept\n"
                            "    - name: any-443\n"
                            "      port: 443\n"
                            "      action: block\n"
                            "      how: reset\n");
    struct policy_flow f = {0};

    f.dst = ip(&ss_dst, "10.2.3.4", 8443);
    f.dst_port = 8443;
    assert_string_equal(rule_for(p, &f), "internal-alt");
    f.dst_port = 9010;
    assert_string_equal(rule_for(p, &f), "internal-alt");
    f.dst_port = 9011;
    assert_string_equal(rule_for(p, &f), "-");
    f.dst_port = 443;
    assert_string_equal(rule_for(p, &f), "any-443");
    /* Explicit mode before DNS: the address is unknown, so dst rules do not match. */
    f.dst = NULL;
    f.dst_port = 8443;
    assert_string_equal(rule_for(p, &f), "-");
    f.dst_port = 0;
    assert_string_equal(rule_for(p, &f), "-");
    f.dst = ip(&ss_dst, "11.0.0.1", 8443);
    f.dst_port = 8443;
    assert_string_equal(rule_for(p, &f), "-");
    policy_unref(p);
}

static void test_alpn(void **state)
{
    static const uint8_t h2_h11[] = "\x02h2\x08http/1.1";
    static const uint8_t h11[] = "\x08http/1.1";
    static const uint8_t bad[] = "\x09http/1.1";
    static const uint8_t zero[] = "\x00\x02h2";
    struct policy *p = load("policy:\n  default: passthrough\n  rules:\n"
                            "    - {name: h2, alpn: [h2, h3], action: intercept}\n"
                            "    - {name: acme, alpn: acme-tls/1, action: passthrough}\n");
    struct policy_flow f = {.alpn = h2_h11, .alpn_len = sizeof(h2_h11) - 1};

    assert_string_equal(rule_for(p, &f), "h2");
    f.alpn = h11;
    f.alpn_len = sizeof(h11) - 1;
    assert_string_equal(rule_for(p, &f), "-");
    f.alpn = bad; /* an entry longer than the list: malformed, offers nothing */
    f.alpn_len = sizeof(bad) - 1;
    assert_string_equal(rule_for(p, &f), "-");
    f.alpn = zero;
    f.alpn_len = sizeof(zero) - 1;
    assert_string_equal(rule_for(p, &f), "-");
    f.alpn = (const uint8_t *)"\x0a"
                              "acme-tls/1";
    f.alpn_len = 11;
    assert_string_equal(rule_for(p, &f), "acme");
    f.alpn = NULL;
    f.alpn_len = 0;
    assert_string_equal(rule_for(p, &f), "-");
    policy_unref(p);
}

static void test_no_sni(void **state)
{
    struct policy *p = load("policy:\n  default: intercept\n  rules:\n"
                            "    - {name: bare, no_sni: true, action: passthrough}\n"
                            "    - {name: named-lab, no_sni: false, client: 10.0.0.0/8, "
                            "action: block}\n");
    struct policy_flow f = {0};

    assert_string_equal(rule_for(p, &f), "bare");
    f.sni = "x.example";
    assert_string_equal(rule_for(p, &f), "-");
    f.client = ip(&ss_client, "10.0.0.1", 0);
    assert_string_equal(rule_for(p, &f), "named-lab");
    f.sni = NULL;
    assert_string_equal(rule_for(p, &f), "bare");
    policy_unref(p);
}

static void test_all_keys_must_match(void **state)
{
    static const uint8_t h2[] = "\x02h2";
    struct policy *p = load("policy:\n  default: passthrough\n  rules:\n"
                            "    - name: all\n"
                            "      sni: \"*.example.com\"\n"
                            "      client: 10.0.0.0/8\n"
                            "      port: 443\n"
                            "      alpn: h2\n"
                            "      action: intercept\n");
    struct policy_flow f = {.sni = "a.example.com", .dst_port = 443, .alpn = h2, .alpn_len = 3};

    f.client = ip(&ss_client, "10.0.0.1", 0);
    assert_string_equal(rule_for(p, &f), "all");
    f.dst_port = 444;
    assert_string_equal(rule_for(p, &f), "-");
    f.dst_port = 443;
    f.sni = "a.example.org";
    assert_string_equal(rule_for(p, &f), "-");
    f.sni = "a.example.com";
    f.alpn = NULL;
    assert_string_equal(rule_for(p, &f), "-");
    f.alpn = h2;
    f.client = ip(&ss_client, "11.0.0.1", 0);
    assert_string_equal(rule_for(p, &f), "-");
    policy_unref(p);
}

static void test_lists_in_rules(void **state)
{
    struct policy *p = load("policy:\n  default: passthrough\n  rules:\n"
                            "    - name: mixed\n"
                            "      sni: [\"only.example\", {list: " DATA "plain.list}]\n"
                            "      action: intercept\n"
                            "    - name: hosts\n"
                            "      sni_list: [" DATA "hosts.list, " DATA "adblock.list]\n"
                            "      action: block\n"
                            "    - name: again\n"
                            "      host_list: " DATA "plain.list\n"
                            "      action: block\n");

    assert_string_equal(rule_for_sni(p, "only.example"), "mixed");
    assert_string_equal(rule_for_sni(p, "www.blocked.example"), "mixed");
    assert_string_equal(rule_for_sni(p, "big.example.org"), "mixed");
    assert_string_equal(rule_for_sni(p, "shop.bücher.example"), "mixed");
    assert_string_equal(rule_for_sni(p, "ads.example.net"), "hosts");
    assert_string_equal(rule_for_sni(p, "x.adblock.example"), "hosts");
    assert_string_equal(rule_for_sni(p, "opts.example"), "-");
    struct policy_flow f = {.host = "blocked.example"};
    assert_string_equal(rule_for(p, &f), "again");
    policy_unref(p);
}

static void test_list_paths_relative_to_config(void **state)
{
    char err[1024];
    struct policy *p = policy_load(DATA "relative.yaml", err, sizeof(err));

    if (!p)
        fail_msg("%s", err);
    assert_string_equal(rule_for_sni(p, "x.blocked.example"), "listed");
    policy_unref(p);
}

/* ---- parse errors ---- */

static void test_parse_errors(void **state)
{
    assert_error("policy:\n  default: allow\n",
                 "sluice.yaml:2: policy: default: expected intercept, passthrough or block, got "
                 "'allow'");
    assert_error("policy:\n  defualt: intercept\n",
                 "sluice.yaml:2: policy: unknown key 'defualt' (known keys: default, rules, http, "
                 "block_page, pinning)");
    assert_error("policy: intercept\n",
                 "sluice.yaml:1: policy: expected a mapping (default, rules, http, block_page, "
                 "pinning), got a string");
    assert_error("policy:\n  rules:\n    name: x\n",
                 "sluice.yaml:3: policy: rules: expected a sequence of rules (- name: ...), got a "
                 "mapping");
    assert_error("policy:\n  rules:\n    - intercept\n",
                 "sluice.yaml:3: rules[1]: expected a rule (a mapping: name, match keys, action), "
                 "got a string");
    assert_error("policy:\n  rules:\n    - sni: a.example\n      action: block\n",
                 "sluice.yaml:3: rules[1]: missing 'name' (every rule has a name for logs and "
                 "pages)");
    assert_error("policy:\n  rules:\n    - name: \"two words\"\n      action: block\n",
                 "sluice.yaml:3: rules[1]: name: 'two words': use 1..64 letters, digits, '-', "
                 "'_', '.' or ':'");
    assert_error("policy:\n  rules:\n    - name: a\n      action: block\n"
                 "    - name: a\n      action: block\n",
                 "sluice.yaml:5: rules[2]: name: 'a' is already the name of the rule at line 3");
    assert_error("policy:\n  rules:\n    - name: a\n      sni: a.example\n",
                 "sluice.yaml:3: rule 'a': missing 'action' (intercept, passthrough or block)");
    assert_error("policy:\n  rules:\n    - name: a\n      snii: a.example\n      action: block\n",
                 "sluice.yaml:4: rule 'a': unknown key 'snii' (known keys: name, sni, sni_list, "
                 "host, host_list, client, dst, port, alpn, no_sni, action, how)");
    assert_error("policy:\n  rules:\n    - name: a\n      action: intercept\n      how: page\n",
                 "sluice.yaml:5: rule 'a': how: only with action: block");
    assert_error("policy:\n  rules:\n    - name: a\n      action: block\n      how: drop\n",
                 "sluice.yaml:5: rule 'a': how: expected alert, reset or page, got 'drop'");
    assert_error("policy:\n  rules:\n    - name: a\n      sni:\n        - ok.example\n"
                 "        - \"bad name.example\"\n      action: block\n",
                 "sluice.yaml:6: rule 'a': sni: 'bad name.example' is not a name or *.suffix: "
                 "character not allowed in a name (letters, digits, '-', '_', '.')");
    assert_error("policy:\n  rules:\n    - name: a\n      sni: \"a.*.example\"\n"
                 "      action: block\n",
                 "sluice.yaml:4: rule 'a': sni: 'a.*.example' is not a name or *.suffix: '*' is "
                 "allowed only as a leading '*.'");
    assert_error("policy:\n  rules:\n    - name: a\n      sni: []\n      action: block\n",
                 "sluice.yaml:4: rule 'a': sni: empty sequence; remove the key");
    assert_error("policy:\n  rules:\n    - name: a\n      sni: {file: x}\n      action: block\n",
                 "sluice.yaml:4: rule 'a': sni: an item that is a mapping must be {list: FILE}");
    assert_error("policy:\n  rules:\n    - name: a\n      client: [10.0.0.0/8, 10.0.0.1/8]\n"
                 "      action: block\n",
                 "sluice.yaml:4: rule 'a': client: '10.0.0.1/8': address has bits set past the "
                 "prefix length (10.0.0.0/8, not 10.1.2.3/8)");
    assert_error(
        "policy:\n  rules:\n    - name: a\n      dst: \"fd00::/200\"\n      action: block\n",
        "sluice.yaml:4: rule 'a': dst: 'fd00::/200': IPv6 prefix length must be 0..128");
    assert_error("policy:\n  rules:\n    - name: a\n      port: [443, 0]\n      action: block\n",
                 "sluice.yaml:4: rule 'a': port: expected a port 1..65535 or a range LO-HI, got "
                 "'0'");
    assert_error("policy:\n  rules:\n    - name: a\n      port: 9000-8000\n      action: block\n",
                 "sluice.yaml:4: rule 'a': port: expected a port 1..65535 or a range LO-HI, got "
                 "'9000-8000'");
    assert_error("policy:\n  rules:\n    - name: a\n      no_sni: maybe\n      action: block\n",
                 "sluice.yaml:4: rule 'a': no_sni: expected true or false, got 'maybe'");
    assert_error("policy:\n  rules:\n    - name: a\n      alpn: [[h2]]\n      action: block\n",
                 "sluice.yaml:4: rule 'a': alpn: expected a string or a sequence of strings, got "
                 "a sequence");
    assert_error("policy:\n  rules:\n    - name: a\n      sni_list: /nonexistent.list\n"
                 "      action: block\n",
                 "sluice.yaml:4: rule 'a': sni_list: cannot read /nonexistent.list: No such file "
                 "or directory");
    assert_error("policy:\n  rules:\n    - name: a\n      sni_list: " DATA "nothing.list\n"
                 "      action: block\n",
                 "sluice.yaml:4: rule 'a': sni_list: " DATA "nothing.list has no valid name (3 "
                 "lines skipped; first: " DATA "nothing.list:1: more than one name on a line "
                 "(hosts-file lines start with an IP address))");
    assert_error("policy:\n  pinning: {threshold: 0}\n",
                 "sluice.yaml:2: policy: pinning: threshold: expected a number of failures "
                 "1..1000, got '0'");
    assert_error("policy:\n  pinning:\n    window: 5 minutes\n",
                 "sluice.yaml:3: policy: pinning: window: expected a duration such as 30s, 5m or "
                 "1h (at most 24h), got '5 minutes'");
    assert_error("policy:\n  block_page: /nonexistent.html\n",
                 "sluice.yaml:2: policy: block_page: cannot read /nonexistent.html: No such file "
                 "or directory");
    assert_error("policy:\n  block_page: " DATA "badpage.html\n",
                 "sluice.yaml:2: policy: block_page: " DATA "badpage.html:3: unknown placeholder "
                 "'{{reson}}' (known: {{rule}}, {{ref}}, {{host}}, {{url}}, {{client}})");
    /* YAML syntax errors come from config.c's guarded loader. */
    assert_error("policy:\n  rules:\n    - name: a\n\taction: block\n",
                 "sluice.yaml:4: tab character; indent and separate with spaces");
}

static void test_http_parse_errors(void **state)
{
    assert_error(
        "policy:\n  http:\n    - name: a\n      path_regex: \"(ab\"\n      action: block\n",
        "sluice.yaml:4: http rule 'a': path_regex: '(ab': missing closing parenthesis "
        "at offset 3");
    assert_error("policy:\n  http:\n    - name: a\n      path: upload\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': path: a path prefix starts with '/', got "
                 "'upload'");
    assert_error("policy:\n  http:\n    - name: a\n      method: \"GET POST\"\n"
                 "      action: block\n",
                 "sluice.yaml:4: http rule 'a': method: 'GET POST' is not an HTTP method (GET, "
                 "POST, ...)");
    assert_error("policy:\n  http:\n    - name: a\n      action: intercept\n",
                 "sluice.yaml:4: http rule 'a': action: expected block or allow, got "
                 "'intercept'");
    assert_error("policy:\n  http:\n    - name: a\n      method: GET\n",
                 "sluice.yaml:3: http rule 'a': missing 'action' (block or allow)");
    assert_error("policy:\n  http:\n    - name: a\n      header: {value: x}\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': header: missing 'name' (the header's name)");
    assert_error("policy:\n  http:\n    - name: a\n      header: {name: X, value: a, "
                 "value_regex: b}\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': header: give value or value_regex, not both");
    assert_error("policy:\n  http:\n    - name: a\n      header: {name: X, value_regex: \"[\"}\n"
                 "      action: block\n",
                 "sluice.yaml:4: http rule 'a': header: value_regex: '[': missing terminating ] "
                 "for character class at offset 1");
    assert_error("policy:\n  http:\n    - name: a\n      header: User-Agent\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': header: expected a mapping {name: N, value: V | "
                 "value_regex: R}, got 'User-Agent'");
    assert_error("policy:\n  http:\n    - name: a\n      status: 6xx\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': status: expected a status 100..999, a range "
                 "LO-HI or a class such as 4xx, got '6xx'");
    assert_error("policy:\n  http:\n    - name: a\n      content_type: \"*/*\"\n"
                 "      action: block\n",
                 "sluice.yaml:4: http rule 'a': content_type: expected a media type such as "
                 "text/html or image/*, got '*/*'");
    assert_error("policy:\n  rules:\n    - {name: a, action: block}\n  http:\n"
                 "    - {name: a, action: block}\n",
                 "sluice.yaml:5: http rules[1]: name: 'a' is already the name of the rule at "
                 "line 3");
}

/* ---- HTTP rules ---- */

static const char *const http_policy =
    "policy:\n"
    "  http:\n"
    "    - name: no-uploads\n"
    "      method: [POST, PUT]\n"
    "      host: [\"*.example.net\", example.net]\n"
    "      action: block\n"
    "    - name: admin\n"
    "      path: [/admin/, /wp-login.php]\n"
    "      action: block\n"
    "    - name: exe\n"
    "      path_regex: \"(?i)\\\\.exe(\\\\?|$)\"\n"
    "      action: block\n"
    "    - name: curl\n"
    "      header: {name: User-Agent, value_regex: \"^curl/\"}\n"
    "      action: block\n"
    "    - name: token-ok\n"
    "      header: [{name: X-Token, value: letmein}, {name: X-Debug}]\n"
    "      action: allow\n"
    "    - name: secret\n"
    "      path: /secret\n"
    "      action: block\n";

static struct policy_http_decision http_req(const struct policy *p, const char *method,
                                            const char *host, const char *path,
                                            const struct policy_http_header *h, size_t nh)
{
    struct policy_http_request req = {method, host, path, h, nh};
    struct policy_http_decision d;
    policy_decide_http_request(p, &req, &d);
    return d;
}

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static void test_http_request_rules(void **state)
{
    struct policy *p = load(http_policy);
    struct policy_http_decision d;
    struct policy_http_header curl[] = {HDR("user-agent", "curl/8.1")};
    struct policy_http_header firefox[] = {HDR("User-Agent", "Mozilla/5.0 curl/1")};
    struct policy_http_header token[] = {HDR("x-token", "letmein")};
    struct policy_http_header badtoken[] = {HDR("X-Token", "LETMEIN")};
    struct policy_http_header debug[] = {HDR("X-Debug", "")};

    assert_true(policy_has_http_rules(p));
    d = http_req(p, "POST", "upload.example.net", "/", NULL, 0);
    assert_int_equal(d.action, POLICY_HTTP_BLOCK);
    assert_string_equal(d.rule, "no-uploads");
    assert_false(d.need_response);
    d = http_req(p, "post", "EXAMPLE.NET:8443", "/", NULL, 0);
    assert_string_equal(d.rule, "no-uploads");
    d = http_req(p, "GET", "upload.example.net", "/", NULL, 0);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    assert_null(d.rule);
    d = http_req(p, "POST", "example.org", "/", NULL, 0);
    assert_null(d.rule);
    d = http_req(p, "POST", NULL, "/", NULL, 0);
    assert_null(d.rule);
    d = http_req(p, "POST", "[2001:db8::1]:443", "/", NULL, 0);
    assert_null(d.rule);

    assert_string_equal(http_req(p, "GET", "a", "/admin/users", NULL, 0).rule, "admin");
    assert_null(http_req(p, "GET", "a", "/admin", NULL, 0).rule);
    assert_string_equal(http_req(p, "GET", "a", "/wp-login.php?x=1", NULL, 0).rule, "admin");
    assert_string_equal(http_req(p, "GET", "a", "/dl/SETUP.EXE", NULL, 0).rule, "exe");
    assert_string_equal(http_req(p, "GET", "a", "/dl/setup.exe?v=2", NULL, 0).rule, "exe");
    assert_null(http_req(p, "GET", "a", "/dl/setup.exe.txt", NULL, 0).rule);
    assert_null(http_req(p, "GET", "a", NULL, NULL, 0).rule);

    assert_string_equal(http_req(p, "GET", "a", "/", curl, 1).rule, "curl");
    assert_null(http_req(p, "GET", "a", "/", firefox, 1).rule);
    d = http_req(p, "GET", "a", "/secret", token, 1);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    assert_string_equal(d.rule, "token-ok"); /* allow before the later block */
    assert_string_equal(http_req(p, "GET", "a", "/secret", debug, 1).rule, "token-ok");
    assert_string_equal(http_req(p, "GET", "a", "/secret", badtoken, 1).rule, "secret");
    policy_unref(p);
}

static void test_http_response_rules(void **state)
{
    struct policy *p = load("policy:\n  http:\n"
                            "    - name: video\n"
                            "      content_type: [\"video/*\", application/x-msdownload]\n"
                            "      action: block\n"
                            "    - name: trusted\n"
                            "      host: trusted.example\n"
                            "      action: allow\n"
                            "    - name: errors\n"
                            "      host: \"*.example\"\n"
                            "      status: [5xx, 404, \"401-403\"]\n"
                            "      action: block\n");
    struct policy_http_request req = {"GET", "trusted.example", "/", NULL, 0};
    struct policy_http_response resp = {200, "Video/MP4; codecs=avc1"};
    struct policy_http_decision d;

    /* video could still match: at the request the answer depends on the response. */
    policy_decide_http_request(p, &req, &d);
    assert_true(d.need_response);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    policy_decide_http_response(p, &req, &resp, &d);
    assert_int_equal(d.action, POLICY_HTTP_BLOCK);
    assert_string_equal(d.rule, "video");
    assert_false(d.need_response);
    resp.content_type = "text/html";
    policy_decide_http_response(p, &req, &resp, &d);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    assert_string_equal(d.rule, "trusted");
    resp.content_type = " application/x-msdownload ;x=1";
    policy_decide_http_response(p, &req, &resp, &d);
    assert_string_equal(d.rule, "video");
    resp.content_type = "application/x-msdownloadx";
    policy_decide_http_response(p, &req, &resp, &d);
    assert_string_equal(d.rule, "trusted");
    resp.content_type = NULL;
    policy_decide_http_response(p, &req, &resp, &d);
    assert_string_equal(d.rule, "trusted");

    req.host = "other.example";
    resp = (struct policy_http_response){503, "text/html"};
    policy_decide_http_response(p, &req, &resp, &d);
    assert_string_equal(d.rule, "errors");
    resp.status = 402;
    policy_decide_http_response(p, &req, &resp, &d);
    assert_string_equal(d.rule, "errors");
    resp.status = 400;
    policy_decide_http_response(p, &req, &resp, &d);
    assert_null(d.rule);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    policy_unref(p);

    /* A block request rule with only block response rules before it decides at once. */
    p = load("policy:\n  http:\n"
             "    - {name: big, content_type: \"video/*\", action: block}\n"
             "    - {name: post, method: POST, action: block}\n"
             "    - {name: ok-video, content_type: \"video/*\", action: allow}\n");
    req = (struct policy_http_request){"POST", "a.example", "/", NULL, 0};
    policy_decide_http_request(p, &req, &d);
    assert_false(d.need_response);
    assert_int_equal(d.action, POLICY_HTTP_BLOCK);
    assert_string_equal(d.rule, "post");
    req.method = "GET";
    policy_decide_http_request(p, &req, &d);
    assert_true(d.need_response);
    policy_unref(p);

    /* Only allow response rules pending and no block after them: allowed at once. */
    p = load("policy:\n  http:\n    - {name: v, content_type: \"video/*\", action: allow}\n");
    policy_decide_http_request(p, &req, &d);
    assert_false(d.need_response);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    policy_unref(p);
}

/* ---- block page, pinning, sharing ---- */

static void test_block_page(void **state)
{
    struct policy *p = load("policy:\n");
    struct policy_page_vars v = {"no-uploads", "r-42", "a.example", "https://a.example/<x>", NULL};
    char buf[4096];
    long n = policy_render_block_page(p, &v, buf, sizeof(buf));

    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    assert_non_null(strstr(buf, "<code>no-uploads</code>"));
    assert_non_null(strstr(buf, "r-42"));
    assert_non_null(strstr(buf, "https://a.example/&lt;x&gt;"));
    assert_null(strstr(buf, "{{"));
    assert_int_equal(policy_render_block_page(p, &v, buf, 10), -1);
    assert_int_equal(policy_render_block_page(p, &v, buf, 0), -1);
    policy_unref(p);

    p = load("policy:\n  block_page: " DATA "page.html\n");
    v.client = "10.0.0.1";
    v.rule = "a&b\"'";
    n = policy_render_block_page(p, &v, buf, sizeof(buf));
    assert_string_equal(buf, "<html><body><h1>Blocked by a&amp;b&quot;&#39;</h1><p>a.example "
                             "https://a.example/&lt;x&gt;</p><p>ref r-42 for 10.0.0.1</p></body>"
                             "</html>\n");
    v = (struct policy_page_vars){0};
    n = policy_render_block_page(p, &v, buf, sizeof(buf));
    assert_string_equal(buf, "<html><body><h1>Blocked by </h1><p> </p><p>ref  for </p></body>"
                             "</html>\n");
    policy_unref(p);
}

static void test_pinning(void **state)
{
    struct policy *p = load("policy:\n");
    const struct policy_pinning *pin = policy_pinning(p);

    assert_true(pin->enabled);
    assert_int_equal(pin->threshold, 3);
    assert_int_equal(pin->window_ms, 300000);
    assert_int_equal(pin->ttl_ms, 3600000);
    policy_unref(p);
    p = load("policy:\n  pinning: {enabled: false, threshold: 5, window: 90s, ttl: 2h}\n");
    pin = policy_pinning(p);
    assert_false(pin->enabled);
    assert_int_equal(pin->threshold, 5);
    assert_int_equal(pin->window_ms, 90000);
    assert_int_equal(pin->ttl_ms, 7200000);
    policy_unref(p);
    p = load("policy:\n  pinning: false\n");
    assert_false(policy_pinning(p)->enabled);
    policy_unref(p);
}

struct worker_arg {
    struct policy *p;
    int hits;
};

static void *decide_thread(void *arg)
{
    struct worker_arg *w = arg;
    for (int i = 0; i < 20000; i++) {
        struct policy_flow f = {.sni = (i & 1) ? "www.example.com" : "other.test"};
        struct policy_decision d;
        policy_decide(w->p, &f, &d);
        w->hits += d.rule != NULL;
    }
    policy_unref(w->p); /* the worker's reference, dropped on its own thread */
    return NULL;
}

static void test_shared_snapshot(void **state)
{
    struct policy *p = load("policy:\n  rules:\n    - {name: s, sni: \"*.example.com\", "
                            "action: passthrough}\n");
    pthread_t t[4];
    struct worker_arg w[4];

    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker_arg){policy_ref(p), 0};
        assert_int_equal(pthread_create(&t[i], NULL, decide_thread, &w[i]), 0);
    }
    policy_unref(p); /* a reload drops the old snapshot while workers still use it */
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].hits, 10000);
    }
}

/* ---- commands ---- */

static int run_cli(int (*fn)(int, char **, FILE *, FILE *), char **argv, char **out_text,
                   char **err_text)
{
    size_t on, en;
    FILE *out = open_memstream(out_text, &on), *err = open_memstream(err_text, &en);
    int argc = 0;

    while (argv[argc])
        argc++;
    int rc = fn(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return rc;
}

static void test_check_config_examples(void **state)
{
    static const char *const files[] = {"selective.yaml", "enterprise.yaml", "lab.yaml",
                                        "sluice.yaml"};

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[512], *out = NULL, *err = NULL;
        snprintf(path, sizeof(path), EXAMPLES "%s", files[i]);
        char *argv[] = {"check-config", path, NULL};
        int rc = run_cli(policy_cli_check_config, argv, &out, &err);
        if (rc != 0)
            fail_msg("%s: rc %d: %s", files[i], rc, err);
        assert_non_null(strstr(out, ": OK\n"));
        assert_non_null(strstr(out, "policy: default "));
        assert_string_equal(err, "");
        free(out);
        free(err);
    }
}

static void test_check_config_summary_and_errors(void **state)
{
    char *out = NULL, *err = NULL;
    char *argv[] = {"check-config", DATA "summary.yaml", NULL};

    assert_int_equal(run_cli(policy_cli_check_config, argv, &out, &err), 0);
    assert_string_equal(
        out, DATA "summary.yaml: OK\n"
                  "policy: default passthrough; 2 connection rules, 1 HTTP rule\n"
                  "rules (first match wins):\n"
                  "  1. social: intercept if sni (2 names) (" DATA "summary.yaml:4)\n"
                  "  2. junk: block page if sni (list " DATA "junk.list), client (1 network) (" DATA
                  "summary.yaml:7)\n"
                  "http rules (first match wins):\n"
                  "  1. no-uploads: block if method, host (" DATA "summary.yaml:13)\n"
                  "lists:\n"
                  "  " DATA "junk.list: 2 names (2 distinct), 6 lines, 4 skipped (first: " DATA
                  "junk.list:2: more than one name on a line (hosts-file lines start with an IP "
                  "address))\n"
                  "block page: built-in\n"
                  "pinning: on: 3 failures within 5m, then pass through for 1h\n");
    free(out);
    free(err);

    char *bad[] = {"check-config", DATA "bad.yaml", NULL};
    assert_int_equal(run_cli(policy_cli_check_config, bad, &out, &err), 1);
    assert_string_equal(out, "");
    assert_string_equal(err, "sluice: " DATA "bad.yaml:7: rule 'b': client: 'fd00::1/8': "
                             "address has bits set past the prefix length (10.0.0.0/8, not "
                             "10.1.2.3/8)\n");
    free(out);
    free(err);

    char *none[] = {"check-config", NULL};
    assert_int_equal(run_cli(policy_cli_check_config, none, &out, &err), 2);
    free(out);
    free(err);
}

static void test_explain(void **state)
{
    static const struct {
        const char *args[8];
        const char *want;
    } cases[] = {
        {{"--sni", "www.example.com", "--json"},
         "{\"action\":\"intercept\",\"rule\":\"social\"}\n"},
        {{"--sni", "nothing.test", "--json"}, "{\"action\":\"passthrough\",\"rule\":null}\n"},
        {{"--sni", "good.example", "--client", "10.1.2.3", "--json"},
         "{\"action\":\"block\",\"how\":\"page\",\"rule\":\"junk\"}\n"},
        {{"--sni", "good.example", "--client", "10.1.2.3"},
         "action: block\nhow: page\nrule: junk (" DATA "summary.yaml:7)\n"},
        {{"--sni", "x.test"}, "action: passthrough\nrule: none (the default decided)\n"},
        {{"--sni", "a.example.net", "--method", "PUT", "--json"},
         "{\"action\":\"passthrough\",\"rule\":null,\"http\":{\"action\":\"block\","
         "\"rule\":\"no-uploads\"}}\n"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[12] = {"explain", "--config", DATA "summary.yaml"}, *out = NULL, *err = NULL;
        for (int k = 0; cases[i].args[k]; k++)
            argv[3 + k] = (char *)cases[i].args[k];
        assert_int_equal(run_cli(policy_cli_explain, argv, &out, &err), 0);
        assert_string_equal(out, cases[i].want);
        free(out);
        free(err);
    }
    char *out = NULL, *err = NULL;
    char *bad[] = {"explain", "--config", DATA "summary.yaml", "--client", "10.1", NULL};
    assert_int_equal(run_cli(policy_cli_explain, bad, &out, &err), 2);
    assert_string_equal(err, "sluice: explain: --client 10.1: expected an IPv4 or IPv6 address "
                             "(see sluice explain --help)\n");
    free(out);
    free(err);
}

/* ---- body rules ---- */

static void test_body_parse_errors(void **state)
{
    assert_error("policy:\n  http:\n    - name: a\n      body: x\n      action: allow\n",
                 "sluice.yaml:3: http rule 'a': a body rule's action must be block");
    assert_error("policy:\n  http:\n    - name: a\n      body_regex: \"(x\"\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': body_regex: '(x': missing closing parenthesis "
                 "at offset 2");
    assert_error("policy:\n  http:\n    - name: a\n      body: \"\"\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': body: '': a keyword has 1 to 1024 bytes, this "
                 "one 0");
    assert_error("policy:\n  http:\n    - name: a\n      path: /x\n      body_in: request\n"
                 "      action: block\n",
                 "sluice.yaml:5: http rule 'a': body_in: only with body or body_regex");
    assert_error("policy:\n  http:\n    - name: a\n      capture: 4\n      action: block\n",
                 "sluice.yaml:4: http rule 'a': capture: only with body or body_regex");
    assert_error("policy:\n  http:\n    - name: a\n      body: x\n      body_in: upload\n"
                 "      action: block\n",
                 "sluice.yaml:5: http rule 'a': body_in: expected request, response or both, "
                 "got 'upload'");
    assert_error("policy:\n  http:\n    - name: a\n      body: x\n      capture: 2048\n"
                 "      action: block\n",
                 "sluice.yaml:5: http rule 'a': capture: expected the KiB to capture, 1..1024, "
                 "got '2048'");
    assert_error("policy:\n  http:\n    - name: a\n      body: x\n      status: 200\n"
                 "      body_in: both\n      action: block\n",
                 "sluice.yaml:6: http rule 'a': body_in: a rule with status or content_type "
                 "reads response bodies only (a request body is judged before any response)");
}

static void test_body_rules_limit(void **state)
{
    char yaml[16384] = "policy:\n  http:\n";
    for (int i = 0; i <= POLICY_BODY_RULES_MAX; i++)
        snprintf(yaml + strlen(yaml), sizeof(yaml) - strlen(yaml),
                 "    - {name: r%d, body: k, action: block}\n", i);
    char want[128];
    snprintf(want, sizeof(want), "sluice.yaml:%d: http rule 'r%d': more than %d body rules",
             POLICY_BODY_RULES_MAX + 3, POLICY_BODY_RULES_MAX, POLICY_BODY_RULES_MAX);
    assert_error(yaml, want);
}

static const char *body_policy =
    "policy:\n"
    "  http:\n"
    "    - {name: allow-internal, host: internal.example, action: allow}\n"
    "    - {name: req-only, body: a, body_in: request, capture: 8, action: block}\n"
    "    - {name: html-only, body: b, content_type: text/html, action: block}\n"
    "    - {name: both, body_regex: c+, path: /x, action: block}\n"
    "    - {name: videos, content_type: \"video/*\", action: allow}\n"
    "    - {name: block-admin, path: /admin, action: block}\n"
    "    - {name: after-admin, body: d, action: block}\n"
    "capture_file: /dev/null\n";

static const char *armed(const struct policy *p, const char *host, const char *path,
                         const char *ctype)
{
    static char buf[256];
    struct policy_http_request req = {"POST", host, path, NULL, 0};
    struct policy_http_response resp = {200, ctype};
    struct policy_body_arm arm;
    policy_arm_http_body(p, &req, ctype ? &resp : NULL, &arm);
    buf[0] = '\0';
    for (size_t i = 0; i < arm.n; i++)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? "," : "", arm.rule[i]);
    return buf;
}

/* Body rules are armed in order until a head rule decides; they never decide at a head. */
static void test_body_arming(void **state)
{
    struct policy *p = load(body_policy);
    assert_true(policy_has_body_rules(p));
    /* request bodies: response rules cannot be known and are stepped over */
    assert_string_equal(armed(p, "www.example", "/x", NULL), "req-only,both,after-admin");
    assert_string_equal(armed(p, "www.example", "/y", NULL), "req-only,after-admin");
    assert_string_equal(armed(p, "www.example", "/admin", NULL), "req-only");
    assert_string_equal(armed(p, "internal.example", "/x", NULL), "");
    /* response bodies: the response keys count; a matching head rule ends the walk */
    assert_string_equal(armed(p, "www.example", "/x", "text/html"), "html-only,both,after-admin");
    assert_string_equal(armed(p, "www.example", "/y", "text/html; charset=utf-8"),
                        "html-only,after-admin");
    assert_string_equal(armed(p, "www.example", "/y", "video/mp4"), "");
    assert_string_equal(armed(p, "www.example", "/y", "text/plain"), "after-admin");
    struct policy_body_arm arm;
    struct policy_http_request req = {"POST", "www.example", "/x", NULL, 0};
    policy_arm_http_body(p, &req, NULL, &arm);
    assert_int_equal(arm.capture[0], 8 * 1024);
    assert_int_equal(arm.capture[1], 0);
    /* head decisions skip body rules */
    struct policy_http_decision d = http_req(p, "POST", "www.example", "/x", NULL, 0);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    assert_null(d.rule);
    assert_false(d.need_response);
    d = http_req(p, "POST", "www.example", "/admin", NULL, 0);
    assert_true(d.need_response); /* the allow of `videos` could still come first */
    struct policy_http_response resp = {200, "text/html"};
    policy_decide_http_response(p, &req, &resp, &d);
    assert_int_equal(d.action, POLICY_HTTP_ALLOW);
    assert_null(d.rule);
    const char *rule;
    int line;
    assert_true(policy_first_capture_rule(p, &rule, &line));
    assert_string_equal(rule, "req-only");
    assert_int_equal(line, 4);
    policy_unref(p);
    p = load("policy:\n  http:\n    - {name: a, path: /, action: block}\n");
    assert_false(policy_has_body_rules(p));
    assert_false(policy_first_capture_rule(p, &rule, &line));
    policy_unref(p);
}

static void test_body_check_config_and_explain(void **state)
{
    char *argv[] = {"check-config", DATA "body.yaml", NULL}, *out = NULL, *err = NULL;
    assert_int_equal(run_cli(policy_cli_check_config, argv, &out, &err), 0);
    assert_non_null(strstr(out, "  2. no-exfil: block if body has 1 regex [request bodies; "
                                "capture 4 KiB] (" DATA "body.yaml:7)\n"));
    assert_non_null(strstr(out, "  3. no-secrets: block if content_type, and body has one of 2 "
                                "keywords [response bodies] (" DATA "body.yaml:12)\n"));
    free(out);
    free(err);
    char *ex[] = {"explain",  "--config", DATA "body.yaml", "--sni",     "www.example",
                  "--method", "POST",     "--content-type", "text/html", "--json",
                  NULL};
    assert_int_equal(run_cli(policy_cli_explain, ex, &out, &err), 0);
    assert_string_equal(out, "{\"action\":\"intercept\",\"rule\":null,\"http\":{\"action\":"
                             "\"allow\",\"rule\":null,\"body_rules\":{\"request\":[\"no-exfil\"],"
                             "\"response\":[\"no-secrets\"]}}}\n");
    free(out);
    free(err);
    char *ex2[] = {"explain",          "--config", DATA "body.yaml", "--sni",
                   "internal.example", "--method", "POST",           NULL};
    assert_int_equal(run_cli(policy_cli_explain, ex2, &out, &err), 0);
    assert_non_null(strstr(out, "http rule: internal (" DATA "body.yaml:4)\n"
                                "body rules for the request body: none\n"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_policy_key_intercepts),
        cmocka_unit_test(test_default_actions),
        cmocka_unit_test(test_sni_case_dot_suffix),
        cmocka_unit_test(test_first_match_order),
        cmocka_unit_test(test_punycode),
        cmocka_unit_test(test_host_key),
        cmocka_unit_test(test_client_cidrs),
        cmocka_unit_test(test_netset_edges),
        cmocka_unit_test(test_dst_and_ports),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_no_sni),
        cmocka_unit_test(test_all_keys_must_match),
        cmocka_unit_test(test_lists_in_rules),
        cmocka_unit_test(test_list_paths_relative_to_config),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_http_parse_errors),
        cmocka_unit_test(test_http_request_rules),
        cmocka_unit_test(test_http_response_rules),
        cmocka_unit_test(test_block_page),
        cmocka_unit_test(test_pinning),
        cmocka_unit_test(test_shared_snapshot),
        cmocka_unit_test(test_check_config_examples),
        cmocka_unit_test(test_check_config_summary_and_errors),
        cmocka_unit_test(test_explain),
        cmocka_unit_test(test_body_parse_errors),
        cmocka_unit_test(test_body_rules_limit),
        cmocka_unit_test(test_body_arming),
        cmocka_unit_test(test_body_check_config_and_explain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
