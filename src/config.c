/* config: the gateway's settings — defaults, the YAML file (libfyaml), command-line overrides,
 * validation.
 *
 * Every setting is one row of config_keys: its name, shared by the YAML key and the command-line
 * flag, and a setter that applies it from text. The YAML loader only walks nodes and reports
 * where a value sits; what a value means is decided once, in the setter, for both sources. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "addr.h"
#include "policy.h"

#define CONFIG_FILE_MAX (16u << 20)
#define CONFIG_MSG_MAX 512
#define CONFIG_DURATION_MAX_MS (24u * 60 * 60 * 1000)
#define CONFIG_WORKERS_MAX 256
#define CONFIG_CERT_CACHE_MAX 10000000u
#define CONFIG_DEFAULT_LISTEN "127.0.0.1:3128"
#define CONFIG_BODY_MAX (64u << 20) /* largest body_inspect_max and body_response_hold */

struct config_key;

/* Applies value (borrowed) to cfg for key. Returns 0, or -1 with err = what is wrong with the
 * value, without the key name: the caller adds it and, for the file, the location. */
typedef int (*config_set_cb)(struct config *cfg, const struct config_key *key, const char *value,
                             char *err, size_t errlen);

/* One setting. field is the member written by setters shared between keys (paths, durations);
 * list lets the YAML value also be a sequence, each item applied in turn. The `policy:`
 * section is not a row: its subtree goes whole to the policy parser (config_load_policy). */
struct config_key {
    const char *name;
    config_set_cb set;
    size_t field;
    bool list;
};

/* State of one YAML load: where errors go and what file they name. */
struct config_loader {
    struct config *cfg;
    const char *name;
    char *err;
    size_t errlen;
};

/* Reads an unsigned decimal 0..max: digits only, no sign or spaces. 0 or -1. */
static int config_parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;

    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

static int config_parse_port(const char *s, unsigned min, uint16_t *port)
{
    unsigned long v;

    if (config_parse_uint(s, 65535, &v) != 0 || v < min)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host (without brackets) and the port text. A bare
 * IPv6 address is refused: its last colon cannot be told from the port separator. */
static int config_split_hostport(const char *s, char *host, size_t hostlen, const char **port,
                                 bool *bracketed)
{
    const char *end;
    unsigned char v6[sizeof(struct in6_addr)];

    *bracketed = s[0] == '[';
    if (*bracketed) {
        s++;
        end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -1;
        *port = end + 2;
    } else {
        end = strrchr(s, ':');
        if (!end || memchr(s, ':', (size_t)(end - s)))
            return -1;
        *port = end + 1;
    }
    size_t n = (size_t)(end - s);
    if (n == 0 || n >= hostlen)
        return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    if (*bracketed && inet_pton(AF_INET6, host, v6) != 1)
        return -1;
    return 0;
}

/* A DNS name or IPv4 literal as the operator may write one: letters, digits, '-', '.', '_'. */
static bool config_is_hostname(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 253)
        return false;
    for (; *s; s++) {
        bool ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                  (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '_';
        if (!ok)
            return false;
    }
    return true;
}

int config_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *port_text;
    bool bracketed;

    if (config_split_hostport(s, host, hostlen, &port_text, &bracketed) != 0)
        return -1;
    if (!bracketed && !config_is_hostname(host))
        return -1;
    return config_parse_port(port_text, 1, port);
}

