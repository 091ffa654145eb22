/* connlog: the connection log — one JSON object per line per connection, written at close.
 * The schema is documented in docs/LOGS.md; field names are a stable interface. */
#ifndef SLUICE_CONNLOG_H
#define SLUICE_CONNLOG_H

#include <stddef.h>

enum connlog_action {
    CONNLOG_NONE = 0,  /* closed before a decision */
    CONNLOG_INTERCEPT,
    CONNLOG_TCP,       /* not TLS: relayed as plain TCP */
    CONNLOG_HTTP,      /* explicit proxy: a plain http:// request forwarded */
    CONNLOG_PASSTHROUGH, /* TLS relayed untouched, by policy */
    CONNLOG_BLOCK,     /* refused by policy */
};

/* The record's `action` value; NULL (logged as null) when no decision was made. */
const char *connlog_action_name(enum connlog_action a);

/* Opens the log: "-" is stdout, else path is opened for appending (created 0640).
 * Returns the fd, or -1 with err filled. */
int connlog_open(const char *path, char *err, size_t errlen);

/* Appends one record (len bytes, ending in '\n') with a single write, so lines from several
 * workers never interleave. fd < 0 does nothing. */
void connlog_write(int fd, const char *line, size_t len);

#endif
