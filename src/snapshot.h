/* snapshot: one immutable configuration (with its policy), shared read-only by the workers
 * and reference-counted. A reload builds a new snapshot; each worker swaps its own pointer,
 * and every connection keeps the snapshot it started with until it closes. */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include <stdatomic.h>

#include "config.h"

struct snapshot {
    struct config cfg;
    atomic_int refs;
    unsigned generation; /* 1 for the configuration at start, +1 per reload */
};

/* Moves *cfg into a new snapshot holding one reference (*cfg is left empty: config_free on it
 * is a no-op). Returns NULL on allocation failure, *cfg untouched. */
struct snapshot *snapshot_new(struct config *cfg, unsigned generation);

/* Adds a reference; returns s. Safe from any thread. */
struct snapshot *snapshot_ref(struct snapshot *s);

/* Drops a reference; the last one frees the snapshot. Safe from any thread; NULL ignored. */
void snapshot_unref(struct snapshot *s);

#endif
