/* policy_parse: builds a policy snapshot from the `policy:` section of a config document —
 * rules, lists, regexes, the block page, pinning — with "FILE:LINE: where: what" errors.
 *
 * Like config.c, each mapping is walked against a table of keys, one loader per key; a
 * loader gets the value node and the line of its key, and knows what the value means. Values
 * that may be one item or a sequence of items go through policy_each. The YAML itself was read
 * by config.c (which guards libfyaml 0.7.12 against the inputs it mishandles); this file only
 * walks nodes. */
#include "policy_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bodyscan.h"
#include "config.h"

#define PP_MSG_MAX 1024
#define PP_PATH_MSG_MAX (PATH_MAX + 256) /* a message naming a file */
#define PP_RULE_NAME_MAX 64
#define PP_BLOCK_PAGE_MAX (64u * 1024)
#define PP_PINNING_THRESHOLD_MAX 1000

struct policy_parser {
    struct policy *p;
    const char *file;
    char dir[PATH_MAX]; /* the config's directory with a trailing '/', or "" */
    char where[96];     /* "policy", "rule 'social'", "http rule 2", ... */
    char *err;
    size_t errlen;
};

typedef int (*pp_key_cb)(struct policy_parser *pp, void *obj, const char *key,
                         struct fy_node *value, int line);

struct pp_key {
    const char *name;
    pp_key_cb load;
};

/* One item of a value given as an item or a sequence: its node, its text (NULL for a
 * mapping, when the key allows mappings) and its line. */
typedef int (*pp_item_cb)(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *item, const char *text, int line);

static int pp_fail(struct policy_parser *pp, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* err = "FILE:LINE: WHERE: message" (no LINE when unknown). Returns -1. */
static int pp_fail(struct policy_parser *pp, int line, const char *fmt, ...)
{
    char msg[PP_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(pp->err, pp->errlen, "%s:%d: %s: %s", pp->file, line, pp->where, msg);
    else
        snprintf(pp->err, pp->errlen, "%s: %s: %s", pp->file, pp->where, msg);
    return -1;
}

static int pp_oom(struct policy_parser *pp, int line)
{
    return pp_fail(pp, line, "out of memory");
}

/* Grows *arr (of *n elements of size each) by one zeroed element; returns it or NULL. */
static void *pp_push(void **arr, size_t *n, size_t size)
{
    char *a = realloc(*arr, (*n + 1) * size);

    if (!a)
        return NULL;
    *arr = a;
    memset(a + *n * size, 0, size);
    return a + (*n)++ * size;
}

static int pp_push_string(struct policy_parser *pp, char ***arr, size_t *n, const char *s, int line)
{
    char *copy = strdup(s);
    char **slot = copy ? pp_push((void **)arr, n, sizeof(char *)) : NULL;

    if (!slot) {
        free(copy);
        return pp_oom(pp, line);
    }
    *slot = copy;
    return 0;
}

static int pp_line(struct fy_node *node, int fallback)
{
    int line = config_node_line(node);
    return line > 0 ? line : fallback;
}

/* Calls cb for value, or for each item when value is a sequence. Items must be strings, or
 * also mappings when maps is set. */
static int pp_each(struct policy_parser *pp, void *obj, const char *key, struct fy_node *value,
                   int line, bool maps, pp_item_cb cb)
{
    void *it = NULL;
    struct fy_node *item;
    bool seq = fy_node_is_sequence(value) && !fy_node_is_alias(value);

    if (seq && fy_node_sequence_is_empty(value))
        return pp_fail(pp, line, "%s: empty sequence; remove the key", key);
    while ((item = seq ? fy_node_sequence_iterate(value, &it) : value) != NULL) {
        const char *text = config_node_text(item);
        int at = pp_line(item, line);
        bool is_map = maps && fy_node_is_mapping(item) && !fy_node_is_alias(item);
        if (!text && !is_map)
            return pp_fail(pp, at, "%s: expected %s, got %s", key,
                           maps ? "a string or a mapping" : "a string or a sequence of strings",
                           config_node_kind(item));
        if (cb(pp, obj, key, item, text, at) != 0)
            return -1;
        if (!seq)
            break;
    }
    return 0;
}

/* ", "-joined key names into buf. */
static const char *pp_key_names(const struct pp_key *keys, size_t n, char *buf, size_t size)
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

static int pp_mapping(struct policy_parser *pp, void *obj, struct fy_node *map,
                      const struct pp_key *keys, size_t n_keys)
{
    void *it = NULL;
    struct fy_node_pair *pair;
    char names[PP_MSG_MAX / 2];

    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *knode = fy_node_pair_key(pair), *value = fy_node_pair_value(pair);
        int line = pp_line(knode, config_node_line(value));
        const char *name = config_node_text(knode);
        const struct pp_key *key = NULL;
        if (!name)
            return pp_fail(pp, line, "a key must be a plain string, got %s",
                           config_node_kind(knode));
        for (size_t i = 0; i < n_keys && !key; i++)
            if (strcmp(keys[i].name, name) == 0)
                key = &keys[i];
        if (!key)
            return pp_fail(pp, line, "unknown key '%s' (known keys: %s)", name,
                           pp_key_names(keys, n_keys, names, sizeof(names)));
        if (key->load(pp, obj, key->name, value, line) != 0)
            return -1;
    }
    return 0;
}

/* A single string value. */
static const char *pp_text(struct policy_parser *pp, const char *key, struct fy_node *value,
                           int line)
{
    const char *text = config_node_text(value);

    if (!text)
        pp_fail(pp, pp_line(value, line), "%s: expected a single value, got %s", key,
                config_node_kind(value));
    return text;
}

static int pp_bool(struct policy_parser *pp, const char *key, struct fy_node *value, int line,
                   bool *out)
{
    const char *text = pp_text(pp, key, value, line);

    if (!text)
        return -1;
    if (strcasecmp(text, "true") == 0 || strcasecmp(text, "false") == 0) {
        *out = text[0] == 't' || text[0] == 'T';
        return 0;
    }
    return pp_fail(pp, pp_line(value, line), "%s: expected true or false, got '%s'", key, text);
}

/* ---- names: patterns and lists ---- */

/* path resolved against the config's directory into buf. */
static const char *pp_resolve(struct policy_parser *pp, const char *path, char *buf, size_t size)
{
    if (path[0] == '/' || pp->dir[0] == '\0')
        snprintf(buf, size, "%s", path);
    else
        snprintf(buf, size, "%s%s", pp->dir, path);
    return buf;
}

/* The list at path, loaded on first use. */
static struct policy_list *pp_list(struct policy_parser *pp, const char *key, const char *path,
                                   int line)
{
    char resolved[PATH_MAX], msg[PP_PATH_MSG_MAX];
    struct policy_list *list, **slot;

    if (path[0] == '\0') {
        pp_fail(pp, line, "%s: expected a file name, got ''", key);
        return NULL;
    }
    pp_resolve(pp, path, resolved, sizeof(resolved));
    for (size_t i = 0; i < pp->p->n_lists; i++)
        if (strcmp(pp->p->lists[i]->path, resolved) == 0)
            return pp->p->lists[i];
    list = calloc(1, sizeof(*list));
    slot = list ? pp_push((void **)&pp->p->lists, &pp->p->n_lists, sizeof(*slot)) : NULL;
    if (!slot) {
        free(list);
        pp_oom(pp, line);
        return NULL;
    }
    *slot = list; /* owned by the policy from here, even half-built */
    list->path = strdup(resolved);
    list->set = domainset_new();
    if (!list->path || !list->set) {
        pp_oom(pp, line);
        return NULL;
    }
    if (domainset_add_list_file(list->set, resolved, &list->stats, msg, sizeof(msg)) != 0) {
        pp_fail(pp, line, "%s: %s", key, msg);
        return NULL;
    }
    if (list->stats.names == 0 && list->stats.skipped > 0) {
        pp_fail(pp, line, "%s: %s has no valid name (%zu lines skipped; first: %s:%zu: %s)", key,
                resolved, list->stats.skipped, resolved, list->stats.first_bad_line,
                list->stats.first_bad_why);
        return NULL;
    }
    return list;
}

static int pp_names_add_list(struct policy_parser *pp, struct policy_names *names, const char *key,
                             const char *path, int line)
{
    struct policy_list *list = pp_list(pp, key, path, line), **slot;

    if (!list)
        return -1;
    for (size_t i = 0; i < names->n_lists; i++)
        if (names->lists[i] == list)
            return 0;
    slot = pp_push((void **)&names->lists, &names->n_lists, sizeof(*slot));
    if (!slot)
        return pp_oom(pp, line);
    *slot = list;
    return 0;
}

/* `{list: FILE}` inside sni/host. */
static int pp_names_list_item(struct policy_parser *pp, struct policy_names *names, const char *key,
                              struct fy_node *map, int line)
{
    void *it = NULL;
    struct fy_node_pair *pair;
    int n = 0;

    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        const char *k = config_node_text(fy_node_pair_key(pair));
        struct fy_node *v = fy_node_pair_value(pair);
        int at = pp_line(fy_node_pair_key(pair), line);
        if (!k || strcmp(k, "list") != 0 || n++ > 0)
            return pp_fail(pp, at, "%s: an item that is a mapping must be {list: FILE}", key);
        const char *path = config_node_text(v);
        if (!path)
            return pp_fail(pp, pp_line(v, at), "%s: list: expected a file name, got %s", key,
                           config_node_kind(v));
        if (pp_names_add_list(pp, names, key, path, pp_line(v, at)) != 0)
            return -1;
    }
    if (n == 0)
        return pp_fail(pp, line, "%s: an item that is a mapping must be {list: FILE}", key);
    return 0;
}

