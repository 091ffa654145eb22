/* bufpool: per-worker free list of relay buffers. */
#include "bufpool.h"

#include <stdlib.h>

struct bufpool_node {
    struct bufpool_node *next;
};

struct bufpool {
    struct bufpool_node *free;
    size_t n_free, keep;
};

struct bufpool *bufpool_new(size_t keep)
{
    struct bufpool *p = calloc(1, sizeof(*p));
    if (p)
        p->keep = keep;
    return p;
}

void bufpool_free(struct bufpool *p)
{
    if (!p)
        return;
    while (p->free) {
        struct bufpool_node *n = p->free;
        p->free = n->next;
        free(n);
    }
    free(p);
}

void *bufpool_get(struct bufpool *p)
{
    if (!p->free)
        return malloc(BUFPOOL_BUF_SIZE);
    struct bufpool_node *n = p->free;
    p->free = n->next;
    p->n_free--;
    return n;
}

void bufpool_put(struct bufpool *p, void *buf)
{
    if (!buf)
        return;
    if (p->n_free >= p->keep) {
        free(buf);
        return;
    }
    struct bufpool_node *n = buf;
    n->next = p->free;
    p->free = n;
    p->n_free++;
}