/* Port 0 is allowed: the kernel picks a free port (the listener reports which). */
int config_parse_listen(const char *s, struct config_listen *out, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN] = "0.0.0.0";
    const char *port_text;
    bool bracketed = false;
    uint16_t port;
    unsigned char v4[sizeof(struct in_addr)];

    if (s[0] == ':' || !strchr(s, ':')) {
        port_text = s[0] == ':' ? s + 1 : s; /* ":PORT" or "PORT": every IPv4 interface */
        if (port_text[0] == '\0' || port_text[strspn(port_text, "0123456789")] != '\0')
            goto not_addr_port;
    } else if (config_split_hostport(s, host, sizeof(host), &port_text, &bracketed) != 0) {
        goto not_addr_port;
    }
    if (!bracketed && inet_pton(AF_INET, host, v4) != 1) {
        snprintf(err, errlen, "'%s': '%s' is not an IPv4 address or a bracketed IPv6 address", s,
                 host);
        return -1;
    }
    if (config_parse_port(port_text, 0, &port) != 0) {
        snprintf(err, errlen, "'%s': port must be a number 0..65535", s);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    addr_from_ip(host, port, &out->addr, &out->addr_len);
    addr_format((struct sockaddr *)&out->addr, out->text, sizeof(out->text));
    return 0;
not_addr_port:
    snprintf(err, errlen, "'%s' is not ADDR:PORT%s", s,
             strchr(s, ':') != strrchr(s, ':')
                 ? " (IPv6 goes in brackets, quoted in YAML: \"[::1]:3128\")"
                 : "");
    return -1;
}

int config_parse_duration_ms(const char *s, unsigned *ms)
{
    static const struct {
        const char *suffix;
        unsigned long ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}};
    size_t digits = strspn(s, "0123456789");
    char number[16];
    unsigned long v;

    if (digits == 0 || digits >= sizeof(number))
        return -1;
    memcpy(number, s, digits);
    number[digits] = '\0';
    if (config_parse_uint(number, CONFIG_DURATION_MAX_MS, &v) != 0 || v == 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + digits, units[i].suffix) != 0)
            continue;
        if (v > CONFIG_DURATION_MAX_MS / units[i].ms)
            return -1;
        *ms = (unsigned)(v * units[i].ms);
        return 0;
    }
    return -1;
}

const char *config_mode_name(enum config_mode m)
{
    switch (m) {
    case CONFIG_MODE_EXPLICIT:
        return "explicit";
    case CONFIG_MODE_TRANSPARENT:
        return "transparent";
    case CONFIG_MODE_FIXED:
        return "fixed";
    }
    return "unknown";
}

static int config_set_listen(struct config *cfg, const struct config_key *key, const char *value,
                             char *err, size_t errlen)
{
    struct config_listen l;

    if (cfg->n_listen == CONFIG_MAX_LISTEN) {
        snprintf(err, errlen, "more than %d addresses", CONFIG_MAX_LISTEN);
        return -1;
    }
    if (config_parse_listen(value, &l, err, errlen) != 0)
        return -1;
    cfg->listen[cfg->n_listen++] = l;
    return 0;
}

static int config_set_mode(struct config *cfg, const struct config_key *key, const char *value,
                           char *err, size_t errlen)
{
    char host[256];
    uint16_t port;
    char *copy;

    if (strcmp(value, "explicit") == 0 || strcmp(value, "transparent") == 0) {
        free(cfg->fixed_host);
        cfg->fixed_host = NULL;
        cfg->fixed_port = 0;
        cfg->mode = value[0] == 'e' ? CONFIG_MODE_EXPLICIT : CONFIG_MODE_TRANSPARENT;
        return 0;
    }
    if (strncmp(value, "fixed:", 6) != 0) {
        snprintf(err, errlen, "expected explicit, transparent or fixed:HOST:PORT, got '%s'", value);
        return -1;
    }
    if (config_parse_hostport(value + 6, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen,
                 "'%s' is not fixed:HOST:PORT (e.g. fixed:example.com:443, "
                 "fixed:[2001:db8::1]:443)",
                 value);
        return -1;
    }
    copy = strdup(host);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    free(cfg->fixed_host);
    cfg->fixed_host = copy;
    cfg->fixed_port = port;
    cfg->mode = CONFIG_MODE_FIXED;
    return 0;
}