static int pp_names_item(struct policy_parser *pp, void *obj, const char *key, struct fy_node *item,
                         const char *text, int line)
{
    struct policy_names *names = obj;
    const char *why = NULL;

    if (!text)
        return pp_names_list_item(pp, names, key, item, line);
    if (!names->patterns && !(names->patterns = domainset_new()))
        return pp_oom(pp, line);
    int rc = domainset_add_pattern(names->patterns, text, &why);
    if (rc == -2)
        return pp_oom(pp, line);
    if (rc != 0)
        return pp_fail(pp, line, "%s: '%s' is not a name or *.suffix: %s", key, text, why);
    names->n_patterns++;
    return 0;
}

static int pp_names_file_item(struct policy_parser *pp, void *obj, const char *key,
                              struct fy_node *item, const char *text, int line)
{
    return pp_names_add_list(pp, obj, key, text, line);
}

/* ---- action and how ---- */

/* The action of a connection rule or of the default, checked as a whole by pp_action_finish. */
struct pp_action {
    enum policy_action action;
    enum policy_how how;
    bool has_action;
    int how_line; /* 0: no how given */
};

static int pp_action_value(struct policy_parser *pp, const char *key, struct fy_node *value,
                           int line, struct pp_action *a)
{
    static const char *const names[] = {"intercept", "passthrough", "block"};
    const char *text = pp_text(pp, key, value, line);

    if (!text)
        return -1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(text, names[i]) == 0) {
            a->action = (enum policy_action)i;
            a->has_action = true;
            return 0;
        }
    }
    return pp_fail(pp, pp_line(value, line),
                   "%s: expected intercept, passthrough or block, got '%s'", key, text);
}

static int pp_how_value(struct policy_parser *pp, const char *key, struct fy_node *value, int line,
                        struct pp_action *a)
{
    static const char *const names[] = {"alert", "reset", "page"};
    const char *text = pp_text(pp, key, value, line);

