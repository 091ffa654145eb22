/* log: short, leveled messages for humans on stderr. Machine records live in connlog. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level written (default LOG_INFO). Safe while other threads log. */
void log_set_level(enum log_level level);
int log_enabled(enum log_level level);

/* Writes one line "TS LEVEL: message" to stderr with a single write(2), so lines from
 * several workers never interleave. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends OpenSSL's queued errors (and clears the queue) to a message:
 * "what: reason; reason". Used for start-up and per-connection failures. */
void log_openssl(enum log_level level, const char *what);

/* Formats the current time as RFC 3339 UTC with milliseconds ("2026-11-25T14:00:00.123Z")
 * into buf (at least 32 bytes). Returns buf. */
char *log_time_rfc3339(char *buf, unsigned long size);

#define LOG_DEBUGF(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