/* ca_dir, upstream_ca, conn_log: a non-empty path, copied. */
static int config_set_path(struct config *cfg, const struct config_key *key, const char *value,
                           char *err, size_t errlen)
{
    char **field = (char **)((char *)cfg + key->field);
    char *copy;

    if (value[0] == '\0') {
        snprintf(err, errlen, "expected a path, got ''");
        return -1;
    }
    copy = strdup(value);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

static int config_set_workers(struct config *cfg, const struct config_key *key, const char *value,
                              char *err, size_t errlen)
{
    unsigned long v;

    if (config_parse_uint(value, CONFIG_WORKERS_MAX, &v) != 0 || v == 0) {
        snprintf(err, errlen, "expected an integer 1..%d, got '%s'", CONFIG_WORKERS_MAX, value);
        return -1;
    }
    cfg->workers = (int)v;
    return 0;
}

static int config_set_duration(struct config *cfg, const struct config_key *key, const char *value,
                               char *err, size_t errlen)
{
    unsigned *field = (unsigned *)((char *)cfg + key->field);

    if (config_parse_duration_ms(value, field) != 0) {
        snprintf(err, errlen,
                 "expected a duration such as 250ms, 10s, 5m or 1h (more than 0, at most 24h), "
                 "got '%s'",
                 value);
        return -1;
    }
    return 0;
}

static int config_set_leaf_key(struct config *cfg, const struct config_key *key, const char *value,
                               char *err, size_t errlen)
{
    if (ca_key_type_parse(value, &cfg->leaf_key) != 0) {
        snprintf(err, errlen, "expected ec-p256, rsa-2048 or rsa-3072, got '%s'", value);
        return -1;
    }
    return 0;
}

static int config_set_cert_cache_size(struct config *cfg, const struct config_key *key,
                                      const char *value, char *err, size_t errlen)
{
    unsigned long v;

    if (config_parse_uint(value, CONFIG_CERT_CACHE_MAX, &v) != 0 || v == 0) {
        snprintf(err, errlen, "expected an integer 1..%u, got '%s'", CONFIG_CERT_CACHE_MAX, value);
        return -1;
    }
    cfg->cert_cache_size = v;
    return 0;
}

static int config_set_log_level(struct config *cfg, const struct config_key *key, const char *value,
                                char *err, size_t errlen)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(value, names[i]) == 0) {
            cfg->log_level = (enum config_log_level)i;
            return 0;
        }
    }
    snprintf(err, errlen, "expected debug, info, warn or error, got '%s'", value);
    return -1;
}

/* A yes/no setting: true/false, yes/no, on/off. */
static int config_set_bool(struct config *cfg, const struct config_key *key, const char *value,
                           char *err, size_t errlen)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    bool *field = (bool *)((char *)cfg + key->field);

    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
            *field = strcasecmp(value, yes[i]) == 0;
            return 0;
        }
    }
    snprintf(err, errlen, "expected true or false, got '%s'", value);
    return -1;
}

/* One header name (or a comma-separated list) to redact in the request log, appended. */
static int config_set_redact(struct config *cfg, const struct config_key *key, const char *value,
                             char *err, size_t errlen)
{
    (void)key;
    const char *p = value;
    while (*p) {
        size_t n = strcspn(p, ", ");
        if (n > 0) {
            if (cfg->n_request_log_redact == CONFIG_MAX_REDACT) {
                snprintf(err, errlen, "at most %d header names", CONFIG_MAX_REDACT);
                return -1;
            }
            char *name = strndup(p, n);
            if (!name) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            for (char *c = name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            cfg->request_log_redact[cfg->n_request_log_redact++] = name;
        }
        p += n;
        p += strspn(p, ", ");
    }
    return 0;
}

/* A byte size: digits, then nothing (bytes), k/K/KiB or m/M/MiB. 0 or -1. */
static int config_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {{"", 1},         {"k", 1024},     {"K", 1024},      {"KiB", 1024},
                 {"m", 1u << 20}, {"M", 1u << 20}, {"MiB", 1u << 20}};
    size_t digits = strspn(s, "0123456789");
    char number[12];
    unsigned long v;

    if (digits == 0 || digits >= sizeof(number))
        return -1;
    memcpy(number, s, digits);
    number[digits] = '\0';
    if (config_parse_uint(number, 1ul << 30, &v) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + digits, units[i].suffix) == 0) {
            *out = (uint64_t)v * units[i].mul;
            return 0;
        }
    }
    return -1;
}