    if (!text)
        return -1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(text, names[i]) == 0) {
            a->how = (enum policy_how)(POLICY_HOW_ALERT + i);
            a->how_line = line;
            return 0;
        }
    }
    return pp_fail(pp, pp_line(value, line), "%s: expected alert, reset or page, got '%s'", key,
                   text);
}

/* An action is required; how goes only with block, which defaults to alert. */
static int pp_action_finish(struct policy_parser *pp, struct pp_action *a, int line)
{
    if (!a->has_action)
        return pp_fail(pp, line, "missing 'action' (intercept, passthrough or block)");
    if (a->how_line && a->action != POLICY_BLOCK)
        return pp_fail(pp, a->how_line, "how: only with action: block");
    if (a->action == POLICY_BLOCK && a->how == POLICY_HOW_NONE)
        a->how = POLICY_HOW_ALERT;
    return 0;
}

/* ---- connection rules ---- */

/* A rule being parsed. */
struct pp_rule {
    struct policy_rule *rule;
    struct pp_action act;
};

static int pp_skip(struct policy_parser *pp, void *obj, const char *key, struct fy_node *value,
                   int line)
{
    return 0; /* `name` is read before the other keys (pp_rule_name) */
}

static int pp_rule_names(struct policy_parser *pp, void *obj, const char *key,
                         struct fy_node *value, int line)
{
    struct policy_rule *r = ((struct pp_rule *)obj)->rule;
    bool sni = key[0] == 's';
    struct policy_names *names = sni ? &r->sni : &r->host;

    r->keys |= sni ? POLICY_KEY_SNI : POLICY_KEY_HOST;
    if (strstr(key, "_list"))
        return pp_each(pp, names, key, value, line, false, pp_names_file_item);
    return pp_each(pp, names, key, value, line, true, pp_names_item);
}

static int pp_net_item(struct policy_parser *pp, void *obj, const char *key, struct fy_node *item,
                       const char *text, int line)
{
    const char *why;
    int rc = netset_add(obj, text, &why);

    if (rc == -2)
        return pp_oom(pp, line);
    if (rc != 0)
        return pp_fail(pp, line, "%s: '%s': %s", key, text, why);
    return 0;
}

static int pp_rule_net(struct policy_parser *pp, void *obj, const char *key, struct fy_node *value,
                       int line)
{
    struct policy_rule *r = ((struct pp_rule *)obj)->rule;
    bool client = key[0] == 'c';
    struct netset **set = client ? &r->client : &r->dst;

    r->keys |= client ? POLICY_KEY_CLIENT : POLICY_KEY_DST;
    if (!*set && !(*set = netset_new()))
        return pp_oom(pp, line);
    return pp_each(pp, *set, key, value, line, false, pp_net_item);
}

/* Reads "N" or "LO-HI", min <= LO <= HI <= max. 0 or -1. */
static int pp_parse_range(const char *s, unsigned min, unsigned max, struct policy_range *out)
{
    unsigned long v[2];
    int n = 0;

    for (const char *p = s;; n++) {
        size_t d = strspn(p, "0123456789");
        if (d == 0 || d > 5)
            return -1;
        v[n] = strtoul(p, NULL, 10);
        if (v[n] < min || v[n] > max)
            return -1;
        p += d;
        if (*p == '\0')
            break;
        if (*p != '-' || n == 1)
            return -1;
        p++;
    }
    out->lo = (uint16_t)v[0];
    out->hi = (uint16_t)(n == 0 ? v[0] : v[1]);
    return out->lo <= out->hi ? 0 : -1;
}

static int pp_push_range(struct policy_parser *pp, struct policy_range **arr, size_t *n,
                         struct policy_range r, int line)
{
    struct policy_range *slot = pp_push((void **)arr, n, sizeof(*slot));

    if (!slot)
        return pp_oom(pp, line);
    *slot = r;
    return 0;
}

static int pp_port_item(struct policy_parser *pp, void *obj, const char *key, struct fy_node *item,
                        const char *text, int line)
{
    struct policy_rule *r = obj;
    struct policy_range range;

    if (pp_parse_range(text, 1, 65535, &range) != 0)
        return pp_fail(pp, line, "%s: expected a port 1..65535 or a range LO-HI, got '%s'", key,
                       text);
    return pp_push_range(pp, &r->ports, &r->n_ports, range, line);
}

static int pp_rule_port(struct policy_parser *pp, void *obj, const char *key, struct fy_node *value,
                        int line)
{
    struct policy_rule *r = ((struct pp_rule *)obj)->rule;

    r->keys |= POLICY_KEY_PORT;
    return pp_each(pp, r, key, value, line, false, pp_port_item);
}

static int pp_alpn_item(struct policy_parser *pp, void *obj, const char *key, struct fy_node *item,
                        const char *text, int line)
{
    struct policy_rule *r = obj;
    size_t n = strlen(text);

    if (n == 0 || n > 255)
        return pp_fail(pp, line, "%s: a protocol name is 1..255 bytes (h2, http/1.1), got '%s'",
                       key, text);
    return pp_push_string(pp, &r->alpn, &r->n_alpn, text, line);
}

static int pp_rule_alpn(struct policy_parser *pp, void *obj, const char *key, struct fy_node *value,
                        int line)
{
    struct policy_rule *r = ((struct pp_rule *)obj)->rule;

    r->keys |= POLICY_KEY_ALPN;
    return pp_each(pp, r, key, value, line, false, pp_alpn_item);
}

static int pp_rule_no_sni(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *value, int line)
{
    struct policy_rule *r = ((struct pp_rule *)obj)->rule;

    r->keys |= POLICY_KEY_NO_SNI;
    return pp_bool(pp, key, value, line, &r->no_sni);
}

static int pp_rule_action(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *value, int line)
{
    return pp_action_value(pp, key, value, line, &((struct pp_rule *)obj)->act);
}

static int pp_rule_how(struct policy_parser *pp, void *obj, const char *key, struct fy_node *value,
                       int line)
{
    return pp_how_value(pp, key, value, line, &((struct pp_rule *)obj)->act);
}

