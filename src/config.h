/* config: the gateway's settings — defaults, the YAML file (libfyaml), command-line overrides,
 * validation. Every setting has one name used by both: YAML key `conn_log` is `--conn-log`. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include "ca.h"
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONFIG_MAX_LISTEN 16

struct fy_node;
struct policy;

enum config_mode { CONFIG_MODE_EXPLICIT = 0, CONFIG_MODE_TRANSPARENT, CONFIG_MODE_FIXED };

enum config_log_level { CONFIG_LOG_DEBUG = 0, CONFIG_LOG_INFO, CONFIG_LOG_WARN, CONFIG_LOG_ERROR };

#define CONFIG_MAX_REDACT 32

struct config_listen {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char text[80]; /* as the operator wrote it, normalised: "127.0.0.1:3128", "[::1]:3128" */
};

/* Owned strings are heap copies freed by config_free. */
struct config {
    struct config_listen listen[CONFIG_MAX_LISTEN];
    size_t n_listen;
    enum config_mode mode;
    char *fixed_host;    /* mode fixed: HOST (name or IP literal) */
    uint16_t fixed_port; /* mode fixed: PORT */
    char *ca_dir;        /* default: /var/lib/sluice/ca as root, else ~/.local/share/sluice/ca */
    char *upstream_ca;   /* NULL: the system trust store */
    char *request_log;         /* NULL: no request log; "-": stdout */
    char *keylog;              /* NULL: off; else NSS key-log lines for both legs go here */
    bool request_log_drop_query; /* log paths without their query string */
    bool request_log_headers;    /* default true: records carry req_headers/resp_headers */
    /* Header names (lower case) whose values the request log writes as "[redacted]", besides
     * Authorization, Proxy-Authorization, Cookie and Set-Cookie, which always are. */
    char *request_log_redact[CONFIG_MAX_REDACT];
    size_t n_request_log_redact;
    char *conn_log;      /* NULL: no connection log; "-": stdout */
    int workers;         /* default: number of online cores */
    unsigned connect_timeout_ms;     /* default 10 s: DNS + TCP connect to the upstream */
    unsigned handshake_timeout_ms;   /* default 10 s: from accept to both TLS handshakes done */
    unsigned idle_timeout_ms;        /* default 300 s: no byte in either direction */
    unsigned shutdown_timeout_ms;    /* default 10 s: how long SIGTERM waits for open connections */
    unsigned first_byte_timeout_ms;  /* default 1 s: client silent this long => relay as TCP
                                        (server-speaks-first protocols) */
    enum ca_key_type leaf_key;       /* default ec-p256 */
    size_t cert_cache_size;          /* default 4096 leaves per worker */
    enum config_log_level log_level; /* default info */
    /* Body rules (docs/POLICY.md, "Body rules"). */
    uint64_t body_inspect_max;   /* default 1 MiB: decoded bytes of one body scanned; a request
                                    body is held (not forwarded) until scanned that far */
    uint64_t body_response_hold; /* default 64 KiB: a response's head waits while this much of its
                                    body is scanned; 0: responses are never held */
    bool body_types_all;         /* body_types: all; default text: text-like types only */
    bool body_uninspectable_block; /* body_uninspectable: block; default pass: a body armed
                                      for body rules that cannot be decoded passes (logged) */
    char *capture_file;          /* NULL: no captures; bodies rules' `capture:` writes here */
    char *source;                    /* path of the YAML file loaded, or NULL */
    struct policy *policy;           /* a reference to the `policy:` section's snapshot; after
                                        config_finish never NULL (no section: intercept all) */
};

/* Fills cfg with defaults. Allocates (ca_dir); pair with config_free. Returns 0 or -1. */
int config_init_defaults(struct config *cfg);

/* Reads the YAML file at path and applies every key it holds onto cfg. Unknown keys, wrong
 * types and bad values fail with err = "FILE:LINE: message" (LINE 1-based) naming the key and
 * what was expected; YAML syntax errors name file and line too. Returns 0 or -1. */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen);

/* Same as config_load_file for YAML text already in memory: data[0..len) (borrowed, need not
 * be NUL-terminated), with name standing for the file in messages and in cfg->source. On
 * failure cfg may hold some of the text's settings; callers discard it. Returns 0 or -1. */
int config_load_buffer(struct config *cfg, const char *name, const char *data, size_t len,
                       char *err, size_t errlen);

/* Applies one setting given as text, by its YAML key name ("listen", "mode", "ca_dir",
 * "upstream_ca", "conn_log", "workers", "connect_timeout", "handshake_timeout",
 * "idle_timeout", "shutdown_timeout", "first_byte_timeout", "leaf_key", "cert_cache_size",
 * "log_level"). "listen" appends one address. Durations accept "250ms", "10s", "5m", or a
 * bare number of seconds. Returns 0, or -1 with err = "message" (no location). */
int config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errlen);

/* Removes every listen address (the command line replaces the file's list). */
void config_clear_listen(struct config *cfg);

/* Cross-field checks and final defaults (listen 127.0.0.1:3128 when none). 0 or -1 + err. */
int config_finish(struct config *cfg, char *err, size_t errlen);

void config_free(struct config *cfg);

/* Helpers shared with other modules. */
/* "ADDR:PORT", "[V6]:PORT" or ":PORT"/"PORT" (all IPv4 interfaces) into a listen entry; ADDR
 * is an IP literal, PORT 0..65535 (0: the kernel picks). 0, or -1 with err = "'S' is not ...". */
int config_parse_listen(const char *s, struct config_listen *out, char *err, size_t errlen);
/* "HOST:PORT" / "[V6]:PORT"; host (a DNS name, IPv4 literal, or the IPv6 literal without its
 * brackets) copied into host (size hostlen), PORT 1..65535. 0 or -1. */
int config_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);
/* "250ms", "10s", "5m", "1h" or bare seconds "30", more than 0 and at most 24h. 0 or -1. */
int config_parse_duration_ms(const char *s, unsigned *ms);
const char *config_mode_name(enum config_mode m);

/* YAML node helpers, shared with the `policy:` section's parser (policy_parse.c). */
/* 1-based line where node starts (a collection: its first scalar), 0 when unknown. */
int config_node_line(struct fy_node *node);
/* YAML 1.2 core-schema null (`key:`, `~`, `null`); a quoted "null" is a string. */
bool config_node_is_null(struct fy_node *node);
/* "a string", "a sequence", "a mapping", "nothing (null)", ... for messages. */
const char *config_node_kind(struct fy_node *node);
/* The text of a string node; NULL for null, alias, collection or a string with a NUL byte. */
const char *config_node_text(struct fy_node *node);

#endif
