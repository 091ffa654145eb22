/* html: the gateway's own small HTML pages (block pages, error pages), written into a caller's
 * bounded buffer with every inserted value escaped. */
#ifndef SLUICE_HTML_H
#define SLUICE_HTML_H

#include <stdbool.h>
#include <stddef.h>

/* A writer over buf[0..cap) (borrowed). One byte is always left free for a terminating NUL.
 * A piece that does not fit is not written, nor is anything after it: overflow is set. */
struct html_out {
    char *buf;
    size_t cap, len;
    bool overflow;
};

void html_put(struct html_out *o, const char *s, size_t n);
void html_str(struct html_out *o, const char *s);
/* s with & < > " ' written as entities (safe in text and in quoted attributes); NULL: nothing. */
void html_escaped(struct html_out *o, const char *s);

/* The built-in block page, used when no template renders one: the blocked authority, and the
 * rule and reference when not empty. Writes into buf (cap bytes, NUL-terminated when cap > 0)
 * and returns the length. */
size_t html_default_block_page(char *buf, size_t cap, const char *authority, const char *rule,
                               const char *ref);

#endif