static const struct pp_key pp_rule_keys[] = {
    {"name", pp_skip},          {"sni", pp_rule_names},       {"sni_list", pp_rule_names},
    {"host", pp_rule_names},    {"host_list", pp_rule_names}, {"client", pp_rule_net},
    {"dst", pp_rule_net},       {"port", pp_rule_port},       {"alpn", pp_rule_alpn},
    {"no_sni", pp_rule_no_sni}, {"action", pp_rule_action},   {"how", pp_rule_how},
};

/* A rule's `name`, read first so that every later message can say which rule it is about.
 * Names are unique among connection and HTTP rules: logs and block pages carry them. */
static int pp_rule_name(struct policy_parser *pp, struct fy_node *map, int line, char **out)
{
    struct fy_node *v = fy_node_mapping_lookup_by_string(map, "name", 4);
    const char *name;

    if (!v)
        return pp_fail(pp, line, "missing 'name' (every rule has a name for logs and pages)");
    if (!(name = pp_text(pp, "name", v, line)))
        return -1;
    line = pp_line(v, line);
    size_t n = strlen(name);
    if (n == 0 || n > PP_RULE_NAME_MAX ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") != n)
        return pp_fail(pp, line, "name: '%s': use 1..64 letters, digits, '-', '_', '.' or ':'",
                       name);
    for (size_t i = 0; i < pp->p->n_rules; i++)
        if (pp->p->rules[i].name && strcmp(pp->p->rules[i].name, name) == 0)
            return pp_fail(pp, line, "name: '%s' is already the name of the rule at line %d", name,
                           pp->p->rules[i].line);
    for (size_t i = 0; i < pp->p->n_http; i++)
        if (pp->p->http[i].name && strcmp(pp->p->http[i].name, name) == 0)
            return pp_fail(pp, line, "name: '%s' is already the name of the HTTP rule at line %d",
                           name, pp->p->http[i].line);
    *out = strdup(name);
    return *out ? 0 : pp_oom(pp, line);
}

/* Checks that item is a mapping and returns its line, with pp->where naming it. */
static int pp_rule_start(struct policy_parser *pp, struct fy_node *map, const char *kind,
                         size_t index)
{
    int line = config_node_line(map);

    snprintf(pp->where, sizeof(pp->where), "%srules[%zu]", kind, index + 1);
    if (!fy_node_is_mapping(map) || fy_node_is_alias(map))
        return pp_fail(pp, line, "expected a rule (a mapping: name, match keys, action), got %s",
                       config_node_kind(map));
    return line;
}

static int pp_rule(struct policy_parser *pp, struct fy_node *map, size_t index)
{
    struct policy *p = pp->p;
    struct pp_rule pr = {0};
    int line = pp_rule_start(pp, map, "", index);

    if (line < 0)
        return -1;
    if (!(pr.rule = pp_push((void **)&p->rules, &p->n_rules, sizeof(*pr.rule))))
        return pp_oom(pp, line);
    pr.rule->line = line;
    if (pp_rule_name(pp, map, line, &pr.rule->name) != 0)
        return -1;
    snprintf(pp->where, sizeof(pp->where), "rule '%s'", pr.rule->name);
    if (pp_mapping(pp, &pr, map, pp_rule_keys, sizeof(pp_rule_keys) / sizeof(pp_rule_keys[0])))
        return -1;
    if (pp_action_finish(pp, &pr.act, line) != 0)
        return -1;
    pr.rule->action = pr.act.action;
    pr.rule->how = pr.act.how;
    return 0;
}

/* ---- HTTP rules ---- */

struct pp_http {
    struct policy_http_rule *rule;
    bool has_action;
    int body_in_line; /* where body_in was given; 0: not given */
};

static bool pp_is_token(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                              "!#$%&'*+-.^_`|~") == n;
}

static int pp_method_item(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *item, const char *text, int line)
{
    struct policy_http_rule *r = obj;

    if (!pp_is_token(text))
        return pp_fail(pp, line, "%s: '%s' is not an HTTP method (GET, POST, ...)", key, text);
    return pp_push_string(pp, &r->methods, &r->n_methods, text, line);
}

static int pp_path_item(struct policy_parser *pp, void *obj, const char *key, struct fy_node *item,
                        const char *text, int line)
{
    struct policy_http_rule *r = obj;

    if (text[0] != '/')
        return pp_fail(pp, line, "%s: a path prefix starts with '/', got '%s'", key, text);
    return pp_push_string(pp, &r->paths, &r->n_paths, text, line);
}

/* Compiles text (borrowed) into r: PCRE2 syntax, no flags (write (?i) for any case). */
static int pp_regex(struct policy_parser *pp, const char *key, const char *text, int line,
                    struct policy_regex *r)
{
    int code;
    PCRE2_SIZE offset;
    PCRE2_UCHAR msg[256];

    r->code = pcre2_compile((PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, 0, &code, &offset, NULL);
    if (!r->code) {
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        return pp_fail(pp, line, "%s: '%s': %s at offset %zu", key, text, (const char *)msg,
                       (size_t)offset);
    }
    (void)pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE); /* interpreted when JIT is missing */
    r->text = strdup(text);
    return r->text ? 0 : pp_oom(pp, line);
}

static int pp_path_regex_item(struct policy_parser *pp, void *obj, const char *key,
                              struct fy_node *item, const char *text, int line)
{
    struct policy_http_rule *r = obj;
    struct policy_regex *slot = pp_push((void **)&r->path_regex, &r->n_path_regex, sizeof(*slot));

    if (!slot)
        return pp_oom(pp, line);
    return pp_regex(pp, key, text, line, slot);
}

