/* policy: what sluice does with each connection (intercept, pass through, block) and with each
 * HTTP exchange inside an intercepted one (allow, block). A policy is an immutable snapshot —
 * rules, the lists they name, the block page, pinning settings — built once from the `policy:`
 * section of the config, then shared read-only by every worker and reference-counted, so a
 * reload can swap it while open connections keep the one they started with.
 * The language is described in docs/POLICY.md. */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

struct bodyscan_patterns;
struct fy_node;
struct policy;

enum policy_action {
    POLICY_INTERCEPT = 0, /* what sluice does without a policy */
    POLICY_PASSTHROUGH,
    POLICY_BLOCK,
};

/* How a connection is blocked. */
enum policy_how {
    POLICY_HOW_NONE = 0, /* the action is not POLICY_BLOCK */
    POLICY_HOW_ALERT,    /* a TLS alert (access_denied) to the client's ClientHello: the default */
    POLICY_HOW_RESET,    /* a TCP reset */
    POLICY_HOW_PAGE,     /* intercept, and answer every request with the block page (403) */
};

/* What the connection path knows when it decides. Every pointer is borrowed for the call. */
struct policy_flow {
    const char *sni;               /* ClientHello server_name; NULL when the client sent none */
    const char *host;              /* explicit mode: the CONNECT host (no port); NULL otherwise */
    const struct sockaddr *client; /* the client's address; NULL when unknown */
    const struct sockaddr *dst;    /* destination address; NULL when not known yet (explicit
                                      mode: the CONNECT names a host not yet resolved) */
    uint16_t dst_port;             /* destination port; 0 when unknown */
    const uint8_t *alpn;           /* ClientHello ALPN list, wire format (len-prefixed); NULL */
    size_t alpn_len;
};

struct policy_decision {
    enum policy_action action;
    enum policy_how how; /* POLICY_HOW_NONE unless action is POLICY_BLOCK */
    const char *rule;    /* the deciding rule's name, owned by the policy (valid while the caller
                            holds its reference); NULL when the default decided */
    int rule_index;      /* 0-based position among the connection rules; -1 for the default */
};

enum policy_http_action {
    POLICY_HTTP_ALLOW = 0, /* the default when no HTTP rule matches */
    POLICY_HTTP_BLOCK,     /* answer 403 with the block page naming the rule and a reference */
};

/* A header as the HTTP layer holds it: pointer and length, not NUL-terminated. */
struct policy_http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A request head. Strings are NUL-terminated and borrowed for the call. */
struct policy_http_request {
    const char *method;                       /* "GET" */
    const char *host;                         /* Host or :authority, a port allowed; NULL */
    const char *path;                         /* origin form with the query: "/a/b?q=1" */
    const struct policy_http_header *headers; /* request headers, any order */
    size_t n_headers;
};

/* A response head. */
struct policy_http_response {
    int status;               /* 200 */
    const char *content_type; /* the Content-Type value ("text/html; charset=utf-8"); NULL */
};

struct policy_http_decision {
    enum policy_http_action action;
    const char *rule;   /* deciding rule's name (owned by the policy); NULL: the default */
    bool need_response; /* from policy_decide_http_request only: the outcome depends on a
                           response rule; action is then ALLOW (forward the request), rule
                           NULL, and the answer comes from policy_decide_http_response */
};

/* The sides of an exchange whose bodies a body rule inspects (its body_in). */
enum { POLICY_BODY_REQUEST = 1, POLICY_BODY_RESPONSE = 2 };

#define POLICY_BODY_RULES_MAX 64 /* body rules in one policy */
#define POLICY_CAPTURE_MAX_KIB 1024

/* The body rules armed for one message body, in rule order (see policy_arm_http_body). Every
 * pointer is owned by the policy and valid while the caller holds its reference. */
struct policy_body_arm {
    size_t n;
    const char *rule[POLICY_BODY_RULES_MAX];
    const struct bodyscan_patterns *patterns[POLICY_BODY_RULES_MAX];
    size_t capture[POLICY_BODY_RULES_MAX]; /* bytes the rule captures when it matches; 0 */
};

/* Certificate-pinning tolerance (implemented by the connection path): a client that fails the
 * forged certificate `threshold` times within `window_ms` has that name passed through for
 * `ttl_ms`. */
struct policy_pinning {
    bool enabled;       /* default true */
    unsigned threshold; /* default 3 failures */
    unsigned window_ms; /* default 5 minutes */
    unsigned ttl_ms;    /* default 1 hour */
};

/* Values substituted into the block page: {{rule}}, {{ref}}, {{host}}, {{url}}, {{client}}.
 * NULL is rendered as an empty string. */
struct policy_page_vars {
    const char *rule;
    const char *ref;
    const char *host;
    const char *url;
    const char *client;
};