/* body_inspect_max: 1 KiB..64 MiB; body_response_hold: 0..64 MiB. */
static int config_set_body_size(struct config *cfg, const struct config_key *key, const char *value,
                                char *err, size_t errlen)
{
    uint64_t *field = (uint64_t *)((char *)cfg + key->field);
    uint64_t min = key->field == offsetof(struct config, body_inspect_max) ? 1024 : 0, v;

    if (config_parse_size(value, &v) != 0 || v < min || v > CONFIG_BODY_MAX) {
        snprintf(err, errlen, "expected a size %s..64MiB such as 1MiB, 256KiB or 65536, got '%s'",
                 min ? "1KiB" : "0", value);
        return -1;
    }
    *field = v;
    return 0;
}

/* body_uninspectable: pass (default) or block. */
static int config_set_body_uninspectable(struct config *cfg, const struct config_key *key,
                                         const char *value, char *err, size_t errlen)
{
    (void)key;
    if (strcmp(value, "pass") != 0 && strcmp(value, "block") != 0) {
        snprintf(err, errlen, "expected pass or block, got '%s'", value);
        return -1;
    }
    cfg->body_uninspectable_block = value[0] == 'b';
    return 0;
}

static int config_set_body_types(struct config *cfg, const struct config_key *key,
                                 const char *value, char *err, size_t errlen)
{
    if (strcmp(value, "text") != 0 && strcmp(value, "all") != 0) {
        snprintf(err, errlen, "expected text or all, got '%s'", value);
        return -1;
    }
    cfg->body_types_all = value[0] == 'a';
    return 0;
}

#define CONFIG_FIELD(member) offsetof(struct config, member)

static const struct config_key config_keys[] = {
    {"listen", config_set_listen, 0, true},
    {"mode", config_set_mode, 0, false},
    {"ca_dir", config_set_path, CONFIG_FIELD(ca_dir), false},
    {"upstream_ca", config_set_path, CONFIG_FIELD(upstream_ca), false},
    {"conn_log", config_set_path, CONFIG_FIELD(conn_log), false},
    {"request_log", config_set_path, CONFIG_FIELD(request_log), false},
    {"keylog", config_set_path, CONFIG_FIELD(keylog), false},
    {"request_log_drop_query", config_set_bool, CONFIG_FIELD(request_log_drop_query), false},
    {"request_log_headers", config_set_bool, CONFIG_FIELD(request_log_headers), false},
    {"request_log_redact", config_set_redact, 0, true},
    {"workers", config_set_workers, 0, false},
    {"connect_timeout", config_set_duration, CONFIG_FIELD(connect_timeout_ms), false},
    {"handshake_timeout", config_set_duration, CONFIG_FIELD(handshake_timeout_ms), false},
    {"idle_timeout", config_set_duration, CONFIG_FIELD(idle_timeout_ms), false},
    {"shutdown_timeout", config_set_duration, CONFIG_FIELD(shutdown_timeout_ms), false},
    {"first_byte_timeout", config_set_duration, CONFIG_FIELD(first_byte_timeout_ms), false},
    {"leaf_key", config_set_leaf_key, 0, false},
    {"cert_cache_size", config_set_cert_cache_size, 0, false},
    {"log_level", config_set_log_level, 0, false},
    {"body_inspect_max", config_set_body_size, CONFIG_FIELD(body_inspect_max), false},
    {"body_response_hold", config_set_body_size, CONFIG_FIELD(body_response_hold), false},
    {"body_types", config_set_body_types, 0, false},
    {"body_uninspectable", config_set_body_uninspectable, 0, false},
    {"capture_file", config_set_path, CONFIG_FIELD(capture_file), false},
};

#define CONFIG_N_KEYS (sizeof(config_keys) / sizeof(config_keys[0]))