/* One key of a header condition. */
static int pp_header_field(struct policy_parser *pp, struct policy_header_cond *c, const char *key,
                           const char *k, const char *val, int at)
{
    if (strcmp(k, "name") == 0) {
        if (!pp_is_token(val))
            return pp_fail(pp, at, "%s: name: '%s' is not a header name", key, val);
        free(c->name);
        c->name = strdup(val);
        return c->name ? 0 : pp_oom(pp, at);
    }
    if (c->value || c->regex.code)
        return pp_fail(pp, at, "%s: give value or value_regex, not both", key);
    if (strcmp(k, "value") == 0) {
        c->value = strdup(val);
        return c->value ? 0 : pp_oom(pp, at);
    }
    return pp_regex(pp, "header: value_regex", val, at, &c->regex);
}

/* header: {name: N} | {name: N, value: V} | {name: N, value_regex: R}. */
static int pp_header_item(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *item, const char *text, int line)
{
    struct policy_http_rule *r = obj;
    struct policy_header_cond *c;
    void *it = NULL;
    struct fy_node_pair *pair;

    if (text)
        return pp_fail(pp, line,
                       "%s: expected a mapping {name: N, value: V | value_regex: R}, got '%s'", key,
                       text);
    if (!(c = pp_push((void **)&r->headers, &r->n_headers, sizeof(*c))))
        return pp_oom(pp, line);
    while ((pair = fy_node_mapping_iterate(item, &it)) != NULL) {
        const char *k = config_node_text(fy_node_pair_key(pair));
        struct fy_node *v = fy_node_pair_value(pair);
        int at = pp_line(fy_node_pair_key(pair), line);
        const char *val;
        if (!k || (strcmp(k, "name") && strcmp(k, "value") && strcmp(k, "value_regex")))
            return pp_fail(pp, at, "%s: unknown key '%s' (known keys: name, value, value_regex)",
                           key, k ? k : "?");
        if (!(val = config_node_text(v)))
            return pp_fail(pp, pp_line(v, at), "%s: %s: expected a string, got %s", key, k,
                           config_node_kind(v));
        if (pp_header_field(pp, c, key, k, val, pp_line(v, at)) != 0)
            return -1;
    }
    if (!c->name)
        return pp_fail(pp, line, "%s: missing 'name' (the header's name)", key);
    return 0;
}

static int pp_status_item(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *item, const char *text, int line)
{
    struct policy_http_rule *r = obj;
    struct policy_range range;

    if (strlen(text) == 3 && text[0] >= '1' && text[0] <= '5' && (text[1] | 0x20) == 'x' &&
        (text[2] | 0x20) == 'x') {
        range.lo = (uint16_t)((text[0] - '0') * 100);
        range.hi = (uint16_t)(range.lo + 99);
    } else if (pp_parse_range(text, 100, 999, &range) != 0) {
        return pp_fail(pp, line,
                       "%s: expected a status 100..999, a range LO-HI or a class such as 4xx, "
                       "got '%s'",
                       key, text);
    }
    return pp_push_range(pp, &r->status, &r->n_status, range, line);
}

/* "type/subtype", or a whole type ("image/" then a star), each half an HTTP token. */
static int pp_content_type_item(struct policy_parser *pp, void *obj, const char *key,
                                struct fy_node *item, const char *text, int line)
{
    struct policy_http_rule *r = obj;
    const char *slash = strchr(text, '/');
    char type[128];
    size_t tn = slash ? (size_t)(slash - text) : 0;

    if (!slash || tn == 0 || tn >= sizeof(type) || strchr(text, '*') != strrchr(text, '*'))
        goto bad;
    memcpy(type, text, tn);
    type[tn] = '\0';
    if (!pp_is_token(type) || strchr(type, '*') || !pp_is_token(slash + 1) ||
        strchr(slash + 2, '*') || strchr(slash + 1, '/'))
        goto bad;
    return pp_push_string(pp, &r->content_types, &r->n_content_types, text, line);
bad:
    return pp_fail(pp, line, "%s: expected a media type such as text/html or image/*, got '%s'",
                   key, text);
}

static int pp_http_items(struct policy_parser *pp, void *obj, const char *key,
                         struct fy_node *value, int line)
{
    static const struct {
        const char *name;
        unsigned bit;
        bool maps;
        pp_item_cb item;
    } items[] = {
        {"method", POLICY_KEY_METHOD, false, pp_method_item},
        {"path", POLICY_KEY_PATH, false, pp_path_item},
        {"path_regex", POLICY_KEY_PATH_REGEX, false, pp_path_regex_item},
        {"header", POLICY_KEY_HEADER, true, pp_header_item},
        {"status", POLICY_KEY_STATUS, false, pp_status_item},
        {"content_type", POLICY_KEY_CONTENT_TYPE, false, pp_content_type_item},
    };
    struct policy_http_rule *r = ((struct pp_http *)obj)->rule;

    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
        if (strcmp(items[i].name, key) != 0)
            continue;
        r->keys |= items[i].bit;
        return pp_each(pp, r, key, value, line, items[i].maps, items[i].item);
    }
    return 0;
}

static int pp_http_names(struct policy_parser *pp, void *obj, const char *key,
                         struct fy_node *value, int line)
{
    struct policy_http_rule *r = ((struct pp_http *)obj)->rule;

    r->keys |= POLICY_KEY_HOST;
    if (strcmp(key, "host_list") == 0)
        return pp_each(pp, &r->host, key, value, line, false, pp_names_file_item);
    return pp_each(pp, &r->host, key, value, line, true, pp_names_item);
}

static int pp_http_action(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *value, int line)
{
    struct pp_http *ph = obj;
    const char *text = pp_text(pp, key, value, line);

    if (!text)
        return -1;
    if (strcmp(text, "block") != 0 && strcmp(text, "allow") != 0)
        return pp_fail(pp, pp_line(value, line), "%s: expected block or allow, got '%s'", key,
                       text);
    ph->rule->action = text[0] == 'b' ? POLICY_HTTP_BLOCK : POLICY_HTTP_ALLOW;
    ph->has_action = true;
    return 0;
}

/* ---- body rules ---- */