/* ---- building and sharing ---- */

/* A policy without rules whose default is action (how: POLICY_HOW_ALERT for a block). The
 * config without a `policy:` section gets policy_new_default(POLICY_INTERCEPT). Returns a new
 * reference, or NULL when out of memory. */
struct policy *policy_new_default(enum policy_action action);

/* Builds a policy from the `policy:` mapping node of a config document (borrowed), loading
 * every list and the block page. file names the YAML in messages and anchors relative paths
 * (lists, block_page) to its directory. Returns a new reference, or NULL with
 * err = "FILE:LINE: message" (or "FILE: message"). */
struct policy *policy_load_node(struct fy_node *node, const char *file, char *err, size_t errlen);

/* Loads the whole config file at path (every key is validated) and returns a new reference to
 * its policy — the default one when the file has no `policy:` section. This is what a reload
 * calls. NULL with err = "FILE:LINE: message" on failure. */
struct policy *policy_load(const char *path, char *err, size_t errlen);

/* The same from YAML text data[0..len) (borrowed) named name in messages. */
struct policy *policy_load_buffer(const char *name, const char *data, size_t len, char *err,
                                  size_t errlen);

/* Adds a reference (atomic; any thread). Returns p. */
struct policy *policy_ref(struct policy *p);
/* Drops a reference (atomic; any thread); the last one frees the policy. NULL is ignored. */
void policy_unref(struct policy *p);

/* ---- deciding ---- */

/* The connection decision: the first rule whose every key matches flow, else the default.
 * Pure and thread-safe: no allocation and no lock (a non-ASCII sni/host, which never comes
 * off the wire, costs one libidn2 conversion). */
void policy_decide(const struct policy *p, const struct policy_flow *flow,
                   struct policy_decision *out);

/* The HTTP decision at the request head. Rules without response keys (status,
 * content_type) decide here; if an earlier response rule could still match with another
 * action, out->need_response is set and the answer comes from policy_decide_http_response.
 * Pure and thread-safe; allocates only PCRE2 match data for regex keys. */
void policy_decide_http_request(const struct policy *p, const struct policy_http_request *req,
                                struct policy_http_decision *out);

/* The HTTP decision with the response head: the first rule, in order, whose every key matches
 * the request and the response; else allow. */
void policy_decide_http_response(const struct policy *p, const struct policy_http_request *req,
                                 const struct policy_http_response *resp,
                                 struct policy_http_decision *out);

/* True when the policy has HTTP rules (the HTTP layer can skip its hooks otherwise). */
bool policy_has_http_rules(const struct policy *p);

/* True when some HTTP rule has a `header` key: the response-time decisions
 * (policy_decide_http_response, policy_arm_http_body for a response) then need the request's
 * headers again, so the HTTP layer keeps them until the response head. */
bool policy_http_uses_headers(const struct policy *p);

/* Body rules (docs/POLICY.md, "Body rules") never decide at a head: the head decisions above
 * skip them. For the body of a request (resp NULL) or of a response, this returns the body
 * rules that inspect it: walking the rules in order, a body rule for that side whose head keys
 * match is armed; the first other rule that matches the exchange (at the request: a rule
 * without response keys) ends the walk, since it decided the exchange. Pure and thread-safe;
 * allocates only PCRE2 match data for regex keys. */
void policy_arm_http_body(const struct policy *p, const struct policy_http_request *req,
                          const struct policy_http_response *resp, struct policy_body_arm *out);

/* True when the policy has body rules. */
bool policy_has_body_rules(const struct policy *p);

/* The first rule that asks for captures, for the start-up check that a capture file is set:
 * true with its name and the line of its `capture:` key. */
bool policy_first_capture_rule(const struct policy *p, const char **rule, int *line);

/* ---- the rest of the snapshot ---- */

const struct policy_pinning *policy_pinning(const struct policy *p);

/* Renders the block page — the operator's block_page template, or the built-in page — into
 * buf (cap bytes, NUL-terminated), every value HTML-escaped. Returns the length written, or -1
 * when buf is too small. */
long policy_render_block_page(const struct policy *p, const struct policy_page_vars *vars,
                              char *buf, size_t cap);

const char *policy_action_name(enum policy_action a);           /* "intercept", ... */
const char *policy_how_name(enum policy_how h);                 /* "alert", ...; "" for NONE */
const char *policy_http_action_name(enum policy_http_action a); /* "allow", "block" */

/* Writes the human summary check-config prints: default, each rule with its keys, each list
 * with its size and skipped lines, the block page, pinning. */
void policy_describe(const struct policy *p, FILE *out);

/* Writes where a connection rule comes from, "FILE:LINE", into buf; "" for the default
 * (index -1). Returns buf. */
char *policy_rule_origin(const struct policy *p, int rule_index, char *buf, size_t size);

#endif