static const struct config_key *config_find_key(const struct config_key *keys, size_t n,
                                                const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* "listen, mode, ..." into buf, for the unknown-key message. */
static const char *config_key_names(const struct config_key *keys, size_t n, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", keys[i].name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return buf;
}

/* Runs key's setter; on failure err = "KEY: what is wrong". */
static int config_apply(struct config *cfg, const struct config_key *key, const char *value,
                        char *err, size_t errlen)
{
    char msg[CONFIG_MSG_MAX];

    if (key->set(cfg, key, value, msg, sizeof(msg)) == 0)
        return 0;
    snprintf(err, errlen, "%s: %s", key->name, msg);
    return -1;
}

int config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    const struct config_key *k = config_find_key(config_keys, CONFIG_N_KEYS, key);
    char names[CONFIG_MSG_MAX];

    if (!k) {
        snprintf(err, errlen, "unknown setting '%s' (known: %s)", key,
                 config_key_names(config_keys, CONFIG_N_KEYS, names, sizeof(names)));
        return -1;
    }
    if (!value) {
        snprintf(err, errlen, "%s: missing value", key);
        return -1;
    }
    return config_apply(cfg, k, value, err, errlen);
}

void config_clear_listen(struct config *cfg)
{
    memset(cfg->listen, 0, sizeof(cfg->listen));
    cfg->n_listen = 0;
}