/* body: a keyword; body_regex: a regex (one item of a sequence). */
static int pp_body_item(struct policy_parser *pp, void *obj, const char *key, struct fy_node *item,
                        const char *text, int line)
{
    struct policy_http_rule *r = obj;
    char msg[PP_MSG_MAX / 2];

    if (!r->body && !(r->body = bodyscan_patterns_new()))
        return pp_oom(pp, line);
    int rc = strcmp(key, "body") == 0
                 ? bodyscan_patterns_add_keyword(r->body, text, strlen(text), msg, sizeof(msg))
                 : bodyscan_patterns_add_regex(r->body, text, msg, sizeof(msg));
    if (rc != 0)
        return pp_fail(pp, line, "%s: '%s': %s", key, text, msg);
    return 0;
}

static int pp_http_body(struct policy_parser *pp, void *obj, const char *key, struct fy_node *value,
                        int line)
{
    struct policy_http_rule *r = ((struct pp_http *)obj)->rule;

    r->keys |= POLICY_KEY_BODY;
    return pp_each(pp, r, key, value, line, false, pp_body_item);
}

static int pp_http_body_in(struct policy_parser *pp, void *obj, const char *key,
                           struct fy_node *value, int line)
{
    struct pp_http *ph = obj;
    const char *text = pp_text(pp, key, value, line);

    if (!text)
        return -1;
    if (strcmp(text, "request") == 0)
        ph->rule->body_in = POLICY_BODY_REQUEST;
    else if (strcmp(text, "response") == 0)
        ph->rule->body_in = POLICY_BODY_RESPONSE;
    else if (strcmp(text, "both") == 0)
        ph->rule->body_in = POLICY_BODY_REQUEST | POLICY_BODY_RESPONSE;
    else
        return pp_fail(pp, pp_line(value, line), "%s: expected request, response or both, got '%s'",
                       key, text);
    ph->body_in_line = line;
    return 0;
}

/* capture: N, the KiB of a matching body written to the capture file. */
static int pp_http_capture(struct policy_parser *pp, void *obj, const char *key,
                           struct fy_node *value, int line)
{
    struct policy_http_rule *r = ((struct pp_http *)obj)->rule;
    const char *text = pp_text(pp, key, value, line);
    unsigned long v = 0;
    size_t digits = text ? strspn(text, "0123456789") : 0;

    if (!text)
        return -1;
    if (digits && digits < 6 && text[digits] == '\0')
        v = strtoul(text, NULL, 10);
    if (v < 1 || v > POLICY_CAPTURE_MAX_KIB)
        return pp_fail(pp, pp_line(value, line), "%s: expected the KiB to capture, 1..%d, got '%s'",
                       key, POLICY_CAPTURE_MAX_KIB, text);
    r->capture_kib = (unsigned)v;
    r->capture_line = line;
    return 0;
}

/* A body rule blocks, says which bodies it reads, and fits the limits; body_in and capture
 * come only with a body key. */
static int pp_body_finish(struct policy_parser *pp, struct pp_http *ph, int line)
{
    struct policy_http_rule *r = ph->rule;
    bool response_keys = (r->keys & POLICY_KEYS_RESPONSE) != 0;

    if (!(r->keys & POLICY_KEY_BODY)) {
        if (ph->body_in_line)
            return pp_fail(pp, ph->body_in_line, "body_in: only with body or body_regex");
        if (r->capture_kib)
            return pp_fail(pp, r->capture_line, "capture: only with body or body_regex");
        return 0;
    }
    if (r->action != POLICY_HTTP_BLOCK)
        return pp_fail(pp, line, "a body rule's action must be block");
    if (pp->p->n_body == POLICY_BODY_RULES_MAX)
        return pp_fail(pp, line, "more than %d body rules", POLICY_BODY_RULES_MAX);
    pp->p->n_body++;
    if (!ph->body_in_line)
        r->body_in =
            response_keys ? POLICY_BODY_RESPONSE : POLICY_BODY_REQUEST | POLICY_BODY_RESPONSE;
    else if (response_keys && (r->body_in & POLICY_BODY_REQUEST))
        return pp_fail(pp, ph->body_in_line,
                       "body_in: a rule with status or content_type reads response bodies only "
                       "(a request body is judged before any response)");
    return 0;
}

static const struct pp_key pp_http_keys[] = {
    {"name", pp_skip},
    {"method", pp_http_items},
    {"host", pp_http_names},
    {"host_list", pp_http_names},
    {"path", pp_http_items},
    {"path_regex", pp_http_items},
    {"header", pp_http_items},
    {"status", pp_http_items},
    {"content_type", pp_http_items},
    {"body", pp_http_body},
    {"body_regex", pp_http_body},
    {"body_in", pp_http_body_in},
    {"capture", pp_http_capture},
    {"action", pp_http_action},
};

static int pp_http_rule(struct policy_parser *pp, struct fy_node *map, size_t index)
{
    struct policy *p = pp->p;
    struct pp_http ph = {0};
    int line = pp_rule_start(pp, map, "http ", index);

    if (line < 0)
        return -1;
    if (!(ph.rule = pp_push((void **)&p->http, &p->n_http, sizeof(*ph.rule))))
        return pp_oom(pp, line);
    ph.rule->line = line;
    if (pp_rule_name(pp, map, line, &ph.rule->name) != 0)
        return -1;
    snprintf(pp->where, sizeof(pp->where), "http rule '%s'", ph.rule->name);
    if (pp_mapping(pp, &ph, map, pp_http_keys, sizeof(pp_http_keys) / sizeof(pp_http_keys[0])))
        return -1;
    if (!ph.has_action)
        return pp_fail(pp, line, "missing 'action' (block or allow)");
    return pp_body_finish(pp, &ph, line);
}

/* ---- the policy mapping ---- */

typedef int (*pp_seq_item_cb)(struct policy_parser *pp, struct fy_node *item, size_t index);

