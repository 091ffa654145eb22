/* policy_int: the layout of a policy snapshot, shared by the modules that build it
 * (policy_parse.c), query it (policy.c) and describe it (policy_cli.c). Not for other
 * modules: they go through policy.h. */
#ifndef SLUICE_POLICY_INT_H
#define SLUICE_POLICY_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>

#include "domainset.h"
#include "netset.h"
#include "policy.h"

/* A list file, loaded once per policy however many rules name it. */
struct policy_list {
    char *path; /* as resolved against the config's directory */
    struct domainset *set;
    struct domainset_list_stats stats;
};

/* The names of an sni/host key: inline patterns plus lists; matches when any does. */
struct policy_names {
    struct domainset *patterns; /* NULL when the key has no inline pattern */
    size_t n_patterns;
    struct policy_list **lists; /* borrowed from policy->lists */
    size_t n_lists;
};

struct policy_range {
    uint16_t lo, hi;
};

/* Which keys a rule has (a rule matches when all of them match). */
enum {
    POLICY_KEY_SNI = 1u << 0,
    POLICY_KEY_HOST = 1u << 1,
    POLICY_KEY_CLIENT = 1u << 2,
    POLICY_KEY_DST = 1u << 3,
    POLICY_KEY_PORT = 1u << 4,
    POLICY_KEY_ALPN = 1u << 5,
    POLICY_KEY_NO_SNI = 1u << 6,
    /* HTTP rules */
    POLICY_KEY_METHOD = 1u << 8,
    POLICY_KEY_PATH = 1u << 9,
    POLICY_KEY_PATH_REGEX = 1u << 10,
    POLICY_KEY_HEADER = 1u << 11,
    POLICY_KEY_STATUS = 1u << 12,
    POLICY_KEY_CONTENT_TYPE = 1u << 13,
    POLICY_KEY_BODY = 1u << 14, /* body and/or body_regex: a body rule */
};
#define POLICY_KEYS_RESPONSE (POLICY_KEY_STATUS | POLICY_KEY_CONTENT_TYPE)

struct policy_rule {
    char *name;
    int line; /* of the rule's first key in the config */
    unsigned keys;
    struct policy_names sni, host;
    struct netset *client, *dst;
    struct policy_range *ports;
    size_t n_ports;
    char **alpn; /* protocol names ("h2") */
    size_t n_alpn;
    bool no_sni; /* with POLICY_KEY_NO_SNI: true matches flows without SNI, false with */
    enum policy_action action;
    enum policy_how how;
};

struct policy_regex {
    char *text;
    pcre2_code *code;
};

/* header: {name, value | value_regex}: the named request header is present (and its value
 * equals value, or value_regex finds a match in it). */
struct policy_header_cond {
    char *name;
    char *value;               /* NULL: any value */
    struct policy_regex regex; /* code NULL: none */
};

struct policy_http_rule {
    char *name;
    int line;
    unsigned keys;
    char **methods;
    size_t n_methods;
    struct policy_names host;
    char **paths; /* prefixes */
    size_t n_paths;
    struct policy_regex *path_regex;
    size_t n_path_regex;
    struct policy_header_cond *headers;
    size_t n_headers;
    struct policy_range *status;
    size_t n_status;
    char **content_types; /* "text/html", "image/ *" (any subtype) */
    size_t n_content_types;
    enum policy_http_action action;
    /* body rules (POLICY_KEY_BODY): never decide at a head; armed for the bodies of the sides
     * in body_in when their head keys match (policy_arm_http_body) */
    struct bodyscan_patterns *body; /* keywords and regexes, compiled at load */
    unsigned body_in;               /* POLICY_BODY_REQUEST | POLICY_BODY_RESPONSE */
    unsigned capture_kib;           /* capture: the first KiB of a matching body; 0: none */
    int capture_line;
};

struct policy {
    atomic_uint refs;
    char *source;     /* the config file's name, for messages; NULL for a default policy */
    bool from_config; /* built from a `policy:` section */
    enum policy_action default_action;
    enum policy_how default_how;
    struct policy_rule *rules;
    size_t n_rules;
    struct policy_http_rule *http;
    size_t n_http;
    size_t n_body; /* body rules among http */
    struct policy_list **lists;
    size_t n_lists;
    char *block_page; /* the template text, or NULL for the built-in page */
    char *block_page_path;
    struct policy_pinning pinning;
    pcre2_match_context *match_ctx; /* bounds backtracking of every regex */
};

/* Allocates an empty policy with one reference and the defaults (intercept, pinning on). */
struct policy *policy_alloc(void);

/* True when the names key matches q (NULL: no valid name, matches nothing); *what (may be
 * NULL) receives the pattern or list path that matched, *entry its entry's offset in q. */
bool policy_names_match(const struct policy_names *names, const struct domain_query *q,
                        const char **what, size_t *entry);

#endif