/* Fails with err = "NAME:LINE: message", or "NAME: message" when line is unknown (0). */
static int config_fail_at(const struct config_loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int config_fail_at(const struct config_loader *ld, int line, const char *fmt, ...)
{
    char msg[CONFIG_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->name, line, msg);
    else
        snprintf(ld->err, ld->errlen, "%s: %s", ld->name, msg);
    return -1;
}

/* 1-based line where node starts, 0 when unknown. libfyaml 0.7 exposes positions only on
 * scalar tokens, so a collection is placed at its first scalar. */
int config_node_line(struct fy_node *node)
{
    while (node) {
        void *it = NULL;
        if (fy_node_is_scalar(node)) {
            struct fy_token *tok = fy_node_get_scalar_token(node);
            return tok ? fy_token_start_mark(tok)->line + 1 : 0;
        }
        if (fy_node_is_sequence(node)) {
            node = fy_node_sequence_iterate(node, &it);
        } else {
            struct fy_node_pair *pair = fy_node_mapping_iterate(node, &it);
            node = pair ? fy_node_pair_key(pair) : NULL;
        }
    }
    return 0;
}

/* YAML 1.2 core-schema nulls: `key:`, `key: ~`, `key: null`. Quoted "null" is a string. */
bool config_node_is_null(struct fy_node *node)
{
    if (!node || fy_node_is_null(node))
        return true;
    if (!fy_node_is_scalar(node) || fy_node_get_style(node) != FYNS_PLAIN)
        return false;
    const char *s = fy_node_get_scalar0(node);
    return !s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

const char *config_node_kind(struct fy_node *node)
{
    if (config_node_is_null(node))
        return "nothing (null)";
    if (fy_node_is_alias(node))
        return "an alias (*name; aliases are not supported)";
    if (fy_node_is_sequence(node))
        return "a sequence";
    if (fy_node_is_mapping(node))
        return "a mapping";
    const char *s = fy_node_get_scalar0(node);
    if (s && strlen(s) != fy_node_get_scalar_length(node))
        return "a string with a NUL byte";
    return "a string";
}

/* The text of a plain string node, or NULL for anything else (null, alias, collection, or a
 * string with a NUL byte that C would silently cut). Owned by the document. */
const char *config_node_text(struct fy_node *node)
{
    if (config_node_is_null(node) || !fy_node_is_scalar(node) || fy_node_is_alias(node))
        return NULL;
    const char *s = fy_node_get_scalar0(node);
    if (!s || strlen(s) != fy_node_get_scalar_length(node))
        return NULL;
    return s;
}

static int config_load_scalar(const struct config_loader *ld, const struct config_key *key,
                              struct fy_node *value, int line)
{
    const char *text = config_node_text(value);
    int value_line = config_node_line(value);
    char msg[2 * CONFIG_MSG_MAX]; /* "KEY: " + a setter's message */

    if (value_line > 0)
        line = value_line;
    if (!text)
        return config_fail_at(ld, line, "%s: expected %s, got %s", key->name,
                              key->list ? "a value or a sequence of values" : "a single value",
                              config_node_kind(value));
    if (config_apply(ld->cfg, key, text, msg, sizeof(msg)) != 0)
        return config_fail_at(ld, line, "%s", msg);
    return 0;
}

/* Applies one key's value node; key_line places errors on values that carry no position. */
static int config_load_value(const struct config_loader *ld, const struct config_key *key,
                             struct fy_node *value, int key_line)
{
    void *it = NULL;
    struct fy_node *item;

    if (!key->list || !fy_node_is_sequence(value))
        return config_load_scalar(ld, key, value, key_line);
    if (fy_node_sequence_is_empty(value))
        return config_fail_at(ld, key_line, "%s: empty sequence; remove the key for the default",
                              key->name);
    while ((item = fy_node_sequence_iterate(value, &it)) != NULL)
        if (config_load_scalar(ld, key, item, key_line) != 0)
            return -1;
    return 0;
}

/* The `policy:` section: a subtree handed whole to the policy parser, which builds the
 * snapshot (lists included) and reports errors as "FILE:LINE: ...". A null section is the
 * default policy. */
static int config_load_policy(const struct config_loader *ld, struct fy_node *value)
{
    struct policy *p = config_node_is_null(value)
                           ? policy_new_default(POLICY_INTERCEPT)
                           : policy_load_node(value, ld->name, ld->err, ld->errlen);

    if (!p) {
        if (config_node_is_null(value))
            config_fail_at(ld, 0, "out of memory");
        return -1;
    }
    policy_unref(ld->cfg->policy);
    ld->cfg->policy = p;
    return 0;
}

/* Applies every pair of map against the keys table; the top level's `policy:` section goes to
 * config_load_policy. */
static int config_load_mapping(const struct config_loader *ld, struct fy_node *map,
                               const struct config_key *keys, size_t n_keys)
{
    void *it = NULL;
    struct fy_node_pair *pair;
    char names[CONFIG_MSG_MAX];

    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *knode = fy_node_pair_key(pair);
        struct fy_node *value = fy_node_pair_value(pair);
        int line = config_node_line(knode);
        const char *name = config_node_text(knode);
        if (!line)
            line = config_node_line(value);
        if (!name)
            return config_fail_at(ld, line, "a key must be a plain string, got %s",
                                  config_node_kind(knode));
        if (strcmp(name, "policy") == 0) {
            if (config_load_policy(ld, value) != 0)
                return -1;
            continue;
        }
        const struct config_key *key = config_find_key(keys, n_keys, name);
        if (!key)
            return config_fail_at(ld, line, "unknown key '%s' (known keys: %s, policy)", name,
                                  config_key_names(keys, n_keys, names, sizeof(names)));
        if (config_load_value(ld, key, value, line) != 0)
            return -1;
    }
    return 0;
}

static int config_load_document(const struct config_loader *ld, struct fy_document *doc)
{
    struct fy_node *root = fy_document_root(doc);

    if (config_node_is_null(root))
        return 0; /* "---" alone, or only comments: every default */
    if (!fy_node_is_mapping(root))
        return config_fail_at(ld, config_node_line(root),
                              "expected a mapping of settings (key: value) at the top level, "
                              "got %s",
                              config_node_kind(root));
    return config_load_mapping(ld, root, config_keys, CONFIG_N_KEYS);
}

/* Keeps libfyaml quiet: errors are collected and reported through err instead. */
static void config_diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
}

static int config_fail_syntax(const struct config_loader *ld, struct fy_diag *diag)
{
    void *it = NULL;
    struct fy_diag_error *e = fy_diag_errors_iterate(diag, &it);

    if (!e)
        return config_fail_at(ld, 0, "YAML syntax error");
    return config_fail_at(ld, e->line, "YAML syntax error: %s", e->msg);
}

