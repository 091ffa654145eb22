/* sesscache: direct-mapped cache of upstream SSL sessions, a few per key. */
#include "sesscache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A stored session and when it stops being usable. */
struct sesscache_entry {
    SSL_SESSION *sess;
    time_t expires;
};

struct sesscache_slot {
    char *key;
    unsigned n; /* entries in use, oldest first */
    struct sesscache_entry e[SESSCACHE_PER_KEY];
};

struct sesscache {
    struct sesscache_slot *slots;
    size_t n;
    size_t total;      /* sessions held in all slots; beyond n, only a key's first is added */
    SSL_SESSION *lent; /* the TLS 1.3 session sesscache_get last handed out (own reference) */
};

/* SSL_SESSION ex_data: when the full handshake behind a session verified the chain. OpenSSL
 * copies ex_data into the session it derives from a resumed one for a new ticket. */
static int sesscache_verified_index = -1;
static pthread_once_t sesscache_index_once = PTHREAD_ONCE_INIT;

static void sesscache_index_init(void)
{
    sesscache_verified_index =
        SSL_SESSION_get_ex_new_index(0, (void *)"sluice verified at", NULL, NULL, NULL);
}

struct sesscache *sesscache_new(size_t slots)
{
    pthread_once(&sesscache_index_once, sesscache_index_init);
    if (sesscache_verified_index < 0)
        return NULL;
    struct sesscache *c = calloc(1, sizeof(*c));
    if (!c || !(c->slots = calloc(slots ? slots : 1, sizeof(*c->slots)))) {
        free(c);
        return NULL;
    }
    c->n = slots ? slots : 1;
    return c;
}

/* Drops entry i of s, keeping the others in order. */
static void sesscache_drop(struct sesscache *c, struct sesscache_slot *s, unsigned i)
{
    SSL_SESSION_free(s->e[i].sess);
    memmove(&s->e[i], &s->e[i + 1], (s->n - i - 1) * sizeof(s->e[0]));
    s->n--;
    s->e[s->n].sess = NULL;
    c->total--;
}

static void sesscache_clear(struct sesscache *c, struct sesscache_slot *s)
{
    while (s->n > 0)
        sesscache_drop(c, s, s->n - 1);
    free(s->key);
    s->key = NULL;
}

static void sesscache_release_lent(struct sesscache *c)
{
    SSL_SESSION_free(c->lent);
    c->lent = NULL;
}

void sesscache_free(struct sesscache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sesscache_clear(c, &c->slots[i]);
    sesscache_release_lent(c);
    free(c->slots);
    free(c);
}

static struct sesscache_slot *sesscache_slot(const struct sesscache *c, const char *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return &c->slots[h % c->n];
}

SSL_SESSION *sesscache_get_at(struct sesscache *c, const char *key, time_t now)
{
    sesscache_release_lent(c);
    struct sesscache_slot *s = sesscache_slot(c, key);
    if (!s->key || strcmp(s->key, key) != 0)
        return NULL;
    while (s->n > 0) {
        struct sesscache_entry *e = &s->e[s->n - 1];
        if (e->expires <= now || !SSL_SESSION_is_resumable(e->sess)) {
            sesscache_drop(c, s, s->n - 1);
            continue;
        }
        if (SSL_SESSION_get_protocol_version(e->sess) < TLS1_3_VERSION)
            return e->sess; /* reusable: it stays */
        c->lent = e->sess;  /* single-use: out of the cache, freed at the next call */
        e->sess = NULL;
        s->n--;
        c->total--;
        return c->lent;
    }
    return NULL;
}

SSL_SESSION *sesscache_get(struct sesscache *c, const char *key)
{
    return sesscache_get_at(c, key, time(NULL));
}

static time_t sesscache_min(time_t a, time_t b)
{
    return a < b ? a : b;
}

/* When sess stops being usable: the server's lifetime, the certificate's notAfter, or the
 * age limit after verification, whichever comes first. 0 when it cannot be used at all. */
static time_t sesscache_expiry(SSL_SESSION *sess, time_t now)
{
    X509 *peer = SSL_SESSION_get0_peer(sess);
    struct tm tm;
    if (!peer || !SSL_SESSION_is_resumable(sess) || !ASN1_TIME_to_tm(X509_get0_notAfter(peer), &tm))
        return 0;
    intptr_t verified = (intptr_t)SSL_SESSION_get_ex_data(sess, sesscache_verified_index);
    if (verified == 0) { /* from a full handshake, verified just now */
        verified = (intptr_t)now;
        if (!SSL_SESSION_set_ex_data(sess, sesscache_verified_index, (void *)verified))
            return 0;
    }
    time_t t = (time_t)SSL_SESSION_get_time(sess) + (time_t)SSL_SESSION_get_timeout(sess);
    t = sesscache_min(t, (time_t)verified + SESSCACHE_MAX_VERIFIED_AGE);
    return sesscache_min(t, timegm(&tm));
}

void sesscache_put_at(struct sesscache *c, const char *key, SSL_SESSION *given, time_t now)
{
    sesscache_release_lent(c);
    /* A copy: the given session stays the connection's own, and OpenSSL marks it spent if
     * that connection ends without sending close_notify (SSL_free) or with a fatal alert, as
     * when a server closes without close_notify and the truncation is passed on. The ticket
     * itself arrived intact, and TLS 1.1+ need not discard a session on truncation. */
    SSL_SESSION *sess = SSL_SESSION_is_resumable(given) ? SSL_SESSION_dup(given) : NULL;
    SSL_SESSION_free(given);
    time_t expires = sess ? sesscache_expiry(sess, now) : 0;
    if (expires <= now) {
        SSL_SESSION_free(sess);
        return;
    }
    struct sesscache_slot *s = sesscache_slot(c, key);
    if (!s->key || strcmp(s->key, key) != 0) {
        char *k = strdup(key);
        if (!k) {
            SSL_SESSION_free(sess);
            return;
        }
        sesscache_clear(c, s);
        s->key = k;
    }
    if (s->n == SESSCACHE_PER_KEY || (s->n > 0 && c->total >= c->n))
        sesscache_drop(c, s, 0);
    s->e[s->n].sess = sess;
    s->e[s->n].expires = expires;
    s->n++;
    c->total++;
}

void sesscache_put(struct sesscache *c, const char *key, SSL_SESSION *sess)
{
    sesscache_put_at(c, key, sess, time(NULL));
}

size_t sesscache_count(const struct sesscache *c, const char *key)
{
    const struct sesscache_slot *s = sesscache_slot(c, key);
    return s->key && strcmp(s->key, key) == 0 ? s->n : 0;
}
