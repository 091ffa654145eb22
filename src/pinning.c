/* pinning: a small shared table of names whose clients refuse forged certificates. */
#include "pinning.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct pinning_entry {
    char name[256];
    unsigned refusals;      /* within the current window */
    uint64_t window_start;  /* ms */
    uint64_t pinned_until;  /* ms; 0 when not pinned */
    uint64_t last_used;     /* ms, for eviction */
};

struct pinning {
    pthread_mutex_t lock;
    struct pinning_entry *entries;
    unsigned n, max;
    atomic_uint live; /* entries in use: 0 lets lookups skip the lock */
};

struct pinning *pinning_new(unsigned max_names)
{
    struct pinning *p = calloc(1, sizeof(*p));
    if (!p || !(p->entries = calloc(max_names ? max_names : 1, sizeof(*p->entries)))) {
        free(p);
        return NULL;
    }
    p->max = max_names ? max_names : 1;
    pthread_mutex_init(&p->lock, NULL);
    return p;
}

void pinning_free(struct pinning *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p->entries);
    free(p);
}

uint64_t pinning_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Linear scan: the table holds names with recent refusals, a handful in practice. */
static struct pinning_entry *pinning_find(struct pinning *p, const char *name)
{
    for (unsigned i = 0; i < p->n; i++)
        if (strcasecmp(p->entries[i].name, name) == 0)
            return &p->entries[i];
    return NULL;
}

/* A slot for a new name: a free one, else the least recently used. */
static struct pinning_entry *pinning_slot(struct pinning *p)
{
    if (p->n < p->max) {
        atomic_fetch_add(&p->live, 1);
        return &p->entries[p->n++];
    }
    struct pinning_entry *oldest = &p->entries[0];
    for (unsigned i = 1; i < p->n; i++)
        if (p->entries[i].last_used < oldest->last_used)
            oldest = &p->entries[i];
    return oldest;
}

bool pinning_record_refusal(struct pinning *p, const char *name, uint64_t now_ms,
                            unsigned threshold, unsigned window_ms, unsigned ttl_ms)
{
    bool newly = false;
    if (!name || !*name || strlen(name) >= sizeof(p->entries[0].name))
        return false;
    pthread_mutex_lock(&p->lock);
    struct pinning_entry *e = pinning_find(p, name);
    if (!e) {
        e = pinning_slot(p);
        memset(e, 0, sizeof(*e));
        strcpy(e->name, name);
    }
    e->last_used = now_ms;
    if (e->refusals == 0 || now_ms - e->window_start > window_ms) {
        e->window_start = now_ms;
        e->refusals = 0;
    }
    e->refusals++;
    if (e->refusals >= threshold && e->pinned_until <= now_ms) {
        e->pinned_until = now_ms + ttl_ms;
        e->refusals = 0;
        newly = true;
    }
    pthread_mutex_unlock(&p->lock);
    return newly;
}

bool pinning_is_pinned(struct pinning *p, const char *name, uint64_t now_ms)
{
    if (!name || atomic_load_explicit(&p->live, memory_order_relaxed) == 0)
        return false;
    pthread_mutex_lock(&p->lock);
    struct pinning_entry *e = pinning_find(p, name);
    bool pinned = e && e->pinned_until > now_ms;
    if (pinned)
        e->last_used = now_ms;
    pthread_mutex_unlock(&p->lock);
    return pinned;
}