/* Length of the UTF-8 sequence starting at s[0..left), or 0 when it is not valid UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t config_utf8_len(const unsigned char *s, size_t left)
{
    size_t n;
    unsigned min, cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, min = 0x80, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, min = 0x800, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, min = 0x10000, cp = s[0] & 0x07;
    else
        return 0;
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Checks that data[0..len) is text libfyaml 0.7.12 can be trusted with, and returns the
 * 1-based line of the first byte it cannot (0: none), with *what saying why. Each rule is a
 * libfyaml defect found by fuzz_config:
 * - invalid UTF-8 after a directive ("%s\xff") makes it loop forever;
 * - a tab after an explicit key ("? a:\t?") makes it crash in fy_parser_destroy (YAML forbids
 *   tabs as indentation anyway; sluice also refuses them as separators and in comments);
 * - consecutive '' escapes in a single-quoted string ('a''''b') leak the decoded text;
 * - at a NUL byte it stops reading, silently dropping the rest of the file. */
static int config_find_bad_text(const char *data, size_t len, const char **what)
{
    const unsigned char *s = (const unsigned char *)data;
    size_t quotes = 0;
    int line = 1;

    for (size_t i = 0; i < len;) {
        size_t n = config_utf8_len(s + i, len - i);
        quotes = s[i] == '\'' ? quotes + 1 : 0;
        if (n == 0)
            *what = "not valid UTF-8; is it a YAML text file?";
        else if (s[i] == '\0')
            *what = "NUL byte; is it a YAML text file?";
        else if (s[i] == '\t')
            *what = "tab character; indent and separate with spaces";
        else if (quotes == 4)
            *what = "four quotes in a row (''''); write the value in double quotes";
        else
            *what = NULL;
        if (*what)
            return line;
        line += s[i] == '\n';
        i += n;
    }
    return 0;
}

int config_load_buffer(struct config *cfg, const char *name, const char *data, size_t len,
                       char *err, size_t errlen)
{
    struct config_loader ld = {.cfg = cfg, .name = name, .err = err, .errlen = errlen};
    struct fy_diag_cfg dcfg;
    struct fy_diag *diag = NULL;
    struct fy_parser *parser = NULL;
    struct fy_document *doc = NULL, *extra = NULL;
    char *source = NULL;
    const char *what = NULL;
    int bad_line = config_find_bad_text(data, len, &what);
    int rc = -1;

    if (bad_line) {
        config_fail_at(&ld, bad_line, "%s", what);
        goto out;
    }
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = config_diag_discard;
    dcfg.colorize = false;
    diag = fy_diag_create(&dcfg);
    if (diag)
        fy_diag_set_collect_errors(diag, true);
    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET, .diag = diag};
    parser = diag ? fy_parser_create(&pcfg) : NULL;
    source = strdup(name);
    if (!parser || !source || fy_parser_set_string(parser, data, len) != 0) {
        config_fail_at(&ld, 0, "out of memory");
        goto out;
    }
    doc = fy_parse_load_document(parser);
    if (doc)
        extra = fy_parse_load_document(parser);
    if (fy_diag_got_error(diag)) {
        config_fail_syntax(&ld, diag);
        goto out;
    }
    if (extra) {
        config_fail_at(&ld, config_node_line(fy_document_root(extra)),
                       "a second YAML document ('---'); the settings must be one mapping");
        goto out;
    }
    if (doc && config_load_document(&ld, doc) != 0)
        goto out;
    free(cfg->source);
    cfg->source = source;
    source = NULL;
    rc = 0;
out:
    free(source);
    if (extra)
        fy_parse_document_destroy(parser, extra);
    if (doc)
        fy_parse_document_destroy(parser, doc);
    if (parser)
        fy_parser_destroy(parser);
    if (diag)
        fy_diag_destroy(diag);
    return rc;
}

/* Reads the whole file at path into a new NUL-terminated buffer (caller frees *data). */
static int config_read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = NULL;
    size_t used = 0, cap = 0;
    int rc = -1;

    if (fd < 0)
        goto fail;
    for (;;) {
        if (used == cap) {
            if (cap >= CONFIG_FILE_MAX) {
                errno = EFBIG;
                goto fail;
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                errno = ENOMEM;
                goto fail;
            }
            buf = nb;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        used += (size_t)n;
    }
    buf[used] = '\0';
    *data = buf;
    *len = used;
    buf = NULL;
    rc = 0;
fail:
    if (rc != 0)
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    char *data = NULL;
    size_t len = 0;
    int rc = -1;

    if (config_read_file(path, &data, &len, err, errlen) != 0)
        goto out;
    rc = config_load_buffer(cfg, path, data, len, err, errlen);
out:
    free(data);
    return rc;
}

