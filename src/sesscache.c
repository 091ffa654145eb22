/* sesscache: direct-mapped cache of upstream SSL sessions. */
#include "sesscache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sesscache_slot {
    char *key;
    SSL_SESSION *sess;
};

struct sesscache {
    struct sesscache_slot *slots;
    size_t n;
};

struct sesscache *sesscache_new(size_t slots)
{
    struct sesscache *c = calloc(1, sizeof(*c));
    if (!c || !(c->slots = calloc(slots ? slots : 1, sizeof(*c->slots)))) {
        free(c);
        return NULL;
    }
    c->n = slots ? slots : 1;
    return c;
}

static void sesscache_clear(struct sesscache_slot *s)
{
    free(s->key);
    SSL_SESSION_free(s->sess);
    s->key = NULL;
    s->sess = NULL;
}

void sesscache_free(struct sesscache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sesscache_clear(&c->slots[i]);
    free(c->slots);
    free(c);
}

static struct sesscache_slot *sesscache_slot(struct sesscache *c, const char *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return &c->slots[h % c->n];
}

SSL_SESSION *sesscache_get(struct sesscache *c, const char *key)
{
    struct sesscache_slot *s = sesscache_slot(c, key);
    if (!s->key || strcmp(s->key, key) != 0)
        return NULL;
    if (!SSL_SESSION_is_resumable(s->sess)) {
        sesscache_clear(s);
        return NULL;
    }
    return s->sess;
}

void sesscache_put(struct sesscache *c, const char *key, SSL_SESSION *sess)
{
    struct sesscache_slot *s = sesscache_slot(c, key);
    char *k = strdup(key);
    if (!k) {
        SSL_SESSION_free(sess);
        return;
    }
    sesscache_clear(s);
    s->key = k;
    s->sess = sess;
}