static int pp_sequence(struct policy_parser *pp, const char *key, struct fy_node *value, int line,
                       pp_seq_item_cb cb)
{
    void *it = NULL;
    struct fy_node *item;
    size_t i = 0;

    if (config_node_is_null(value))
        return 0; /* `rules:` with nothing under it: no rules */
    if (!fy_node_is_sequence(value) || fy_node_is_alias(value))
        return pp_fail(pp, pp_line(value, line),
                       "%s: expected a sequence of rules (- name: ...), "
                       "got %s",
                       key, config_node_kind(value));
    while ((item = fy_node_sequence_iterate(value, &it)) != NULL)
        if (cb(pp, item, i++) != 0)
            return -1;
    return 0;
}

static int pp_policy_rules(struct policy_parser *pp, void *obj, const char *key,
                           struct fy_node *value, int line)
{
    return pp_sequence(pp, key, value, line, pp_rule);
}

static int pp_policy_http(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *value, int line)
{
    return pp_sequence(pp, key, value, line, pp_http_rule);
}

/* default: ACTION, or {action: block, how: HOW}. */
static int pp_policy_default(struct policy_parser *pp, void *obj, const char *key,
                             struct fy_node *value, int line)
{
    struct pp_action a = {0};
    void *it = NULL;
    struct fy_node_pair *pair;

    if (!fy_node_is_mapping(value) || fy_node_is_alias(value)) {
        if (pp_action_value(pp, key, value, line, &a) != 0)
            return -1;
    } else {
        while ((pair = fy_node_mapping_iterate(value, &it)) != NULL) {
            const char *k = config_node_text(fy_node_pair_key(pair));
            int at = pp_line(fy_node_pair_key(pair), line);
            int rc;
            if (k && strcmp(k, "action") == 0)
                rc = pp_action_value(pp, "default: action", fy_node_pair_value(pair), at, &a);
            else if (k && strcmp(k, "how") == 0)
                rc = pp_how_value(pp, "default: how", fy_node_pair_value(pair), at, &a);
            else
                rc = pp_fail(pp, at, "default: unknown key '%s' (known keys: action, how)",
                             k ? k : "?");
            if (rc != 0)
                return -1;
        }
    }
    if (pp_action_finish(pp, &a, line) != 0)
        return -1;
    pp->p->default_action = a.action;
    pp->p->default_how = a.how;
    return 0;
}

static const char *const pp_placeholders[] = {"rule", "ref", "host", "url", "client"};

/* Every {{name}} of the template must be a known placeholder: a typo would otherwise reach
 * users as literal braces. The error names the config's line and the template's. */
static int pp_check_template(struct policy_parser *pp, const char *path, const char *text,
                             int config_line)
{
    int line = 1;

    for (const char *t = text; *t; t++) {
        line += *t == '\n';
        if (t[0] != '{' || t[1] != '{')
            continue;
        const char *close = strstr(t + 2, "}}");
        size_t n = close ? (size_t)(close - t - 2) : 0;
        bool known = false;
        for (size_t i = 0; close && i < sizeof(pp_placeholders) / sizeof(pp_placeholders[0]); i++)
            known |= strlen(pp_placeholders[i]) == n && memcmp(pp_placeholders[i], t + 2, n) == 0;
        if (!known)
            return pp_fail(pp, config_line,
                           "block_page: %s:%d: unknown placeholder '%.*s' (known: {{rule}}, "
                           "{{ref}}, {{host}}, {{url}}, {{client}})",
                           path, line, close ? (int)(n + 4 > 40 ? 40 : n + 4) : 2, t);
        t = close + 1;
    }
    return 0;
}

/* Reads the block page template (a text file up to 64 KiB) into a NUL-terminated string. */
static int pp_read_template(const char *path, char **out, char *msg, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    char *buf = NULL;
    size_t used = 0;
    int rc = -1;

    if (fd < 0 || fstat(fd, &st) != 0)
        goto fail;
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)PP_BLOCK_PAGE_MAX) {
        snprintf(msg, size, "cannot read %s: %s", path,
                 S_ISREG(st.st_mode) ? "larger than 64 KiB" : "not a regular file");
        goto out;
    }
    if (!(buf = malloc(PP_BLOCK_PAGE_MAX + 1)))
        goto fail;
    for (ssize_t n; used < PP_BLOCK_PAGE_MAX; used += (size_t)n) {
        n = read(fd, buf + used, PP_BLOCK_PAGE_MAX - used);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
    }
    buf[used] = '\0';
    if (strlen(buf) != used) {
        snprintf(msg, size, "cannot read %s: NUL byte; is it an HTML file?", path);
        goto out;
    }
    *out = buf;
    buf = NULL;
    rc = 0;
    goto out;
fail:
    snprintf(msg, size, "cannot read %s: %s", path, strerror(errno));
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int pp_policy_block_page(struct policy_parser *pp, void *obj, const char *key,
                                struct fy_node *value, int line)
{
    char resolved[PATH_MAX], msg[PP_PATH_MSG_MAX];
    const char *path = pp_text(pp, key, value, line);

    if (!path)
        return -1;
    line = pp_line(value, line);
    if (path[0] == '\0')
        return pp_fail(pp, line, "%s: expected a file name, got ''", key);
    pp_resolve(pp, path, resolved, sizeof(resolved));
    free(pp->p->block_page);
    free(pp->p->block_page_path);
    pp->p->block_page = NULL;
    if (!(pp->p->block_page_path = strdup(resolved)))
        return pp_oom(pp, line);
    if (pp_read_template(resolved, &pp->p->block_page, msg, sizeof(msg)) != 0)
        return pp_fail(pp, line, "%s: %s", key, msg);
    return pp_check_template(pp, resolved, pp->p->block_page, line);
}

static int pp_pinning_key(struct policy_parser *pp, void *obj, const char *key,
                          struct fy_node *value, int line)
{
    struct policy_pinning *pin = obj;
    const char *text;
    unsigned ms;

