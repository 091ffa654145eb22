/* pinning: clients that refuse forged certificates. When clients abort the handshake on the
 * forged certificate for the same name `threshold` times within `window`, that name is passed
 * through untouched for `ttl`. Shared by all workers; the common case (nothing pinned and no
 * recent refusals) takes no lock. */
#ifndef SLUICE_PINNING_H
#define SLUICE_PINNING_H

#include <stdbool.h>
#include <stdint.h>

struct pinning;

/* max_names bounds the memory: the oldest entries make room for new ones. */
struct pinning *pinning_new(unsigned max_names);
void pinning_free(struct pinning *p);

/* Records one refusal of the forged certificate for name at now_ms. Returns true exactly when
 * this refusal made the name pinned (so the caller logs it once). */
bool pinning_record_refusal(struct pinning *p, const char *name, uint64_t now_ms,
                            unsigned threshold, unsigned window_ms, unsigned ttl_ms);

/* True while name is pinned (passed through). */
bool pinning_is_pinned(struct pinning *p, const char *name, uint64_t now_ms);

/* Milliseconds on a monotonic clock, for the calls above. */
uint64_t pinning_now_ms(void);

#endif