int config_init_defaults(struct config *cfg)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = CONFIG_MODE_EXPLICIT;
    cfg->workers = cores < 1 ? 1 : cores > CONFIG_WORKERS_MAX ? CONFIG_WORKERS_MAX : (int)cores;
    cfg->connect_timeout_ms = 10 * 1000;
    cfg->handshake_timeout_ms = 10 * 1000;
    cfg->idle_timeout_ms = 300 * 1000;
    cfg->shutdown_timeout_ms = 10 * 1000;
    cfg->first_byte_timeout_ms = 1000;
    cfg->request_log_headers = true;
    cfg->leaf_key = CA_KEY_EC_P256;
    cfg->cert_cache_size = 4096;
    cfg->log_level = CONFIG_LOG_INFO;
    cfg->body_inspect_max = 1u << 20;
    cfg->body_response_hold = 64u << 10;
    cfg->ca_dir = strdup(ca_default_dir());
    return cfg->ca_dir ? 0 : -1;
}

/* Body settings against each other and the policy: a rule's `capture:` needs a capture file. */
static int config_finish_body(const struct config *cfg, char *err, size_t errlen)
{
    const char *rule;
    int line;

    if (cfg->body_response_hold > cfg->body_inspect_max) {
        snprintf(err, errlen,
                 "body_response_hold (%llu bytes) is larger than body_inspect_max (%llu bytes)",
                 (unsigned long long)cfg->body_response_hold,
                 (unsigned long long)cfg->body_inspect_max);
        return -1;
    }
    if (!cfg->capture_file && policy_first_capture_rule(cfg->policy, &rule, &line)) {
        snprintf(err, errlen,
                 "%s:%d: http rule '%s': capture: needs a capture file (capture_file: FILE, or "
                 "--capture-file FILE)",
                 cfg->source ? cfg->source : "config", line, rule);
        return -1;
    }
    return 0;
}

int config_finish(struct config *cfg, char *err, size_t errlen)
{
    if (cfg->n_listen == 0 && config_set(cfg, "listen", CONFIG_DEFAULT_LISTEN, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < cfg->n_listen; i++) {
        for (size_t j = 0; j < i; j++) {
            if (addr_equal((struct sockaddr *)&cfg->listen[i].addr,
                           (struct sockaddr *)&cfg->listen[j].addr)) {
                snprintf(err, errlen, "listen: %s is given twice", cfg->listen[i].text);
                return -1;
            }
        }
    }
    if (cfg->mode == CONFIG_MODE_FIXED && (!cfg->fixed_host || cfg->fixed_port == 0)) {
        snprintf(err, errlen, "mode: fixed needs HOST:PORT (fixed:example.com:443)");
        return -1;
    }
    if (!cfg->policy && !(cfg->policy = policy_new_default(POLICY_INTERCEPT))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return config_finish_body(cfg, err, errlen);
}

void config_free(struct config *cfg)
{
    free(cfg->fixed_host);
    cfg->fixed_host = NULL;
    free(cfg->ca_dir);
    cfg->ca_dir = NULL;
    free(cfg->upstream_ca);
    cfg->upstream_ca = NULL;
    free(cfg->conn_log);
    cfg->conn_log = NULL;
    free(cfg->request_log);
    cfg->request_log = NULL;
    free(cfg->keylog);
    cfg->keylog = NULL;
    free(cfg->capture_file);
    cfg->capture_file = NULL;
    for (size_t i = 0; i < cfg->n_request_log_redact; i++) {
        free(cfg->request_log_redact[i]);
        cfg->request_log_redact[i] = NULL;
    }
    cfg->n_request_log_redact = 0;
    free(cfg->source);
    cfg->source = NULL;
    policy_unref(cfg->policy);
    cfg->policy = NULL;
}