    if (strcmp(key, "enabled") == 0)
        return pp_bool(pp, key, value, line, &pin->enabled);
    if (!(text = pp_text(pp, key, value, line)))
        return -1;
    line = pp_line(value, line);
    if (strcmp(key, "threshold") == 0) {
        struct policy_range r;
        if (pp_parse_range(text, 1, PP_PINNING_THRESHOLD_MAX, &r) != 0 || r.lo != r.hi)
            return pp_fail(pp, line, "threshold: expected a number of failures 1..%d, got '%s'",
                           PP_PINNING_THRESHOLD_MAX, text);
        pin->threshold = r.lo;
        return 0;
    }
    if (config_parse_duration_ms(text, &ms) != 0)
        return pp_fail(pp, line,
                       "%s: expected a duration such as 30s, 5m or 1h (at most 24h), got '%s'", key,
                       text);
    *(strcmp(key, "window") == 0 ? &pin->window_ms : &pin->ttl_ms) = ms;
    return 0;
}

static const struct pp_key pp_pinning_keys[] = {
    {"enabled", pp_pinning_key},
    {"threshold", pp_pinning_key},
    {"window", pp_pinning_key},
    {"ttl", pp_pinning_key},
};

/* pinning: {enabled, threshold, window, ttl}, or just true/false. */
static int pp_policy_pinning(struct policy_parser *pp, void *obj, const char *key,
                             struct fy_node *value, int line)
{
    if (!fy_node_is_mapping(value) || fy_node_is_alias(value)) {
        if (config_node_text(value))
            return pp_bool(pp, key, value, line, &pp->p->pinning.enabled);
        return pp_fail(pp, pp_line(value, line),
                       "%s: expected a mapping (enabled, threshold, window, ttl), got %s", key,
                       config_node_kind(value));
    }
    snprintf(pp->where, sizeof(pp->where), "policy: pinning");
    int rc = pp_mapping(pp, &pp->p->pinning, value, pp_pinning_keys,
                        sizeof(pp_pinning_keys) / sizeof(pp_pinning_keys[0]));
    snprintf(pp->where, sizeof(pp->where), "policy");
    return rc;
}

static const struct pp_key pp_policy_keys[] = {
    {"default", pp_policy_default},       {"rules", pp_policy_rules},     {"http", pp_policy_http},
    {"block_page", pp_policy_block_page}, {"pinning", pp_policy_pinning},
};

/* The directory of the config file, with its trailing '/', or "" for the current one. */
static void pp_set_dir(struct policy_parser *pp, const char *file)
{
    const char *slash = strrchr(file, '/');
    size_t n = slash ? (size_t)(slash - file) + 1 : 0;

    if (n >= sizeof(pp->dir))
        n = 0;
    memcpy(pp->dir, file, n);
    pp->dir[n] = '\0';
}

/* The keys of the policy mapping, each loader resetting pp->where as it goes. */
static int pp_policy_mapping(struct policy_parser *pp, struct fy_node *map)
{
    void *it = NULL;
    struct fy_node_pair *pair;
    char names[PP_MSG_MAX / 2];
    const size_t n_keys = sizeof(pp_policy_keys) / sizeof(pp_policy_keys[0]);

    while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *knode = fy_node_pair_key(pair);
        int line = pp_line(knode, config_node_line(fy_node_pair_value(pair)));
        const char *name = config_node_text(knode);
        const struct pp_key *key = NULL;
        snprintf(pp->where, sizeof(pp->where), "policy");
        for (size_t i = 0; name && i < n_keys && !key; i++)
            if (strcmp(pp_policy_keys[i].name, name) == 0)
                key = &pp_policy_keys[i];
        if (!key)
            return pp_fail(pp, line, "unknown key '%s' (known keys: %s)", name ? name : "?",
                           pp_key_names(pp_policy_keys, n_keys, names, sizeof(names)));
        if (key->load(pp, NULL, key->name, fy_node_pair_value(pair), line) != 0)
            return -1;
    }
    return 0;
}

struct policy *policy_load_node(struct fy_node *node, const char *file, char *err, size_t errlen)
{
    struct policy_parser pp = {.file = file, .err = err, .errlen = errlen, .where = "policy"};

    pp.p = policy_alloc();
    if (!pp.p || !(pp.p->source = strdup(file))) {
        snprintf(err, errlen, "%s: out of memory", file);
        goto fail;
    }
    pp.p->from_config = true;
    pp_set_dir(&pp, file);
    if (!fy_node_is_mapping(node) || fy_node_is_alias(node)) {
        pp_fail(&pp, config_node_line(node),
                "expected a mapping (default, rules, http, block_page, pinning), got %s",
                config_node_kind(node));
        goto fail;
    }
    if (pp_policy_mapping(&pp, node) != 0)
        goto fail;
    return pp.p;
fail:
    policy_unref(pp.p);
    return NULL;
}

/* Takes the policy out of a loaded config: a new reference, or NULL with err. */
static struct policy *pp_from_config(struct config *cfg, int loaded, char *err, size_t errlen)
{
    struct policy *p = NULL;

    if (loaded == 0 && config_finish(cfg, err, errlen) == 0)
        p = policy_ref(cfg->policy);
    config_free(cfg);
    return p;
}

struct policy *policy_load(const char *path, char *err, size_t errlen)
{
    struct config cfg;

    if (config_init_defaults(&cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        config_free(&cfg);
        return NULL;
    }
    return pp_from_config(&cfg, config_load_file(&cfg, path, err, errlen), err, errlen);
}

struct policy *policy_load_buffer(const char *name, const char *data, size_t len, char *err,
                                  size_t errlen)
{
    struct config cfg;

    if (config_init_defaults(&cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        config_free(&cfg);
        return NULL;
    }
    return pp_from_config(&cfg, config_load_buffer(&cfg, name, data, len, err, errlen), err,
                          errlen);
}
