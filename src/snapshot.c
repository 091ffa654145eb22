/* snapshot: reference-counted immutable configurations. */
#include "snapshot.h"

#include <stdlib.h>
#include <string.h>

struct snapshot *snapshot_new(struct config *cfg, unsigned generation)
{
    struct snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    atomic_init(&s->refs, 1);
    s->generation = generation;
    return s;
}

struct snapshot *snapshot_ref(struct snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void snapshot_unref(struct snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    config_free(&s->cfg);
    free(s);
}
