/* bufpool: a worker's free list of fixed-size relay buffers, so idle connections hold none
 * and busy ones do not hit malloc per read. One pool per worker thread: no locking. */
#ifndef SLUICE_BUFPOOL_H
#define SLUICE_BUFPOOL_H

#include <stddef.h>

#define BUFPOOL_BUF_SIZE 16384 /* one full TLS record of plaintext */

struct bufpool;

/* keep: how many free buffers the pool holds on to before returning them to malloc. */
struct bufpool *bufpool_new(size_t keep);
void bufpool_free(struct bufpool *p);
/* Returns a BUFPOOL_BUF_SIZE buffer the caller owns until bufpool_put, or NULL. */
void *bufpool_get(struct bufpool *p);
/* Takes back a buffer from bufpool_get (NULL is ignored). */
void bufpool_put(struct bufpool *p, void *buf);

#endif
